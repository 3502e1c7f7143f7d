from datetime import datetime, timezone

from textual.query import plan_query, split_question
from textual.scoring import ScoringWeights, spread_to_neighbours


def ts(*args):
    return datetime(*args, tzinfo=timezone.utc).timestamp()


def test_plan_finds_speakers_and_drops_them_from_lexical_text():
    plan = plan_query("When did Melanie paint a sunrise?", ["Caroline", "Melanie"])
    assert plan.names == {"melanie"}
    assert plan.lexical_text == "When did paint a sunrise"
    assert plan.window is None
    assert plan.dense_text == "When did paint a sunrise?"


def test_dense_text_drops_named_speakers_with_their_possessive_and_keeps_other_names():
    speakers = ["Caroline", "Melanie", "Jon"]
    assert plan_query("What is Caroline's relationship status?", speakers).dense_text == "What is relationship status?"
    assert plan_query("Did Melanie and Jon meet Oscar?", speakers).dense_text == "Did and meet Oscar?"
    assert plan_query("Where did she go in 2022?", speakers).dense_text == "Where did she go in 2022?"
    assert plan_query("Caroline?", speakers).dense_text == "Caroline?"  # nothing else to embed


def test_plan_reads_month_and_year_windows():
    assert plan_query("What did she do in May 2023?", []).window == (ts(2023, 5, 1), ts(2023, 6, 1))
    assert plan_query("Where did he go in 2022?", []).window == (ts(2022, 1, 1), ts(2023, 1, 1))
    assert plan_query("What happened in December 2022?", []).window == (ts(2022, 12, 1), ts(2023, 1, 1))


def test_neighbours_gain_a_share_but_never_lose():
    spread = spread_to_neighbours({"a": 1.0, "b": 0.1}, {"a": ("b", "c")}, share=0.3)
    assert spread == {"a": 1.0, "b": 0.1 + 0.3, "c": 0.3}
    assert ScoringWeights().neighbour_share == 0.3


def test_split_question_gives_one_part_per_conjunct_and_keeps_the_rest():
    stop = {"a", "the", "and", "or", "have"}
    assert split_question("How many months passed between adopting Toby and Buddy?", stop) == [
        "How many months passed between adopting Toby?", "How many months passed between adopting Buddy?"]
    assert split_question("When did she meet her friends, family, and mentors?", stop) == [
        "When did she meet her friends?", "When did she meet her family?", "When did she meet her mentors?"]


def test_split_question_leaves_a_question_whole_without_a_coordination_of_content_words():
    stop = {"a", "the", "have"}
    assert split_question("What books has Tim read?", stop) == ["What books has Tim read?"]
    assert split_question("Did she go to a park or a museum?", stop) == ["Did she go to a park or a museum?"]
    assert split_question("Did they go fishing and have fun?", stop) == ["Did they go fishing and have fun?"]
