"""The JSON store's side of a job's state changes (SPEC §3): the pure rules
of `jobq.rules.transitions` applied through a `Transaction`, with what a
change sets off (the webhook of a job that ended, its dependants released or
cancelled) in the same transaction, so atomic with it.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

from jobq.core.ids import new_id
from jobq.core.models import Job
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
from jobq.storage.jsonfile.transaction import Transaction


def start_attempt(tx: Transaction, job: Job, worker_id: str, now: datetime, lease_seconds: float) -> Job:
    return tx.put(started(job, new_id(), worker_id, now, lease_seconds))


def settle(tx: Transaction, job: Job, outcome: Outcome, now: datetime, policy: RetryPolicy) -> Job:
    """Apply what the running attempt of `job` ended with."""
    done = tx.put(settled(job, outcome, now, policy))
    if done.terminal:
        ended(tx, done, now)
    return done


def cancel(tx: Transaction, job: Job, reason: str, now: datetime, actor: str | None = None) -> Job:
    """Cancel a non-terminal job and everything waiting on it."""
    done = tx.put(cancelled(job, reason, now, actor))
    ended(tx, done, now)
    return done


def park(tx: Transaction, job: Job, reason: str, now: datetime, *, cascade: bool = True) -> Job:
    """`job` straight to `fatal` with `reason`; with `cascade`, what waits on
    it is cancelled as for any end."""
    dead = tx.put(parked(job, reason, now))
    if cascade:
        ended(tx, dead, now)
    return dead


def retry_from_dlq(tx: Transaction, job: Job, actor: str, now: datetime) -> Job:
    return tx.put(retried_from_dlq(job, actor, now))


def ended(tx: Transaction, job: Job, now: datetime) -> None:
    """`job` has just reached a terminal state: its webhook goes into the
    outbox, and the jobs waiting on it are promoted or cancelled, all in the
    same transaction as the change itself.

    A cancel cascades: every job it cancels ends too. The cascade is a work
    list, never recursion, so a chain 10,000 deep costs a loop, not a stack."""
    ending: deque[Job] = deque([job])
    while ending:
        finished = ending.popleft()
        delivery = delivery_for(finished, now)
        if delivery is not None:
            tx.put_delivery(delivery)
        for waiting_id in sorted(tx.index.dependents.get(finished.job_id, ())):
            waiting = tx.latest(waiting_id)
            after = None if waiting is None else dependant_after(waiting, finished, tx.latest, now)
            if after is not None:
                tx.put(after)
                if after.terminal:
                    ending.append(after)
