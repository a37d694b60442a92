"""Store changes are all-or-nothing whatever the shape of the work (issue 8).

Cascades over dependants run over chains 10,000 deep and fan-outs 10,000
wide as one atomic change; an exception anywhere inside a change (not only a
failed write) leaves memory as it was and answers a 503 problem; one job
whose recovery raises at start is parked, not fatal to the start.
"""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

import store as store_module
from cli import doctor
from errors import StoreUnavailable
from lifecycle import MAX_ATTEMPT_HISTORY, MAX_OPERATOR_ACTIONS, RECOVERY_FAILED_ERROR, settle
from models import Failed, NewJob, Status
from tests.conftest import Harness, HarnessFactory
from transaction import Transaction

DEEP = 10_000
CHUNK = 1000


async def restart(h: Harness, make_harness: HarnessFactory) -> Harness:
    await h.client.close()
    return await make_harness()


async def chain(h: Harness, length: int, *, head: NewJob | None = None, tenant: str = "acme") -> list[str]:
    """`length` jobs, each depending on the one before (the first on nothing)."""
    ids: list[str] = []
    while len(ids) < length:
        specs = []
        for n in range(len(ids), min(length, len(ids) + CHUNK)):
            before = (ids[-1],) if n == len(ids) and ids else ((f"r{n - 1}",) if n > len(ids) else ())
            spec = head if n == 0 and head is not None else NewJob(type="echo", payload={"n": n})
            specs.append(NewJob(spec.type, spec.payload, expires_at=spec.expires_at, depends_on=before, ref=f"r{n}"))
        result = await h.store.submit(tenant, specs, None, h.clock.now(), max_queued=10 * DEEP)
        ids.extend(body["jobId"] for body in result.bodies)
    return ids


async def fan_out(h: Harness, width: int) -> tuple[str, list[str]]:
    """A head and `width` jobs that each depend on it alone."""
    [head] = (await h.store.submit("acme", [NewJob("echo", {})], None, h.clock.now(), max_queued=10 * DEEP)).bodies
    leaves: list[str] = []
    while len(leaves) < width:
        specs = [NewJob("echo", {"n": n}, depends_on=(head["jobId"],)) for n in range(min(CHUNK, width - len(leaves)))]
        result = await h.store.submit("acme", specs, None, h.clock.now(), max_queued=10 * DEEP)
        leaves.extend(body["jobId"] for body in result.bodies)
    return head["jobId"], leaves


def statuses(h: Harness, ids: list[str]) -> list[Status]:
    return [h.store.index.jobs[i].status for i in ids]


async def test_cancelling_the_head_of_a_chain_10000_deep_cancels_it_all_in_one_commit(
    jobq: Harness, make_harness: HarnessFactory
) -> None:
    ids = await chain(jobq, DEEP)
    assert statuses(jobq, ids[1:]) == [Status.WAITING] * (DEEP - 1)
    commits = jobq.store.log.commits

    response = await jobq.client.post(f"/jobs/{ids[0]}/cancel", headers=jobq.headers())

    assert response.status == 200, await response.text()
    assert statuses(jobq, ids) == [Status.CANCELLED] * DEEP
    assert jobq.store.log.commits == commits + 1  # the whole cascade is one atomic change
    last = jobq.store.index.jobs[ids[-1]]
    assert last.last_error == f"dependency {ids[-2]} ended cancelled"
    h = await restart(jobq, make_harness)
    assert statuses(h, ids) == [Status.CANCELLED] * DEEP


async def test_a_fatal_head_cancels_a_fan_out_10000_wide(jobq: Harness, make_harness: HarnessFactory) -> None:
    head, leaves = await fan_out(jobq, DEEP)
    claimed = await jobq.store.claim(jobq.clock.now(), 1, "w", 30)
    await claimed.durable
    assert [j.job_id for j in claimed.jobs] == [head]

    await jobq.store.finish(head, 1, Failed("boom", permanent=True), jobq.clock.now())

    assert jobq.store.index.jobs[head].status is Status.FATAL
    assert statuses(jobq, leaves) == [Status.CANCELLED] * DEEP
    h = await restart(jobq, make_harness)
    assert statuses(h, leaves) == [Status.CANCELLED] * DEEP


async def test_expiry_of_a_chain_head_cancels_the_whole_chain(jobq: Harness, make_harness: HarnessFactory) -> None:
    expires = jobq.clock.now() + timedelta(seconds=60)
    ids = await chain(jobq, DEEP, head=NewJob("echo", {}, expires_at=expires))
    jobq.clock.advance(61)

    await jobq.store.maintain(jobq.clock.now())

    assert jobq.store.index.jobs[ids[0]].last_error == "expired"
    assert statuses(jobq, ids) == [Status.CANCELLED] * DEEP
    h = await restart(jobq, make_harness)
    assert statuses(h, ids) == [Status.CANCELLED] * DEEP


async def test_bulk_cancel_of_chain_heads_cancels_every_chain(jobq: Harness) -> None:
    chains = [await chain(jobq, 2000) for _ in range(5)]

    response = await jobq.client.post(
        "/jobs/bulk", json={"action": "cancel", "filter": {"status": "queued"}}, headers=jobq.headers()
    )

    assert response.status == 200, await response.text()
    assert await response.json() == {"matched": 5, "changed": 5}
    for ids in chains:
        assert statuses(jobq, ids) == [Status.CANCELLED] * 2000


async def test_dlq_retry_of_a_fatal_head_after_its_fan_out_was_cancelled(jobq: Harness) -> None:
    head, leaves = await fan_out(jobq, DEEP)
    await (await jobq.store.claim(jobq.clock.now(), 1, "w", 30)).durable
    await jobq.store.finish(head, 1, Failed("boom", permanent=True), jobq.clock.now())

    response = await jobq.client.post(f"/jobs/{head}/retry", headers=jobq.headers())

    assert response.status == 200, await response.text()
    assert jobq.store.index.jobs[head].status is Status.QUEUED
    assert statuses(jobq, leaves) == [Status.CANCELLED] * DEEP


# ---- any exception inside a change ----------------------------------------------


def fail_on_put(h: Harness, monkeypatch: pytest.MonkeyPatch, nth: int) -> Callable[[], int]:
    """Make the index raise on its `nth` put from now on (once); returns a call counter."""
    put = h.store.index.put
    calls = 0

    def faulty(job: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth:
            raise RuntimeError("injected fault inside the transaction")
        return put(job)

    monkeypatch.setattr(h.store.index, "put", faulty)
    return lambda: calls


def snapshot_of(h: Harness) -> dict[str, Any]:
    return {
        "jobs": {i: j.to_record() for i, j in h.store.index.jobs.items()},
        "counts": h.store.counts("acme"),
        "deliveries": {i: d.to_record() for i, d in h.store.index.deliveries.items()},
        "unwritten": dict(h.store.index.unwritten_deliveries),
    }


async def test_an_exception_half_way_through_a_cascade_changes_nothing_and_answers_503(
    jobq: Harness, make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ids = await chain(jobq, 3000)
    before = snapshot_of(jobq)
    commits = jobq.store.log.commits
    fail_on_put(jobq, monkeypatch, 1500)

    with caplog.at_level(logging.ERROR):
        response = await jobq.client.post(f"/jobs/{ids[0]}/cancel", headers=jobq.headers())

    assert response.status == 503
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.headers["Retry-After"] == "5"
    problem = await response.json()
    assert problem["type"].endswith("store-unavailable")
    assert "injected" not in str(problem)  # internals stay in the log
    assert snapshot_of(jobq) == before
    assert jobq.store.log.commits == commits
    assert any("injected fault" in (r.exc_text or "") for r in caplog.records)

    monkeypatch.undo()
    response = await jobq.client.post(f"/jobs/{ids[0]}/cancel", headers=jobq.headers())
    assert response.status == 200
    h = await restart(jobq, make_harness)
    assert statuses(h, ids) == [Status.CANCELLED] * 3000


async def test_an_exception_building_a_submit_leaves_no_job_and_no_idempotency_key(
    jobq: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot_of(jobq)
    fail_on_put(jobq, monkeypatch, 3)
    jobs = [{"type": "echo", "payload": {"n": n}} for n in range(5)]

    response = await jobq.client.post(
        "/jobs/batch", json={"jobs": jobs}, headers=jobq.headers(**{"Idempotency-Key": "k1"})
    )

    assert response.status == 503
    assert snapshot_of(jobq) == before
    assert jobq.store.index.idem == {}
    monkeypatch.undo()
    response = await jobq.client.post(
        "/jobs/batch", json={"jobs": jobs}, headers=jobq.headers(**{"Idempotency-Key": "k1"})
    )
    assert response.status == 201  # the key was not remembered for the failed request


async def test_an_exception_while_settling_an_attempt_keeps_the_attempt_running(
    jobq: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await jobq.submit()
    await (await jobq.store.claim(jobq.clock.now(), 1, "w", 30)).durable
    before = snapshot_of(jobq)
    fail_on_put(jobq, monkeypatch, 1)

    with pytest.raises(StoreUnavailable):
        await jobq.store.finish(job["jobId"], 1, Failed("boom", permanent=True), jobq.clock.now())

    assert snapshot_of(jobq) == before
    assert jobq.store.index.jobs[job["jobId"]].status is Status.RUNNING


# ---- recovery at start ------------------------------------------------------


async def test_a_job_whose_recovery_raises_is_parked_and_the_start_goes_on(
    jobq: Harness,
    make_harness: HarnessFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = await jobq.submit()
    good = await jobq.submit()
    [waiting] = (
        await jobq.store.submit(
            "acme", [NewJob("echo", {}, depends_on=(bad["jobId"],))], None, jobq.clock.now(), max_queued=100
        )
    ).bodies
    await (await jobq.store.claim(jobq.clock.now(), 2, "w", 30)).durable
    await jobq.client.close()  # the process "died" with both attempts running

    def settle_or_raise(tx: Any, job: Any, *args: Any) -> Any:
        if job.job_id == bad["jobId"]:
            raise ValueError("this job cannot be settled")
        return settle(tx, job, *args)

    monkeypatch.setattr(store_module, "settle", settle_or_raise)

    with caplog.at_level(logging.ERROR):
        h = await make_harness()

    parked = h.store.index.jobs[bad["jobId"]]
    assert parked.status is Status.FATAL
    assert parked.last_error is not None
    assert parked.last_error.startswith(RECOVERY_FAILED_ERROR)
    assert "this job cannot be settled" in parked.last_error
    assert h.store.index.jobs[waiting["jobId"]].status is Status.CANCELLED
    assert h.store.index.jobs[good["jobId"]].status is Status.RETRY
    assert any(f"action=recover_failed jobId={bad['jobId']}" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    h = await restart(h, make_harness)  # the parking was written
    assert h.store.index.jobs[bad["jobId"]].status is Status.FATAL
    await h.client.close()
    capsys.readouterr()
    doctor(h.settings)
    report = capsys.readouterr().out
    assert f"warn job {bad['jobId']} was parked in the DLQ at start: {RECOVERY_FAILED_ERROR}" in report
    assert good["jobId"] not in report


# ---- operator actions are bounded -----------------------------------------------


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


async def test_purging_does_not_freeze_the_garbage_collector(jobq: Harness) -> None:
    """Freezing at every purge would also freeze garbage cycles not yet
    collected, leaking them for good: jobq freezes once, after loading."""
    await jobq.submit()
    await jobq.drain()
    jobq.clock.advance(8 * 86400)
    garbage: list[Any] = [[]]
    garbage[0].append(garbage)  # a cycle only the collector can free
    del garbage
    frozen = gc.get_freeze_count()

    assert await jobq.store.purge(jobq.clock.now(), 7 * 86400) == 1

    assert gc.get_freeze_count() == frozen


async def test_a_committed_transaction_is_freed_without_the_garbage_collector(jobq: Harness) -> None:
    """Undo steps refer back to their transaction; kept after the commit they
    made a cycle that held every replaced job version until a rare full
    collection (the soak's RSS climbed 6 MiB a minute)."""
    job = await jobq.submit()
    gc.disable()
    try:
        for commit in ("commit", "commit_nowait"):
            tx = Transaction(jobq.store.index)
            tx.put(jobq.store.index.jobs[job["jobId"]].evolve(priority=2))
            if commit == "commit":
                await tx.commit(jobq.store.log.commit, jobq.store._listeners)
            else:
                await tx.commit_nowait(jobq.store.log.commit, jobq.store._listeners)
            freed = weakref.ref(tx)
            del tx
            assert freed() is None, commit
    finally:
        gc.enable()


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
    assert h.store.index.jobs[job["jobId"]].tenant_id == "acme"
    assert (await h.get(job["jobId"]))["payload"] == {"n": 1}
