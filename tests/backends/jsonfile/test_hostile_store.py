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
from typing import Any

import pytest

from jobq.cli import doctor
from jobq.core.errors import StoreUnavailable
from jobq.core.models import NewJob, Status
from jobq.core.outcomes import Failed
from jobq.rules.transitions import RECOVERY_FAILED_ERROR
from jobq.storage.jsonfile import store as store_module
from jobq.storage.jsonfile.lifecycle import settle
from jobq.storage.jsonfile.transaction import Transaction
from jobq.storage.protocol import LeaseRef
from tests.backends.jsonfile.support import json_store
from tests.conftest import RUNNING, Harness, HarnessFactory, store_submit
from tests.support.graphs import chain, restart


def statuses(h: Harness, ids: list[str]) -> list[Status]:
    return [json_store(h).index.jobs[i].status for i in ids]


async def test_a_cascade_is_one_journal_commit(jobq: Harness) -> None:
    ids = await chain(jobq, 3000)
    commits = json_store(jobq).log.commits
    response = await jobq.client.post(f"/jobs/{ids[0]}/cancel", headers=jobq.headers())
    assert response.status == 200
    assert statuses(jobq, ids) == [Status.CANCELLED] * 3000
    assert json_store(jobq).log.commits == commits + 1


# ---- any exception inside a change ----------------------------------------------


def fail_on_put(h: Harness, monkeypatch: pytest.MonkeyPatch, nth: int) -> Callable[[], int]:
    """Make the index raise on its `nth` put from now on (once); returns a call counter."""
    put = json_store(h).index.put
    calls = 0

    def faulty(job: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == nth:
            raise RuntimeError("injected fault inside the transaction")
        return put(job)

    monkeypatch.setattr(json_store(h).index, "put", faulty)
    return lambda: calls


async def snapshot_of(h: Harness) -> dict[str, Any]:
    return {
        "jobs": {i: j.to_record() for i, j in json_store(h).index.jobs.items()},
        "counts": await h.store.counts("acme"),
        "deliveries": {i: d.to_record() for i, d in json_store(h).index.deliveries.items()},
        "unwritten": dict(json_store(h).index.unwritten_deliveries),
    }


async def test_an_exception_half_way_through_a_cascade_changes_nothing_and_answers_503(
    jobq: Harness, make_harness: HarnessFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ids = await chain(jobq, 3000)
    before = await snapshot_of(jobq)
    commits = json_store(jobq).log.commits
    fail_on_put(jobq, monkeypatch, 1500)

    with caplog.at_level(logging.ERROR):
        response = await jobq.client.post(f"/jobs/{ids[0]}/cancel", headers=jobq.headers())

    assert response.status == 503
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.headers["Retry-After"] == "5"
    problem = await response.json()
    assert problem["type"].endswith("store-unavailable")
    assert "injected" not in str(problem)  # internals stay in the log
    assert await snapshot_of(jobq) == before
    assert json_store(jobq).log.commits == commits
    assert any("injected fault" in (r.exc_text or "") for r in caplog.records)

    monkeypatch.undo()
    response = await jobq.client.post(f"/jobs/{ids[0]}/cancel", headers=jobq.headers())
    assert response.status == 200
    h = await restart(jobq, make_harness)
    assert statuses(h, ids) == [Status.CANCELLED] * 3000


async def test_an_exception_building_a_submit_leaves_no_job_and_no_idempotency_key(
    jobq: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = await snapshot_of(jobq)
    fail_on_put(jobq, monkeypatch, 3)
    jobs = [{"type": "echo", "payload": {"n": n}} for n in range(5)]

    response = await jobq.client.post(
        "/jobs/batch", json={"jobs": jobs}, headers=jobq.headers(**{"Idempotency-Key": "k1"})
    )

    assert response.status == 503
    assert await snapshot_of(jobq) == before
    assert json_store(jobq).index.idem == {}
    monkeypatch.undo()
    response = await jobq.client.post(
        "/jobs/batch", json={"jobs": jobs}, headers=jobq.headers(**{"Idempotency-Key": "k1"})
    )
    assert response.status == 201  # the key was not remembered for the failed request


async def test_an_exception_while_settling_an_attempt_keeps_the_attempt_running(
    jobq: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = await jobq.submit()
    await (await jobq.store.claim("w", 1, lease_seconds=30, limits=RUNNING, now=jobq.clock.now())).durable
    before = await snapshot_of(jobq)
    fail_on_put(jobq, monkeypatch, 1)

    with pytest.raises(StoreUnavailable):
        await jobq.store.finish(LeaseRef(job["jobId"], 1), Failed("boom", permanent=True), jobq.clock.now())

    assert await snapshot_of(jobq) == before
    assert json_store(jobq).index.jobs[job["jobId"]].status is Status.RUNNING


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
        await store_submit(jobq.store, "acme", [NewJob("echo", {}, depends_on=(bad["jobId"],))], jobq.clock.now())
    ).job_ids
    await (await jobq.store.claim("w", 2, lease_seconds=30, limits=RUNNING, now=jobq.clock.now())).durable
    await jobq.client.close()  # the process "died" with both attempts running

    def settle_or_raise(tx: Any, job: Any, *args: Any) -> Any:
        if job.job_id == bad["jobId"]:
            raise ValueError("this job cannot be settled")
        return settle(tx, job, *args)

    monkeypatch.setattr(store_module, "settle", settle_or_raise)

    with caplog.at_level(logging.ERROR):
        h = await make_harness()

    parked = json_store(h).index.jobs[bad["jobId"]]
    assert parked.status is Status.FATAL
    assert parked.last_error is not None
    assert parked.last_error.startswith(RECOVERY_FAILED_ERROR)
    assert "this job cannot be settled" in parked.last_error
    assert json_store(h).index.jobs[waiting].status is Status.CANCELLED
    assert json_store(h).index.jobs[good["jobId"]].status is Status.RETRY
    assert any(f"action=recover_failed jobId={bad['jobId']}" in r.getMessage() for r in caplog.records)
    monkeypatch.undo()
    h = await restart(h, make_harness)  # the parking was written
    assert json_store(h).index.jobs[bad["jobId"]].status is Status.FATAL
    await h.client.close()
    capsys.readouterr()
    doctor(h.settings)
    report = capsys.readouterr().out
    assert f"warn job {bad['jobId']} was parked in the DLQ at start: {RECOVERY_FAILED_ERROR}" in report
    assert good["jobId"] not in report


# ---- operator actions are bounded -----------------------------------------------


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
            tx = Transaction(json_store(jobq).index)
            tx.put(json_store(jobq).index.jobs[job["jobId"]].evolve(priority=2))
            if commit == "commit":
                await tx.commit(json_store(jobq).log.commit, json_store(jobq)._listeners)
            else:
                await tx.commit_nowait(json_store(jobq).log.commit, json_store(jobq)._listeners)
            freed = weakref.ref(tx)
            del tx
            assert freed() is None, commit
    finally:
        gc.enable()
