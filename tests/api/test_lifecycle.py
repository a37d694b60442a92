"""Every state and transition of SPEC §3, driven through HTTP and the worker's
finite modes, with a fake clock for backoff, leases, timeouts and expiry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jobq.core.models import Job
from jobq.storage.protocol import LeaseRef
from jobq.worker.handlers import Context, Registry, Snooze
from tests.conftest import RUNNING, Harness, HarnessFactory


async def test_failures_retry_with_exponential_backoff_then_succeed(jobq: Harness) -> None:
    job = await jobq.submit(type="fail", payload={"times": 2})
    await jobq.drain()
    first = await jobq.get(job["jobId"])
    assert first["status"] == "retry"
    assert first["attempts"] == 1
    assert "RuntimeError" in first["lastError"]
    assert first["waitingReason"].startswith("retry at ")
    delay = _seconds_between(first["updatedAt"], first["nextRunAt"])
    assert 27 <= delay <= 33  # 30 s ± 10 %

    jobq.clock.advance(delay - 1)
    await jobq.drain()
    assert (await jobq.get(job["jobId"]))["attempts"] == 1  # not due yet

    jobq.clock.advance(2)
    await jobq.drain()
    second = await jobq.get(job["jobId"])
    assert second["status"] == "retry" and second["attempts"] == 2
    assert 54 <= _seconds_between(second["updatedAt"], second["nextRunAt"]) <= 66  # 60 s ± 10 %

    jobq.clock.advance(70)
    await jobq.drain()
    done = await jobq.get(job["jobId"])
    assert done["status"] == "succeeded"
    assert [a["status"] for a in done["attemptHistory"]] == ["failed", "failed", "succeeded"]


async def test_exhausted_attempts_go_fatal_into_the_dlq_and_retry_from_there(jobq: Harness) -> None:
    job = await jobq.submit(type="fail", payload={"times": 5}, maxAttempts=2)
    await jobq.drain()
    jobq.clock.advance(40)
    await jobq.drain()
    dead = await jobq.get(job["jobId"])
    assert dead["status"] == "fatal" and dead["attempts"] == 2
    dlq = await (await jobq.client.get("/dlq", headers=jobq.headers())).json()
    assert [j["jobId"] for j in dlq["jobs"]] == [job["jobId"]]

    retried = await jobq.client.post(f"/jobs/{job['jobId']}/retry", headers=jobq.headers())
    body = await retried.json()
    assert retried.status == 200 and body["status"] == "queued"
    assert body["operatorActions"][-1]["action"] == "retry"
    assert body["operatorActions"][-1]["actor"].startswith("acme")
    # maxAttempts further attempts: attempts 3 and 4 fail, 5 would be the sixth.
    await jobq.drain()
    jobq.clock.advance(40)
    await jobq.drain()
    again = await jobq.get(job["jobId"])
    assert again["status"] == "fatal" and again["attempts"] == 4

    conflict = await jobq.client.post(f"/jobs/{job['jobId']}/cancel", headers=jobq.headers())
    assert conflict.status == 409


async def test_retry_of_a_job_that_is_not_fatal_is_409(jobq: Harness) -> None:
    job = await jobq.submit()
    response = await jobq.client.post(f"/jobs/{job['jobId']}/retry", headers=jobq.headers())
    assert response.status == 409
    assert response.content_type == "application/problem+json"


async def test_permanent_error_goes_fatal_at_once(jobq: Harness) -> None:
    job = await jobq.submit(type="fail", payload={"times": 1, "permanent": True, "message": "bad input"})
    await jobq.drain()
    dead = await jobq.get(job["jobId"])
    assert dead["status"] == "fatal" and dead["attempts"] == 1
    assert "bad input" in dead["lastError"]


async def test_cancel_queued_job_and_cancel_twice_is_409(jobq: Harness) -> None:
    job = await jobq.submit(delaySeconds=60)
    response = await jobq.client.post(f"/jobs/{job['jobId']}/cancel", headers=jobq.headers())
    body = await response.json()
    assert response.status == 200 and body["status"] == "cancelled"
    assert body["operatorActions"][0]["action"] == "cancel"
    again = await jobq.client.post(f"/jobs/{job['jobId']}/cancel", headers=jobq.headers())
    assert again.status == 409
    jobq.clock.advance(120)
    await jobq.drain()
    assert (await jobq.get(job["jobId"]))["attempts"] == 0


async def test_cancel_running_job_cancels_the_handler(jobq: Harness) -> None:
    job = await jobq.submit(type="sleep", payload={"seconds": 30})
    await jobq.worker.run_once()
    assert (await jobq.get(job["jobId"]))["status"] == "running"
    response = await jobq.client.post(f"/jobs/{job['jobId']}/cancel", headers=jobq.headers())
    assert (await response.json())["status"] == "cancelled"
    await asyncio.wait_for(jobq.drain(), timeout=5)
    done = await jobq.get(job["jobId"])
    assert done["status"] == "cancelled"
    assert done["attemptHistory"][0]["status"] == "failed"
    assert jobq.worker.active == 0


async def test_attempt_past_its_timeout_is_cancelled_and_counts_as_failed(jobq: Harness) -> None:
    job = await jobq.submit(type="sleep", payload={"seconds": 30}, timeoutSeconds=5, maxAttempts=1)
    await jobq.worker.run_once()
    jobq.clock.advance(6)
    await jobq.worker.run_once()
    await asyncio.wait_for(jobq.drain(), timeout=5)
    dead = await jobq.get(job["jobId"])
    assert dead["status"] == "fatal"
    assert "timed out after 5 s" in dead["lastError"]


async def test_expired_lease_of_a_dead_worker_is_a_failed_attempt(jobq: Harness) -> None:
    job = await jobq.submit()
    claim = await jobq.store.claim("ghost-worker", 1, lease_seconds=30, limits=RUNNING, now=jobq.clock.now())
    await claim.durable
    [claimed] = claim.jobs
    jobq.clock.advance(31)
    await jobq.store.reap(jobq.clock.now())
    reaped = await jobq.get(job["jobId"])
    assert reaped["status"] == "retry"
    assert "lease expired" in reaped["lastError"]
    # The ghost's late completion is fenced off.
    from jobq.core.errors import StaleAttempt
    from jobq.core.outcomes import Succeeded

    with pytest.raises(StaleAttempt):
        await jobq.store.finish(LeaseRef(claimed.job_id, claimed.attempts), Succeeded(None), jobq.clock.now())


async def test_heartbeats_keep_a_long_attempt_alive(jobq: Harness) -> None:
    job = await jobq.submit(type="sleep", payload={"seconds": 30}, timeoutSeconds=300)
    await jobq.worker.run_once()
    for _ in range(10):
        jobq.clock.advance(11)
        await jobq.worker.run_once()
    running = await jobq.get(job["jobId"])
    assert running["status"] == "running" and running["attempts"] == 1
    await jobq.client.post(f"/jobs/{job['jobId']}/cancel", headers=jobq.headers())
    await asyncio.wait_for(jobq.drain(), timeout=5)


async def test_running_jobs_of_a_dead_process_are_recovered_at_start(make_harness: HarnessFactory) -> None:
    first = await make_harness()
    job = await first.submit(type="sleep", payload={"seconds": 30})
    await (await first.store.claim("dead", 1, lease_seconds=3600, limits=RUNNING, now=first.clock.now())).durable
    await first.store.close()  # like a crash: the attempt never finished
    second = await make_harness()
    recovered = await second.get(job["jobId"])
    assert recovered["status"] == "retry"
    assert recovered["attemptHistory"][0]["status"] == "failed"
    assert "jobq stopped" in recovered["lastError"]
    assert recovered["nextRunAt"] <= recovered["updatedAt"]  # runs again at once


async def test_expired_job_that_never_started_is_cancelled(jobq: Harness) -> None:
    expires = "2026-11-24T09:31:00.000Z"
    job = await jobq.submit(delaySeconds=120, expiresAt=expires)
    jobq.clock.advance(61)
    await jobq.drain()
    expired = await jobq.get(job["jobId"])
    assert expired["status"] == "cancelled" and expired["lastError"] == "expired"


async def test_scheduled_job_waits_for_its_run_at(jobq: Harness) -> None:
    job = await jobq.submit(runAt="2026-11-24T10:30:00Z")
    assert job["waitingReason"] == "scheduled for 2026-11-24T10:30:00.000Z"
    await jobq.drain()
    assert (await jobq.get(job["jobId"]))["status"] == "queued"
    jobq.clock.advance(3600)
    await jobq.drain()
    assert (await jobq.get(job["jobId"]))["status"] == "succeeded"


async def test_dependencies_wait_then_queue_or_cancel(jobq: Harness) -> None:
    parent = await jobq.submit(delaySeconds=10)
    child = await jobq.submit(dependsOn=[parent["jobId"]])
    assert child["status"] == "waiting"
    assert child["waitingReason"] == f"waiting on job {parent['jobId']}"
    jobq.clock.advance(11)
    await jobq.drain()
    assert (await jobq.get(child["jobId"]))["status"] == "succeeded"

    doomed = await jobq.submit(type="fail", payload={"times": 1, "permanent": True}, delaySeconds=5)
    orphan = await jobq.submit(dependsOn=[doomed["jobId"]])
    grandchild = await jobq.submit(dependsOn=[orphan["jobId"]])
    jobq.clock.advance(6)
    await jobq.drain()
    orphan_now = await jobq.get(orphan["jobId"])
    assert orphan_now["status"] == "cancelled"
    assert doomed["jobId"] in orphan_now["lastError"]
    assert (await jobq.get(grandchild["jobId"]))["status"] == "cancelled"


async def test_depending_on_a_failed_job_is_refused(jobq: Harness) -> None:
    dead = await jobq.submit(type="fail", payload={"times": 1, "permanent": True})
    await jobq.drain()
    refused = await jobq.submit(expect=422, dependsOn=[dead["jobId"]])
    assert refused["errors"][0]["field"] == "dependsOn"


async def test_snooze_reschedules_without_using_an_attempt(make_harness: HarnessFactory, registry: Registry) -> None:
    calls: list[int] = []

    @registry.handler("snoozy")
    async def snoozy(job: Job, ctx: Context) -> Any:
        calls.append(ctx.attempt)
        if len(calls) < 3:
            raise Snooze(20)
        return "done"

    jobq = await make_harness()
    job = await jobq.submit(type="snoozy", maxAttempts=1)
    await jobq.drain()
    snoozed = await jobq.get(job["jobId"])
    assert snoozed["status"] == "retry"
    assert snoozed["attemptHistory"][0]["status"] == "interrupted"
    for _ in range(2):
        jobq.clock.advance(21)
        await jobq.drain()
    done = await jobq.get(job["jobId"])
    assert done["status"] == "succeeded" and done["result"] == "done"
    assert done["attempts"] == 3  # the fencing token still grows


async def test_snoozing_forever_is_bounded(make_harness: HarnessFactory, registry: Registry) -> None:
    @registry.handler("sleepyhead")
    async def sleepyhead(job: Job, ctx: Context) -> Any:
        raise Snooze(1)

    jobq = await make_harness(max_snoozes=3)
    job = await jobq.submit(type="sleepyhead", maxAttempts=1)
    for _ in range(6):
        await jobq.drain()
        jobq.clock.advance(2)
    dead = await jobq.get(job["jobId"])
    assert dead["status"] == "fatal"
    assert "snoozed more than 3 times" in dead["lastError"]


async def test_blocking_handler_runs_in_a_thread(make_harness: HarnessFactory, registry: Registry) -> None:
    import threading

    main_thread = threading.get_ident()

    @registry.handler("blocking", blocking=True)
    def blocking(job: Job, ctx: Context) -> Any:
        ctx.progress_from_thread(0.5, "half")
        return {"sameThread": threading.get_ident() == main_thread}

    jobq = await make_harness()
    job = await jobq.submit(type="blocking")
    await jobq.drain()
    done = await jobq.get(job["jobId"])
    assert done["result"] == {"sameThread": False}
    assert done["progress"] == 0.5 and done["progressMessage"] == "half"


async def test_graceful_stop_releases_running_jobs_as_interrupted(jobq: Harness) -> None:
    job = await jobq.submit(type="sleep", payload={"seconds": 30}, maxAttempts=1)
    await jobq.worker.run_once()
    await jobq.worker.stop(grace_seconds=0.05)
    released = await jobq.get(job["jobId"])
    assert released["status"] == "queued"
    assert released["attemptHistory"][0]["status"] == "interrupted"
    assert released["attempts"] == 1  # counted as started, not against maxAttempts


async def test_priority_first_then_age_with_aging(make_harness: HarnessFactory, registry: Registry) -> None:
    order: list[str] = []

    @registry.handler("record")
    async def record(job: Job, ctx: Context) -> Any:
        order.append(job.payload["name"])
        return None

    jobq = await make_harness(worker_concurrency=1, aging_seconds=300)
    await jobq.submit(type="record", payload={"name": "old-low"}, priority=0)
    jobq.clock.advance(1)
    await jobq.submit(type="record", payload={"name": "medium"}, priority=1)
    await jobq.submit(type="record", payload={"name": "critical"}, priority=3)
    await jobq.submit(type="record", payload={"name": "high"}, priority=2)
    await jobq.drain()
    assert order == ["critical", "high", "medium", "old-low"]

    order.clear()
    await jobq.submit(type="record", payload={"name": "starved-low"}, priority=0)
    jobq.clock.advance(301)
    await jobq.submit(type="record", payload={"name": "fresh-medium"}, priority=1)
    await jobq.drain()
    assert order == ["starved-low", "fresh-medium"]


async def test_tenant_max_running_and_round_robin(jobq: Harness) -> None:
    # globex may run 2 at once; its backlog must not hold up acme.
    for _ in range(5):  # globex's burst
        await jobq.submit("globex", type="sleep", payload={"seconds": 30})
    acme = await jobq.submit("acme", type="sleep", payload={"seconds": 30})
    await jobq.worker.run_once()
    counts_globex = await jobq.store.counts("globex")
    assert counts_globex["running"] == 2
    assert (await jobq.get(acme["jobId"]))["status"] == "running"
    waiting = (await (await jobq.client.get("/jobs?status=queued", headers=jobq.headers("globex"))).json())["jobs"]
    assert waiting[0]["waitingReason"] == "tenant at maxRunning (2/2)"
    await jobq.client.post("/jobs/bulk", json={"action": "cancel", "filter": {}}, headers=jobq.headers("admin"))
    await asyncio.wait_for(jobq.drain(), timeout=5)


async def test_retention_purges_old_terminal_jobs_and_their_keys(jobq: Harness) -> None:
    old = await jobq.submit(headers={"Idempotency-Key": "k1"})
    await jobq.drain()
    pending = await jobq.submit(delaySeconds=30 * 86400)
    jobq.clock.advance(7 * 86400 + 1)
    purged = await jobq.store.purge(jobq.clock.now(), jobq.settings.retention_days * 86400)
    assert purged == 1
    gone = await jobq.client.get(f"/jobs/{old['jobId']}", headers=jobq.headers())
    assert gone.status == 404
    assert (await jobq.get(pending["jobId"]))["status"] == "queued"
    again = await jobq.submit(headers={"Idempotency-Key": "k1"}, payload={"other": True})
    assert again["jobId"] != old["jobId"]


def _seconds_between(start: str, end: str) -> float:
    from jobq.core.timefmt import parse_ts

    a, b = parse_ts(start), parse_ts(end)
    assert a is not None and b is not None
    return (b - a).total_seconds()
