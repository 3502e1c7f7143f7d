"""The benchmarks' percentile: one of the values, at rank round(q * (n - 1)), halves to even."""

from __future__ import annotations

import random

from bench.stats import percentile


def test_percentile_is_the_value_at_the_rounded_rank_never_an_interpolation():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert [percentile(values, q) for q in (0, 0.25, 0.5, 0.95, 1)] == [1.0, 2.0, 3.0, 5.0, 5.0]
    assert percentile([1.0, 2.0], 0.5) == 1.0  # rank 0.5 rounds to even: 0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 3.0  # rank 1.5 rounds to even: 2
    assert percentile([7.5], 0.95) == 7.5


def test_percentile_matches_the_rank_formula_the_reports_were_made_with():
    rng = random.Random(0)
    for n in range(1, 120):
        values = [rng.random() for _ in range(n)]
        for q in (0.05, 0.5, 0.9, 0.95, 0.99):
            assert percentile(values, q) == sorted(values)[int(round(q * (n - 1)))]
