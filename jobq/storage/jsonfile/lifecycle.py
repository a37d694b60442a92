"""State changes of one job, applied through a `Transaction` (SPEC §3).

Each function checks the move against `models.TRANSITIONS`, builds the job's
next version (jobs are replaced, never mutated) and puts it. Dependency
promotion and cascading cancels happen here, inside the same transaction as
the change that caused them, so they are atomic with it.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from jobq.core.ids import new_id
from jobq.core.models import (
    Attempt,
    AttemptStatus,
    Failed,
    Interrupted,
    Job,
    OperatorAction,
    Outcome,
    Snoozed,
    Status,
    Succeeded,
    check_transition,
)
from jobq.rules.jobs import backoff_seconds
from jobq.rules.outbox import delivery_for
from jobq.storage.jsonfile.transaction import Transaction

MAX_OPERATOR_ACTIONS = 20  # newest kept on a job; older ones are only counted
MAX_ATTEMPT_HISTORY = 100  # newest attempts kept on a job (DLQ retries could add more for ever)
REDELIVER_INTERVAL_SECONDS = 60  # one redeliver of a job's webhook a minute
RECOVERED_ERROR = "interrupted: jobq stopped while this attempt ran"
RECOVERY_FAILED_ERROR = "parked: recovering this job at start failed"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    base_seconds: float = 30.0
    max_seconds: float = 3600.0
    max_snoozes: int = 50
    max_snooze_seconds: float = 7 * 86400.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, failures: int) -> float:
        return backoff_seconds(failures, self.base_seconds, self.max_seconds, self.rng)


def move(job: Job, status: Status, now: datetime, **changes: object) -> Job:
    """The next version of `job` in `status`; raises `IllegalTransition`."""
    check_transition(job.status, status)
    return job.evolve(status=status, updated_at=now, **changes)


def _end_attempt(job: Job, status: AttemptStatus, error: str | None, now: datetime) -> list[Attempt]:
    history = list(job.attempt_history)
    if history and history[-1].attempt == job.attempts and history[-1].status is AttemptStatus.RUNNING:
        history[-1] = replace(history[-1], status=status, error=error, finished_at=now)
    return history


def start_attempt(tx: Transaction, job: Job, worker_id: str, now: datetime, lease_seconds: float) -> Job:
    number = job.attempts + 1
    attempt = Attempt(
        attempt_id=new_id(),
        job_id=job.job_id,
        attempt=number,
        status=AttemptStatus.RUNNING,
        worker_id=worker_id,
        started_at=now,
    )
    return tx.put(
        move(
            job,
            Status.RUNNING,
            now,
            attempts=number,
            started_at=now,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempt_history=[*job.attempt_history[-(MAX_ATTEMPT_HISTORY - 1) :], attempt],
        )
    )


def settle(tx: Transaction, job: Job, outcome: Outcome, now: datetime, policy: RetryPolicy) -> Job:
    """Apply what the running attempt of `job` ended with."""
    if isinstance(outcome, Succeeded):
        done = move(
            job,
            Status.SUCCEEDED,
            now,
            result=outcome.result,
            finished_at=now,
            lease_expires_at=None,
            attempt_history=_end_attempt(job, AttemptStatus.SUCCEEDED, None, now),
        )
        tx.put(done)
        ended(tx, done, now)
        return done
    if isinstance(outcome, Interrupted):
        return tx.put(
            move(
                job,
                Status.QUEUED,
                now,
                next_run_at=now,
                lease_expires_at=None,
                uncounted_attempts=job.uncounted_attempts + 1,
                attempt_history=_end_attempt(job, AttemptStatus.INTERRUPTED, "interrupted by shutdown", now),
            )
        )
    if isinstance(outcome, Snoozed):
        if job.snoozes >= policy.max_snoozes:
            return settle(tx, job, Failed(f"snoozed more than {policy.max_snoozes} times"), now, policy)
        seconds = min(max(outcome.seconds, 0.0), policy.max_snooze_seconds)
        return tx.put(
            move(
                job,
                Status.RETRY,
                now,
                next_run_at=now + timedelta(seconds=seconds),
                lease_expires_at=None,
                uncounted_attempts=job.uncounted_attempts + 1,
                snoozes=job.snoozes + 1,
                attempt_history=_end_attempt(job, AttemptStatus.INTERRUPTED, f"snoozed for {seconds:g} s", now),
            )
        )
    assert isinstance(outcome, Failed)
    history = _end_attempt(job, AttemptStatus.FAILED, outcome.error, now)
    if outcome.permanent or job.counted_attempts >= job.max_attempts:
        dead = move(
            job,
            Status.FATAL,
            now,
            last_error=outcome.error,
            finished_at=now,
            lease_expires_at=None,
            attempt_history=history,
        )
        tx.put(dead)
        ended(tx, dead, now)
        return dead
    delay = policy.delay(job.counted_attempts)
    return tx.put(
        move(
            job,
            Status.RETRY,
            now,
            last_error=outcome.error,
            lease_expires_at=None,
            next_run_at=now + timedelta(milliseconds=round(delay * 1000)),
            attempt_history=history,
        )
    )


def cancel(tx: Transaction, job: Job, reason: str, now: datetime, actor: str | None = None) -> Job:
    """Cancel a non-terminal job (a running attempt is recorded as failed) and
    everything waiting on it."""
    done = _cancel_one(tx, job, reason, now, actor)
    ended(tx, done, now)
    return done


def _cancel_one(tx: Transaction, job: Job, reason: str, now: datetime, actor: str | None) -> Job:
    changes: dict[str, object] = {"finished_at": now, "lease_expires_at": None, "last_error": reason}
    if job.status is Status.RUNNING:
        changes["attempt_history"] = _end_attempt(job, AttemptStatus.FAILED, reason, now)
    if actor is not None:
        changes.update(with_action(job, OperatorAction("cancel", actor, now)))
    return tx.put(move(job, Status.CANCELLED, now, **changes))


def park(tx: Transaction, job: Job, reason: str, now: datetime, *, cascade: bool = True) -> Job:
    """A job jobq cannot handle the usual way, straight to `fatal` (the DLQ)
    with `reason`; with `cascade`, what waits on it is cancelled as for any end."""
    dead = move(
        job,
        Status.FATAL,
        now,
        last_error=reason,
        finished_at=now,
        lease_expires_at=None,
        attempt_history=_end_attempt(job, AttemptStatus.FAILED, reason, now),
    )
    tx.put(dead)
    if cascade:
        ended(tx, dead, now)
    return dead


def retry_from_dlq(tx: Transaction, job: Job, actor: str, now: datetime) -> Job:
    """A `fatal` job back to `queued`, with `maxAttempts` further attempts."""
    return tx.put(
        move(
            job,
            Status.QUEUED,
            now,
            next_run_at=now,
            finished_at=None,
            result=None,
            uncounted_attempts=job.attempts,
            snoozes=0,
            **with_action(job, OperatorAction("retry", actor, now)),
        )
    )


def with_action(job: Job, action: OperatorAction) -> dict[str, Any]:
    """The changes that add `action` to the job's operator actions, of which
    only the newest `MAX_OPERATOR_ACTIONS` are kept and the older ones
    counted: no job grows without bound."""
    actions = [*job.operator_actions, action]
    dropped = max(0, len(actions) - MAX_OPERATOR_ACTIONS)
    return {
        "operator_actions": actions[dropped:],
        "operator_actions_omitted": job.operator_actions_omitted + dropped,
    }


def redeliver_wait_seconds(job: Job, now: datetime) -> int:
    """Whole seconds until the job's webhook may be redelivered again (0: now)."""
    last = max((a.at for a in job.operator_actions if a.action == "redeliver"), default=None)
    if last is None:
        return 0
    left = (last + timedelta(seconds=REDELIVER_INTERVAL_SECONDS) - now).total_seconds()
    return max(0, math.ceil(left))


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
        ending.extend(_dependency_ended(tx, finished, now))


def _dependency_ended(tx: Transaction, finished: Job, now: datetime) -> list[Job]:
    """Promote or cancel the jobs waiting on `finished`; returns those cancelled
    (they have ended in turn)."""
    cancelled = []
    for waiting_id in sorted(tx.index.dependents.get(finished.job_id, ())):
        waiting = tx.latest(waiting_id)
        if waiting is None or waiting.status is not Status.WAITING:
            continue
        if finished.status is not Status.SUCCEEDED:
            reason = f"dependency {finished.job_id} ended {finished.status.value}"
            cancelled.append(_cancel_one(tx, waiting, reason, now, None))
        elif first_unfinished_dependency(waiting, tx.latest) is None:
            tx.put(move(waiting, Status.QUEUED, now, next_run_at=max(waiting.next_run_at, now)))
    return cancelled


def first_unfinished_dependency(job: Job, lookup: Callable[[str], Job | None]) -> str | None:
    """The first dependency not yet `succeeded`; a purged one counts as succeeded
    (only terminal jobs are purged, and a failed one would have cancelled us)."""
    for dep_id in job.depends_on:
        dep = lookup(dep_id)
        if dep is not None and dep.status is not Status.SUCCEEDED:
            return dep_id
    return None
