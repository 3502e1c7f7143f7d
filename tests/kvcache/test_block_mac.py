"""The shared tier's sealed-block format: pinned bytes, and every block not sealed by us under this key refused."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvcache.block_mac import SEALED_OVERHEAD, BlockMac, UnsealedBlock

SECRET = b"0123456789abcdef0123456789abcdef"
KEY = bytes(range(48))
BLOCK = b"MSKV-and-the-rest-of-an-encoded-block"


def test_golden_bytes():
    sealed = BlockMac(SECRET).seal(KEY, BLOCK)
    assert len(sealed) == SEALED_OVERHEAD + len(BLOCK) == 40 + len(BLOCK)
    assert sealed[:8].hex() == "4d534b4101010000"  # b"MSKA", version 1, HMAC-SHA256, reserved
    assert sealed[8:40].hex() == "4ada5371da16eb5b9954b182e9c0acca857414f08d3cc14e2328d96d6e66c986"
    assert sealed[40:] == BLOCK


def test_the_tag_is_hmac_sha256_of_header_key_and_block():
    """The format stated in the module docstring, computed independently of `BlockMac`."""
    sealed = BlockMac(SECRET).seal(KEY, BLOCK)
    expected = hmac.new(SECRET, sealed[:8] + KEY + BLOCK, hashlib.sha256).digest()
    assert sealed[8:40] == expected


def test_a_sealed_block_opens_to_its_bytes_without_a_copy():
    sealed = BlockMac(SECRET).seal(KEY, memoryview(BLOCK))
    opened = BlockMac(SECRET).open(KEY, sealed)
    assert isinstance(opened, memoryview) and opened == BLOCK and opened.obj is sealed


def test_an_empty_block_round_trips():
    assert BlockMac(SECRET).open(KEY, BlockMac(SECRET).seal(KEY, b"")) == b""


def another_key() -> bytes:
    return bytes([KEY[0] ^ 1]) + KEY[1:]  # another namespace (tenant), same chain hash


@pytest.mark.parametrize(("name", "forge"), [
    ("unsealed", lambda: BLOCK),  # written by a client without the MAC at all
    ("another secret", lambda: BlockMac(b"not-the-nodes-secret-at-all!").seal(KEY, BLOCK)),
    ("copied from another key", lambda: BlockMac(SECRET).seal(another_key(), BLOCK)),
    ("block bytes changed", lambda: BlockMac(SECRET).seal(KEY, BLOCK)[:-1] + b"!"),
    ("tag bit flipped", lambda: _flip(BlockMac(SECRET).seal(KEY, BLOCK), 20)),
    ("header changed", lambda: _flip(BlockMac(SECRET).seal(KEY, BLOCK), 4)),
    ("truncated header", lambda: BlockMac(SECRET).seal(KEY, BLOCK)[:39]),
    ("empty", lambda: b""),
])
def test_blocks_we_did_not_seal_for_this_key_are_refused(name, forge):
    with pytest.raises(UnsealedBlock):
        BlockMac(SECRET).open(KEY, forge())


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1:]


@given(st.binary(min_size=48, max_size=48), st.binary(min_size=48, max_size=48), st.binary(max_size=256))
def test_a_block_sealed_under_one_key_never_opens_under_another(first, second, block):
    mac = BlockMac(SECRET)
    sealed = mac.seal(first, block)
    assert mac.open(first, sealed) == block
    if second != first:
        with pytest.raises(UnsealedBlock):
            mac.open(second, sealed)


def test_a_short_secret_or_a_key_of_the_wrong_length_is_refused():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        BlockMac(b"short")
    with pytest.raises(ValueError, match="48 bytes"):
        BlockMac(SECRET).seal(KEY[:47], BLOCK)


def test_the_secret_is_not_in_the_repr():
    assert "0123" not in repr(BlockMac(SECRET)) and "hidden" in repr(BlockMac(SECRET))
