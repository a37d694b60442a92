"""Changes across processes (issue 10, step 2): each store is a process of
its own here, on one database. A commit in one reaches the others' listeners
as events without versions, coalesced into few NOTIFYs, never echoed back
to its own; payloads stay under PostgreSQL's limit; a dropped LISTEN
connection comes back. The same with real processes: tests/process/test_pg_processes.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import orjson
import pytest

from jobq.core.clock import FakeClock
from jobq.core.models import NewJob, Status
from jobq.storage.postgres import notify
from jobq.storage.postgres.notify import CHANNEL, MAX_PAYLOADS, PAYLOAD_LIMIT, decode, encode
from jobq.storage.postgres.rows import Conn
from jobq.storage.postgres.store import PostgresStore
from jobq.storage.protocol import DeliveryChanged, Event, JobChanged
from tests.backends.postgres.conftest import StoreFactory
from tests.conftest import RUNNING, store_submit


def listening_backend(store: PostgresStore) -> int:
    """The server pid of the store's LISTEN connection."""
    notifier = store._notifier
    assert notifier is not None and notifier._conn is not None
    pid: int = notifier._conn.get_server_pid()
    return pid


class Heard:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.changed = asyncio.Event()

    def __call__(self, events: Sequence[Event]) -> None:
        self.events.extend(events)
        self.changed.set()

    def jobs(self, job_id: str | None = None) -> list[JobChanged]:
        """The job events heard (of `job_id` only: the database may be shared with other tests' stores)."""
        return [e for e in self.events if isinstance(e, JobChanged) and job_id in (None, e.job_id)]

    async def until(self, done: object, within: float = 5.0) -> None:
        async with asyncio.timeout(within):
            while not done():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()


async def test_a_commit_reaches_the_other_processes_without_versions_and_not_its_own_twice(
    open_store: StoreFactory, clock: FakeClock
) -> None:
    api, worker = await open_store(), await open_store()
    heard_api, heard_worker = Heard(), Heard()
    api.subscribe(heard_api)
    worker.subscribe(heard_worker)

    [job_id] = (await store_submit(api, "acme", [NewJob("sleep", {"seconds": 60})], clock.now())).job_ids
    await heard_worker.until(lambda: heard_worker.jobs(job_id))
    [queued] = heard_worker.jobs(job_id)
    assert (queued.job_id, queued.tenant_id, queued.status, queued.attempt, queued.ended) == (
        job_id,
        "acme",
        Status.QUEUED,
        0,
        False,
    )
    assert queued.version is None  # consumers fetch it

    await worker.claim("w", 1, lease_seconds=30, limits=RUNNING, now=clock.now())
    await api.cancel(job_id, "acme", "tester", clock.now())
    await heard_worker.until(lambda: any(e.status is Status.CANCELLED for e in heard_worker.jobs(job_id)))
    cancelled = heard_worker.jobs(job_id)[-1]
    assert (cancelled.status, cancelled.attempt, cancelled.ended) == (Status.CANCELLED, 1, True)

    await asyncio.sleep(0.2)  # any echo of its own NOTIFY would have arrived by now
    assert [(e.status, e.version is not None) for e in heard_api.jobs(job_id)] == [
        (Status.QUEUED, True),
        (Status.RUNNING, False),  # the worker's claim, from the other process
        (Status.CANCELLED, True),
    ]


async def test_a_burst_of_commits_is_sent_in_few_notifies_and_every_change_arrives(
    open_store: StoreFactory, clock: FakeClock
) -> None:
    api, other = await open_store(), await open_store()
    heard = Heard()
    other.subscribe(heard)
    assert api._notifier is not None
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(*(store_submit(api, "acme", [NewJob("echo", {})], clock.now()) for _ in range(200)))
    ids = {job_id for r in results for job_id in r.job_ids}
    await heard.until(lambda: {e.job_id for e in heard.jobs()} >= ids)
    elapsed = loop.time() - started
    windows = elapsed / notify.COALESCE_SECONDS
    assert api.stats()["notify_sent"] <= windows + 2, (api.stats(), elapsed)
    assert api.stats()["notify_sent"] < 100  # 200 commits


def test_payloads_stay_under_the_limit_and_overflow_lists_what_acts_first() -> None:
    events: list[Event] = [
        JobChanged(f"{n:08d}-0000-4000-8000-000000000000", "acme", Status.SUCCEEDED, 1, True) for n in range(5000)
    ]
    events.append(JobChanged("cancelled-running", "acme", Status.CANCELLED, 2, True))
    events.append(JobChanged("new", "globex", Status.QUEUED, 0))
    events.append(DeliveryChanged("d1", "j1", "acme", "pending", "acme"))

    few, left = encode(7, events[:300])
    assert left == 0 and len(few) > 1
    assert all(len(p.encode()) < PAYLOAD_LIMIT for p in few)
    assert [e for p in few for e in decode(orjson.loads(p))] == events[:300]

    payloads, left = encode(7, events)
    assert len(payloads) == MAX_PAYLOADS and all(len(p.encode()) < PAYLOAD_LIMIT for p in payloads)
    docs = [orjson.loads(p) for p in payloads]
    listed = [e for d in docs for e in decode(d)]
    assert left == len(events) - len(listed) > 0
    assert docs[-1]["r"] == [left, 0]  # the refetch marker: how many were left out
    assert set(events[-3:]) <= set(decode(docs[0]))  # what a worker or sender acts on goes first


async def test_a_dropped_listen_connection_comes_back_and_changes_flow_again(
    open_store: StoreFactory, clock: FakeClock, pg_dsn: str
) -> None:
    api, other = await open_store(), await open_store()
    heard = Heard()
    other.subscribe(heard)
    pids = [listening_backend(api), listening_backend(other)]
    conn = await asyncpg.connect(pg_dsn)
    try:  # as a network failure or an operator would end them
        await conn.execute("SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids)
    finally:
        await conn.close()
    async with asyncio.timeout(5):
        while other.stats()["listen_reconnects"] < 1 or api.stats()["listen_reconnects"] < 1:
            await asyncio.sleep(0.02)
    assert await other.ready()
    [job_id] = (await store_submit(api, "acme", [NewJob("echo", {})], clock.now())).job_ids
    await heard.until(lambda: heard.jobs(job_id))


async def test_a_notification_this_build_cannot_read_is_skipped(open_store: StoreFactory, pg_dsn: str) -> None:
    store = await open_store()
    heard = Heard()
    store.subscribe(heard)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("SELECT pg_notify($1, 'not json')", CHANNEL)
        await conn.execute(
            "SELECT pg_notify($1, $2)",
            CHANNEL,
            '{"v":1,"p":-1,"j":[["a","acme","someday",0,0],["b","acme","queued",0,0]],"d":[]}',
        )
    finally:
        await conn.close()
    await heard.until(lambda: heard.jobs("b"))
    assert [(e.job_id, e.status) for e in heard.jobs() if e.job_id in ("a", "b")] == [("b", Status.QUEUED)]


async def test_readiness_fails_while_the_listen_connection_stays_down(
    open_store: StoreFactory, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await open_store()
    notifier = store._notifier
    assert notifier is not None
    monkeypatch.setattr(notify, "LISTEN_GRACE_SECONDS", 0.2)
    connect = notifier._connect

    async def refused() -> Conn:
        raise OSError("connection refused")

    monkeypatch.setattr(notifier, "_connect", refused)
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", listening_backend(store))
    finally:
        await conn.close()
    async with asyncio.timeout(5):
        while await store.ready():
            await asyncio.sleep(0.05)
    assert not notifier.listening
    monkeypatch.setattr(notifier, "_connect", connect)  # the database takes connections again
    async with asyncio.timeout(10):
        while not await store.ready():
            await asyncio.sleep(0.05)
    assert notifier.listening and store.stats()["listen_reconnects"] == 1
