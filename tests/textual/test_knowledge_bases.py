"""Integration: knowledge bases and tool memory on real LMDB + FAISS + MiniLM."""

from __future__ import annotations

import pytest

from textual.errors import InvalidMemoryError, KnowledgeBaseNotFoundError
from textual.tokens import count_tokens

HANDBOOK = " ".join(f"Section {i}: employees may take {i + 20} days of paid leave after {i} years of service."
                    for i in range(40)) + " Expense claims must be filed within thirty days with receipts."
RECIPES = "To bake sourdough bread, feed the starter the night before and proof the dough for twelve hours."
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather forecast for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
EMAIL = {"name": "send_email", "description": "Send an email message to a recipient",
         "parameters": {"type": "object", "properties": {"to": {"type": "string"}, "body": {"type": "string"}}}}


def test_kb_create_list_add_search_and_delete(store):
    handle = store.for_tenant("t1")
    handle.create_kb("hr", name="HR handbook")
    handle.create_kb("kitchen")
    chunks = handle.add_document("hr", HANDBOOK, title="Handbook")
    handle.add_document("kitchen", RECIPES)
    handle.add("Expense claims are Bob's favourite topic", user="u1")
    assert [kb.id for kb in handle.list_kbs()] == ["hr", "kitchen"]
    assert len(chunks) > 3 and all(count_tokens(c.content) <= 200 for c in chunks)
    assert [c.metadata["chunk_index"] for c in chunks] == list(range(len(chunks)))
    assert {c.type.value for c in chunks} == {"document_chunk"} and {c.kb_id for c in chunks} == {"hr"}
    hits = handle.search("deadline for filing expense claims", k=3, kb_id="hr").hits
    assert hits[0].memory.id == chunks[-1].id and {h.memory.kb_id for h in hits} == {"hr"}
    both = handle.search("how long to proof dough", k=1, kb_id=["hr", "kitchen"]).hits
    assert both[0].memory.kb_id == "kitchen"
    assert handle.delete_kb("hr") == len(chunks)
    assert [kb.id for kb in handle.list_kbs()] == ["kitchen"]
    assert handle.search("expense claims", k=10, kb_id="hr").hits == ()
    assert handle.stats().count == 2
    assert store.for_tenant("t2").list_kbs() == []


@pytest.mark.parametrize("call, field", [
    (lambda h: h.create_kb("bad/id"), "kb_id"),
    (lambda h: h.create_kb("dup") and h.create_kb("dup"), "kb_id"),
    (lambda h: h.create_kb("k", name=""), "name"),
    (lambda h: h.create_kb("k", description=5), "description"),
    (lambda h: h.create_kb("k3") and h.add_document("k3", "  "), "text"),
    (lambda h: h.create_kb("k4") and h.add_document("k4", "text", title=""), "title"),
    (lambda h: h.create_kb("k5") and h.add_document("k5", "text", chunk_tokens=10, overlap_tokens=10),
     "chunk_tokens"),
    (lambda h: h.search("q", kb_id=[]), "kb_id"),
    (lambda h: h.register_tool({"name": "bad name", "parameters": {"type": "object"}}), "schema.function.name"),
    (lambda h: h.register_tool({"name": "f", "parameters": {}}), "schema.function.parameters"),
    (lambda h: h.record_trajectory("unknown", {}, "", True, 1.0), "tool_name"),
    (lambda h: h.register_tool(WEATHER) and h.record_trajectory("get_weather", [], "", True, 1.0), "arguments"),
    (lambda h: h.register_tool(WEATHER) and h.record_trajectory("get_weather", {}, "", "yes", 1.0), "success"),
    (lambda h: h.register_tool(WEATHER) and h.record_trajectory("get_weather", {}, "", True, -1), "latency_ms"),
    (lambda h: h.search_tools("weather", k=0), "k"),
])
def test_bad_input_names_the_field(store, call, field):
    with pytest.raises(InvalidMemoryError) as error:
        call(store.for_tenant("t1"))
    assert error.value.field == field


def test_unknown_kb_is_reported_by_id(store):
    handle = store.for_tenant("t1")
    handle.create_kb("mine")
    for call in (lambda: store.for_tenant("t2").add_document("mine", "text"),
                 lambda: store.for_tenant("t2").delete_kb("mine")):
        with pytest.raises(KnowledgeBaseNotFoundError, match="kb_id"):
            call()


def test_tools_register_record_and_search(store):
    handle = store.for_tenant("t1")
    weather = handle.register_tool(WEATHER)
    email = handle.register_tool(EMAIL)
    outcomes = [({"city": "Oslo"}, "4 C, rain", True), ({"city": "Lima"}, "timeout", False),
                ({"city": "Rome"}, "21 C, sunny", True)]
    trajectories = [handle.record_trajectory("get_weather", args, summary, ok, 120.0)
                    for args, summary, ok in outcomes]
    handle.record_trajectory("send_email", {"to": "a@b.c", "body": "hi"}, "sent", True, 40.0)
    assert trajectories[0].metadata["tool_id"] == weather.id and trajectories[0].source == (weather.id,)
    matches = handle.search_tools("is it going to rain in Oslo tomorrow?", k=2)
    assert [m.name for m in matches] == ["get_weather", "send_email"]
    top = matches[0]
    assert (top.successes, top.failures) == (2, 1) and top.schema == WEATHER
    assert [m.id for m in top.recent] == [t.id for t in reversed(trajectories)]
    assert handle.search_tools("write a message to my boss", k=1)[0].memory.id == email.id
    renamed = handle.register_tool({**EMAIL, "description": "Send an email"})
    assert renamed.id == email.id and handle.stats().by_type["tool_schema"] == 2
