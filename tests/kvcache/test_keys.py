"""Block keys: pinned bytes, chaining, and no collisions across namespaces."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcache.keys import (KEY_BYTES, Namespace, block_keys, chain_key, key_namespace, namespace_id, namespace_root,
                          scope_tenant, tenant_scope)

NS = Namespace(model_fingerprint="f" * 32, engine_variant="lora=False;quant=none", kv_dtype="bfloat16",
               kv_layout="LBHNC", block_size=4)


def test_golden_bytes():
    assert namespace_id(NS).hex() == "9240b64aba50c8fa032bf87ad647c447"
    keys = block_keys(NS, list(range(10)))
    assert [k.hex() for k in keys] == [
        "9240b64aba50c8fa032bf87ad647c447111d1ab52cb7b1a740c5ece652cba65d5968d56ad71797a7235d01faee8c4f33",
        "9240b64aba50c8fa032bf87ad647c447cbbf82f9dc5b63c5d3eed1c8c29ff7416dec5384b5473dd7e2b88da934b30de4",
    ]


def test_keys_chain_and_carry_their_namespace():
    keys = block_keys(NS, list(range(12)))
    assert len(keys) == 3 and all(len(k) == KEY_BYTES for k in keys)
    assert keys[0] == chain_key(namespace_root(NS), [0, 1, 2, 3])
    assert keys[2] == chain_key(keys[1], [8, 9, 10, 11])
    assert {key_namespace(k) for k in keys} == {namespace_id(NS)}


def test_a_changed_token_changes_that_block_and_every_later_one():
    a = block_keys(NS, list(range(12)))
    b = block_keys(NS, [0, 1, 2, 3, 4, 5, 99, 7, 8, 9, 10, 11])
    assert a[0] == b[0] and a[1] != b[1] and a[2] != b[2]


def test_token_ids_out_of_range_are_refused():
    with pytest.raises(ValueError):
        chain_key(namespace_root(NS), [-1, 2, 3, 4])


def test_block_size_may_be_passed_but_must_match_the_namespace():
    assert block_keys(NS, list(range(8)), 4) == block_keys(NS, list(range(8)))
    with pytest.raises(ValueError, match="block_size 8 differs"):
        block_keys(NS, list(range(8)), 8)


@pytest.mark.parametrize("field, value, message", [
    ("adapter", "lora-a@/models/lora-a", "adapter must be 'none' or 'name@<64 hex sha256>'"),
    ("adapter", "@" + "a" * 64, "adapter must be"),
    ("block_size", 0, "block_size must be positive"),
    ("tp_rank", 2, "tp_rank must be in"),
    ("scope", "", "scope must not be empty"),
])
def test_invalid_namespaces_are_refused_naming_the_field(field, value, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        dataclasses.replace(NS, **{field: value})


tokens = st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=40)
hex64 = st.text("0123456789abcdef", min_size=64, max_size=64)
names = st.text(st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters="@"), min_size=1, max_size=8)


@st.composite
def namespaces(draw) -> Namespace:
    tp_size = draw(st.integers(1, 4))
    adapter = draw(st.one_of(st.just("none"), st.builds(lambda n, h: f"{n}@{h}", names, hex64)))
    return Namespace(model_fingerprint=draw(st.sampled_from(["f" * 32, "e" * 32])),
                     engine_variant=draw(st.sampled_from(["lora=False;quant=none", "lora=True;quant=none"])),
                     kv_dtype=draw(st.sampled_from(["bfloat16", "float16", "float8_e4m3fn"])),
                     kv_layout=draw(st.sampled_from(["NHD", "HND"])), block_size=draw(st.sampled_from([4, 16])),
                     tp_rank=draw(st.integers(0, tp_size - 1)), tp_size=tp_size, adapter=adapter,
                     scope=draw(st.sampled_from(["public", "tenant-a", "tenant-b"])))


@given(tokens, tokens)
def test_keys_of_a_prefix_are_a_prefix_of_the_keys(prefix, rest):
    assert block_keys(NS, prefix + rest)[: len(prefix) // 4] == block_keys(NS, prefix)


@given(namespaces(), namespaces(), st.lists(st.integers(0, 2**32 - 1), min_size=16, max_size=48))
def test_namespaces_differing_in_any_field_never_share_a_key(a, b, token_ids):
    keys_a, keys_b = block_keys(a, token_ids), block_keys(b, token_ids)
    if a == b:
        assert keys_a == keys_b
    else:
        assert namespace_id(a) != namespace_id(b)
        assert not set(keys_a) & set(keys_b)


@given(namespaces(), st.data())
def test_changing_any_single_field_changes_the_namespace_id(ns, data):
    field = data.draw(st.sampled_from([f.name for f in dataclasses.fields(Namespace)]))
    other = data.draw(namespaces().filter(lambda o: getattr(o, field) != getattr(ns, field)))
    changed = dataclasses.replace(ns, **{field: getattr(other, field)}) if field not in ("tp_rank", "tp_size") \
        else dataclasses.replace(ns, tp_rank=other.tp_rank, tp_size=other.tp_size)
    assert namespace_id(changed) != namespace_id(ns)


@given(st.text(min_size=1, max_size=40))
def test_a_tenants_scope_names_it_and_the_public_scope_names_nobody(tenant):
    assert tenant_scope(tenant) == f"tenant:{tenant}" and scope_tenant(tenant_scope(tenant)) == tenant
    assert scope_tenant(NS.scope) is None and scope_tenant("public") is None
