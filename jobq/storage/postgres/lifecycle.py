"""The PostgreSQL store's side of a job's state changes (SPEC §3): the pure
rules of `jobq.rules.transitions` applied to rows loaded into a `Unit`, with
what a change sets off (the ended job's webhook, its dependants released or
cancelled) in the same SQL transaction.

The cascade is a work list over the graph of waiting dependants read (and
locked, in id order) up front: the direct dependants of a job that succeeded
(only they can be released), the whole waiting closure of one that did not
(every job in it is cancelled), found with one recursive query over
`job_dependency`, so a chain 10,000 deep is one query and one loop."""

from __future__ import annotations

from collections import deque
from datetime import datetime

from jobq.core.ids import new_id
from jobq.core.models import Job, Status
from jobq.core.outcomes import Outcome
from jobq.rules.outbox import delivery_for
from jobq.rules.transitions import (
    RetryPolicy,
    cancelled,
    dependant_after,
    parked,
    retried_from_dlq,
    settled,
    started,
)
from jobq.storage.postgres.rows import JOB_COLUMNS
from jobq.storage.postgres.unit import HOT, Unit

_DIRECT = """
SELECT d.depends_on_id, d.job_id FROM job_dependency d
JOIN job j ON j.id = d.job_id AND j.status = 'waiting'
WHERE d.depends_on_id = $1
"""
_CLOSURE = """
WITH RECURSIVE down(depends_on_id, job_id) AS (
    SELECT d.depends_on_id, d.job_id FROM job_dependency d
    JOIN job j ON j.id = d.job_id AND j.status = 'waiting'
    WHERE d.depends_on_id = $1
  UNION
    SELECT d.depends_on_id, d.job_id FROM down
    JOIN job_dependency d ON d.depends_on_id = down.job_id
    JOIN job j ON j.id = d.job_id AND j.status = 'waiting'
)
SELECT depends_on_id, job_id FROM down
"""


def start_attempt(
    unit: Unit, job: Job, worker_id: str, now: datetime, lease_seconds: float, token: int, owner: int
) -> Job:
    return unit.put(started(job, new_id(), worker_id, now, lease_seconds), lease=(token, worker_id, owner))


async def settle(unit: Unit, job: Job, outcome: Outcome, now: datetime, policy: RetryPolicy) -> Job:
    done = unit.put(settled(job, outcome, now, policy))
    if done.terminal:
        await ended(unit, done, now)
    return done


async def cancel(unit: Unit, job: Job, reason: str, now: datetime, actor: str | None = None) -> Job:
    done = unit.put(cancelled(job, reason, now, actor))
    await ended(unit, done, now)
    return done


async def park(unit: Unit, job: Job, reason: str, now: datetime) -> Job:
    dead = unit.put(parked(job, reason, now))
    await ended(unit, dead, now)
    return dead


def retry_from_dlq(unit: Unit, job: Job, actor: str, now: datetime) -> Job:
    return unit.put(retried_from_dlq(job, actor, now))


async def ended(unit: Unit, job: Job, now: datetime) -> None:
    """`job` has just reached a terminal state: its webhook goes into the
    outbox, and the jobs waiting on it are released or cancelled."""
    edges = await unit.conn.fetch(_DIRECT if job.status is Status.SUCCEEDED else _CLOSURE, job.job_id)
    dependants: dict[str, list[str]] = {}
    for edge in edges:
        dependants.setdefault(edge["depends_on_id"], []).append(edge["job_id"])
    if edges:
        await unit.load({edge["job_id"] for edge in edges}, table=HOT)
        if job.status is Status.SUCCEEDED:
            await _peek_dependencies(unit, dependants.get(job.job_id, []))
    ending: deque[Job] = deque([job])
    while ending:
        finished = ending.popleft()
        delivery = delivery_for(finished, now)
        if delivery is not None:
            unit.put_delivery(delivery, new=True)
        for waiting_id in sorted(dependants.get(finished.job_id, ())):
            waiting = unit.latest(waiting_id)
            after = None if waiting is None else dependant_after(waiting, finished, unit.lookup, now)
            if after is not None:
                unit.put(after)
                if after.terminal:
                    ending.append(after)


async def _peek_dependencies(unit: Unit, waiting_ids: list[str]) -> None:
    """Read (without locking) the other dependencies of jobs that may now be released.
    The dependants themselves are locked first, so a dependency ending at the same
    time in another transaction is seen as it committed."""
    wanted: set[str] = set()
    for waiting_id in waiting_ids:
        waiting = unit.latest(waiting_id)
        if waiting is not None:
            wanted.update(d for d in waiting.depends_on if unit.latest(d) is None)
    if wanted:
        found = await unit.conn.fetch(f"SELECT {JOB_COLUMNS} FROM any_job WHERE id = ANY($1::text[])", list(wanted))
        unit.peek(found)
