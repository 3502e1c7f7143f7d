import numpy as np
import pytest

from textual.memory import KnowledgeBase, LifecycleTier, Memory, MemoryType
from textual.record import (decode_kb, decode_key, decode_memory, decode_vector, encode_kb, encode_key, encode_memory,
                            encode_vector)

MEMORY = Memory(id="m1", tenant="t1", user="u1", type=MemoryType.EPISODE, content="Hi é", created_at=1.0,
                updated_at=2.0, last_access_at=1.5, kb_id=None, metadata={"speaker": "A"}, source=("D1:1",),
                access_count=3, importance=0.5, strength=1.0, tier=LifecycleTier.WARM)
GOLDEN = ('{"access_count":3,"content":"Hi é","created_at":1.0,"id":"m1","importance":0.5,"kb_id":null,'
          '"last_access_at":1.5,"metadata":{"speaker":"A"},"source":["D1:1"],"strength":1.0,"tenant":"t1",'
          '"tier":"warm","type":"episode","updated_at":2.0,"user":"u1","v":1}').encode()


def test_memory_record_bytes_are_pinned():
    assert encode_memory(MEMORY) == GOLDEN
    assert decode_memory(GOLDEN) == MEMORY


def test_unknown_record_version_is_refused():
    with pytest.raises(ValueError, match="format version"):
        decode_memory(GOLDEN.replace(b'"v":1', b'"v":2'))


def test_vector_bytes_are_little_endian_float32():
    assert encode_vector(np.array([1.0, -2.0])) == b"\x00\x00\x80\x3f\x00\x00\x00\xc0"
    assert decode_vector(b"\x00\x00\x80\x3f").tolist() == [1.0]


def test_keys_put_each_tenant_in_its_own_prefix():
    assert encode_key("t1", "m1") == b"t1\x00m1"
    assert decode_key(b"t1\x00m1") == ("t1", "m1")
    assert not encode_key("t10", "m").startswith(encode_key("t1"))


def test_knowledge_base_record_bytes_are_pinned():
    kb = KnowledgeBase(id="kb1", tenant="t1", name="Docs", created_at=2.0, description="d", metadata={"a": 1})
    golden = b'{"created_at":2.0,"description":"d","id":"kb1","metadata":{"a":1},"name":"Docs","tenant":"t1","v":1}'
    assert encode_kb(kb) == golden
    assert decode_kb(golden) == kb


def test_recent_accesses_round_trip_and_records_without_them_read_unchanged():
    import dataclasses
    accessed = dataclasses.replace(MEMORY, accesses=(1.25, 1.5))
    data = encode_memory(accessed)
    assert b'"accesses":[1.25,1.5]' in data
    assert decode_memory(data) == accessed
    assert decode_memory(GOLDEN).accesses == ()  # the golden record (no accesses) stays byte-identical


def test_scopes_are_written_only_when_set_and_their_bytes_are_pinned():
    import dataclasses
    scoped = dataclasses.replace(MEMORY, agent="planner", run="r1", space="family")
    data = encode_memory(scoped)
    assert data == GOLDEN.replace(b'"access_count":3,', b'"access_count":3,"agent":"planner",').replace(
        b'"metadata":{"speaker":"A"},', b'"metadata":{"speaker":"A"},"run":"r1",').replace(
        b'"source":["D1:1"],', b'"source":["D1:1"],"space":"family",')
    assert decode_memory(data) == scoped
    assert encode_memory(dataclasses.replace(MEMORY, agent=None, run=None, space=None)) == GOLDEN
    assert (decode_memory(GOLDEN).agent, decode_memory(GOLDEN).run, decode_memory(GOLDEN).space) == (None, None, None)


def test_space_record_bytes_are_pinned():
    from textual.memory import Space
    from textual.record import decode_space, encode_space
    space = Space(id="family", tenant="t1", name="Family", created_at=3.0,
                  members={"user:alice": "write", "agent:bot": "read"})
    golden = (b'{"created_at":3.0,"id":"family","members":{"agent:bot":"read","user:alice":"write"},'
              b'"name":"Family","tenant":"t1","v":1}')
    assert encode_space(space) == golden
    assert decode_space(golden) == space
