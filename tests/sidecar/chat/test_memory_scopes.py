"""Chat's `memory` options `agent_id`, `run_id`, `space_id` and `filter`: what a request retrieves and where its
turns go.
A real store (LMDB, FAISS, MiniLM); the engine is not needed to prepare a prompt or to write a conversation back."""

from __future__ import annotations

import pytest

from sidecar.chat.injection import MemoryChat, MemoryDefaults, MemoryOptions, conversation
from textual.embedder import Embedder
from textual.errors import InvalidMemoryError, SpaceAccessDenied, SpaceNotFoundError
from textual.store import MemoryStore

DEFAULTS = MemoryDefaults(inject=True, write=True, top_k=5, token_budget=500)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    opened = MemoryStore.open(tmp_path_factory.mktemp("chat-scopes") / "store", embedder=Embedder.open())
    yield opened
    opened.close()


def ask(question: str, **options) -> tuple[dict, MemoryOptions]:
    return {"messages": [{"role": "user", "content": question}], "user": "nia"}, MemoryOptions(**options)


def test_chat_retrieves_only_the_scope_and_filter_asked_for(store):
    memory = store.for_tenant("t")
    cooking = memory.add("Nia's favourite dessert is lemon tart", user="nia", agent="chef", run="dinner",
                         metadata={"course": "dessert"})
    memory.add("Nia's favourite dessert on trips is gelato", user="nia", agent="guide", metadata={"course": "dessert"})
    memory.add("Nia's favourite starter is bruschetta", user="nia", agent="chef", metadata={"course": "starter"})
    chat = MemoryChat(store, DEFAULTS)
    for options in ({"agent_id": "chef", "filter": {"metadata.course": "dessert"}}, {"run_id": "dinner"}):
        body, options = ask("What is my favourite dessert?", **options)
        _, injection = chat.prepare(conversation("t", body, options, DEFAULTS), body)
        assert injection.ids == (cooking.id,), options


def test_chat_writes_its_turns_into_the_agent_and_run(store):
    body, options = ask("Remember that I like figs", agent_id="chef", run_id="r7")
    episodes = MemoryChat(store, DEFAULTS).remember(conversation("t", body, options, DEFAULTS), "Noted: figs.")
    assert [(m.agent, m.run) for m in episodes] == [("chef", "r7"), ("chef", "r7")]


def test_a_bad_chat_filter_names_its_node():
    body, options = ask("hi", filter={"or": [{"metadata.course": {"gt": [1]}}]})
    with pytest.raises(InvalidMemoryError) as caught:
        conversation("t", body, options, DEFAULTS)
    assert caught.value.field == "memory.filter.or[0].metadata.course.gt"


def test_the_chat_request_carries_the_scope_options_and_checks_their_ids():
    from pydantic import ValidationError

    from sidecar.chat.requests import ChatCompletionRequest, engine_body
    messages = [{"role": "user", "content": "hi"}]
    request = ChatCompletionRequest.model_validate({"messages": messages, "memory": {
        "agent_id": "chef", "run_id": "r1", "filter": {"metadata.course": "dessert"}}})
    assert (request.memory.agent_id, request.memory.run_id) == ("chef", "r1")
    assert "memory" not in engine_body(request, "m")
    with pytest.raises(ValidationError, match="agent_id"):
        ChatCompletionRequest.model_validate({"messages": messages, "memory": {"agent_id": "no spaces"}})


def test_a_chat_writes_into_a_space_it_may_write_and_reads_it(store):
    memory = store.for_tenant("t")
    memory.create_space("family", members=[{"user_id": "nia", "write": True}, {"user_id": "ola"},
                                           {"agent_id": "planner", "write": True}])
    shared = memory.add("The family reunion is in Porto in August", agent="planner", space="family")
    chat = MemoryChat(store, DEFAULTS)
    body, options = ask("Where is the family reunion?", space_id="family")
    talk = conversation("t", body, options, DEFAULTS)
    _, injection = chat.prepare(talk, body)
    assert shared.id in injection.ids
    episodes = chat.remember(talk, "In Porto, in August.")
    assert [m.space for m in episodes] == ["family", "family"]
    assert {m.id for m in memory.list(user="ola", space="family", types=["episode"])} == {m.id for m in episodes}


@pytest.mark.parametrize("user, space, write, refusal", [
    ("ola", "family", True, SpaceAccessDenied),  # ola may only read
    ("zed", "family", False, SpaceAccessDenied),  # zed may not even read
    ("nia", "nowhere", True, SpaceNotFoundError),
])
def test_a_chat_naming_a_space_it_may_not_use_is_refused_before_the_engine(store, user, space, write, refusal):
    if not store.for_tenant("t2").list_spaces():
        store.for_tenant("t2").create_space("family", members=[{"user_id": "ola"}])
    body = {"messages": [{"role": "user", "content": "hi"}], "user": user}
    defaults = MemoryDefaults(inject=True, write=write, top_k=5, token_budget=500)
    with pytest.raises(refusal):
        MemoryChat(store, defaults).prepare(conversation("t2", body, MemoryOptions(space_id=space), defaults), body)
