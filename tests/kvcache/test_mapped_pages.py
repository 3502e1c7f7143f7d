"""Mapping a store's page-cached pages ahead of use: on a real LMDB file, read back through /proc/self/smaps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kvcache.lmdb_tier import LmdbTier
from kvcache.mapped_pages import PAGE, file_mappings, resident_runs

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mincore / MADV_POPULATE_READ")


def test_resident_runs_are_the_runs_of_set_low_bits():
    assert list(resident_runs(bytes([1, 1, 0, 3, 0, 0, 1]), 0)) == [(0, 2 * PAGE), (3 * PAGE, PAGE), (6 * PAGE, PAGE)]
    assert list(resident_runs(bytes([0, 2, 0]), PAGE)) == []  # bit 1 is not residency
    assert list(resident_runs(bytes([1] * 4), PAGE)) == [(PAGE, 4 * PAGE)]


def mapped_rss(path: Path) -> int:
    """Resident bytes of this process's mappings of `path` (smaps `Rss:` of each)."""
    starts = {address for address, _ in file_mappings(path)}
    rss, current = 0, None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            current = int(head.split("-")[0], 16)
        elif head == "Rss:" and current in starts:
            rss += int(line.split()[1]) * 1024
    return rss


@linux_only
def test_a_reopened_store_maps_its_cached_pages_before_any_read(tmp_path):
    blocks = {bytes([i]) * 48: bytes([i]) * 300_000 for i in range(8)}
    tier = LmdbTier.open(tmp_path, 64 << 20)
    tier.put_many(list(blocks.items()))
    tier.close()

    tier = LmdbTier.open(tmp_path, 64 << 20)  # a fresh mapping: the file is in the page cache, none of it mapped
    data = tmp_path / "data.mdb"
    assert len(file_mappings(data)) == 1
    stored = sum(len(v) for v in blocks.values())
    assert mapped_rss(data) < stored / 4, "opening maps the tree's pages, not the blocks"
    assert tier.map_cached_pages(should_stop=lambda: True) == 0
    assert tier.map_cached_pages() >= stored
    assert mapped_rss(data) >= stored, "the blocks' pages are now mapped"
    assert all(tier.read(key, bytes) == value for key, value in blocks.items())
    tier.close()
