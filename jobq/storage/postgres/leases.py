"""The worker's side of the PostgreSQL store (SPEC §3): claims, heartbeats,
outcomes, reaping and retention. Every transition of a running job is fenced
in SQL: the row is locked and changed only while it is `running` the
attempt the caller holds; a claim made by this process is also checked
against the lease token it drew (a sequence, so monotonic across processes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from jobq.core.errors import StaleAttempt
from jobq.core.models import LEASE_EXPIRED_ERROR, Job, Status
from jobq.core.outcomes import Failed, Outcome
from jobq.core.timefmt import to_ms
from jobq.storage.postgres.claim import claim_jobs
from jobq.storage.postgres.lifecycle import cancel, settle
from jobq.storage.postgres.owners import recover_orphans
from jobq.storage.postgres.reads import Reads
from jobq.storage.postgres.rows import JOB_COLUMNS
from jobq.storage.postgres.unit import HISTORY, HOT, Unit
from jobq.storage.protocol import Beat, Claimed, LeaseRef, Reaped, RunningLimits

logger = logging.getLogger(__name__)

PURGE_BATCH = 1000  # jobs removed per transaction, so retention never holds long locks


class Leases(Reads):
    _tokens: dict[tuple[str, int], int]
    _last_claim_at: datetime | None
    owner: int  # this open store's key (`owners.py`)

    async def claim(
        self, worker_id: str, limit: int, *, lease_seconds: float, limits: RunningLimits, now: datetime
    ) -> Claimed:
        """Up to `limit` due jobs, now `running` under a lease. Durable when it
        returns (`Claimed.durable` is already resolved)."""
        now = to_ms(now)
        self._last_claim_at = now

        async def body(unit: Unit) -> list[tuple[Job, int | None]]:
            jobs = await claim_jobs(unit, worker_id, limit, lease_seconds, limits, now, self.owner)
            return [(job, unit.lease_token(job.job_id)) for job in jobs]

        claimed = await self._transact("claim", body)
        if len(self._tokens) > 100_000:  # outcomes of claims this process forgot are fenced by attempt alone
            self._tokens.clear()
        for job, token in claimed:
            if token is not None:
                self._tokens[(job.job_id, job.attempts)] = token
        jobs = [job for job, _ in claimed]
        durable: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        durable.set_result(jobs)
        return Claimed(jobs, durable)

    async def _running_attempt(self, unit: Unit, lease: LeaseRef) -> Job:
        """The row of `lease`, locked, if it still holds it; else `StaleAttempt`."""
        found = await unit.load([lease.job_id], table=HOT)
        job = found[0] if found else None
        token = self._tokens.get((lease.job_id, lease.attempt))
        held = unit.lease_token(lease.job_id)
        if (
            job is None
            or job.status is not Status.RUNNING
            or job.attempts != lease.attempt
            or (token is not None and held != token)
        ):
            raise StaleAttempt(f"job {lease.job_id} attempt {lease.attempt} no longer holds the lease")
        return job

    async def heartbeat(self, leases: Sequence[LeaseRef], *, until: datetime, now: datetime) -> Beat:
        """Renew the leases still held (the lease column only); report the others."""
        if not leases:
            return Beat([], [])
        ids = [lease.job_id for lease in leases]
        attempts = [lease.attempt for lease in leases]
        async with self._connection("heartbeat") as conn:
            renewed = await conn.fetch(
                "UPDATE job SET lease_until = $3 FROM unnest($1::text[], $2::int[]) AS l(id, attempt)"
                " WHERE job.id = l.id AND job.attempts = l.attempt AND job.status = 'running'"
                " RETURNING job.id, job.attempts",
                ids,
                attempts,
                to_ms(until),
            )
            held = {(row["id"], row["attempts"]) for row in renewed}
            others = [lease for lease in leases if (lease.job_id, lease.attempt) not in held]
            cancelled: set[tuple[str, int]] = set()
            if others:
                found = await conn.fetch(
                    "SELECT id, attempts FROM job_history WHERE id = ANY($1::text[]) AND status = 'cancelled'",
                    [lease.job_id for lease in others],
                )
                cancelled = {(row["id"], row["attempts"]) for row in found}
        lost = [lease for lease in others if (lease.job_id, lease.attempt) not in cancelled]
        cancel_requested = [lease for lease in others if (lease.job_id, lease.attempt) in cancelled]
        for lease in [*lost, *cancel_requested]:
            self._tokens.pop((lease.job_id, lease.attempt), None)
        return Beat(lost, cancel_requested)

    async def report_progress(self, lease: LeaseRef, fraction: float, message: str | None, now: datetime) -> None:
        async def body(unit: Unit) -> None:
            job = await self._running_attempt(unit, lease)
            unit.put(job.evolve(progress=fraction, progress_message=message, updated_at=to_ms(now)))

        await self._transact("report_progress", body)

    async def finish(self, lease: LeaseRef, outcome: Outcome, now: datetime) -> Job:
        """Settle a running attempt; raises `StaleAttempt` if it lost its lease."""

        async def body(unit: Unit) -> Job:
            job = await self._running_attempt(unit, lease)
            return await settle(unit, job, outcome, to_ms(now), self.policy)

        settled = await self._transact("finish", body)
        self._tokens.pop((lease.job_id, lease.attempt), None)
        logger.info(
            "action=finish jobId=%s tenantId=%s attempt=%d status=%s",
            lease.job_id,
            settled.tenant_id,
            lease.attempt,
            settled.status.value,
        )
        return settled

    async def reap(self, now: datetime) -> Reaped:
        """Cancel jobs that expired before starting; fail attempts whose lease ran
        out (evidence: the lease, re-checked on the locked row)."""
        now = to_ms(now)

        async def body(unit: Unit) -> Reaped:
            expired: list[str] = []
            lost = await recover_orphans(unit, self.owner, now, self.policy)
            found = await unit.conn.fetch(
                f"SELECT {JOB_COLUMNS} FROM job WHERE expires_at <= $1 AND attempts = 0"
                " ORDER BY expires_at, seq FOR NO KEY UPDATE SKIP LOCKED",
                now,
            )
            for job in unit.take(found, HOT):
                latest = unit.latest(job.job_id)
                if latest is not None and not latest.terminal and latest.attempts == 0:
                    await cancel(unit, latest, "expired", now)
                    expired.append(job.job_id)
            found = await unit.conn.fetch(
                f"SELECT {JOB_COLUMNS} FROM job WHERE status = 'running' AND lease_until < $1"
                " ORDER BY lease_until, seq FOR NO KEY UPDATE SKIP LOCKED",
                now,
            )
            for job in unit.take(found, HOT):
                latest = unit.latest(job.job_id)
                if latest is None or latest.status is not Status.RUNNING:
                    continue
                logger.warning("action=lease_expired jobId=%s attempt=%d", job.job_id, job.attempts)
                await settle(unit, latest, Failed(LEASE_EXPIRED_ERROR), now, self.policy)
                lost.append(LeaseRef(job.job_id, job.attempts))
            return Reaped(expired, lost)

        return await self._transact("reap", body)

    async def purge(self, now: datetime, retention_seconds: float) -> int:
        """Remove finished jobs that ended before `now - retention_seconds`, with
        their deliveries and Idempotency-Keys, in batches of `PURGE_BATCH`; and
        alerts and alert notifications that ended before then."""
        cutoff = to_ms(now) - timedelta(seconds=retention_seconds)
        purged = 0
        while True:
            removed = await self._transact("purge", lambda unit: _purge_batch(unit, cutoff))
            purged += removed
            if removed < PURGE_BATCH:
                break
        await self._transact("purge", lambda unit: _purge_outbox(unit, cutoff))
        if purged:
            logger.info("action=purge jobs=%d", purged)
        return purged

    async def next_due(self) -> datetime | None:
        """When the next scheduled or retrying job falls due (None: none); jobs
        already due at the last claim are not counted (they wait for room)."""
        async with self._connection("next_due") as conn:
            after = self._last_claim_at
            if after is None:
                due: datetime | None = await conn.fetchval(
                    "SELECT min(next_run_at) FROM job WHERE status IN ('queued', 'retry')"
                )
            else:
                due = await conn.fetchval(
                    "SELECT min(next_run_at) FROM job WHERE status IN ('queued', 'retry') AND next_run_at > $1",
                    after,
                )
        return due


async def _purge_batch(unit: Unit, cutoff: datetime) -> int:
    conn = unit.conn
    ids = [
        row["id"]
        for row in await conn.fetch(
            f"SELECT id FROM {HISTORY} WHERE finished_at < $1 ORDER BY finished_at LIMIT $2 FOR UPDATE SKIP LOCKED",
            cutoff,
            PURGE_BATCH,
        )
    ]
    if not ids:
        return 0
    await conn.execute(f"DELETE FROM {HISTORY} WHERE id = ANY($1::text[])", ids)
    await conn.execute("DELETE FROM delivery WHERE job_id = ANY($1::text[])", ids)
    await conn.execute("DELETE FROM job_dependency WHERE depends_on_id = ANY($1::text[])", ids)
    # A key goes when none of its jobs is left.
    await conn.execute(
        "DELETE FROM idempotency i WHERE i.job_ids && $1::text[]"
        " AND NOT EXISTS (SELECT 1 FROM any_job a WHERE a.id = ANY(i.job_ids))",
        ids,
    )
    return len(ids)


async def _purge_outbox(unit: Unit, cutoff: datetime) -> int:
    alerts = await unit.conn.fetchval(
        "WITH gone AS (DELETE FROM alert WHERE cleared_at < $1 RETURNING 1) SELECT count(*) FROM gone", cutoff
    )
    notes = await unit.conn.fetchval(
        "WITH gone AS (DELETE FROM delivery WHERE job_id IS NULL AND status <> 'pending' AND next_attempt_at < $1"
        " RETURNING 1) SELECT count(*) FROM gone",
        cutoff,
    )
    return int(alerts) + int(notes)
