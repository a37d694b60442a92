"""The JSON store's limits that the seam keeps for every API process (SPEC §4):
the tenants' submit-rate buckets and the bad-key window per client address.
One process owns a data directory, so its memory is where they are shared;
like leases, they start afresh with the process (full buckets, no failures).
"""

from __future__ import annotations

from datetime import datetime

from jobq.rules.ratelimit import FailureWindow, RateDecision, SubmitLimiter


class LimitOperations:
    """Mixed into `JsonStore`."""

    def __init__(self) -> None:
        self._submit_buckets = SubmitLimiter()
        self._bad_keys: FailureWindow | None = None

    async def take_submit_tokens(
        self, tenant_id: str, count: int, *, per_minute: int, burst: int, now: datetime
    ) -> RateDecision:
        seconds = now.timestamp()
        bucket = self._submit_buckets.bucket(tenant_id, per_minute, burst, seconds)
        taken = bucket.take(seconds, count)
        return bucket.decision(taken, count)

    async def give_back_submit_tokens(self, tenant_id: str, count: int) -> None:
        bucket = self._submit_buckets.existing(tenant_id)
        if bucket is not None:
            bucket.give_back(count)

    async def note_bad_key(self, address: str, *, limit: int, now: datetime) -> int:
        window = self._bad_keys
        if window is None or window.limit != limit:
            window = self._bad_keys = FailureWindow(limit)
        seconds = now.timestamp()
        wait = window.blocked_for(address, seconds)
        if not wait:
            window.record(address, seconds)
        return wait
