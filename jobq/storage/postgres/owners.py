"""Which processes are alive, on evidence rather than time (POSTGRES.md,
"rescue a job only on evidence"). Each open store holds a session advisory
lock, `(OWNER_SPACE, key)`, on a connection of its own, and stamps the jobs
it claims with `key`. PostgreSQL releases the lock when that connection ends
(the process exited, crashed or lost the network), so a running job whose
owner's lock can be taken was left by a process that is gone: it is
recovered at once, as the JSON store recovers its own at start. Leases
still expire for a process that is alive but stuck (`reap`)."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime

import asyncpg

from jobq.core.models import Status
from jobq.core.outcomes import Failed
from jobq.rules.transitions import RECOVERED_ERROR, RetryPolicy
from jobq.storage.postgres.lifecycle import settle
from jobq.storage.postgres.rows import JOB_COLUMNS, Conn
from jobq.storage.postgres.unit import HOT, Unit
from jobq.storage.protocol import LeaseRef

logger = logging.getLogger(__name__)

OWNER_SPACE = 0x6A6F0001  # the first int4 of pg_advisory_lock(int4, int4): jobq's process locks


class OwnerLock:
    """This process's lock, held on a dedicated connection until `release`."""

    def __init__(self) -> None:
        self.key = 0
        self._conn: Conn | None = None

    async def acquire(self, dsn: str, description: str, now: datetime) -> int:
        conn = await asyncpg.connect(dsn)
        try:
            while True:
                key = 1 + secrets.randbelow(2**31 - 2)
                if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", OWNER_SPACE, key):
                    break
            await conn.execute(
                "INSERT INTO worker_process (owner, description, opened_at) VALUES ($1, $2, $3)"
                " ON CONFLICT (owner) DO UPDATE SET description = $2, opened_at = $3",
                key,
                description,
                now,
            )
        except BaseException:
            await conn.close()
            raise
        self._conn, self.key = conn, key
        return key

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            await conn.execute("DELETE FROM worker_process WHERE owner = $1", self.key)
        finally:
            await conn.close()  # the lock goes with the connection


async def recover_orphans(unit: Unit, own_key: int, now: datetime, policy: RetryPolicy) -> list[LeaseRef]:
    """Settle, as failed attempts, the running jobs of processes whose lock is
    free (their connection is gone); a retry runs again at once."""
    conn = unit.conn
    owners = [
        row["owner"]
        for row in await conn.fetch(
            "SELECT DISTINCT owner FROM job WHERE status = 'running' AND owner IS NOT NULL AND owner <> $1", own_key
        )
    ]
    dead = [o for o in owners if await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, $2)", OWNER_SPACE, o)]
    if not dead:
        return []
    found = await conn.fetch(
        f"SELECT {JOB_COLUMNS} FROM job WHERE status = 'running' AND owner = ANY($1::int[])"
        " ORDER BY id FOR NO KEY UPDATE SKIP LOCKED",
        dead,
    )
    recovered: list[LeaseRef] = []
    for job in unit.take(found, HOT):
        latest = unit.latest(job.job_id)
        if latest is None or latest.status is not Status.RUNNING:
            continue
        logger.warning("action=recover jobId=%s tenantId=%s attempt=%d", job.job_id, job.tenant_id, job.attempts)
        done = await settle(unit, latest, Failed(RECOVERED_ERROR), now, policy)
        if done.status is Status.RETRY:
            unit.put(done.evolve(next_run_at=now))
        recovered.append(LeaseRef(job.job_id, job.attempts))
    await conn.execute("DELETE FROM worker_process WHERE owner = ANY($1::int[])", dead)
    return recovered
