"""Races between processes, each a store of its own on one database: one job
per Idempotency-Key, `maxRunning` held by concurrent claims, an outcome
refused after its lease was taken over, and the running jobs of a process
that is gone recovered on evidence (its lock is free), not on time."""

from __future__ import annotations

import asyncio

import pytest

from jobq.core.clock import FakeClock
from jobq.core.errors import StaleAttempt
from jobq.core.models import NewJob, Status
from jobq.core.outcomes import Succeeded
from jobq.storage.protocol import IdemRequest, LeaseRef, RunningLimits
from tests.backends.postgres.conftest import StoreFactory
from tests.conftest import store_submit


async def test_two_processes_racing_on_one_idempotency_key_make_one_job(
    open_store: StoreFactory, clock: FakeClock
) -> None:
    first, second = await open_store(), await open_store()
    idem = IdemRequest("k1", "fingerprint", "POST /jobs")
    results = await asyncio.gather(
        *(store_submit(s, "acme", [NewJob("echo", {})], clock.now(), idem=idem) for s in (first, second) * 3)
    )
    assert len({tuple(r.job_ids) for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1
    assert (await first.counts("acme"))["queued"] == 1


async def test_concurrent_claims_never_pass_max_running(open_store: StoreFactory, clock: FakeClock) -> None:
    stores = [await open_store() for _ in range(4)]
    await store_submit(stores[0], "acme", [NewJob("echo", {}) for _ in range(20)], clock.now())
    limits = RunningLimits({"acme": 3}, 3)
    claims = await asyncio.gather(
        *(s.claim(f"w{n}", 5, lease_seconds=30, limits=limits, now=clock.now()) for n, s in enumerate(stores))
    )
    assert sum(len(c.jobs) for c in claims) == 3
    assert (await stores[0].counts("acme"))["running"] == 3


async def test_an_outcome_after_the_lease_was_taken_over_is_refused(open_store: StoreFactory, clock: FakeClock) -> None:
    old, new = await open_store(), await open_store()
    [job_id] = (await store_submit(old, "acme", [NewJob("echo", {})], clock.now())).job_ids
    await old.claim("old", 1, lease_seconds=30, limits=RunningLimits({}, 4), now=clock.now())
    clock.advance(31)
    await new.reap(clock.now())  # the lease ran out: attempt 1 failed, the job is due again
    clock.advance(60)
    [taken] = (await new.claim("new", 1, lease_seconds=30, limits=RunningLimits({}, 4), now=clock.now())).jobs
    assert taken.attempts == 2
    with pytest.raises(StaleAttempt):
        await old.finish(LeaseRef(job_id, 1), Succeeded({}), clock.now())
    done = await new.finish(LeaseRef(job_id, 2), Succeeded({}), clock.now())
    assert done.status is Status.SUCCEEDED


async def test_the_running_jobs_of_a_closed_process_are_recovered_at_once(
    open_store: StoreFactory, clock: FakeClock
) -> None:
    alive, gone, other = await open_store(), await open_store(), await open_store()
    ids = (await store_submit(alive, "acme", [NewJob("echo", {}) for _ in range(2)], clock.now())).job_ids
    limits = RunningLimits({}, 4)
    await alive.claim("a", 1, lease_seconds=3600, limits=limits, now=clock.now())
    await gone.claim("g", 1, lease_seconds=3600, limits=limits, now=clock.now())
    await gone.close()  # its owner lock goes with its connection, as when a process dies

    reaped = await other.reap(clock.now())  # long before any lease runs out

    assert len(reaped.lease_lost) == 1
    statuses = {job.job_id: job.status for job in await other.get_many(ids)}
    assert sorted(statuses.values()) == [Status.RETRY, Status.RUNNING]  # the live process keeps its own
