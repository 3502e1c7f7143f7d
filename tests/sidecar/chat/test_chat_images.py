"""Images shared in a chat become image memories: a chat request parsed as the sidecar parses it, written back by
`MemoryChat.remember` into a real store (LMDB, FAISS, MiniLM), then found by caption and injected into a later chat.

In process rather than served: the tiny served test model is text-only, and the engine refuses image parts (400)
before memory is involved; with a multimodal model the chat route calls exactly this write-back after the reply."""

from __future__ import annotations

import base64

import pytest

from sidecar.chat.injection import MemoryChat, MemoryDefaults, conversation
from sidecar.chat.requests import ChatCompletionRequest, engine_body
from tests.textual.conftest import store  # noqa: F401 (fixture: a store in tmp_path, with the real MiniLM embedder)

IMAGE = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n a photo of a dog").decode()
DEFAULTS = MemoryDefaults(inject=True, write=True, top_k=8, token_budget=1000)
CAPTION = "Here is my corgi Biscuit digging on the beach in Brittany"


@pytest.fixture
def chats(store):
    return MemoryChat(store, DEFAULTS)


def chat_of(tenant: str, content, **memory):
    request = ChatCompletionRequest(model="m", user="ana", messages=[{"role": "user", "content": content}],
                                    **({"memory": memory} if memory else {}))
    body = engine_body(request, "m")
    return conversation(tenant, body, request.memory, DEFAULTS), body


def test_an_image_in_a_chat_becomes_a_memory_found_by_its_caption(chats):
    chat, _ = chat_of("tenant-a", [{"type": "text", "text": CAPTION},
                                   {"type": "image_url", "image_url": {"url": IMAGE}}])
    chats.remember(chat, "What a happy dog!")
    mine = chats.store.for_tenant("tenant-a")
    found = mine.search("a picture of my dog at the seaside", user="ana", types=["image"]).hits
    assert [(hit.memory.content, hit.memory.metadata["image_url"]) for hit in found] == [(CAPTION, IMAGE)]
    assert [m.content for m in mine.list(user="ana", types=["episode"])] == [CAPTION, "What a happy dog!"]
    assert chats.store.for_tenant("tenant-b").search("a picture of my dog at the seaside").hits == ()
    later, body = chat_of("tenant-a", "Do you remember the photo of my dog?", types=["image"])
    _, injection = chats.prepare(later, body)
    assert found[0].memory.id in injection.ids


def test_the_requests_caption_names_the_image_and_a_refused_url_is_not_stored(chats):
    chat, _ = chat_of("tenant-a", [{"type": "image_url", "image_url": {"url": IMAGE}}],
                      image_caption="Biscuit the corgi asleep on the sofa")
    chats.remember(chat, None)
    broken = "data:image/png;base64,@@@"
    chat, _ = chat_of("tenant-a", [{"type": "text", "text": "my cat"},
                                   {"type": "image_url", "image_url": {"url": broken}}])
    chats.remember(chat, None)
    images = chats.store.for_tenant("tenant-a").list(user="ana", types=["image"])
    assert [(m.content, m.metadata["image_url"]) for m in images] == [("Biscuit the corgi asleep on the sofa", IMAGE)]
