"""A fact turned into chat examples: the second-person answer, the question prompt and the parsing of questions."""

from __future__ import annotations

from adapters.fact_questions import (FEW_SHOT, content_words, parse_question, question_prompt, second_person,
                                     unique_questions)


def test_the_fact_is_said_back_in_the_second_person():
    cases = {
        "My cat is named Votobi.": "Your cat is named Votobi.",
        "I was born in Oslo.": "You were born in Oslo.",
        "I'm vegan and I am tall.": "You're vegan and you are tall.",
        "I work at Fumavo. My boss likes me.": "You work at Fumavo. Your boss likes you.",
        "Our dog bit us at my place.": "Your dog bit you at your place.",
        "Dana said I could borrow mine.": "Dana said you could borrow yours.",
    }
    for statement, expected in cases.items():
        assert second_person(statement) == expected


def test_a_statement_without_first_person_words_is_unchanged():
    for statement in ("Dana's cat is named Votobi.", "Imogen was born in Myanmar.", "The user likes tea."):
        assert second_person(statement) == statement


def test_the_prompt_shows_the_examples_then_asks_about_the_statement():
    prompt = question_prompt("My  cat is\nnamed Votobi.")
    assert prompt.endswith("Statement: My cat is named Votobi.\nQuestion:")
    assert all(f"Statement: {fact}\nQuestion: {question}\n\n" in prompt for fact, question in FEW_SHOT)


def test_a_question_is_the_first_line_and_must_end_with_a_question_mark():
    assert parse_question(" What is my cat's name?\n\nStatement: x") == "What is my cat's name?"
    for completion in ("", "My cat is named Votobi.", "?", "Why" + " x" * 200 + "?"):
        assert parse_question(completion) is None


def test_unique_questions_keep_the_first_of_each_on_the_topic_and_stop_at_count():
    statement = "I live in a town called Penege."
    completions = [" Which town do I live in?", "Where are I", " which town  do I live in?", " Where do I live?",
                   " How do I get past a horse?", " Is Penege big?"]
    assert unique_questions(statement, completions, 5) == ["Which town do I live in?", "Where do I live?",
                                                           "Is Penege big?"]
    assert unique_questions(statement, completions, 2) == ["Which town do I live in?", "Where do I live?"]


def test_content_words_leave_out_function_words_and_possessives():
    assert content_words("What is my cat's name?") == {"cat", "name"}
    assert content_words("Where was I born?") == {"born"}


def test_the_model_writes_distinct_questions_and_repeats_itself_under_one_seed(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from adapters.fact_questions import write_questions

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(write_questions(model, tokenizer, "My cat is named Votobi.", count=3, samples=6))
    assert runs[0] == runs[1] and len(runs[0]) <= 3 and len(set(runs[0])) == len(runs[0])
    assert all(question.endswith("?") for question in runs[0])
