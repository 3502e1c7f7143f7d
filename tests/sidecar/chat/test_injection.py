"""Where memories go in a chat prompt, what the query is, and the final streamed chunk: pure functions."""

from __future__ import annotations

import asyncio
import json

from sidecar.chat.injection import (BLOCK_FOOTER, MAX_CAPTION_CHARS, MAX_IMAGES_PER_TURN, MEMORY_HEADER, inject_block,
                                    memory_block, message_text, retrieval_query, shared_images)
from sidecar.chat.service import cache_salt
from sidecar.chat.sse import with_memory_chunk


def test_the_block_goes_after_the_callers_system_prompts():
    messages = [{"role": "system", "content": "S"}, {"role": "developer", "content": "D"},
                {"role": "user", "content": "U"}]
    injected = inject_block(messages, "MEM")
    assert [m["content"] for m in injected] == ["S", "D", "MEM", "U"]
    assert inject_block([{"role": "user", "content": "U"}], "MEM")[0] == {"role": "system", "content": "MEM"}


def test_the_query_is_the_latest_user_turn_with_a_short_window():
    messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "reply one"},
                {"role": "user", "content": "second"}, {"role": "assistant", "content": "reply two"},
                {"role": "user", "content": [{"type": "text", "text": "third"}, {"type": "image_url"}]}]
    assert retrieval_query(tuple(messages)) == "second\nreply two\nthird"
    assert retrieval_query(({"role": "system", "content": "only system"},)) is None
    assert message_text({"role": "assistant", "content": None}) == ""


def test_tenants_get_their_own_kv_scope_unless_shared():
    body = {"messages": [], "cache_salt": "mine"}  # refused at the HTTP edge; never the client's to choose
    assert cache_salt(body, "acme", "tenant")["cache_salt"] == "tenant:acme"
    assert cache_salt({"messages": []}, "acme", "tenant")["cache_salt"] == "tenant:acme"
    assert cache_salt(body, "acme", "shared") == {"messages": []}


def test_the_stream_gets_a_memory_chunk_before_done_and_the_reply_is_collected():
    events = [{"id": "c1", "created": 5, "model": "m", "choices": [{"index": 0, "delta": {"content": "Hel"}}]},
              {"id": "c1", "created": 5, "model": "m", "choices": [{"index": 0, "delta": {"content": "lo"}}]}]
    raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"

    async def chunks():
        for i in range(0, len(raw), 7):  # event boundaries fall inside chunks
            yield raw[i:i + 7]

    replies = []

    async def collect():
        return b"".join([chunk async for chunk in with_memory_chunk(chunks(), {"ids": ["a"], "tokens": 3},
                                                                      replies.append)])

    out = asyncio.run(collect()).split(b"\n\n")
    final = json.loads(out[-3][len(b"data: "):])
    assert final["choices"] == [] and final["memory"] == {"ids": ["a"], "tokens": 3} and final["id"] == "c1"
    assert out[-2] == b"data: [DONE]"
    assert replies == ["Hello"]


def test_a_stream_that_breaks_off_records_nothing():
    async def chunks():
        yield b'data: {"choices": [{"index": 0, "delta": {"content": "x"}}]}\n\n'

    replies = []

    async def collect():
        return [chunk async for chunk in with_memory_chunk(chunks(), {}, replies.append)]

    asyncio.run(collect())
    assert replies == []


def test_the_engine_gate_refuses_past_its_limit_with_retry_after():
    import pytest

    from sidecar.chat.errors import ChatError, ChatFailure
    from sidecar.chat.gate import EngineGate
    from sidecar.http.errors import as_api_error

    gate = EngineGate(2)
    gate.enter()
    gate.enter()
    with pytest.raises(ChatError) as caught:
        gate.enter()
    assert caught.value.failure is ChatFailure.ENGINE_BUSY
    answer = as_api_error(caught.value)  # what the HTTP edge makes of it
    assert answer.status == 503 and answer.headers["Retry-After"] == "1"
    gate.leave()
    gate.enter()  # room again


def test_the_block_ends_with_the_instruction_to_use_the_notes():
    block = memory_block([("Passages:", "- a"), (MEMORY_HEADER, '- Ann said: "b"')])
    assert block == f'Passages:\n- a\n\n{MEMORY_HEADER}\n- Ann said: "b"\n{BLOCK_FOOTER}'


PNG = "data:image/png;base64,iVBORw0KGgo="


def test_each_image_is_captioned_by_the_text_around_it():
    message = {"role": "user", "content": [
        {"type": "text", "text": "My dog Biscuit on the beach"}, {"type": "image_url", "image_url": {"url": PNG}},
        {"type": "image_url", "image_url": {"url": PNG + "A"}}, {"type": "text", "text": "and my cat  Mochi"}]}
    assert shared_images(message) == [("My dog Biscuit on the beach", PNG), ("and my cat Mochi", PNG + "A")]
    assert shared_images(message, "holiday photos") == [("holiday photos", PNG), ("holiday photos", PNG + "A")]


def test_an_image_without_nearby_text_takes_the_messages_text_and_one_without_any_is_left_out():
    lone = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": PNG}}]}
    assert shared_images(lone) == []
    assert shared_images({"role": "user", "content": "no parts"}) == []
    many = {"role": "user", "content": [{"type": "text", "text": "x" * 5000}]
            + [{"type": "image_url", "image_url": {"url": PNG}}] * 20}
    found = shared_images(many)
    assert len(found) == MAX_IMAGES_PER_TURN and found[1] == ("x" * MAX_CAPTION_CHARS, PNG)
