"""The live-update hub (SPEC §5, CONVENTIONS rule 15): one per process.

The store announces every change once it is durable; `feed.LiveFeed` turns
the announcements into jobs rendered once, as the API shows them, and the
hub (`publish_job`) puts the encoded message on the bounded queue of every
*live* client allowed to see it: the clients of the job's tenant, and admin clients
(all tenants, or the one they filtered to). Nothing here awaits a socket:
each client has its own sender task that drains its queue into its socket.

A client's life: *starting* (its sender builds and sends its first snapshot,
then it is live), *live* (it gets every change), *behind* (its queue
overflowed: the queue was emptied and nothing more is queued for it; the next
`tick()` queues one fresh snapshot, built once per scope for every client
behind in it, and the client is live again). Events of a tenant are only ever
queued for clients whose scope is that tenant or every tenant.

How the hub bounds its cost and each viewer's memory, and re-checks who
is watching, is told in IMPLEMENTATION.md ("Live updates").

The messages are listed in `messages.py`, which builds them.

A snapshot reads the store's memory, which runs up to one group commit ahead
of what is durable: a `job` message right after a snapshot may be older than
the snapshot's version of that job; the next message corrects it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiohttp import WSCloseCode, web

from jobq.core.clock import Clock
from jobq.core.models import Job
from jobq.rules.outbox import Delivery
from jobq.storage.protocol import Event, JobReads, RunningLimits
from jobq.tenancy.tenants import Principal
from jobq.web.live.client import BEHIND, LIVE, Access, LiveClient, Scope, Socket
from jobq.web.live.feed import LiveFeed
from jobq.web.live.messages import LiveMessages
from jobq.web.live.sender import TICK_SECONDS, send_loop

logger = logging.getLogger(__name__)

QUEUE_SIZE = 256  # messages a client may have waiting before it falls behind
SEND_BUDGET = 5000.0  # messages a second over all clients
MIN_CLIENT_RATE = 10.0  # messages a second a client may always send
SNAPSHOT_JOBS = 100
MAX_RESYNC_TICKS = 5  # the longest a client that cannot keep up waits for a snapshot
MAX_PER_TENANT = 50  # sockets open at once for one tenant's keys and sessions
MAX_TOTAL = 1000  # sockets open at once, admins included
MAX_PENDING_BYTES = 1024 * 1024  # queued + transport-buffered bytes a client may hold
STUCK_SECONDS = 30.0  # how long a client may stay over that before it is closed
CLOSE_WAIT_SECONDS = 1.0  # a close the peer does not take in this time aborts the connection
AUTH_CLOSE = 4401  # "unauthorized": the key was removed or the session ended


class LiveHub:
    def __init__(
        self,
        store: JobReads,
        clock: Clock,
        *,
        running_limits: Callable[[], RunningLimits] = lambda: RunningLimits({}, 4),
        queue_size: int = QUEUE_SIZE,
        send_budget: float = SEND_BUDGET,
        snapshot_jobs: int = SNAPSHOT_JOBS,
        max_per_tenant: int = MAX_PER_TENANT,
        max_total: int = MAX_TOTAL,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        stuck_seconds: float = STUCK_SECONDS,
        authenticate: Callable[[str], Principal | None] | None = None,
        on_refusal: Callable[[str], None] = lambda kind: None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.queue_size = queue_size  # for clients that connect from now on
        self.send_budget = send_budget
        self.max_per_tenant = max_per_tenant
        self.max_total = max_total
        self.max_pending_bytes = max_pending_bytes
        self.stuck_seconds = stuck_seconds
        self.authenticate = authenticate
        self.on_refusal = on_refusal  # counts a refused or closed socket by kind
        self.closed = False
        self._clients: set[LiveClient] = set()
        self._places: Counter[str | None] = Counter()  # per owner: connected clients and reserved places
        self._closing: set[asyncio.Task[None]] = set()
        self._live: dict[Scope, set[LiveClient]] = {}
        self._behind: set[LiveClient] = set()
        self._ticks = 0
        self.messages = LiveMessages(
            store, clock, running_limits, snapshot_jobs=snapshot_jobs, max_pending_bytes=max_pending_bytes
        )
        self.feed = LiveFeed(
            store,
            self.messages,
            clock,
            watched=lambda: bool(self._live),
            publish_job=self.publish_job,
            publish_delivery=self.publish_delivery,
        )
        self.finished = self.messages.finished

    @property
    def clients(self) -> frozenset[LiveClient]:
        return frozenset(self._clients)

    @property
    def client_rate(self) -> float:
        """Messages a second each client may send now: its share of the budget."""
        return max(MIN_CLIENT_RATE, self.send_budget / max(1, len(self._clients)))

    # ---- clients ---------------------------------------------------------

    def reserve(self, owner: str | None) -> str | None:
        """Hold a place for a viewer of tenant `owner` (None: an admin key),
        or name the cap that refuses it: "ws_tenant_limit" (the tenant has
        `max_per_tenant` places) or "ws_total_limit" (`max_total` over all).
        A held place is `connect(..., reserved=True)`ed or `release`d."""
        if owner is not None and self._places[owner] >= self.max_per_tenant:
            return "ws_tenant_limit"
        if self._places.total() >= self.max_total:
            return "ws_total_limit"
        self._places[owner] += 1
        return None

    def release(self, owner: str | None) -> None:
        """Give back a place held by `reserve` or by a client that ended."""
        self._places[owner] -= 1
        if self._places[owner] <= 0:
            del self._places[owner]

    def connect(
        self,
        socket: Socket,
        tenant_id: Scope,
        label: str = "",
        *,
        access: Access | None = None,
        transport: asyncio.WriteTransport | None = None,
        reserved: bool = False,
    ) -> LiveClient:
        """Register a viewer and start its sender; its first message will be a
        snapshot. `access` defaults to an unchecked viewer of `tenant_id`;
        `transport` is the socket's, whose buffer counts in its pending bytes;
        `reserved`: its place was held by `reserve`. Call `disconnect` when
        the socket ends."""
        access = access or Access(tenant_id)
        client = LiveClient(socket, tenant_id, asyncio.Queue(self.queue_size), access, transport, label)
        client.queue.put_nowait(None)
        if not reserved:
            self._places[access.owner] += 1
        self._clients.add(client)
        sending = send_loop(client, lambda: self.client_rate, self.messages.encoded_snapshot, self._go_live)
        client.sender = asyncio.get_running_loop().create_task(sending, name="jobq-live-sender")
        logger.info("action=ws_connect tenantId=%s viewer=%s clients=%d", tenant_id, label, len(self._clients))
        return client

    async def disconnect(self, client: LiveClient) -> None:
        """Forget the viewer and stop its sender (idempotent)."""
        if client in self._clients:
            self._clients.discard(client)
            self._behind.discard(client)
            self._leave_live(client)
            self.release(client.access.owner)
            logger.info(
                "action=ws_disconnect tenantId=%s viewer=%s sent=%d resyncs=%d clients=%d",
                client.tenant_id, client.label, client.sent, client.resyncs, len(self._clients),
            )
        sender = client.sender
        if sender is not None and not sender.done():
            sender.cancel()
            try:
                await sender
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # we are being cancelled ourselves, not just the sender

    async def close_all(self) -> None:
        """Close every socket with 1001 (going away) and refuse new viewers:
        the application's `on_shutdown`, so the server need not wait for them."""
        self.closed = True
        self.feed.close()
        await asyncio.gather(
            *(self._close(c, WSCloseCode.GOING_AWAY, b"jobq is shutting down") for c in list(self._clients)),
            *list(self._closing),
            return_exceptions=True,
        )

    def close_session(self, session_id: str) -> int:
        """Close (4401) the sockets opened through the signed-in session
        `session_id` (`sessions.session_id`): its user signed out. Returns
        how many; they close in the background, at once."""
        clients = [c for c in self._clients if c.access.session_id == session_id]
        for client in clients:
            self._evict(client, AUTH_CLOSE, "signed out", None)
        return len(clients)

    def _evict(self, client: LiveClient, code: int, reason: str, kind: str | None) -> None:
        """Close the client's socket in the background, counting `kind` as a refusal."""
        if client.closing:
            return
        client.closing = True
        if kind is not None:
            self.on_refusal(kind)
        logger.info(
            "action=ws_close tenantId=%s viewer=%s code=%d reason=%r", client.tenant_id, client.label, code, reason
        )
        task = asyncio.get_running_loop().create_task(self._close(client, code, reason.encode()), name="jobq-ws-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, client: LiveClient, code: int, message: bytes) -> None:
        """Stop the client's stream and close its socket; a peer that does not
        take the close frame within `CLOSE_WAIT_SECONDS` (it stopped reading)
        has its connection aborted, so no buffer waits for it."""
        client.closing = True
        await self.disconnect(client)
        try:
            async with asyncio.timeout(CLOSE_WAIT_SECONDS):
                await client.socket.close(code=code, message=message)
        except Exception as exc:  # TimeoutError, or the connection failed meanwhile
            logger.info("action=ws_abort tenantId=%s viewer=%s error=%r", client.tenant_id, client.label, exc)
            if client.transport is not None:
                client.transport.abort()

    def _go_live(self, client: LiveClient) -> None:
        client.state = LIVE
        self._behind.discard(client)
        self._live.setdefault(client.tenant_id, set()).add(client)

    def _leave_live(self, client: LiveClient) -> None:
        live = self._live.get(client.tenant_id)
        if live is not None:
            live.discard(client)
            if not live:
                del self._live[client.tenant_id]

    def _fall_behind(self, client: LiveClient, over_bytes: bool = False) -> None:
        # Emptied in place (its sender may be waiting on this queue). An item
        # its sender already holds goes out before the snapshot superseding it.
        queue = client.queue
        while not queue.empty():
            item = queue.get_nowait()
            if item is not None:
                client.queued_bytes -= len(item)
        if over_bytes and client.stuck_since is None:
            client.stuck_since = self.clock.monotonic()
        client.state = BEHIND
        client.resyncs += 1
        # Behind again soon after its last snapshot: it cannot keep up with
        # this rate, so the snapshots it gets instead come less often (1, 2,
        # 4 ... MAX_RESYNC_TICKS ticks); a full snapshot per viewer per second
        # would otherwise cost more than the stream it replaces.
        soon = self._ticks - client.last_resync <= client.backoff
        client.backoff = min(client.backoff * 2, MAX_RESYNC_TICKS) if soon else 1
        client.resync_at = self._ticks + client.backoff
        self._leave_live(client)
        self._behind.add(client)
        if client.resyncs == 1:
            logger.info("action=ws_behind tenantId=%s viewer=%s", client.tenant_id, client.label)

    # ---- publishing ------------------------------------------------------

    def on_events(self, events: Sequence[Event]) -> None:
        """The store listener (`feed.LiveFeed` notes the changes; it calls
        `publish_job` and `publish_delivery` once it has them)."""
        self.feed.on_events(events)

    async def flush(self) -> None:
        """Publish the changes noted so far, now (tests call this)."""
        await self.feed.flush()

    def publish_job(self, job: Job, rendered: dict[str, Any]) -> None:
        """Queue a job (`rendered` as the API shows it) for every live client
        allowed to see it. Synchronous: it never awaits a socket."""
        self._to_viewers_of(job.tenant_id, lambda: self.messages.job(rendered))

    def publish_delivery(self, delivery: Delivery) -> None:
        """Queue a changed webhook delivery (made, attempted, redelivered) like
        a job change, for the clients of its tenant and for admins; alert
        notifications are not sent."""
        if not delivery.for_operator:
            self._to_viewers_of(delivery.tenant_id, lambda: {"type": "delivery", "delivery": delivery.to_api()})

    def _to_viewers_of(self, tenant_id: str, message: Callable[[], dict[str, Any]]) -> None:
        """Queue `message()` (built only if someone is watching) for the live
        clients of the tenant and the admins watching every tenant."""
        tenant_clients = self._live.get(tenant_id)
        all_clients = self._live.get(None)
        if not tenant_clients and not all_clients:
            return
        data = orjson.dumps(message())
        for clients in (tenant_clients, all_clients):
            if clients:
                self._offer(list(clients), data)

    async def tick(self) -> None:
        """Send a fresh snapshot instead of a backlog: a live client with more
        queued than it may send in `TICK_SECONDS` falls behind, and every
        client behind gets a snapshot (built once per scope); then a metrics
        message for every live client (computed once per scope). The
        background task `run()` calls this every `TICK_SECONDS`; tests call
        it directly. First, each client's access is re-checked and a client
        stuck over its byte bound for `stuck_seconds` is closed."""
        self._check_clients()
        lag_limit = max(1.0, self.client_rate * TICK_SECONDS)
        for clients in list(self._live.values()):
            for client in list(clients):
                if client.queue.qsize() > lag_limit:
                    self._fall_behind(client)
        self._ticks += 1
        snapshots: dict[Scope, bytes] = {}
        for client in list(self._behind):
            if client.resync_at > self._ticks:
                continue
            # Once over its bound, a client gets its snapshot when its transport
            # buffer has drained: it is reading again.
            buffered = client.buffered()
            if buffered and (client.stuck_since is not None or buffered >= self.max_pending_bytes):
                self._still_stuck(client)
                continue
            data = snapshots.get(client.tenant_id)
            if data is None:
                data = snapshots[client.tenant_id] = await self.messages.encoded_snapshot(client.tenant_id)
            if buffered and client.queued_bytes + buffered + len(data) > self.max_pending_bytes:
                self._still_stuck(client)
                continue
            client.last_resync = self._ticks
            client.stuck_since = None
            client.queue.put_nowait(data)  # its queue has been empty since it fell behind
            client.queued_bytes += len(data)
            self._go_live(client)
        now_second = int(self.clock.monotonic())
        for scope, clients in list(self._live.items()):
            self._offer(list(clients), orjson.dumps(await self.messages.metrics(scope, now_second)))

    def _still_stuck(self, client: LiveClient) -> None:
        if client.stuck_since is None:
            client.stuck_since = self.clock.monotonic()

    def _check_clients(self) -> None:
        """Close the clients whose key is gone from the tenants file, whose
        session has expired, or that have been stuck over their byte bound
        for `stuck_seconds`."""
        now = self.clock.now().timestamp()
        now_mono = self.clock.monotonic()
        known: dict[str, Principal | None] = {}
        for client in list(self._clients):
            if client.closing:
                continue
            access = client.access
            if access.key_hash is not None and self.authenticate is not None:
                if access.key_hash not in known:
                    known[access.key_hash] = self.authenticate(access.key_hash)
                principal = known[access.key_hash]
                if principal is None or principal.tenant_id != access.owner:
                    self._evict(client, AUTH_CLOSE, "the API key was removed", "ws_key_revoked")
                    continue
            if access.expires_at is not None and now >= access.expires_at:
                self._evict(client, AUTH_CLOSE, "the session expired; sign in again", "ws_session_expired")
                continue
            if client.state != BEHIND:
                if client.pending_bytes > self.max_pending_bytes:
                    self._still_stuck(client)  # e.g. its first snapshot, written and never read
                else:
                    client.stuck_since = None
            if client.stuck_since is not None and now_mono - client.stuck_since >= self.stuck_seconds:
                self._evict(client, WSCloseCode.POLICY_VIOLATION, "too slow: stopped reading", "ws_slow_reader")

    async def run(self) -> None:
        """Tick every `TICK_SECONDS` until cancelled."""
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self.tick()
            except Exception:
                logger.exception("action=ws_tick_failed")

    def _offer(self, clients: list[LiveClient], message: bytes) -> None:
        size, bound = len(message), self.max_pending_bytes
        for client in clients:
            if client.queued_bytes + client.buffered() + size > bound:
                self._fall_behind(client, over_bytes=True)
                continue
            try:
                client.queue.put_nowait(message)
            except asyncio.QueueFull:
                self._fall_behind(client)
            else:
                client.queued_bytes += size


HUB = web.AppKey("jobq.hub", LiveHub)
