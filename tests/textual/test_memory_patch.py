"""Updates of a memory's expiry and scopes: the planner (pure) and on a real store (LMDB, FAISS, MiniLM), with the
versions they record and agents' own memories that name no user."""

from __future__ import annotations

import pytest

from textual.errors import InvalidMemoryError, SpaceAccessDenied
from textual.memory import Memory, MemoryType
from textual.memory_patch import KEEP, expiry_change, scope_change
from textual.messages import ChatMessage

OLD = Memory(id="m", tenant="t", user="u", type=MemoryType.FACT, content="x", created_at=0.0, updated_at=0.0,
             last_access_at=0.0, agent="bot", expires_at=50.0)


def test_expiry_is_kept_set_or_cleared():
    assert expiry_change(10.0, None, KEEP) == {}
    assert expiry_change(10.0, None, None) == {"expires_at": None}
    assert expiry_change(10.0, 5.0, KEEP) == {"expires_at": 15.0}
    assert expiry_change(10.0, None, 20) == {"expires_at": 20.0}


@pytest.mark.parametrize("ttl_s, expires_at", [(5.0, None), (None, 10.0), (None, 3.0), (None, "soon"), (None, True)])
def test_a_bad_expiry_is_refused_naming_the_field(ttl_s, expires_at):
    with pytest.raises(InvalidMemoryError) as refused:
        expiry_change(10.0, ttl_s, expires_at)
    assert refused.value.field == "expires_at"


def test_scopes_change_only_where_given_and_a_memory_keeps_an_owner():
    assert scope_change(OLD, {"user": KEEP, "agent": KEEP, "run": KEEP, "space": KEEP}) == {}
    assert scope_change(OLD, {"user": None, "run": "r1"}) == {"user": None, "run": "r1"}
    assert scope_change(OLD, {"user": "u"}) == {}
    with pytest.raises(InvalidMemoryError) as ownerless:
        scope_change(OLD, {"user": None, "agent": None})
    assert ownerless.value.field == "user_id"
    with pytest.raises(InvalidMemoryError) as bad:
        scope_change(OLD, {"run": "no spaces allowed"})
    assert bad.value.field == "run_id"


def test_clearing_an_expiry_keeps_the_memory_and_is_a_version(store):
    handle = store.for_tenant("t1")
    memory = handle.add("The door code this week is 4417", user="u", ttl_s=60)
    cleared = handle.update(memory.id, expires_at=None)
    assert cleared.expires_at is None and handle.get(memory.id).expires_at is None
    last = handle.history(memory.id)[-1]
    assert last.why.value == "update" and last.changed == ("expires_at",)
    assert last.before == {"expires_at": memory.expires_at}
    store.clock = lambda: memory.expires_at + 1  # past the old expiry: the memory is still there
    assert handle.get(memory.id).content == memory.content


def test_an_agents_own_memory_needs_no_user_and_is_found_by_agent_only(store):
    handle = store.for_tenant("t1")
    note = handle.add("The deploy script must run with --dry-run first", agent="ops-bot", run="r7")
    assert note.user is None and note.agent == "ops-bot"
    assert [m.id for m in handle.list(agent="ops-bot")] == [note.id]
    assert handle.list(user="anyone") == []
    assert note.id in [hit.memory.id for hit in handle.search("deploy script", agent="ops-bot").hits]
    assert handle.users() == []
    with pytest.raises(InvalidMemoryError) as ownerless:
        handle.add("nobody's memory")
    assert ownerless.value.field == "user_id"


def test_scopes_move_by_update_as_add_checks_them_and_are_versions(store):
    handle = store.for_tenant("t1")
    handle.create_space("team", members=[{"agent_id": "bot", "write": True}, {"user_id": "reader"}])
    memory = handle.add("Quarterly numbers are due on the fifth", user="writer", agent="bot")
    moved = handle.update(memory.id, space="team", run="q3", user=None)
    assert (moved.user, moved.agent, moved.run, moved.space) == (None, "bot", "q3", "team")
    assert handle.history(memory.id)[-1].before == {"user": "writer", "run": None, "space": None}
    assert memory.id in [m.id for m in handle.list(user="reader")]  # a reader of the space sees it now
    other = handle.add("Reader notes the printer is jammed", user="reader")
    with pytest.raises(SpaceAccessDenied):
        handle.update(other.id, space="team")  # reader holds no write grant
    with pytest.raises(InvalidMemoryError):
        handle.update(memory.id, agent=None)  # would leave no user and no agent
    assert handle.get(memory.id).agent == "bot"


def test_an_agents_own_conversation_needs_no_user_and_its_sessions_are_the_agents(store):
    handle = store.for_tenant("t1")
    first = handle.add_messages([ChatMessage("ops-bot", "Rolled back the canary at noon", 1.7e9, "s1", "t1"),
                                 ChatMessage("pager", "Alert cleared", 1.7e9 + 5, "s1", "t2")], agent="ops-bot")
    other = handle.add_messages([ChatMessage("qa-bot", "Smoke tests passed", 1.7e9, "s1", "t1")], agent="qa-bot")
    later = handle.add_messages([ChatMessage("ops-bot", "Canary redeployed", 1.7e9 + 60, "s1", "t3")], agent="ops-bot")
    assert all(memory.user is None for memory in first + other + later)
    # each agent's session "s1" is its own: positions count per agent, not across agents with no user
    assert [m.metadata["position"] for m in first + later] == [0, 1, 2]
    assert other[0].metadata["position"] == 0
    assert {m.id for m in handle.list(agent="qa-bot")} == {other[0].id}
    with pytest.raises(InvalidMemoryError) as ownerless:
        handle.add_messages([ChatMessage("x", "nobody's turn", 1.7e9, "s1", "t9")])
    assert ownerless.value.field == "user_id"
