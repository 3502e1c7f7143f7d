"""Integration: real LMDB in tmp_path, real FAISS, the real MiniLM model."""

from __future__ import annotations


import pytest

from textual.embedder import Embedder, default_model_path, model_identity
from textual.errors import EmbeddingModelMismatchError, InvalidMemoryError, MemoryNotFoundError
from textual.messages import ChatMessage
from textual.store import MemoryStore

FACTS = ["Alice adopted a golden retriever named Max", "Alice works as a nurse in Lisbon",
         "Alice is allergic to peanuts", "The quarterly report is due on Friday"]


def add_facts(handle, user="u1"):
    return [handle.add(text, user=user) for text in FACTS]


def test_search_finds_the_matching_memory(store):
    added = add_facts(store.for_tenant("t1"))
    result = store.for_tenant("t1").search("Which pet did Alice adopt?", k=1)
    assert [hit.memory.id for hit in result.hits] == [added[0].id]
    assert "golden retriever" in result.context


def test_memories_and_index_survive_reopen(tmp_path, embedder):
    path = tmp_path / "store"
    with MemoryStore.open(path, embedder=embedder) as first:
        added = add_facts(first.for_tenant("t1"))
    assert list((path / "faiss").glob("t1.faiss"))
    with MemoryStore.open(path, embedder=embedder) as second:
        handle = second.for_tenant("t1")
        assert handle.get(added[1].id).content == FACTS[1]
        assert handle.search("Where does Alice work?", k=1).hits[0].memory.id == added[1].id


def test_a_store_refuses_another_embedding_model_than_its_vectors_came_from(tmp_path, embedder):
    path = tmp_path / "store"
    with MemoryStore.open(path, embedder=embedder) as first:
        add_facts(first.for_tenant("t1"))
    assert embedder.identity == model_identity(default_model_path(), 384)  # by content: the same for any copy
    other = Embedder(embedder._model, identity="another-model/384/0123456789abcdef")
    with pytest.raises(EmbeddingModelMismatchError, match="another-model.*--embedding-model"):
        MemoryStore.open(path, embedder=other)
    with MemoryStore.open(path, embedder=embedder) as again:  # refusing changed nothing
        assert len(again.for_tenant("t1").list(user="u1")) == len(FACTS)


def test_missing_or_stale_faiss_index_is_rebuilt_from_lmdb(tmp_path, embedder):
    path = tmp_path / "store"
    with MemoryStore.open(path, embedder=embedder) as first:
        added = add_facts(first.for_tenant("t1"))
    stale_meta = (path / "faiss" / "t1.json").read_text()
    with MemoryStore.open(path, embedder=embedder) as second:
        second.for_tenant("t1").delete(added[0].id)
        added.append(second.for_tenant("t1").add("Alice plays the cello", user="u1"))
    (path / "faiss" / "t1.json").write_text(stale_meta)  # an index from an older version: must be ignored
    with MemoryStore.open(path, embedder=embedder) as third:
        hits = third.for_tenant("t1").search("musical instrument", k=10).hits
        assert hits[0].memory.id == added[-1].id
        assert added[0].id not in {hit.memory.id for hit in hits}
    for file in (path / "faiss").iterdir():
        file.unlink()
    with MemoryStore.open(path, embedder=embedder) as fourth:
        assert fourth.for_tenant("t1").search("musical instrument", k=1).hits[0].memory.id == added[-1].id


def test_tenants_never_see_each_other(store):
    mine = add_facts(store.for_tenant("t1"))
    other = store.for_tenant("t2")
    theirs = other.add("Bob keeps bees on his roof", user="u1")
    assert {hit.memory.id for hit in other.search("Alice dog peanuts nurse", k=50).hits} == {theirs.id}
    assert [m.id for m in other.list()] == [theirs.id]
    with pytest.raises(MemoryNotFoundError):
        other.get(mine[0].id)
    with pytest.raises(MemoryNotFoundError):
        other.delete(mine[0].id)
    with pytest.raises(MemoryNotFoundError):
        other.update(mine[0].id, importance=1.0)
    assert store.for_tenant("t1").get(mine[0].id).content == mine[0].content
    assert store.for_tenant("t1").stats().count == len(FACTS)


def test_filters_restrict_search_and_list(store):
    handle = store.for_tenant("t1")
    add_facts(handle, user="u1")
    pref = handle.add("Carol prefers tea over coffee", user="u2", type="preference", created_at=1_000.0)
    assert [h.memory.id for h in handle.search("drinks", user="u2", k=10).hits] == [pref.id]
    assert [h.memory.id for h in handle.search("drinks", types=["preference"], k=10).hits] == [pref.id]
    assert [m.id for m in handle.list(until=2_000.0)] == [pref.id]
    handle.update(pref.id, tier="archived")
    assert pref.id not in {h.memory.id for h in handle.search("tea", k=10).hits}
    with pytest.raises(InvalidMemoryError, match="tiers"):  # archived: kept, never searched until restored
        handle.search("tea", tiers=["archived"], k=10)
    assert [m.id for m in handle.list(tiers=["archived"])] == [pref.id]
    handle.restore(pref.id)
    assert [h.memory.id for h in handle.search("tea", types=["preference"], k=10).hits] == [pref.id]


def test_add_messages_stores_episodes_with_turn_sources(store):
    handle = store.for_tenant("t1")
    turns = [ChatMessage("Ann", "Did you go anywhere last weekend?", 1_700_000_000.0, "s1", "D1:1"),
             ChatMessage("Ben", "Yes, we hiked up Mount Tamalpais!", 1_700_000_000.0, "s1", "D1:2"),
             {"speaker": "Ann", "text": "Nice, I baked bread.", "time": 1_700_000_000.0, "session": "s1",
              "turn_id": "D1:3"}]
    episodes = handle.add_messages(turns, user="u1")
    assert [(m.type.value, m.source, m.metadata["position"]) for m in episodes] == [
        ("episode", ("D1:1",), 0), ("episode", ("D1:2",), 1), ("episode", ("D1:3",), 2)]
    result = handle.search("Where did Ben hike?", k=3)
    assert result.hits[0].memory.source == ("D1:2",)
    assert result.context.startswith('On 14 November 2023:\n- Ann said: "Did you go anywhere')


def test_budget_bounds_the_injected_text(store):
    handle = store.for_tenant("t1")
    add_facts(handle)
    result = handle.search("Alice", k=10, budget_tokens=20)
    assert 0 < result.context_tokens <= 20
    assert len(result.hits) < len(FACTS)


def test_update_and_delete(store):
    handle = store.for_tenant("t1")
    memory = handle.add("Dana likes jazz", user="u1")
    updated = handle.update(memory.id, content="Dana likes heavy metal", importance=0.9)
    assert handle.get(memory.id) == updated and updated.importance == 0.9
    assert handle.search("metal music", k=1).hits[0].memory.id == memory.id
    handle.delete(memory.id)
    with pytest.raises(MemoryNotFoundError, match=memory.id):
        handle.get(memory.id)
    assert handle.search("metal music", k=5).hits == ()


def test_large_collections_switch_to_hnsw(tmp_path, embedder):
    with MemoryStore.open(tmp_path / "s", embedder=embedder, hnsw_threshold=8) as store:
        handle = store.for_tenant("t1")
        added = [handle.add(f"Note {i}: item number {i} is {colour}", user="u1")
                 for i, colour in enumerate(["red", "green", "blue", "black", "white", "pink", "grey", "gold",
                                             "violet", "orange"])]
        assert handle.stats().vector_index == "hnsw"
        assert handle.search("violet", k=1).hits[0].memory.id == added[8].id


@pytest.mark.parametrize("call, field", [
    (lambda h: h.add("   ", user="u1"), "content"),
    (lambda h: h.add("x" * 20_000, user="u1"), "content"),
    (lambda h: h.add("ok", user=""), "user"),
    (lambda h: h.add("ok", user="u1", type="rumour"), "type"),
    (lambda h: h.add("ok", user="u1", importance=2), "importance"),
    (lambda h: h.add("ok", user="u1", tier="lukewarm"), "tier"),
    (lambda h: h.add("ok", user="u1", metadata=[1]), "metadata"),
    (lambda h: h.search("", k=1), "query"),
    (lambda h: h.search("q", k=0), "k"),
    (lambda h: h.search("q", types=["rumour"]), "type"),
    (lambda h: h.search("q", since=10, until=5), "since"),
    (lambda h: h.search("q", budget_tokens=-1), "budget_tokens"),
    (lambda h: h.add_messages([{"speaker": "A", "text": "", "time": 0}], user="u1"), "messages[0].text"),
    (lambda h: h.add_messages([{"speaker": "A", "text": "hi", "time": 0, "mood": "x"}], user="u1"), "messages[0]"),
])
def test_bad_input_names_the_field(store, call, field):
    with pytest.raises(InvalidMemoryError) as error:
        call(store.for_tenant("t1"))
    assert error.value.field == field
    assert isinstance(error.value, ValueError)


def test_bad_tenant_and_unknown_id(store):
    with pytest.raises(InvalidMemoryError, match="tenant"):
        store.for_tenant("a/b")
    with pytest.raises(KeyError):
        store.for_tenant("t1").get("nope")


def test_users_text_filter_and_recorded_accesses(store):
    handle = store.for_tenant("t1")
    add_facts(handle, user="u1")
    tea = handle.add("Carol prefers TEA over coffee", user="u2", type="preference")
    store.for_tenant("t2").add("Dave likes tea too", user="u9")
    assert [(u.user, u.count) for u in handle.users()] == [("u1", len(FACTS)), ("u2", 1)]
    assert handle.users()[1].by_tier == {"hot": 1}
    assert [m.id for m in handle.list(contains="tea")] == [tea.id]  # case-insensitive, this tenant only
    assert handle.list(contains="no such words") == []
    assert handle.get(tea.id).accesses == ()
    for _ in range(3):
        handle.search("what does Carol drink", user="u2", k=1)
    touched = handle.get(tea.id)
    assert len(touched.accesses) == touched.access_count == 3
    assert list(touched.accesses) == sorted(touched.accesses)


class RecordingEmbedder(Embedder):
    """The real embedder, keeping every text it was asked to embed."""

    def __init__(self, real: Embedder) -> None:
        self.__dict__.update(real.__dict__)
        self.real, self.asked = real, []

    def embed(self, texts, owner=""):
        self.asked.extend(texts)
        return self.real.embed(texts, owner)


def test_a_named_speaker_is_left_out_of_the_query_embedding(tmp_path, embedder):
    recording = RecordingEmbedder(embedder)
    with MemoryStore.open(tmp_path / "s", embedder=recording) as opened:
        handle = opened.for_tenant("t1")
        handle.add_messages([ChatMessage("Ann", "Hey Ben! Long time no talk.", 1_700_000_000.0, "s1", "D1:1"),
                             ChatMessage("Ben", "Hi Ann! I took up the cello last month.", 1_700_000_000.0, "s1",
                                         "D1:2")], user="u1")
        recording.asked.clear()
        result = handle.search("Which instrument does Ben play?", k=1)
    assert recording.asked == ["Which instrument does play?"]
    assert result.hits[0].memory.source == ("D1:2",)
