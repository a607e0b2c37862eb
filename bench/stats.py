"""The statistics every benchmark reports with, defined once so their figures compare.

Percentiles are nearest-rank (of 20 values, p95 is the 19th and p50 the 10th): always a
value that was measured, never one interpolated between two.
"""

import math


def pct(values: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (``0 < q <= 1``) of ``values``; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def summary(values: list[float]) -> dict[str, float]:
    """p50, p95 and max of ``values``, rounded to 3 places."""
    return {
        "p50": round(pct(values, 0.5), 3),
        "p95": round(pct(values, 0.95), 3),
        "max": round(max(values), 3) if values else float("nan"),
    }
