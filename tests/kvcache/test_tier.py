"""Every tier implements the `BlockTier` protocol with the same method signatures, so the store can walk them."""

from __future__ import annotations

import inspect

import pytest

from kvcache.lmdb_tier import LmdbTier
from kvcache.ram_tier import RamTier
from kvcache.remote_tier import RemoteTier
from kvcache.tier import BlockTier

METHODS = ["contains", "read", "put_many", "evict", "keys", "usage"]


@pytest.mark.parametrize("implementation", [RamTier, LmdbTier, RemoteTier])
@pytest.mark.parametrize("method", METHODS)
def test_tiers_match_the_protocol(implementation, method):
    expected = list(inspect.signature(getattr(BlockTier, method)).parameters)
    assert list(inspect.signature(getattr(implementation, method)).parameters) == expected


def test_tier_names_are_distinct_stats_keys():
    assert [t.name for t in (RamTier, LmdbTier, RemoteTier)] == ["ram", "disk", "remote"]
