"""Integration: merge on add, supersede, feedback and images on real LMDB + FAISS + MiniLM."""

from __future__ import annotations

import base64

import pytest

from textual.errors import InvalidMemoryError, MemoryNotFoundError
from textual.store import MemoryStore

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG not really an image").decode()


def ids(result):
    return [hit.memory.id for hit in result.hits]


def test_near_duplicate_is_merged_into_the_stored_memory(store):
    handle = store.for_tenant("t1")
    first = handle.add("Alice is allergic to peanuts", user="u1", source=["m1"])
    again = handle.add("alice is allergic to peanuts.", user="u1", source=["m2"], importance=0.9)
    assert again.id == first.id and handle.stats().count == 1
    stored = handle.get(first.id)
    assert (stored.content, stored.source, stored.importance, stored.access_count) == (
        "alice is allergic to peanuts.", ("m1", "m2"), 0.9, 1)
    assert stored.metadata["history"][0]["content"] == "Alice is allergic to peanuts"
    other_user = handle.add("Alice is allergic to peanuts", user="u2")
    unmerged = handle.add("Alice is allergic to peanuts", user="u1", consolidate=False)
    assert len({first.id, other_user.id, unmerged.id}) == 3


def test_changed_fact_supersedes_and_the_old_one_is_never_injected(store):
    handle = store.for_tenant("t1")
    paris = handle.add("Alice lives in Paris", user="u1")
    berlin = handle.add("Alice lives in Berlin", user="u1")
    bob = handle.add("Bob lives in Paris", user="u1")
    assert berlin.metadata["supersedes"] == paris.id
    old = handle.get(paris.id)
    assert (old.tier.value, old.metadata["superseded_by"]) == ("archived", berlin.id)
    result = handle.search("Where does Alice live?", k=10, budget_tokens=500)
    assert paris.id not in ids(result) and "Alice lives in Paris" not in result.context
    assert ids(result)[0] == berlin.id and bob.id in ids(result)


def test_cold_memories_are_merged_into_and_superseded_too(store):
    handle = store.for_tenant("t1")
    paris = handle.add("Alice lives in Paris", user="u1", tier="cold")
    dog = handle.add("Alice adopted a dog named Max", user="u1", tier="cold")
    berlin = handle.add("Alice lives in Berlin", user="u1")
    again = handle.add("Alice adopted a dog named Max.", user="u1")
    assert berlin.metadata["supersedes"] == paris.id and handle.get(paris.id).tier.value == "archived"
    assert again.id == dog.id and handle.get(dog.id).tier.value == "hot"
    assert handle.stats().by_tier == {"hot": 2, "archived": 1}
    result = handle.search("Where does Alice live?", k=10, tiers=["hot", "warm", "cold"])
    assert ids(result)[0] == berlin.id and paris.id not in ids(result)


def test_feedback_changes_importance_and_correction_reembeds(store):
    handle = store.for_tenant("t1")
    memory = handle.add("Dana likes jazz", user="u1", importance=0.5)
    assert handle.feedback(memory.id, "positive").importance == pytest.approx(0.6)
    assert handle.feedback(memory.id, "negative").importance == pytest.approx(0.4)
    corrected = handle.feedback(memory.id, "correction", text="Dana likes heavy metal")
    assert handle.get(memory.id) == corrected
    assert corrected.metadata["history"][-1]["content"] == "Dana likes jazz"
    assert corrected.metadata["feedback"] == {"positive": 1, "negative": 1, "correction": 1}
    assert ids(handle.search("metal music", k=1)) == [memory.id]
    with pytest.raises(MemoryNotFoundError):
        store.for_tenant("t2").feedback(memory.id, "positive")


def test_image_memory_is_found_by_its_caption(store):
    handle = store.for_tenant("t1")
    cat = handle.add_image("A ginger cat asleep on a red sofa", "https://example.com/cat.jpg", user="u1")
    chart = handle.add_image("Bar chart of quarterly revenue", PNG, user="u1")
    handle.add("Alice is a nurse", user="u1")
    assert ids(handle.search("sleeping kitten", k=1)) == [cat.id]
    assert handle.search("revenue chart", k=1).hits[0].memory.metadata["image_url"] == PNG
    assert handle.get(chart.id).type.value == "image"


@pytest.mark.parametrize("call, field", [
    (lambda h: h.add_image("cat", "file:///etc/passwd", user="u1"), "image_url"),
    (lambda h: h.add_image("cat", "data:image/png;base64," + "A" * 8000, user="u1"), "image_url"),
    (lambda h: h.add_image("", "https://example.com/a.png", user="u1"), "content"),
    (lambda h: h.add("a cat", user="u1", type="image"), "image_url"),
    (lambda h: h.feedback(h.add("x is y", user="u1").id, "love"), "kind"),
    (lambda h: h.feedback(h.add("x is y", user="u1").id, "correction"), "text"),
    (lambda h: h.add("x is y", user="u1", consolidate=True, importance=-1), "importance"),
    (lambda h: h.run_lifecycle(now="soon"), "now"),
])
def test_bad_input_names_the_field(tmp_path, embedder, call, field):
    with MemoryStore.open(tmp_path / "s", embedder=embedder, max_image_bytes=1000) as store, \
            pytest.raises(InvalidMemoryError) as error:
        call(store.for_tenant("t1"))
    assert error.value.field == field
