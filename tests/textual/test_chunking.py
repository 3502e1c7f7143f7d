import pytest
from hypothesis import given
from hypothesis import strategies as st

from textual.chunking import chunk_text
from textual.tokens import TOKEN_PATTERN, count_tokens


def test_windows_share_the_overlap_and_keep_the_original_text():
    text = " ".join(f"w{i}" for i in range(25))
    chunks = chunk_text(text, max_tokens=10, overlap=4)
    assert [c.text.split()[0] for c in chunks] == ["w0", "w6", "w12", "w18"]
    assert [count_tokens(c.text) for c in chunks] == [10, 10, 10, 7]
    assert all(text[c.start:c.end] == c.text for c in chunks)


def test_short_and_empty_texts():
    assert [c.text for c in chunk_text("Hello, world!")] == ["Hello, world!"]
    assert chunk_text("   \n ") == []
    with pytest.raises(ValueError):
        chunk_text("x", max_tokens=5, overlap=5)


@given(st.text(max_size=400), st.integers(1, 30), st.integers(0, 29))
def test_chunks_cover_every_token_within_the_size(text, size, overlap):
    overlap = min(overlap, size - 1)
    chunks = chunk_text(text, size, overlap)
    covered = set()
    for chunk in chunks:
        assert count_tokens(chunk.text) <= size
        covered |= {chunk.start + m.start() for m in TOKEN_PATTERN.finditer(chunk.text)}
    assert covered == {m.start() for m in TOKEN_PATTERN.finditer(text)}
