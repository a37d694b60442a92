"""Changes across processes (issue 10, step 2): LISTEN/NOTIFY, coalesced.

After a transaction that changed jobs or deliveries has committed, the store
hands its events to `Notifier.note`; never inside the transaction, and no
trigger. The notifier sends them on channel `jobq_changes` at most once per
`COALESCE_SECONDS` (the first change after a quiet spell goes at once, the
ones behind it wait for the window to end and go together), as a few
compact JSON payloads, each under PostgreSQL's 8000-byte limit:

    {"v":1,"p":<origin>,"j":[[job id, tenant, status, attempt, ended],...],
     "d":[[delivery id, job id, tenant, status, lane],...],"r":[jobs, deliveries]}

`p` is the sending store's owner key (`owners.py`, unique among the open
stores), so each store ignores its own notifications: it published those
events in process, with their versions, when it committed. Past
`MAX_PAYLOADS` payloads a flush stops listing and says how many changes it
left out (`r`, the "refetch" marker); the changes that wake a worker, stop a
running attempt or wake a sender are listed first then, so what is left out
is only what a dashboard shows.

Each process keeps one connection of its own LISTENing, read at once by
asyncpg's protocol (a callback, no query in between), pinged every
`PING_SECONDS`, and reconnected with a jittered backoff when it drops (logged;
`healthy()` turns false after `LISTEN_GRACE_SECONDS` down). A notification
from another process is published to this process's listeners as events
without versions (`version=None`): the live feed fetches them, the worker
wakes or stops a cancelled attempt. A lost notification only delays: the
worker and the sender poll at least every second and the heartbeat reports
cancels (IMPLEMENTATION.md, "Changes across processes")."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
import orjson

from jobq.core.models import CLAIMABLE, Status
from jobq.storage.postgres.errors import translated
from jobq.storage.postgres.rows import Conn
from jobq.storage.protocol import DeliveryChanged, Event, JobChanged

logger = logging.getLogger(__name__)

CHANNEL = "jobq_changes"
COALESCE_SECONDS = 0.05  # at most one flush (one NOTIFY statement) per process this often
PAYLOAD_LIMIT = 7900  # bytes; PostgreSQL refuses a payload of 8000 or more
MAX_PAYLOADS = 16  # per flush (~1,800 changes); past them, the "refetch" marker
PING_SECONDS = 5.0  # the LISTEN connection is checked this often (a silent drop is found)
LISTEN_GRACE_SECONDS = 10.0  # down longer than this: `healthy()` is false
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 5.0
_MARKER_ROOM = 48  # bytes kept free in each payload for `"r":[n,m]`
_PENDING = "pending"

Publish = Callable[[Sequence[Event]], None]


class Notifier:
    """One store's NOTIFY sender and LISTEN connection."""

    def __init__(self, dsn: str, origin: int, publish: Publish, clock: Callable[[], float] | None = None) -> None:
        self.dsn = dsn
        self.origin = origin
        self._publish = publish
        self._clock = clock
        self._conn: Conn | None = None
        self._send_lock = asyncio.Lock()  # one statement at a time on the LISTEN connection
        self._pending: list[Event] = []
        self._flusher: asyncio.Task[None] | None = None
        self._listening: asyncio.Task[None] | None = None
        self._last_flush = float("-inf")
        self._down_since: float | None = None
        self._closed = False
        self.sent = 0  # NOTIFY payloads sent
        self.received = 0  # payloads from other processes, published here
        self.refetch = 0  # payloads received that left changes out
        self.dropped = 0  # changes left out of payloads this process sent
        self.reconnects = 0

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    # ---- the LISTEN connection -------------------------------------------------

    async def start(self) -> None:
        """Connect and LISTEN (`StoreUnavailable` when the database cannot), then
        keep the connection up in the background."""
        with translated("listen"):
            conn = await self._connect()
        self._listening = asyncio.get_running_loop().create_task(self._keep_listening(conn), name="jobq-pg-listen")

    async def _connect(self) -> Conn:
        conn: Conn = await asyncpg.connect(self.dsn, timeout=5)
        try:
            await conn.add_listener(CHANNEL, self._on_notification)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def _keep_listening(self, conn: Conn | None) -> None:
        backoff = BACKOFF_FIRST
        while not self._closed:
            if conn is None:
                try:
                    conn = await self._connect()
                except Exception as exc:
                    logger.warning("action=listen_connect_failed error=%r retryIn=%.2f", exc, backoff)
                    await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                    backoff = min(backoff * 2, BACKOFF_MAX)
                    continue
                self.reconnects += 1
                logger.warning("action=listen_reconnected channel=%s", CHANNEL)
            backoff = BACKOFF_FIRST
            self._conn, self._down_since = conn, None
            try:
                await self._watch(conn)
            except Exception as exc:
                if not self._closed:
                    logger.warning("action=listen_lost channel=%s error=%r", CHANNEL, exc)
            finally:
                self._conn = None
                if self._down_since is None:
                    self._down_since = self._now()
                conn.terminate()
                conn = None

    async def _watch(self, conn: Conn) -> None:
        """Return (or raise) when the connection is gone; ping it meanwhile."""
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        while not self._closed:
            if conn.is_closed():
                raise ConnectionError("the LISTEN connection closed")
            try:
                await asyncio.wait_for(lost.wait(), PING_SECONDS)
            except TimeoutError:
                async with self._send_lock:
                    await conn.fetchval("SELECT 1", timeout=PING_SECONDS)
            else:
                raise ConnectionError("the LISTEN connection closed")

    def healthy(self) -> bool:
        """False when the LISTEN connection has been down for `LISTEN_GRACE_SECONDS`."""
        return self._down_since is None or self._now() - self._down_since < LISTEN_GRACE_SECONDS

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    def _on_notification(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        try:
            assert isinstance(payload, str)
            doc = orjson.loads(payload)
            if doc.get("p") == self.origin:
                return  # ours: published in process at commit
            events = decode(doc)
        except Exception:
            logger.warning("action=notify_unreadable payload=%.200r", payload)
            return
        self.received += 1
        left_out = doc.get("r")
        if left_out:
            self.refetch += 1
            logger.info("action=notify_refetch origin=%s jobs=%d deliveries=%d", doc.get("p"), *left_out)
        self._publish(events)

    # ---- sending ---------------------------------------------------------------

    def note(self, events: Sequence[Event]) -> None:
        """Events of a commit, to be sent to the other processes soon (synchronous)."""
        if self._closed or not events:
            return
        self._pending.extend(events)
        if self._flusher is None:
            delay = max(0.0, self._last_flush + COALESCE_SECONDS - self._now())
            self._flusher = asyncio.get_running_loop().create_task(self._flush_after(delay), name="jobq-pg-notify")

    async def _flush_after(self, delay: float) -> None:
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            while self._pending:
                events, self._pending = self._pending, []
                self._last_flush = self._now()
                await self._send(events)
                if self._pending and not self._closed:
                    await asyncio.sleep(max(0.0, self._last_flush + COALESCE_SECONDS - self._now()))
        finally:
            self._flusher = None

    async def _send(self, events: Sequence[Event]) -> None:
        payloads, dropped = encode(self.origin, events)
        if dropped:
            self.dropped += dropped
            logger.info("action=notify_overflow changes=%d leftOut=%d", len(events), dropped)
        sql = "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p"
        try:
            conn = self._conn
            if conn is not None and not conn.is_closed():
                async with self._send_lock:
                    await conn.execute(sql, CHANNEL, payloads, timeout=5)
            else:  # the LISTEN connection is down: send on a connection of its own
                other = await asyncpg.connect(self.dsn, timeout=5)
                try:
                    await other.execute(sql, CHANNEL, payloads, timeout=5)
                finally:
                    await other.close()
        except Exception as exc:
            # Lost: the others find the change by polling (at most a second later).
            logger.warning("action=notify_failed changes=%d error=%r", len(events), exc)
            return
        self.sent += len(payloads)

    async def close(self) -> None:
        """Send what is noted (bounded), stop listening, close the connection."""
        if self._flusher is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._flusher), 2)
            except Exception:
                logger.warning("action=notify_close_unsent changes=%d", len(self._pending))
        self._closed = True
        if self._flusher is not None:
            self._flusher.cancel()
        if self._listening is not None:
            self._listening.cancel()
            await asyncio.gather(self._listening, return_exceptions=True)
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()


# ---- the payload ----------------------------------------------------------------


def _job_entry(event: JobChanged) -> bytes:
    return orjson.dumps([event.job_id, event.tenant_id, event.status.value, event.attempt, int(event.ended)])


def _delivery_entry(event: DeliveryChanged) -> bytes:
    return orjson.dumps([event.delivery_id, event.job_id, event.tenant_id, event.status, event.lane])


def _urgent(events: Sequence[Event]) -> list[Event]:
    """The events in the order to list them when not all fit: first those a
    worker or sender acts on (a cancelled job that may be running, one
    claimable job, one pending delivery per lane), then the rest in order."""
    first: list[Event] = []
    rest: list[Event] = []
    claimable = False
    lanes: set[str | None] = set()
    for event in events:
        if isinstance(event, JobChanged):
            if event.status is Status.CANCELLED and event.attempt > 0:
                first.append(event)
                continue
            if event.status in CLAIMABLE and not claimable:
                claimable = True
                first.append(event)
                continue
        elif event.status == _PENDING and event.lane not in lanes:
            lanes.add(event.lane)
            first.append(event)
            continue
        rest.append(event)
    return first + rest


def _pack(origin: int, events: Sequence[Event]) -> tuple[list[str], int, int]:
    """Payloads for `events`, in order, at most `MAX_PAYLOADS`; and how many
    job and delivery changes did not fit."""
    head = b'{"v":1,"p":' + str(origin).encode() + b","
    budget = PAYLOAD_LIMIT - len(head) - len(b'"j":[],"d":[]}') - _MARKER_ROOM
    payloads: list[tuple[list[bytes], list[bytes]]] = []
    jobs: list[bytes] = []
    deliveries: list[bytes] = []
    size = 0
    left_jobs = left_deliveries = 0
    for event in events:
        is_job = isinstance(event, JobChanged)
        entry = _job_entry(event) if isinstance(event, JobChanged) else _delivery_entry(event)
        if len(entry) + 1 > budget or len(payloads) >= MAX_PAYLOADS:
            left_jobs += is_job
            left_deliveries += not is_job
            continue
        if size + len(entry) + 1 > budget:
            payloads.append((jobs, deliveries))
            jobs, deliveries, size = [], [], 0
            if len(payloads) >= MAX_PAYLOADS:
                left_jobs += is_job
                left_deliveries += not is_job
                continue
        (jobs if is_job else deliveries).append(entry)
        size += len(entry) + 1
    if jobs or deliveries:
        payloads.append((jobs, deliveries))
    texts = []
    for n, (j, d) in enumerate(payloads):
        body = head + b'"j":[' + b",".join(j) + b'],"d":[' + b",".join(d) + b"]"
        if n == len(payloads) - 1 and (left_jobs or left_deliveries):
            body += b',"r":[' + str(left_jobs).encode() + b"," + str(left_deliveries).encode() + b"]"
        texts.append((body + b"}").decode())
    return texts, left_jobs, left_deliveries


def encode(origin: int, events: Sequence[Event]) -> tuple[list[str], int]:
    """The payloads announcing `events` from `origin`, and how many changes
    they leave out (each payload under `PAYLOAD_LIMIT` bytes)."""
    payloads, left_jobs, left_deliveries = _pack(origin, events)
    if left_jobs or left_deliveries:
        payloads, left_jobs, left_deliveries = _pack(origin, _urgent(events))
        if not payloads:  # not even one change fits: the marker alone
            payloads = [f'{{"v":1,"p":{origin},"j":[],"d":[],"r":[{left_jobs},{left_deliveries}]}}']
    return payloads, left_jobs + left_deliveries


def decode(doc: dict[str, Any]) -> list[Event]:
    """The events a payload lists, without versions; entries of a status this
    build does not know are skipped."""
    events: list[Event] = []
    for job_id, tenant_id, status, attempt, ended in doc.get("j", ()):
        try:
            events.append(JobChanged(job_id, tenant_id, Status(status), attempt, bool(ended)))
        except ValueError:
            continue
    for delivery_id, job_id, tenant_id, status, lane in doc.get("d", ()):
        events.append(DeliveryChanged(delivery_id, job_id, tenant_id, status, lane))
    return events
