"""Block keys: pinned bytes, chaining, and no collisions across namespaces."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcache.keys import KEY_BYTES, Namespace, block_keys, chain_key, key_namespace, namespace_id, namespace_root

NS = Namespace(model_fingerprint="f" * 32, kv_dtype="bfloat16", kv_layout="LBHNC", block_size=4)


def test_golden_bytes():
    assert namespace_id(NS).hex() == "5df2dd6cc86854a0d487e2c4e9f36560"
    keys = block_keys(NS, list(range(10)))
    assert [k.hex() for k in keys] == [
        "5df2dd6cc86854a0d487e2c4e9f365603567fe314c23b6915dbd86392dd5168708f276a622bbef0d9fd8e580a5fa8259",
        "5df2dd6cc86854a0d487e2c4e9f36560ffe761d12053112f1551b68d1067aa95a9529a405b510f953e3efcab0c2f71a9",
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


tokens = st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=40)
fields = st.sampled_from([f.name for f in dataclasses.fields(Namespace)])


@given(tokens, tokens)
def test_keys_of_a_prefix_are_a_prefix_of_the_keys(prefix, rest):
    assert block_keys(NS, prefix + rest)[: len(prefix) // 4] == block_keys(NS, prefix)


@given(st.lists(st.integers(0, 2**32 - 1), min_size=4, max_size=20), fields, st.text(min_size=1, max_size=8))
def test_namespaces_differing_in_any_field_never_share_a_key(token_ids, field, suffix):
    value = getattr(NS, field)
    other = dataclasses.replace(NS, **{field: value + 1 if isinstance(value, int) else value + suffix})
    assert not set(block_keys(NS, token_ids)) & set(block_keys(other, token_ids))
