"""The state rules of one job (jobq/rules/transitions.py), table by table:
pure functions from a version to the next, which every backend applies."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from jobq.core.models import AttemptStatus, IllegalTransition, Job, NewJob, Status
from jobq.core.outcomes import Failed, Interrupted, Outcome, Snoozed, Succeeded
from jobq.rules.submission import build_jobs
from jobq.rules.transitions import (
    MAX_ATTEMPT_HISTORY,
    RetryPolicy,
    cancelled,
    dependant_after,
    parked,
    retried_from_dlq,
    settled,
    started,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
_ids = (f"job-{n}" for n in itertools.count())


def new_job(max_attempts: int = 3) -> Job:
    spec = NewJob(type="echo", payload={}, max_attempts=max_attempts)
    [job] = build_jobs("acme", [spec], NOW, lambda _: None, lambda: next(_ids), None)
    return job


def running(job: Job, attempts: int = 1) -> Job:
    for n in range(attempts):
        job = started(job, f"a{n}", "w", NOW, 30)
        if n < attempts - 1:
            job = settled(job, Failed("again"), NOW, RetryPolicy(base_seconds=0, max_seconds=0)).evolve(
                status=Status.QUEUED
            )
    return job


POLICY = RetryPolicy(base_seconds=30, max_seconds=3600, max_snoozes=2, rng=random.Random(7))


@pytest.mark.parametrize(
    ("outcome", "attempts", "status", "attempt_status", "finished"),
    [
        (Succeeded({"ok": 1}), 1, Status.SUCCEEDED, AttemptStatus.SUCCEEDED, True),
        (Failed("boom"), 1, Status.RETRY, AttemptStatus.FAILED, False),
        (Failed("boom"), 3, Status.FATAL, AttemptStatus.FAILED, True),  # the last of maxAttempts
        (Failed("no", permanent=True), 1, Status.FATAL, AttemptStatus.FAILED, True),
        (Snoozed(60), 1, Status.RETRY, AttemptStatus.INTERRUPTED, False),
        (Interrupted(), 1, Status.QUEUED, AttemptStatus.INTERRUPTED, False),
    ],
)
def test_what_an_attempt_ends_with_makes_of_the_job(
    outcome: Outcome, attempts: int, status: Status, attempt_status: AttemptStatus, finished: bool
) -> None:
    job = running(new_job(max_attempts=3), attempts)
    after = settled(job, outcome, NOW, POLICY)
    assert after.status is status
    assert after.attempt_history[-1].status is attempt_status
    assert (after.finished_at == NOW) is finished
    assert after.lease_expires_at is None
    assert job.status is Status.RUNNING  # the version it came from is unchanged


def test_a_failure_waits_the_backoff_and_a_snooze_its_own_time_without_using_an_attempt() -> None:
    job = running(new_job())
    failed = settled(job, Failed("boom"), NOW, RetryPolicy(base_seconds=30, max_seconds=30, rng=random.Random(1)))
    assert timedelta(seconds=15) <= failed.next_run_at - NOW <= timedelta(seconds=45)
    snoozed = settled(job, Snoozed(90), NOW, POLICY)
    assert snoozed.next_run_at - NOW == timedelta(seconds=90)
    assert snoozed.uncounted_attempts == 1 and snoozed.snoozes == 1


def test_a_job_that_snoozes_too_often_fails() -> None:
    job = running(new_job()).evolve(snoozes=POLICY.max_snoozes)
    after = settled(job, Snoozed(1), NOW, POLICY)
    assert after.status is Status.RETRY and after.last_error == "snoozed more than 2 times"


@pytest.mark.parametrize(
    ("make", "status"),
    [
        (lambda: new_job(), Status.CANCELLED),
        (lambda: running(new_job()), Status.CANCELLED),
        (lambda: settled(running(new_job()), Succeeded(None), NOW, POLICY), None),  # ended: cannot be
    ],
)
def test_cancel(make: object, status: Status | None) -> None:
    job = make()  # type: ignore[operator]
    if status is None:
        with pytest.raises(IllegalTransition):
            cancelled(job, "stop", NOW, "op")
        return
    after = cancelled(job, "stop", NOW, "op")
    assert after.status is status and after.last_error == "stop"
    assert [a.action for a in after.operator_actions] == ["cancel"]
    if job.status is Status.RUNNING:
        assert after.attempt_history[-1].status is AttemptStatus.FAILED


def test_park_and_retry_from_the_dlq() -> None:
    dead = parked(running(new_job()), "cannot recover", NOW)
    assert dead.status is Status.FATAL and dead.last_error == "cannot recover"
    again = retried_from_dlq(dead, "op", NOW)
    assert again.status is Status.QUEUED and again.uncounted_attempts == dead.attempts
    assert again.counted_attempts == 0  # maxAttempts further attempts


def test_the_attempt_history_is_bounded() -> None:
    job = new_job().evolve(attempts=500)
    for n in range(MAX_ATTEMPT_HISTORY + 5):
        job = settled(started(job, f"a{n}", "w", NOW, 30), Interrupted(), NOW, POLICY)
    assert len(job.attempt_history) == MAX_ATTEMPT_HISTORY


@pytest.mark.parametrize(
    ("dependency_ends", "other_done", "expected"),
    [
        (Status.SUCCEEDED, True, Status.QUEUED),  # the last one unfinished
        (Status.SUCCEEDED, False, None),  # another is still unfinished
        (Status.FATAL, False, Status.CANCELLED),
        (Status.CANCELLED, True, Status.CANCELLED),
    ],
)
def test_what_a_dependency_ending_makes_of_a_waiting_job(
    dependency_ends: Status, other_done: bool, expected: Status | None
) -> None:
    first, second = new_job(), new_job()
    waiting = new_job().evolve(depends_on=(first.job_id, second.job_id), status=Status.WAITING)
    finished = first.evolve(status=dependency_ends)
    other = second.evolve(status=Status.SUCCEEDED if other_done else Status.QUEUED)
    jobs = {first.job_id: finished, second.job_id: other}
    after = dependant_after(waiting, finished, jobs.get, NOW)
    assert (after.status if after else None) is expected
    if expected is Status.CANCELLED:
        assert after is not None and after.last_error == f"dependency {first.job_id} ended {dependency_ends.value}"
    assert dependant_after(waiting.evolve(status=Status.CANCELLED), finished, jobs.get, NOW) is None
