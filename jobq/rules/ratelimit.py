"""Rate limits as plain arithmetic on injected time (SPEC §4).

`TokenBucket`: a tenant's submit rate with a burst. `FailureWindow`: bad API
keys per client address per minute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateDecision:
    """A submit's tokens: taken or not, and what the RateLimit headers say."""

    taken: bool
    remaining: int
    seconds_until_full: int
    retry_after: int  # seconds until the tokens asked for are there (0 when taken)


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens a second up to `capacity`; starts full."""

    rate: float
    capacity: float
    tokens: float
    updated: float  # monotonic seconds

    @classmethod
    def full(cls, per_minute: int, burst: int, now: float) -> TokenBucket:
        return cls(rate=per_minute / 60.0, capacity=float(burst), tokens=float(burst), updated=now)

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, now: float, count: int = 1) -> bool:
        """Take `count` tokens if there are that many; False (nothing taken) otherwise."""
        self._refill(now)
        if self.tokens >= count:
            self.tokens -= count
            return True
        return False

    def give_back(self, count: int = 1) -> None:
        """Return tokens taken for a request that then changed nothing."""
        self.tokens = min(self.capacity, self.tokens + count)

    def remaining(self) -> int:
        return int(self.tokens)

    def seconds_until(self, count: int = 1) -> int:
        """Whole seconds until `count` tokens are there (at least 1 when short)."""
        missing = count - self.tokens
        if missing <= 0:
            return 0
        return max(1, math.ceil(missing / self.rate))

    def seconds_until_full(self) -> int:
        return max(0, math.ceil((self.capacity - self.tokens) / self.rate))

    def decision(self, taken: bool, count: int) -> RateDecision:
        """What a request for `count` tokens learns, `taken` or not."""
        return RateDecision(
            taken=taken,
            remaining=self.remaining(),
            seconds_until_full=self.seconds_until_full(),
            retry_after=0 if taken else self.seconds_until(count),
        )


class SubmitLimiter:
    """One bucket per tenant, whichever of its keys is used."""

    def __init__(self) -> None:
        self._buckets: dict[str, TokenBucket] = {}

    def bucket(self, tenant_id: str, per_minute: int, burst: int, now: float) -> TokenBucket:
        bucket = self._buckets.get(tenant_id)
        if bucket is None or bucket.rate != per_minute / 60.0 or bucket.capacity != burst:
            bucket = self._buckets[tenant_id] = TokenBucket.full(per_minute, burst, now)
        return bucket

    def existing(self, tenant_id: str) -> TokenBucket | None:
        return self._buckets.get(tenant_id)


class FailureWindow:
    """Counts failures per address in fixed one-minute windows."""

    def __init__(self, limit: int, window_seconds: float = 60.0) -> None:
        self.limit = limit
        self.window = window_seconds
        self._windows: dict[str, tuple[float, int]] = {}

    def blocked_for(self, address: str, now: float) -> int:
        """Seconds the address must wait (0: not blocked)."""
        start, count = self._windows.get(address, (now, 0))
        if now - start >= self.window:
            self._windows.pop(address, None)
            return 0
        return max(1, math.ceil(start + self.window - now)) if count >= self.limit else 0

    def record(self, address: str, now: float) -> None:
        start, count = self._windows.get(address, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        self._windows[address] = (start, count + 1)
        if len(self._windows) > 100_000:
            self._windows = {a: w for a, w in self._windows.items() if now - w[0] < self.window}
