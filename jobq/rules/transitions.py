"""The state rules of one job (SPEC §3), as pure functions every backend
applies: each takes a job's version and returns its next one, checked against
`models.TRANSITIONS` (jobs are replaced, never mutated). What a change sets off
(the webhook of a job that ended, the dependants to release or cancel) is
computed here too, but applied by the backend: the JSON store through a
`Transaction`, a database inside its SQL transaction.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from jobq.core.models import Attempt, AttemptStatus, Job, OperatorAction, Status, check_transition
from jobq.core.outcomes import Failed, Interrupted, Outcome, Snoozed, Succeeded
from jobq.rules.jobs import backoff_seconds

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


def started(job: Job, attempt_id: str, worker_id: str, now: datetime, lease_seconds: float) -> Job:
    """`job` claimed: its next attempt runs under a lease."""
    number = job.attempts + 1
    attempt = Attempt(
        attempt_id=attempt_id,
        job_id=job.job_id,
        attempt=number,
        status=AttemptStatus.RUNNING,
        worker_id=worker_id,
        started_at=now,
    )
    return move(
        job,
        Status.RUNNING,
        now,
        attempts=number,
        started_at=now,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        attempt_history=[*job.attempt_history[-(MAX_ATTEMPT_HISTORY - 1) :], attempt],
    )


def settled(job: Job, outcome: Outcome, now: datetime, policy: RetryPolicy) -> Job:
    """What the running attempt of `job` ended with makes of it. A terminal
    result has ended (`ended_effects` says what follows)."""
    if isinstance(outcome, Succeeded):
        return move(
            job,
            Status.SUCCEEDED,
            now,
            result=outcome.result,
            finished_at=now,
            lease_expires_at=None,
            attempt_history=_end_attempt(job, AttemptStatus.SUCCEEDED, None, now),
        )
    if isinstance(outcome, Interrupted):
        return move(
            job,
            Status.QUEUED,
            now,
            next_run_at=now,
            lease_expires_at=None,
            uncounted_attempts=job.uncounted_attempts + 1,
            attempt_history=_end_attempt(job, AttemptStatus.INTERRUPTED, "interrupted by shutdown", now),
        )
    if isinstance(outcome, Snoozed):
        if job.snoozes >= policy.max_snoozes:
            return settled(job, Failed(f"snoozed more than {policy.max_snoozes} times"), now, policy)
        seconds = min(max(outcome.seconds, 0.0), policy.max_snooze_seconds)
        return move(
            job,
            Status.RETRY,
            now,
            next_run_at=now + timedelta(seconds=seconds),
            lease_expires_at=None,
            uncounted_attempts=job.uncounted_attempts + 1,
            snoozes=job.snoozes + 1,
            attempt_history=_end_attempt(job, AttemptStatus.INTERRUPTED, f"snoozed for {seconds:g} s", now),
        )
    assert isinstance(outcome, Failed)
    history = _end_attempt(job, AttemptStatus.FAILED, outcome.error, now)
    if outcome.permanent or job.counted_attempts >= job.max_attempts:
        return move(
            job,
            Status.FATAL,
            now,
            last_error=outcome.error,
            finished_at=now,
            lease_expires_at=None,
            attempt_history=history,
        )
    delay = policy.delay(job.counted_attempts)
    return move(
        job,
        Status.RETRY,
        now,
        last_error=outcome.error,
        lease_expires_at=None,
        next_run_at=now + timedelta(milliseconds=round(delay * 1000)),
        attempt_history=history,
    )


def cancelled(job: Job, reason: str, now: datetime, actor: str | None = None) -> Job:
    """A non-terminal job cancelled (a running attempt is recorded as failed)."""
    changes: dict[str, object] = {"finished_at": now, "lease_expires_at": None, "last_error": reason}
    if job.status is Status.RUNNING:
        changes["attempt_history"] = _end_attempt(job, AttemptStatus.FAILED, reason, now)
    if actor is not None:
        changes.update(with_action(job, OperatorAction("cancel", actor, now)))
    return move(job, Status.CANCELLED, now, **changes)


def parked(job: Job, reason: str, now: datetime) -> Job:
    """A job jobq cannot handle the usual way, straight to `fatal` (the DLQ) with `reason`."""
    return move(
        job,
        Status.FATAL,
        now,
        last_error=reason,
        finished_at=now,
        lease_expires_at=None,
        attempt_history=_end_attempt(job, AttemptStatus.FAILED, reason, now),
    )


def retried_from_dlq(job: Job, actor: str, now: datetime) -> Job:
    """A `fatal` job back to `queued`, with `maxAttempts` further attempts."""
    return move(
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


def dependant_after(waiting: Job, finished: Job, lookup: Callable[[str], Job | None], now: datetime) -> Job | None:
    """What `finished` (a dependency that has just ended) makes of the job
    `waiting` on it: cancelled if it did not succeed, queued if it was the last
    one unfinished, None when nothing changes."""
    if waiting.status is not Status.WAITING:
        return None
    if finished.status is not Status.SUCCEEDED:
        return cancelled(waiting, f"dependency {finished.job_id} ended {finished.status.value}", now)
    if first_unfinished_dependency(waiting, lookup) is None:
        return move(waiting, Status.QUEUED, now, next_run_at=max(waiting.next_run_at, now))
    return None


def first_unfinished_dependency(job: Job, lookup: Callable[[str], Job | None]) -> str | None:
    """The first dependency not yet `succeeded`; a purged one counts as succeeded
    (only terminal jobs are purged, and a failed one would have cancelled us)."""
    for dep_id in job.depends_on:
        dep = lookup(dep_id)
        if dep is not None and dep.status is not Status.SUCCEEDED:
            return dep_id
    return None
