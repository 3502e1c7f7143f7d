"""The merge / supersede rule and feedback, as pure functions over memories and given similarities."""

from dataclasses import replace

import pytest

from textual.consolidation import Action, ConsolidationPolicy, decide, merged, numbers, subject, superseding
from textual.errors import InvalidMemoryError
from textual.feedback import apply_feedback, check_kind
from textual.memory import LifecycleTier, Memory, MemoryType

POLICY = ConsolidationPolicy()


def memory(key, content, type=MemoryType.FACT, user="u", kb_id=None):
    return Memory(id=key, tenant="t", user=user, type=type, content=content, created_at=1.0, updated_at=1.0,
                  last_access_at=1.0, kb_id=kb_id, source=(key,))


def test_subject_is_the_first_word_that_is_not_a_stopword():
    assert subject("Alice lives in Paris") == "alice"
    assert subject("Carol's favourite colour is blue") == "carol"
    assert subject("The user's phone number is 555-1234") == "phone"
    assert numbers("call 555-1234 at 9am") == {"555", "1234", "9am"}


def test_near_duplicate_merges_into_the_closest_peer():
    old, new = memory("a", "Alice is allergic to peanuts"), memory("n", "alice is allergic to peanuts.")
    decision = decide(new, [(old, 0.99), (memory("b", "Bob is allergic"), 0.96)], POLICY)
    assert (decision.action, decision.target) == (Action.MERGE, old)


def test_changed_value_of_the_same_subject_supersedes():
    old, new = memory("a", "Alice lives in Paris"), memory("n", "Alice lives in Berlin")
    assert decide(new, [(old, 0.79)], POLICY).action is Action.SUPERSEDE
    phone_old, phone_new = memory("p", "My phone number is 555-1234"), memory("q", "My phone number is 555-9876")
    assert decide(phone_new, [(phone_old, 0.97)], POLICY).action is Action.SUPERSEDE


def test_other_subjects_users_types_and_weak_matches_are_added():
    new = memory("n", "Alice is allergic to peanuts")
    assert decide(new, [(memory("a", "Bob is allergic to peanuts"), 0.8)], POLICY).action is Action.ADD
    assert decide(new, [(memory("a", new.content, user="v"), 1.0)], POLICY).action is Action.ADD
    assert decide(new, [(memory("a", new.content, kb_id="kb"), 1.0)], POLICY).action is Action.ADD
    assert decide(new, [(memory("a", "Alice likes tea"), 0.5)], POLICY).action is Action.ADD
    relation = memory("r", "Alice visited Oslo last spring")  # same subject, a different statement about it
    assert decide(memory("n", "Alice is learning Norwegian in Oslo"), [(relation, 0.8)], POLICY).action is Action.ADD
    event = memory("e", "Alice moved house", type=MemoryType.EVENT)
    assert decide(event, [(memory("a", "Alice moved home", type=MemoryType.EVENT), 0.9)], POLICY).action \
        is Action.ADD  # events are merged when identical but never superseded


def test_merge_takes_newer_wording_and_keeps_history():
    old, new = memory("a", "Alice adopted a retriever named Max"), memory("n", "Alice adopted a retriever called Max")
    kept = merged(old, new, now=5.0, strength=1.7)
    assert (kept.id, kept.content, kept.source, kept.strength, kept.access_count) == (
        "a", new.content, ("a", "n"), 1.7, 1)
    assert kept.metadata["history"] == [{"content": old.content, "at": 5.0, "reason": "merge"}]
    assert kept.tier is LifecycleTier.HOT


def test_a_cold_memory_said_again_comes_back_in_the_new_memorys_tier():
    old = replace(memory("a", "Alice has a dog"), tier=LifecycleTier.COLD)
    warm = LifecycleTier.WARM
    assert merged(old, replace(memory("n", "Alice has a dog"), tier=warm), now=5.0, strength=1.0).tier is warm
    assert merged(replace(old, tier=warm), memory("n", "Alice has a dog"), now=5.0, strength=1.0).tier is warm


def test_superseding_archives_the_old_and_links_both_ways():
    old, new = superseding(memory("a", "Alice lives in Paris"), memory("n", "Alice lives in Berlin"), now=9.0)
    assert (old.tier, old.metadata["superseded_by"], old.updated_at) == (LifecycleTier.ARCHIVED, "n", 9.0)
    assert (new.tier, new.metadata["supersedes"]) == (LifecycleTier.HOT, "a")


def test_feedback_changes_importance_strength_or_content():
    base = memory("a", "Dana likes jazz")
    positive = apply_feedback(base, "positive", None, now=2.0, reinforced=1.8)
    assert (positive.importance, positive.strength, positive.metadata["feedback"]) == (0.6, 1.8, {"positive": 1})
    negative = apply_feedback(positive, "negative", None, now=3.0, reinforced=9.0)
    assert (negative.importance, negative.strength) == (pytest.approx(0.4), 0.9)
    assert negative.metadata["feedback"] == {"positive": 1, "negative": 1}
    corrected = apply_feedback(base, "correction", "Dana likes blues", now=4.0, reinforced=1.0)
    assert corrected.content == "Dana likes blues"
    assert corrected.metadata["history"] == [{"content": "Dana likes jazz", "at": 4.0, "reason": "correction"}]


@pytest.mark.parametrize("kind, text, field", [("great", None, "kind"), ("correction", None, "text"),
                                               ("correction", "  ", "text"), ("positive", "why", "text")])
def test_bad_feedback_names_the_field(kind, text, field):
    with pytest.raises(InvalidMemoryError) as error:
        check_kind(kind, text)
    assert error.value.field == field
