"""Jobs finished per second, per tenant, over a sliding minute: the figure the
live dashboard charts (SPEC §5). Pure bookkeeping; the caller passes time in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

WINDOW_SECONDS = 60


class FinishedCounter:
    """Counts of jobs that entered a terminal state, in one-second buckets.

    Time is whole seconds of a monotonic clock (`int(clock.monotonic())`).
    Memory is bounded: at most `WINDOW_SECONDS` buckets per tenant."""

    def __init__(self, started_second: int) -> None:
        self._started = started_second
        self._buckets: dict[str, deque[list[int]]] = {}  # tenant -> [[second, count], ...], oldest first

    def record(self, tenant_id: str, second: int, n: int = 1) -> None:
        buckets = self._buckets.get(tenant_id)
        if buckets is None:
            buckets = self._buckets[tenant_id] = deque(maxlen=WINDOW_SECONDS)
        if buckets and buckets[-1][0] >= second:
            # The same second, or a clock read a little behind another: same bucket.
            buckets[-1][1] += n
        else:
            buckets.append([second, n])

    def by_second(self, tenant_id: str | None, now_second: int) -> list[int]:
        """Jobs finished in each of the last `WINDOW_SECONDS` seconds, oldest
        first, the last entry being the current (partial) second; `None`
        sums every tenant."""
        first = now_second - WINDOW_SECONDS + 1
        series = [0] * WINDOW_SECONDS
        for buckets in self._scope(tenant_id):
            for second, n in buckets:
                if first <= second <= now_second:
                    series[second - first] += n
        return series

    def per_second(self, series: list[int], now_second: int) -> float:
        """The average rate over `series` (from `by_second`); while the counter
        is younger than the window, over the seconds it has existed."""
        seconds = min(WINDOW_SECONDS, max(1, now_second - self._started + 1))
        return sum(series) / seconds

    def _scope(self, tenant_id: str | None) -> Iterable[deque[list[int]]]:
        if tenant_id is None:
            return self._buckets.values()
        buckets = self._buckets.get(tenant_id)
        return [buckets] if buckets is not None else []
