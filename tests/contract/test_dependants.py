"""Cascades over dependants, bounded job history and the handler's own copy
(issue 8), on every backend: a chain 10,000 deep or a fan-out 10,000 wide ends
as one change, and survives a restart."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from jobq.core.models import Job, NewJob, Status
from jobq.core.outcomes import Failed
from jobq.rules.transitions import MAX_ATTEMPT_HISTORY, MAX_OPERATOR_ACTIONS
from jobq.storage.protocol import LeaseRef
from tests.conftest import RUNNING, Harness, HarnessFactory
from tests.support.graphs import DEEP, chain, fan_out, restart


async def stored(h: Harness, job_id: str) -> Job:
    job = await h.store.get(job_id, None)
    assert job is not None, job_id
    return job


async def statuses(h: Harness, ids: list[str]) -> list[Status]:
    return [(await stored(h, i)).status for i in ids]


async def test_cancelling_the_head_of_a_chain_10000_deep_cancels_it_all(
    jobq: Harness, make_harness: HarnessFactory
) -> None:
    ids = await chain(jobq, DEEP)
    assert await statuses(jobq, ids[1:]) == [Status.WAITING] * (DEEP - 1)

    response = await jobq.client.post(f"/jobs/{ids[0]}/cancel", headers=jobq.headers())

    assert response.status == 200, await response.text()
    assert await statuses(jobq, ids) == [Status.CANCELLED] * DEEP
    last = await stored(jobq, ids[-1])
    assert last.last_error == f"dependency {ids[-2]} ended cancelled"
    h = await restart(jobq, make_harness)
    assert await statuses(h, ids) == [Status.CANCELLED] * DEEP


async def test_a_fatal_head_cancels_a_fan_out_10000_wide(jobq: Harness, make_harness: HarnessFactory) -> None:
    head, leaves = await fan_out(jobq, DEEP)
    claimed = await jobq.store.claim("w", 1, lease_seconds=30, limits=RUNNING, now=jobq.clock.now())
    await claimed.durable
    assert [j.job_id for j in claimed.jobs] == [head]

    await jobq.store.finish(LeaseRef(head, 1), Failed("boom", permanent=True), jobq.clock.now())

    assert (await stored(jobq, head)).status is Status.FATAL
    assert await statuses(jobq, leaves) == [Status.CANCELLED] * DEEP
    h = await restart(jobq, make_harness)
    assert await statuses(h, leaves) == [Status.CANCELLED] * DEEP


async def test_expiry_of_a_chain_head_cancels_the_whole_chain(jobq: Harness, make_harness: HarnessFactory) -> None:
    expires = jobq.clock.now() + timedelta(seconds=60)
    ids = await chain(jobq, DEEP, head=NewJob("echo", {}, expires_at=expires))
    jobq.clock.advance(61)

    await jobq.store.reap(jobq.clock.now())

    assert (await stored(jobq, ids[0])).last_error == "expired"
    assert await statuses(jobq, ids) == [Status.CANCELLED] * DEEP
    h = await restart(jobq, make_harness)
    assert await statuses(h, ids) == [Status.CANCELLED] * DEEP


async def test_bulk_cancel_of_chain_heads_cancels_every_chain(jobq: Harness) -> None:
    chains = [await chain(jobq, 2000) for _ in range(5)]

    response = await jobq.client.post(
        "/jobs/bulk", json={"action": "cancel", "filter": {"status": "queued"}}, headers=jobq.headers()
    )

    assert response.status == 200, await response.text()
    assert await response.json() == {"matched": 5, "changed": 5}
    for ids in chains:
        assert await statuses(jobq, ids) == [Status.CANCELLED] * 2000


async def test_dlq_retry_of_a_fatal_head_after_its_fan_out_was_cancelled(jobq: Harness) -> None:
    head, leaves = await fan_out(jobq, DEEP)
    await (await jobq.store.claim("w", 1, lease_seconds=30, limits=RUNNING, now=jobq.clock.now())).durable
    await jobq.store.finish(LeaseRef(head, 1), Failed("boom", permanent=True), jobq.clock.now())

    response = await jobq.client.post(f"/jobs/{head}/retry", headers=jobq.headers())

    assert response.status == 200, await response.text()
    assert (await stored(jobq, head)).status is Status.QUEUED
    assert await statuses(jobq, leaves) == [Status.CANCELLED] * DEEP


async def test_a_job_keeps_only_the_newest_operator_actions(jobq: Harness) -> None:
    job = await jobq.submit(type="fail", payload={"times": 1000, "permanent": True})
    for _ in range(MAX_OPERATOR_ACTIONS + 5):
        await jobq.drain()
        response = await jobq.client.post(f"/jobs/{job['jobId']}/retry", headers=jobq.headers())
        assert response.status == 200, await response.text()

    shown = await jobq.get(job["jobId"])
    assert [a["action"] for a in shown["operatorActions"]] == ["retry"] * MAX_OPERATOR_ACTIONS
    assert shown["operatorActionsOmitted"] == 5
    assert len(shown["attemptHistory"]) <= MAX_ATTEMPT_HISTORY


async def test_a_handler_that_changes_its_job_changes_nothing_stored(
    jobq: Harness, make_harness: HarnessFactory
) -> None:
    async def meddle(job: Any, ctx: Any) -> Any:
        job.payload["n"] = 99
        job.priority = 3
        job.tenant_id = "globex"
        return {"seen": job.payload["n"]}

    jobq.registry.handler("meddle")(meddle)
    job = await jobq.submit(type="meddle", payload={"n": 1})

    await jobq.drain()

    stored = await jobq.get(job["jobId"])
    assert (stored["status"], stored["payload"], stored["priority"]) == ("succeeded", {"n": 1}, 1)
    assert stored["result"] == {"seen": 1}  # each read of the payload is a fresh copy
    h = await restart(jobq, make_harness)
    assert await h.store.get(job["jobId"], "acme") is not None
    assert (await h.get(job["jobId"]))["payload"] == {"n": 1}
