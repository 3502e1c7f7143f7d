from hypothesis import given, settings
from hypothesis import strategies as st

from textual.selection import Candidate, best_first, dedupe, near_unique, select_within_budget, take_within_budget


def candidate(key, score, cost=5, group="g", group_cost=3, text=None):
    return Candidate(key=key, score=score, cost=cost, group=group, group_cost=group_cost, text=text or f"text {key}")


def test_selection_skips_what_does_not_fit_and_fills_with_smaller():
    chosen = select_within_budget([candidate("a", 3, cost=5), candidate("b", 2, cost=50), candidate("c", 1, cost=4)],
                                  budget=12, max_items=10)
    assert [c.key for c in chosen] == ["a", "c"]


def test_selection_counts_one_header_per_group():
    items = [candidate("a", 3, group="d1"), candidate("b", 2, group="d1"), candidate("c", 1, group="d2")]
    assert [c.key for c in select_within_budget(items, budget=13, max_items=10)] == ["a", "b"]
    assert [c.key for c in select_within_budget(items, budget=21, max_items=10)] == ["a", "b", "c"]


def test_selection_respects_max_items_and_no_budget():
    items = [candidate(str(i), i) for i in range(10)]
    assert [c.key for c in select_within_budget(items, None, 3)] == ["9", "8", "7"]


@given(st.lists(st.tuples(st.floats(0, 1), st.integers(1, 60), st.sampled_from("xyz")), max_size=40),
       st.dictionaries(st.sampled_from("xyz"), st.integers(0, 8)), st.integers(0, 300))
def test_selection_never_exceeds_the_budget(rows, header_costs, budget):
    items = [candidate(str(i), s, cost=c, group=g, group_cost=header_costs.get(g, 5))
             for i, (s, c, g) in enumerate(rows)]
    chosen = select_within_budget(items, budget, max_items=100)
    headers = {}
    for c in chosen:
        headers[c.group] = c.group_cost
    assert sum(c.cost for c in chosen) + sum(headers.values()) <= budget


def test_dedupe_keeps_the_best_of_near_duplicates():
    items = [candidate("a", 1.0, text="I love hiking in the mountains"),
             candidate("b", 2.0, text="i LOVE hiking in the mountains!"),
             candidate("c", 0.5, text="Something else entirely")]
    assert [c.key for c in dedupe(items)] == ["b", "c"]


def test_dedupe_keeps_merely_similar_texts():
    items = [candidate("a", 1.0, text="I went hiking in May"), candidate("b", 0.9, text="I went hiking in June")]
    assert len(dedupe(items)) == 2


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "bb", "c", "ddd", "e", "ffff", "g"]), max_size=6), max_size=25),
       st.sampled_from([0.5, 0.75, 0.9, 1.0]))
def test_dedupe_with_prefix_filtering_equals_comparing_every_pair(texts, threshold):
    from textual.selection import _jaccard

    candidates = [Candidate(f"k{i}", float(len(texts) - i), 1, "g", 0, " ".join(words))
                  for i, words in enumerate(texts)]
    kept: list[tuple[Candidate, frozenset[str]]] = []
    for candidate in candidates:
        words = frozenset(candidate.text.split())
        if not any(_jaccard(words, other) >= threshold for _, other in kept):
            kept.append((candidate, words))
    assert dedupe(candidates, threshold) == [candidate for candidate, _ in kept]


def test_dedupe_compares_few_pairs_when_every_text_shares_the_common_words(monkeypatch):
    """200 distinct turns that all hold "i", "a", "and", "the": prefixes of short common words made every kept turn
    a comparison (about 20,000 for 200, most of a search's time); long words first leave only true collisions."""
    import textual.selection as selection

    compared = []
    real = selection._jaccard
    monkeypatch.setattr(selection, "_jaccard", lambda left, right: compared.append(1) or real(left, right))
    texts = [f"i and a the went to place{i} with friend{i}" for i in range(200)]
    kept = dedupe([Candidate(f"k{i}", 200.0 - i, 1, "g", 0, text) for i, text in enumerate(texts)])
    assert len(kept) == 200
    assert len(compared) < 400


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.1, 0.5, 0.9]), st.integers(1, 30),
                          st.lists(st.sampled_from("abcde"), min_size=0, max_size=4)), max_size=30),
       st.integers(0, 120), st.integers(0, 8))
def test_lazy_selection_over_a_best_first_stream_equals_dedupe_then_select(rows, budget, max_items):
    """What `retriever.finish` relies on: de-duplicating and selecting lazily, stopping at the k-th pick, picks the
    same candidates as de-duplicating all of them first."""
    items = [candidate(f"m{i}", score, cost=cost, group=f"g{i % 3}", text=" ".join(words))
             for i, (score, cost, words) in enumerate(rows)]
    eager = select_within_budget(dedupe(items), budget, max_items)
    assert take_within_budget(near_unique(sorted(items, key=best_first)), budget, max_items) == eager
