"""Limits every API process shares through the database (SPEC §4): a
tenant's submit-rate bucket (`submit_bucket`, the rule's `TokenBucket` read
and written back under the row's lock) and the bad keys an address sent
this minute (`bad_key`). Time is the injected clock's, in seconds."""

from __future__ import annotations

import math
from datetime import datetime

from jobq.rules.ratelimit import RateDecision, TokenBucket
from jobq.storage.postgres.base import Base

BAD_KEY_WINDOW_SECONDS = 60.0


class Limits(Base):
    async def take_submit_tokens(
        self, tenant_id: str, count: int, *, per_minute: int, burst: int, now: datetime
    ) -> RateDecision:
        seconds = now.timestamp()
        fresh = TokenBucket.full(per_minute, burst, seconds)
        async with self._connection("take_submit_tokens") as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO submit_bucket (tenant_id, rate, capacity, tokens, updated) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (tenant_id) DO NOTHING",
                tenant_id,
                fresh.rate,
                fresh.capacity,
                fresh.tokens,
                fresh.updated,
            )
            row = await conn.fetchrow(
                "SELECT rate, capacity, tokens, updated FROM submit_bucket WHERE tenant_id = $1 FOR UPDATE", tenant_id
            )
            assert row is not None
            bucket = TokenBucket(row["rate"], row["capacity"], row["tokens"], row["updated"])
            if bucket.rate != fresh.rate or bucket.capacity != fresh.capacity:
                bucket = fresh  # the tenant's limits changed: a full bucket, as the JSON store does
            taken = bucket.take(seconds, count)
            await conn.execute(
                "UPDATE submit_bucket SET rate = $2, capacity = $3, tokens = $4, updated = $5 WHERE tenant_id = $1",
                tenant_id,
                bucket.rate,
                bucket.capacity,
                bucket.tokens,
                bucket.updated,
            )
        return bucket.decision(taken, count)

    async def give_back_submit_tokens(self, tenant_id: str, count: int) -> None:
        async with self._connection("give_back_submit_tokens") as conn:
            await conn.execute(
                "UPDATE submit_bucket SET tokens = least(capacity, tokens + $2) WHERE tenant_id = $1",
                tenant_id,
                float(count),
            )

    async def note_bad_key(self, address: str, *, limit: int, now: datetime) -> int:
        """As `ratelimit.FailureWindow`: fixed one-minute windows per address."""
        seconds = now.timestamp()
        window = BAD_KEY_WINDOW_SECONDS
        async with self._connection("note_bad_key") as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO bad_key (address, window_start, failures) VALUES ($1, $2, 0)"
                " ON CONFLICT (address) DO NOTHING",
                address,
                seconds,
            )
            row = await conn.fetchrow(
                "SELECT window_start, failures FROM bad_key WHERE address = $1 FOR UPDATE", address
            )
            assert row is not None
            start, failures = row["window_start"], row["failures"]
            if seconds - start >= window:
                start, failures = seconds, 0
            elif failures >= limit:
                return max(1, math.ceil(float(start) + window - seconds))
            await conn.execute(
                "UPDATE bad_key SET window_start = $2, failures = $3 WHERE address = $1", address, start, failures + 1
            )
            await conn.execute("DELETE FROM bad_key WHERE window_start < $1", seconds - window)
        return 0
