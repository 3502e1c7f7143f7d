"""The layered BM25 index: current documents only, found after any sequence of changes, without full rebuilds."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from textual.lexical_index import LayeredLexicalIndex, top_positive_rows

WORDS = ["parrot", "garden", "lisbon", "violin", "ramen", "chess", "oslo", "tennis"]
operations = st.lists(st.tuples(st.sampled_from(["upsert", "remove"]), st.integers(0, 30),
                                st.lists(st.sampled_from(WORDS), min_size=1, max_size=4)), max_size=80)


@settings(max_examples=60, deadline=None)
@given(operations, st.sampled_from(WORDS))
def test_search_sees_exactly_the_current_documents(ops, query):
    index, current = LayeredLexicalIndex(min_rebuild=4, rebuild_fraction=0.2), {}
    for kind, number, terms in ops:
        key = f"d{number}"
        if kind == "upsert":
            index.upsert(key, terms)
            current[key] = terms
        else:
            index.remove(key)
            current.pop(key, None)
        found = {key for key, _ in index.search([query], k=100)}
        assert found == {key for key, terms in current.items() if query in terms}
        assert index.document_frequency(query) == len(found)  # the expansion's idf counts current documents only
        assert index.document_terms(key) == current.get(key, [])


def test_allowed_ids_restrict_results_in_both_layers():
    index = LayeredLexicalIndex(min_rebuild=2)
    for i in range(5):
        index.upsert(f"old{i}", ["parrot"])
    index.search(["parrot"], 10)  # builds the main layer
    index.upsert("new", ["parrot"])
    assert {key for key, _ in index.search(["parrot"], 10, allowed={"old1", "new"})} == {"old1", "new"}


def test_writes_do_not_rebuild_the_main_layer_until_enough_changed():
    index = LayeredLexicalIndex(min_rebuild=10, rebuild_fraction=0.5)
    for i in range(100):
        index.upsert(f"d{i}", ["garden"])
    index.search(["garden"], 5)
    main = index._main
    for i in range(40):
        index.upsert(f"n{i}", ["garden", "violin"])
        index.search(["violin"], 5)
    assert index._main is main  # 40 changes < 50% of 100: only the recent layer was rebuilt
    index.upsert("n40", ["violin"])
    for i in range(10):
        index.upsert(f"m{i}", ["violin"])
    index.search(["violin"], 5)
    assert index._main is not main


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(0, 60), elements=st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.25])),
       st.integers(1, 70))
def test_top_rows_are_the_positive_head_of_a_stable_sort_ties_included(scores, k):
    head = np.argsort(-scores, kind="stable")[:k]
    assert top_positive_rows(scores, k).tolist() == [row for row in head if scores[row] > 0]
