"""The PostgreSQL backend of the store seam (SPEC §10, issue 10 step 1):
`PostgresStore`, selected by `JOBQ_STORE=postgresql://...`.

Unfinished jobs live in a small hot table (`job`), finished ones in
`job_history`, moved in the transaction that ends them. Every operation is
one SQL transaction in which rows are loaded (locked), turned into `Job`
versions, changed by the pure rules of `jobq.rules.transitions`, and written
back; its events are published in this process after COMMIT. Time is always
the caller's `now`, a parameter, never the database's. See IMPLEMENTATION.md,
"The PostgreSQL backend"."""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime

import asyncpg

from jobq.core.errors import (
    IdempotencyMismatch,
    PayloadTooLarge,
    QueueFull,
    StorageQuotaExceeded,
    StoreUnavailable,
)
from jobq.core.ids import new_id
from jobq.core.models import Job, NewJob
from jobq.core.timefmt import to_ms
from jobq.rules.submission import build_jobs
from jobq.rules.transitions import RetryPolicy
from jobq.storage.postgres import rows
from jobq.storage.postgres.errors import translated
from jobq.storage.postgres.limits import Limits
from jobq.storage.postgres.migrate import migrate
from jobq.storage.postgres.notify import Notifier
from jobq.storage.postgres.outbox import Outbox
from jobq.storage.postgres.owners import OwnerLock, recover_orphans
from jobq.storage.postgres.rows import JOB_COLUMNS, Conn
from jobq.storage.postgres.unit import Unit
from jobq.storage.protocol import AnswerCodec, IdemRequest, RunningLimits, SubmitResult

logger = logging.getLogger(__name__)

STORAGE_RETRY_AFTER_SECONDS = 60
# A tenant's submits run one at a time (a transaction-level advisory lock on the
# tenant), so `maxQueued` and `maxStoredBytes` hold across API processes.
SUBMIT_LOCK_SPACE = 0x6A6F


class PostgresStore(Outbox, Limits):
    """Jobs in PostgreSQL; any number of processes may open one database."""

    def __init__(
        self,
        dsn: str,
        *,
        retry: RetryPolicy,
        aging_seconds: float = 300.0,
        worker_slots: int = 0,
        pool_size: int = 10,
    ) -> None:
        super().__init__(dsn, retry=retry, aging_seconds=aging_seconds, worker_slots=worker_slots)
        self.pool_size = pool_size
        self._tokens = {}
        self._last_claim_at = None
        self._owner_lock = OwnerLock()
        self.owner = 0

    # ---- lifecycle of the store itself ---------------------------------

    async def open(self, now: datetime) -> None:
        """Connect, apply the migrations this database lacks, take this
        process's owner lock, and recover the running jobs of processes that
        are gone (`owners.py`); those of live processes are left to them."""
        now = to_ms(now)
        with translated("open"):
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                # Never hold a transaction open for long (vacuum), never hang on one statement.
                server_settings={"idle_in_transaction_session_timeout": "60000", "statement_timeout": "60000"},
            )
            async with self._pool.acquire() as conn:
                await migrate(conn)
            self.owner = await self._owner_lock.acquire(self.dsn, f"{socket.gethostname()}:{os.getpid()}", now)
        notifier = Notifier(self.dsn, self.owner, self._publish)
        try:
            await notifier.start()  # LISTEN before anything of ours can change
        except BaseException:
            await self.close()
            raise
        self._notifier = notifier
        await self._transact("recover", lambda unit: recover_orphans(unit, self.owner, now, self.policy))

    async def ready(self) -> bool:
        """The database answers, and this process hears the others' changes
        (its LISTEN connection is up, or has been down only briefly)."""
        if self._notifier is not None and not self._notifier.healthy():
            return False
        try:
            async with self._connection("ready") as conn:
                await conn.fetchval("SELECT 1")
        except StoreUnavailable:
            return False
        return True

    async def close(self) -> None:
        notifier, self._notifier = self._notifier, None
        if notifier is not None:
            await notifier.close()  # what this process changed last still reaches the others
        pool, self._pool = self._pool, None
        try:
            await self._owner_lock.release()
        finally:
            if pool is not None:
                await pool.close()

    def stats(self) -> dict[str, int]:
        notifier = self._notifier
        if notifier is None:
            return {"commits": self.commits}
        return {
            "commits": self.commits,
            "notify_sent": notifier.sent,
            "notify_received": notifier.received,
            "notify_refetch": notifier.refetch,
            "notify_left_out": notifier.dropped,
            "listen_reconnects": notifier.reconnects,
        }

    # ---- submit ----------------------------------------------------------

    async def submit(
        self,
        tenant_id: str,
        jobs: list[NewJob],
        idem: IdemRequest | None,
        now: datetime,
        *,
        max_queued: int,
        max_stored_bytes: int | None = None,
        limits: RunningLimits,
        encode: AnswerCodec,
    ) -> SubmitResult:
        """Store new jobs, durable (committed) when this returns; an
        Idempotency-Key is stored in the same transaction. Refuses like the
        JSON store (`QueueFull`, `StorageQuotaExceeded`, `PayloadTooLarge`)."""
        now = to_ms(now)

        async def body(unit: Unit) -> SubmitResult:
            conn = unit.conn
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", SUBMIT_LOCK_SPACE, tenant_id)
            if idem is not None:
                replay = await _replay(conn, tenant_id, idem)
                if replay is not None:
                    return replay
            queued = await conn.fetchval("SELECT count(*) FROM job WHERE tenant_id = $1", tenant_id)
            if queued + len(jobs) > max_queued:
                raise QueueFull(f"tenant has {max_queued} unfinished jobs, the most allowed", retry_after=5)
            lookup = await _dependencies(conn, jobs)
            new_jobs = build_jobs(tenant_id, jobs, now, lookup.get, new_id, idem.key if idem else None)
            if max_stored_bytes is not None:
                await _check_stored_bytes(conn, tenant_id, new_jobs, max_stored_bytes)
            for job in new_jobs:
                unit.put(job)
            await unit.write()  # the reasons below count the new jobs too
            answer = encode(new_jobs, await self._reasons(conn, new_jobs, now, limits))
            job_ids = [j.job_id for j in new_jobs]
            if idem is not None:
                await conn.execute(
                    "INSERT INTO idempotency (tenant_id, key, fingerprint, route, answer, job_ids, created_at)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    tenant_id,
                    idem.key,
                    idem.fingerprint,
                    idem.route,
                    answer,
                    job_ids,
                    now,
                )
            return SubmitResult(job_ids, answer, replayed=False)

        result = await self._transact("submit", body)
        if not result.replayed:
            for job_id in result.job_ids:
                logger.info("action=submit jobId=%s tenantId=%s", job_id, tenant_id)
        return result


async def _replay(conn: Conn, tenant_id: str, idem: IdemRequest) -> SubmitResult | None:
    row = await conn.fetchrow(
        "SELECT fingerprint, answer, job_ids FROM idempotency WHERE tenant_id = $1 AND key = $2", tenant_id, idem.key
    )
    if row is None:
        return None
    if row["fingerprint"] != idem.fingerprint:
        raise IdempotencyMismatch(f"Idempotency-Key {idem.key!r} was used with a different request")
    return SubmitResult(list(row["job_ids"]), bytes(row["answer"]), replayed=True)


async def _dependencies(conn: Conn, jobs: list[NewJob]) -> dict[str, Job]:
    """The existing jobs named in `dependsOn` (refs inside the batch are not jobs yet)."""
    refs = {spec.ref for spec in jobs if spec.ref is not None}
    wanted = list({dep for spec in jobs for dep in spec.depends_on if dep not in refs})
    if not wanted:
        return {}
    found = await conn.fetch(f"SELECT {JOB_COLUMNS} FROM any_job WHERE id = ANY($1::text[])", wanted)
    return {row["id"]: rows.job_of(row) for row in found}


async def _check_stored_bytes(conn: Conn, tenant_id: str, new_jobs: list[Job], limit: int) -> None:
    incoming = sum(job.stored_size for job in new_jobs)
    if incoming > limit:
        raise PayloadTooLarge(
            f"these jobs take {incoming} bytes, more than the tenant's maxStoredBytes ({limit}) allows in all"
        )
    stored = await conn.fetchval("SELECT coalesce(sum(stored_size), 0) FROM any_job WHERE tenant_id = $1", tenant_id)
    if stored + incoming > limit:
        raise StorageQuotaExceeded(
            f"the tenant's retained jobs take {stored} bytes and these would add {incoming}, over its "
            f"maxStoredBytes ({limit}); space comes back as jobs end and are purged after retention",
            retry_after=STORAGE_RETRY_AFTER_SECONDS,
        )
