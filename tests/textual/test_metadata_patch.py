"""Metadata PATCH semantics: RFC 7386 merge patch, provenance kept (pure, and through a real store)."""

from __future__ import annotations

import pytest

from textual.errors import InvalidMemoryError
from textual.metadata_patch import merge_patch, patched_metadata


@pytest.mark.parametrize("target,patch,result", [  # the examples of RFC 7386, appendix A
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_rfc_7386_examples(target, patch, result):
    assert merge_patch(target, patch) == result


def test_protected_keys_survive_any_patch():
    stored = {"history": [{"content": "old"}], "feedback": {"positive": 1}, "supersedes": "m0", "k": 1}
    patched = patched_metadata(stored, {"history": None, "feedback": {"positive": 9}, "supersedes": None,
                                        "superseded_by": "x", "k": None, "new": 2})
    assert patched == {"history": [{"content": "old"}], "feedback": {"positive": 1}, "supersedes": "m0", "new": 2}


def test_a_patch_must_be_an_object():
    with pytest.raises(InvalidMemoryError, match="metadata"):
        patched_metadata({}, ["not", "an", "object"])


def test_patch_through_the_store_keeps_provenance(store):
    handle = store.for_tenant("t1")
    memory = handle.add("Dana likes jazz", user="dana", metadata={"a": 1, "b": 2})
    handle.feedback(memory.id, "correction", "Dana likes blues")
    updated = handle.update(memory.id, metadata={"a": None, "c": 3, "history": None, "feedback": None})
    assert {k: updated.metadata[k] for k in ("b", "c")} == {"b": 2, "c": 3} and "a" not in updated.metadata
    assert updated.metadata["history"][0]["content"] == "Dana likes jazz"
    assert updated.metadata["feedback"] == {"correction": 1}
