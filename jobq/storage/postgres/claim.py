"""Claims across processes (SPEC §3 claim order, §4 maxRunning): due jobs in
the claim's order (priority with aging: `sort_key`, then creation), tenants
in turn, each within its `maxRunning`, however many workers claim at once.

A simple correct version first (POSTGRES.md warns of count-then-claim):
every claim round takes one transaction-level advisory lock, so claim rounds
run one at a time across every process, and the running counts a round reads
cannot grow under it (other transactions can only lower them, by finishing
jobs). Inside the round one statement picks each tenant's first due jobs, up
to its room, `FOR NO KEY UPDATE SKIP LOCKED` (rows an operator is cancelling
are passed over); the round-robin over tenants is made here, fewest running
first; then one UPDATE per batch writes the started versions, each with a
fresh lease token from a sequence. The cost: claim rounds do not overlap (a
round is a few milliseconds, the lock is held until its COMMIT)."""

from __future__ import annotations

from datetime import datetime

from jobq.core.models import Job
from jobq.storage.postgres.lifecycle import start_attempt
from jobq.storage.postgres.unit import HOT, Unit
from jobq.storage.protocol import RunningLimits

CLAIM_LOCK = 0x6A6F6271_0002

_CANDIDATES = """
SELECT c.* FROM unnest($1::text[], $2::int[]) AS t(tenant_id, room)
CROSS JOIN LATERAL (
    SELECT j.* FROM job j
    WHERE j.tenant_id = t.tenant_id AND j.status IN ('queued', 'retry') AND j.next_run_at <= $3
    ORDER BY j.sort_key, j.seq
    LIMIT t.room
    FOR NO KEY UPDATE SKIP LOCKED
) c
"""


async def claim_jobs(
    unit: Unit, worker_id: str, limit: int, lease_seconds: float, limits: RunningLimits, now: datetime, owner: int
) -> list[Job]:
    conn = unit.conn
    await conn.execute("SELECT pg_advisory_xact_lock($1)", CLAIM_LOCK)
    tenants = [
        row["tenant_id"]
        for row in await conn.fetch(
            "SELECT DISTINCT tenant_id FROM job WHERE status IN ('queued', 'retry') AND next_run_at <= $1", now
        )
    ]
    if not tenants:
        return []
    running = {
        row["tenant_id"]: row["n"]
        for row in await conn.fetch(
            "SELECT tenant_id, count(*) AS n FROM job WHERE status = 'running' AND tenant_id = ANY($1::text[])"
            " GROUP BY tenant_id",
            tenants,
        )
    }
    rooms = {t: min(limit, limits.of(t) - running.get(t, 0)) for t in tenants}
    open_tenants = [t for t in tenants if rooms[t] > 0]
    if not open_tenants:
        return []
    found = await conn.fetch(_CANDIDATES, open_tenants, [rooms[t] for t in open_tenants], now)
    queues: dict[str, list[Job]] = {}
    for job in unit.take(found, HOT):
        queues.setdefault(job.tenant_id, []).append(job)
    # Tenants in turn, the one with the fewest running first (then the longest waiting).
    order = sorted(queues, key=lambda t: (running.get(t, 0), queues[t][0].next_run_at, t))
    chosen: list[Job] = []
    depth = 0
    while len(chosen) < limit and any(len(queues[t]) > depth for t in order):
        for tenant in order:
            if len(chosen) < limit and len(queues[tenant]) > depth:
                chosen.append(queues[tenant][depth])
        depth += 1
    if not chosen:
        return []
    tokens = await conn.fetch("SELECT nextval('lease_token_seq') AS n FROM generate_series(1, $1)", len(chosen))
    return [
        start_attempt(unit, job, worker_id, now, lease_seconds, row["n"], owner)
        for job, row in zip(chosen, tokens, strict=True)
    ]
