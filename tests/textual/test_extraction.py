"""The extraction prompt, the answer's schema and the parser that checks an answer against the turns given."""

from __future__ import annotations

import json

import jsonschema
from hypothesis import given, settings
from hypothesis import strategies as st

from textual.extraction import (INSTRUCTION, MAX_CONTENT_CHARS, MAX_MEMORIES, MAX_TURNS, Extracted, SourceTurn,
                                answer_schema, parse_answer, prompt_messages, recent_turns)
from textual.memory import Memory, MemoryType

TURNS = [SourceTurn("t1", "alice", 1_714_557_600.0, "I moved to Berlin last month."),
         SourceTurn("t2", "assistant", 1_714_557_660.0, "How do you like it?\nTell me more."),
         SourceTurn("t3", "alice", 1_714_557_720.0, "I love it, but I prefer tea to the coffee here.")]


def answer(*items: dict) -> str:
    return json.dumps({"memories": list(items)})


def item(type: str = "fact", content: str = "Alice lives in Berlin", source: list | None = None) -> dict:
    return {"type": type, "content": content, "source": ["t1"] if source is None else source}


def test_the_prompt_is_the_instruction_then_the_numbered_turns_with_ids_dates_and_speakers():
    assert prompt_messages(TURNS) == [
        {"role": "system", "content": INSTRUCTION},
        {"role": "user", "content": "Conversation:\n"
                                    "1. [turn t1] 2024-05-01 10:00 UTC alice: I moved to Berlin last month.\n"
                                    "2. [turn t2] 2024-05-01 10:01 UTC assistant: How do you like it? Tell me more.\n"
                                    "3. [turn t3] 2024-05-01 10:02 UTC alice: I love it, but I prefer tea to the "
                                    "coffee here."},
    ]
    assert '{"memories": [{"type": "fact"' in INSTRUCTION


def test_long_turns_are_clipped_and_only_the_newest_turns_are_asked_about():
    long = SourceTurn("x", "bob", 0.0, "word " * 1000)
    line = prompt_messages([long])[1]["content"].splitlines()[1]
    assert len(line) < 1100 and line.endswith("…")
    many = [SourceTurn(f"t{i}", "bob", float(i), "hi") for i in range(MAX_TURNS + 5)]
    assert [t.turn_id for t in recent_turns(many)] == [f"t{i}" for i in range(5, MAX_TURNS + 5)]


def test_the_schema_bounds_the_answer_and_allows_only_the_given_turn_ids():
    schema = answer_schema(TURNS)
    memories = schema["properties"]["memories"]
    assert memories["maxItems"] == MAX_MEMORIES
    fields = memories["items"]["properties"]
    assert fields["type"]["enum"] == ["fact", "preference", "event"]
    assert fields["content"]["maxLength"] == MAX_CONTENT_CHARS
    assert fields["source"]["items"]["enum"] == ["t1", "t2", "t3"]
    jsonschema.validate(json.loads(answer(item(source=["t1", "t3"]))), schema)
    for bad in (item(source=["t9"]), item(type="episode"), item(content=""), item(content="x" * 201)):
        try:
            jsonschema.validate(json.loads(answer(bad)), schema)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"{bad} passed the schema")


def test_a_valid_answer_parses_in_order_with_sources_deduplicated():
    parsed = parse_answer(answer(item(source=["t1", "t1"]),
                                 item("preference", " Alice prefers tea to coffee ", ["t3"]),
                                 item("event", "Alice moved to Berlin in April 2024", ["t1", "t3"])), TURNS)
    assert parsed.dropped == 0
    assert parsed.memories == (Extracted(MemoryType.FACT, "Alice lives in Berlin", ("t1",)),
                               Extracted(MemoryType.PREFERENCE, "Alice prefers tea to coffee", ("t3",)),
                               Extracted(MemoryType.EVENT, "Alice moved to Berlin in April 2024", ("t1", "t3")))


def test_invalid_items_are_dropped_and_counted():
    bad = [item(type="episode"), item(type="FACT"), item(type=["fact"]), item(content="   "),
           item(content="x" * (MAX_CONTENT_CHARS + 1)), item(content=7), item(source=["t9"]),
           item(source=["t1", "t9"]), item(source=[]), item(source="t1"), item(source=[1]), "a string", None,
           {"type": "fact", "content": "no source"}]
    parsed = parse_answer(answer(item(), *bad), TURNS)
    assert [m.content for m in parsed.memories] == ["Alice lives in Berlin"]
    assert parsed.dropped == len(bad)


def test_repeats_and_items_past_the_limit_are_dropped():
    items = [item(content=f"Alice has {i} cats") for i in range(MAX_MEMORIES + 3)]
    parsed = parse_answer(answer(*items), TURNS)
    assert len(parsed.memories) == MAX_MEMORIES and parsed.dropped == 3
    parsed = parse_answer(answer(item(), item(), *items), TURNS)  # only the first MAX_MEMORIES items are read
    assert len(parsed.memories) == MAX_MEMORIES - 1 and parsed.dropped == 6
    assert parse_answer(answer(item(content="x" * MAX_CONTENT_CHARS)), TURNS).dropped == 0


def test_a_malformed_answer_counts_as_one_dropped():
    for text in ("", "not json", '{"memories": [', "[]", '{"memories": {}}', '{"facts": []}', "null", None, 42,
                 "[" * 100_000, '{"memories": [' + "9" * 5000 + "]}"):
        assert parse_answer(text, TURNS).memories == ()
        assert parse_answer(text, TURNS).dropped == 1, text


def test_an_empty_list_is_a_valid_answer_and_a_code_fence_is_tolerated():
    assert parse_answer('{"memories": []}', TURNS) == parse_answer("  {\"memories\": []}\n", TURNS)
    assert parse_answer('{"memories": []}', TURNS).dropped == 0
    fenced = "```json\n" + answer(item()) + "\n```"
    assert [m.content for m in parse_answer(fenced, TURNS).memories] == ["Alice lives in Berlin"]


def test_an_episode_gives_its_turn_id_or_else_its_own_id():
    episode = Memory(id="m1", tenant="t", user="u", type=MemoryType.EPISODE, content="hi", created_at=5.0,
                     updated_at=5.0, last_access_at=5.0, metadata={"speaker": "alice"}, source=("turn-7",))
    assert SourceTurn.of_episode(episode) == SourceTurn("turn-7", "alice", 5.0, "hi")
    anonymous = Memory(id="m2", tenant="t", user="u", type=MemoryType.EPISODE, content="yo", created_at=6.0,
                       updated_at=6.0, last_access_at=6.0)
    assert SourceTurn.of_episode(anonymous).turn_id == "m2"


def test_an_unprintable_time_still_gives_a_prompt():
    assert "(date unknown)" in prompt_messages([SourceTurn("t", "a", 1e300, "hi")])[1]["content"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)
near_items = st.fixed_dictionaries({
    "type": st.sampled_from(["fact", "preference", "event", "episode", ""]) | json_values,
    "content": st.text(max_size=MAX_CONTENT_CHARS + 20) | json_values,
    "source": st.lists(st.sampled_from(["t1", "t2", "t3", "t4", "", "T1"]) | json_values, max_size=4) | json_values,
})


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=300),
    json_values.map(json.dumps),
    st.lists(near_items | json_values, max_size=MAX_MEMORIES + 4).map(lambda xs: json.dumps({"memories": xs})),
))
def test_the_parser_never_raises_and_never_invents_a_source(text):
    parsed = parse_answer(text, TURNS)
    given_ids = {turn.turn_id for turn in TURNS}
    assert len(parsed.memories) <= MAX_MEMORIES and parsed.dropped >= 0
    for memory in parsed.memories:
        assert memory.source and set(memory.source) <= given_ids
        assert memory.type in (MemoryType.FACT, MemoryType.PREFERENCE, MemoryType.EVENT)
        assert memory.content == memory.content.strip() and 0 < len(memory.content) <= MAX_CONTENT_CHARS
