"""The seam's own promises (jobq/storage/protocol.py), written once for every
backend: limits as parameters, the heartbeat's answer, what maintenance
returns, leased deliveries, changes announced as values, limits shared
through the store, and jobs that are versions, never live objects."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from jobq.core.models import NewJob, Status
from jobq.core.outcomes import Failed
from jobq.storage.protocol import DeliveryChanged, Event, JobChanged, LeaseRef, RunningLimits
from tests.conftest import RUNNING, Harness, store_submit


async def test_claim_honours_the_running_limits_it_is_given(jobq: Harness) -> None:
    now = jobq.clock.now()
    await store_submit(jobq.store, "acme", [NewJob("echo", {}) for _ in range(3)], now)
    await store_submit(jobq.store, "globex", [NewJob("echo", {}) for _ in range(3)], now)
    limits = RunningLimits({"acme": 1}, 2)
    claimed = await jobq.store.claim("w", 10, lease_seconds=30, limits=limits, now=now)
    await claimed.durable
    tenants = sorted(job.tenant_id for job in claimed.jobs)
    assert tenants == ["acme", "globex", "globex"]
    again = await jobq.store.claim("w", 10, lease_seconds=30, limits=limits, now=now)
    assert again.jobs == []  # both tenants at their limit


async def test_the_heartbeat_renews_held_leases_and_reports_the_others(jobq: Harness) -> None:
    now = jobq.clock.now()
    ids = (await store_submit(jobq.store, "acme", [NewJob("echo", {}) for _ in range(3)], now)).job_ids
    claimed = await jobq.store.claim("w", 3, lease_seconds=30, limits=RUNNING, now=now)
    await claimed.durable
    held, cancelled, gone = (LeaseRef(job_id, 1) for job_id in ids)
    await jobq.store.cancel(cancelled.job_id, "acme", "test", now)
    stale = LeaseRef(gone.job_id, 2)  # an attempt this job never had
    beat = await jobq.store.heartbeat([held, cancelled, stale], until=now + timedelta(seconds=60), now=now)
    assert beat.cancel_requested == [cancelled]
    assert beat.lost == [stale]
    # The renewed lease outlives the first one: reaping at 45 s leaves it running.
    jobq.clock.advance(45)
    reaped = await jobq.store.reap(jobq.clock.now())
    assert held not in reaped.lease_lost
    assert LeaseRef(gone.job_id, 1) in reaped.lease_lost  # never renewed: its 30 s ran out
    job = await jobq.store.get(held.job_id, "acme")
    assert job is not None and job.status is Status.RUNNING


async def test_reap_reports_what_it_did(jobq: Harness) -> None:
    now = jobq.clock.now()
    expiring = NewJob("echo", {}, expires_at=now + timedelta(seconds=5), run_at=now + timedelta(seconds=60))
    [expired] = (await store_submit(jobq.store, "acme", [expiring], now)).job_ids
    [leased] = (await store_submit(jobq.store, "acme", [NewJob("echo", {})], now)).job_ids
    await (await jobq.store.claim("w", 1, lease_seconds=30, limits=RUNNING, now=now)).durable
    jobq.clock.advance(31)
    reaped = await jobq.store.reap(jobq.clock.now())
    assert reaped.expired == [expired]
    assert reaped.lease_lost == [LeaseRef(leased, 1)]
    assert (await jobq.store.reap(jobq.clock.now())).expired == []  # done once


async def test_finish_with_a_lost_lease_is_refused(jobq: Harness) -> None:
    from jobq.core.errors import StaleAttempt

    now = jobq.clock.now()
    [job_id] = (await store_submit(jobq.store, "acme", [NewJob("echo", {})], now)).job_ids
    await (await jobq.store.claim("w", 1, lease_seconds=30, limits=RUNNING, now=now)).durable
    jobq.clock.advance(31)
    await jobq.store.reap(jobq.clock.now())
    try:
        await jobq.store.finish(LeaseRef(job_id, 1), Failed("late"), jobq.clock.now())
    except StaleAttempt:
        pass
    else:
        raise AssertionError("the outcome of a lost lease was accepted")


async def test_a_delivery_is_leased_to_one_sender_at_a_time(jobq: Harness) -> None:
    for _ in range(3):
        await jobq.submit(webhookUrl="https://hooks.example/jobq")
    await jobq.drain()
    now = jobq.clock.now()
    first = await jobq.store.claim_deliveries("s1", now, limit=10, per_tenant=2, lease_seconds=20)
    second = await jobq.store.claim_deliveries("s2", now, limit=10, per_tenant=2, lease_seconds=20)
    assert len(first) == 2  # the tenant's share for one sender
    assert len(second) == 1  # the one left; none of s1's
    assert not {d.delivery_id for d in first} & {d.delivery_id for d in second}
    jobq.clock.advance(21)  # the leases ran out: due again, for anyone
    third = await jobq.store.claim_deliveries("s3", jobq.clock.now(), limit=10, per_tenant=5, lease_seconds=20)
    assert len(third) == 3


async def test_changes_are_announced_as_values_once_durable(jobq: Harness) -> None:
    seen: list[Event] = []

    def listener(events: Sequence[Event]) -> None:
        seen.extend(events)

    jobq.store.subscribe(listener)
    job = await jobq.submit(webhookUrl="https://hooks.example/jobq")
    await jobq.drain()
    changes = [(e.status, e.attempt, e.ended) for e in seen if isinstance(e, JobChanged)]
    assert changes == [(Status.QUEUED, 0, False), (Status.RUNNING, 1, False), (Status.SUCCEEDED, 1, True)]
    assert all(e.job_id == job["jobId"] and e.tenant_id == "acme" for e in seen if isinstance(e, JobChanged))
    [delivery] = [e for e in seen if isinstance(e, DeliveryChanged)]
    assert (delivery.job_id, delivery.tenant_id, delivery.status, delivery.lane) == (
        job["jobId"],
        "acme",
        "pending",
        "acme",
    )
    fetched = await jobq.store.get_many([job["jobId"], "no-such-job"])
    assert [j.status for j in fetched] == [Status.SUCCEEDED]


async def test_submit_tokens_are_shared_through_the_store(jobq: Harness) -> None:
    now = jobq.clock.now()
    take = jobq.store.take_submit_tokens
    first = await take("acme", 3, per_minute=60, burst=4, now=now)
    assert (first.taken, first.remaining, first.retry_after) == (True, 1, 0)
    refused = await take("acme", 2, per_minute=60, burst=4, now=now)
    assert not refused.taken and refused.retry_after == 1 and refused.remaining == 1
    assert (await take("globex", 4, per_minute=60, burst=4, now=now)).taken  # a bucket per tenant
    await jobq.store.give_back_submit_tokens("acme", 3)
    assert (await take("acme", 4, per_minute=60, burst=4, now=now)).taken
    jobq.clock.advance(2)
    assert (await take("acme", 2, per_minute=60, burst=4, now=jobq.clock.now())).taken  # 1 a second


async def test_bad_keys_are_counted_per_address_through_the_store(jobq: Harness) -> None:
    now = jobq.clock.now()
    note = jobq.store.note_bad_key
    assert [await note("10.0.0.1", limit=3, now=now) for _ in range(3)] == [0, 0, 0]
    assert await note("10.0.0.1", limit=3, now=now) == 60
    assert await note("10.0.0.2", limit=3, now=now) == 0
    jobq.clock.advance(60)
    assert await note("10.0.0.1", limit=3, now=jobq.clock.now()) == 0


async def test_jobs_handed_out_are_versions_not_the_stored_job(jobq: Harness) -> None:
    job = await jobq.submit(payload={"n": 1})
    version = await jobq.store.get(job["jobId"], "acme")
    assert version is not None
    await jobq.drain()
    assert version.status is Status.QUEUED  # the version read before the run is unchanged
    now_stored = await jobq.store.get(job["jobId"], "acme")
    assert now_stored is not None and now_stored.status is Status.SUCCEEDED
