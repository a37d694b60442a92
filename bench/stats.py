"""Small numeric helpers: percentiles and number formatting."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (`fraction` in 0..1) of `values`; NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    """Seconds as milliseconds with a precision that suits the size."""
    if math.isnan(seconds):
        return "n/a"
    value = seconds * 1000.0
    return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms" if value < 100 else f"{value:,.0f} ms"


def rate(events: int, seconds: float) -> float:
    """Events per second."""
    return events / seconds if seconds > 0 else math.inf


def count(n: float) -> str:
    """A whole number with thousands separators."""
    return f"{n:,.0f}"
