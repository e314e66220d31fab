"""Small statistics the checkers and reports share: one percentile, so every p50/p99 in cachecert
means the same thing (linear interpolation between closest ranks, as numpy's default)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float, *, presorted: bool = False) -> float:
    """The ``q``-th percentile (0..100) of ``values`` (a sequence or a numpy array; infinities
    allowed: between a value and +inf is +inf); NaN for no values."""
    if len(values) == 0:
        return math.nan
    xs = values if presorted else sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * min(max(q, 0.0), 100.0) / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    if pos == lo or xs[hi] == xs[lo]:
        return float(xs[lo])
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))
