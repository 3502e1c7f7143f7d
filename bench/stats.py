"""Summary statistics the benchmarks report."""

from __future__ import annotations

import numpy as np


def percentile(values: list[float], q: float) -> float:
    """The `q` quantile (0 to 1) of `values` as one of them: the value at rank round(q * (n - 1)) in sorted order,
    halves rounded to even (numpy's "nearest" method), never an interpolation between two."""
    return float(np.quantile(values, q, method="nearest"))
