"""Query expansion by pseudo-relevance feedback: which words and which direction the feedback adds."""

from __future__ import annotations

import numpy as np
import pytest

from textual.expansion import feedback_terms, hop_terms, rocchio
from textual.vector_index import VectorIndex

FREQUENCY = {"race": 2, "charity": 2, "mental": 3, "health": 3, "run": 90, "5k": 1}


def test_feedback_terms_prefer_frequent_in_feedback_and_rare_in_the_index():
    documents = [["charity", "race", "mental", "health", "run"], ["race", "5k", "run", "run"]]
    terms = feedback_terms(documents, {"race"}, FREQUENCY.get, 100, count=3)
    assert "race" not in terms  # already in the query
    assert terms[0] == "5k"  # rare in the index, a quarter of a feedback document
    assert "run" not in terms  # common everywhere: a low idf outweighs being in both documents


def test_feedback_terms_are_deterministic_and_bounded():
    documents = [["a", "b", "c", "d"]]
    assert feedback_terms(documents, set(), lambda term: 1, 10, count=2) == ["a", "b"]  # ties by term
    assert feedback_terms(documents, set(), lambda term: 1, 10, count=0) == []
    assert feedback_terms([[]], set(), lambda term: 1, 10, count=5) == []


def test_rocchio_moves_the_query_toward_the_feedback_and_keeps_unit_length():
    query = np.array([1.0, 0.0, 0.0], np.float32)
    feedback = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    moved = rocchio(query, feedback, beta=1.0)
    assert np.linalg.norm(moved) == pytest.approx(1.0)
    assert moved[1] == pytest.approx(moved[2]) and 0 < moved[1] < moved[0]
    assert np.array_equal(rocchio(query, feedback[:0], beta=1.0), query)
    assert np.array_equal(rocchio(query, feedback, beta=0.0), query)


@pytest.mark.parametrize("hnsw_threshold", [1000, 2])
def test_the_vector_index_returns_stored_vectors_by_id_newest_row_first(hnsw_threshold):
    index = VectorIndex(3, hnsw_threshold=hnsw_threshold)
    index.add(["a", "b"], np.eye(3, dtype=np.float32)[:2])
    index.add(["a"], np.eye(3, dtype=np.float32)[2:])  # "a" re-embedded after an edit
    rows = index.vectors_of(["b", "missing", "a"])
    assert np.array_equal(rows, np.array([[0, 1, 0], [0, 0, 1]], np.float32))
    assert index.vectors_of(["missing"]).shape == (0, 3)


def test_hop_terms_are_the_first_pass_entities_without_the_named_speakers_or_the_question():
    first = [["rome", "gina"], ["pari", "rome", "jon"], ["citi"]]
    frequency = {"rome": 2, "gina": 50, "jon": 50, "pari": 3, "citi": 10}.get
    terms = hop_terms(first, query_terms=["citi"], excluded={"gina", "jon"}, document_frequency=frequency,
                      total_documents=100, count=5)
    assert terms == ["rome", "pari"]
    assert hop_terms([["jon"]], [], {"jon"}, frequency, 100, 5) == []
    assert hop_terms(first, [], set(), frequency, 100, 0) == []
