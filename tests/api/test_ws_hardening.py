"""Issue 8, the live-update WebSocket under abuse, through real sockets on
loopback: caps on sockets per tenant and overall (refused before the
upgrade), a reader that never reads costs bounded bytes and is closed when it
stays stuck, and a socket ends soon after its key is removed, its session
signs out or its session expires."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import WSMsgType

from jobq.core.health import Health
from jobq.core.models import NewJob
from jobq.tenancy.tenants import TenantsDoc, hash_key
from jobq.web.auth import SESSIONS
from jobq.web.live.client import LiveClient
from jobq.web.live.hub import HUB, LiveHub
from jobq.web.services import SERVICES
from jobq.web.sessions import COOKIE_NAME
from tests.conftest import Harness, HarnessFactory, store_submit

AUTH_CLOSE = 4401


def hub_of(jobq: Harness) -> LiveHub:
    return jobq.app[HUB]


def health_of(jobq: Harness) -> Health:
    return jobq.app[SERVICES].health


def own_origin(jobq: Harness) -> str:
    return f"http://{jobq.client.host}:{jobq.client.port}"


async def connect(jobq: Harness, who: str = "acme", **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
    ws: aiohttp.ClientWebSocketResponse = await jobq.client.ws_connect("/ws", headers=jobq.headers(who), **kwargs)
    return ws


async def receive_message(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            message: dict[str, Any] = await ws.receive_json()
            if message["type"] == kind:
                return message


async def closed_with(ws: aiohttp.ClientWebSocketResponse, within: float) -> int | None:
    """The close code the server sends within `within` seconds (skipping data frames)."""
    async with asyncio.timeout(within):
        while (message := await ws.receive()).type is WSMsgType.TEXT:
            pass
    assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING), message
    return ws.close_code


async def sees(ws: aiohttp.ClientWebSocketResponse, job_id: str) -> None:
    """Wait for `job_id` in a job message or in a snapshot."""
    async with asyncio.timeout(5):
        while True:
            message: dict[str, Any] = await ws.receive_json()
            jobs = [message["job"]] if message["type"] == "job" else message.get("jobs", [])
            if any(job["jobId"] == job_id for job in jobs):
                return


async def until(condition: Any, within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():
            await asyncio.sleep(0.01)


def client_of(jobq: Harness, label: str) -> LiveClient:
    [client] = [c for c in hub_of(jobq).clients if c.label == label]
    return client


# ---- 1. caps ---------------------------------------------------------------------


async def test_a_tenant_at_its_cap_is_refused_429_before_the_upgrade(make_harness: HarnessFactory) -> None:
    jobq = await make_harness(ws_max_per_tenant=2, ws_max_total=10)
    first, second = await connect(jobq), await connect(jobq, "acme_read")  # both keys are acme's
    for ws in (first, second):
        await receive_message(ws, "snapshot")
    response = await jobq.client.get("/ws", headers={**WS_HEADERS, **jobq.headers()})
    assert response.status == 429
    assert response.content_type == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
    assert "2" in (await response.json())["detail"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(jobq)
    assert refused.value.status == 429
    assert health_of(jobq).refusals["ws_tenant_limit"] == 2
    assert len(hub_of(jobq).clients) == 2
    # Other tenants and admins are not held back by acme's cap; an admin
    # watching acme does not use acme's places.
    others = [await connect(jobq, "globex"), await connect(jobq, "admin", params={"tenant": "acme"})]
    for ws in others:
        await receive_message(ws, "snapshot")
    # A place is given back when a socket ends.
    await first.close()
    await until(lambda: len(hub_of(jobq).clients) == 3)
    again = await connect(jobq)
    await receive_message(again, "snapshot")
    for ws in (second, again, *others):
        await ws.close()


async def test_beyond_the_total_cap_the_upgrade_is_refused_503_admins_included(make_harness: HarnessFactory) -> None:
    jobq = await make_harness(ws_max_per_tenant=5, ws_max_total=2)
    sockets = [await connect(jobq, "admin"), await connect(jobq, "globex")]
    for ws in sockets:
        await receive_message(ws, "snapshot")
    for who in ("acme", "admin"):
        response = await jobq.client.get("/ws", headers={**WS_HEADERS, **jobq.headers(who)})
        assert response.status == 503, who
        assert response.content_type == "application/problem+json"
        assert int(response.headers["Retry-After"]) > 0
    assert health_of(jobq).refusals["ws_total_limit"] == 2
    assert len(hub_of(jobq).clients) == 2
    for ws in sockets:
        await ws.close()


WS_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
}


async def test_places_are_held_before_the_upgrade_so_a_burst_cannot_overshoot(make_harness: HarnessFactory) -> None:
    jobq = await make_harness(ws_max_per_tenant=3)

    async def attempt() -> aiohttp.ClientWebSocketResponse | int:
        try:
            return await connect(jobq)
        except aiohttp.WSServerHandshakeError as refused:
            return refused.status

    results = await asyncio.gather(*(attempt() for _ in range(10)))
    sockets = [r for r in results if isinstance(r, aiohttp.ClientWebSocketResponse)]
    assert len(sockets) == 3
    assert sorted(r for r in results if isinstance(r, int)) == [429] * 7
    assert len(hub_of(jobq).clients) == 3
    for ws in sockets:
        await ws.close()


# ---- 2. a reader that never reads -------------------------------------------------


@dataclass
class RawSocket:
    """A WebSocket client on a plain socket with a small receive buffer, which
    reads only when told to: a browser tab that stopped reading."""

    sock: socket.socket
    buffer: bytearray

    @classmethod
    async def open(cls, jobq: Harness, who: str) -> RawSocket:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, (jobq.client.host, jobq.client.port))
        request = (
            f"GET /ws HTTP/1.1\r\nHost: {jobq.client.host}:{jobq.client.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            f"X-API-Key: {jobq.key(who)}\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        head = b""
        async with asyncio.timeout(5):
            while not head.endswith(b"\r\n\r\n"):
                head += await loop.sock_recv(sock, 1)  # byte by byte: not one byte of a frame is read
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(sock, bytearray())

    async def frame(self) -> tuple[int, bytes]:
        """The next frame (opcode, payload); server frames are not masked."""
        loop = asyncio.get_running_loop()

        async def need(n: int) -> None:
            while len(self.buffer) < n:
                chunk = await loop.sock_recv(self.sock, 1 << 16)
                if not chunk:
                    raise ConnectionError("closed")
                self.buffer += chunk

        await need(2)
        length, offset = self.buffer[1] & 0x7F, 2
        if length == 126:
            await need(4)
            length, offset = int.from_bytes(self.buffer[2:4]), 4
        elif length == 127:
            await need(10)
            length, offset = int.from_bytes(self.buffer[2:10]), 10
        await need(offset + length)
        opcode, payload = self.buffer[0] & 0x0F, bytes(self.buffer[offset : offset + length])
        del self.buffer[: offset + length]
        return opcode, payload

    async def message(self, kind: str) -> dict[str, Any]:
        while True:
            opcode, payload = await self.frame()
            if opcode == WSMsgType.TEXT:
                message: dict[str, Any] = orjson.loads(payload)
                if message["type"] == kind:
                    return message

    def close(self) -> None:
        self.sock.close()


OpenRaw = Callable[[Harness, str], Awaitable[RawSocket]]


@pytest.fixture
async def open_raw() -> AsyncIterator[OpenRaw]:
    """`await open_raw(jobq, who)`: a `RawSocket`, closed when the test ends."""
    opened: list[RawSocket] = []

    async def open_one(jobq: Harness, who: str) -> RawSocket:
        raw = await RawSocket.open(jobq, who)
        opened.append(raw)
        return raw

    yield open_one
    for raw in opened:
        raw.close()


def shrink_kernel_buffer(client: LiveClient) -> None:
    """Make the server's kernel send buffer for the client small: on loopback
    it would otherwise take the first megabytes (up to tcp_wmem's 4 MB) before
    anything waits in user space, where the hub's bound applies."""
    assert client.transport is not None
    sock = client.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)


def transport_buffer(client: LiveClient) -> int:
    """Bytes aiohttp's transport holds for the client, read past the hub."""
    writer = getattr(client.socket, "_writer", None)
    assert writer is not None
    size: int = writer.transport.get_write_buffer_size()
    return size


def queued_bytes(client: LiveClient) -> int:
    """Bytes of encoded messages waiting in the client's queue, counted past the hub."""
    items = getattr(client.queue, "_queue", ())
    return sum(len(item) for item in items if item is not None)


BLOB = "x" * 20_000  # a 20 kB payload, echoed back as the result: job messages of 20-40 kB


async def flood(jobq: Harness, n: int) -> None:
    """`n` big jobs submitted and run: 3n job changes, about 80 kB each job."""
    specs = [NewJob("echo", {"i": i, "blob": BLOB}) for i in range(n)]
    await store_submit(jobq.store, "acme", specs, jobq.clock.now(), max_queued=100_000)
    await jobq.drain()


BOUND = 256 * 1024


async def overwhelm(jobq: Harness, client: LiveClient) -> None:
    """Flood until the client is behind with bytes stuck in its transport (a
    single burst may push it behind before its sender wrote anything)."""
    for _ in range(20):
        await flood(jobq, 10)
        await hub_of(jobq).tick()
        if client.state == "behind" and client.buffered() > 0:
            return
    raise AssertionError(f"never stuck: {client}")


async def test_a_reader_that_never_reads_pins_bounded_bytes(make_harness: HarnessFactory, open_raw: OpenRaw) -> None:
    jobq = await make_harness(ws_max_pending_bytes=BOUND)
    hub = hub_of(jobq)
    watcher = await connect(jobq)
    await receive_message(watcher, "snapshot")
    await open_raw(jobq, "acme_read")
    stuck = client_of(jobq, "acme/read")
    shrink_kernel_buffer(stuck)
    await until(lambda: stuck.state == "live")
    peak = {"independent": 0, "accounted": 0, "transport": 0}

    async def sample() -> None:
        while True:
            transport = transport_buffer(stuck)
            peak["transport"] = max(peak["transport"], transport)
            peak["independent"] = max(peak["independent"], queued_bytes(stuck) + transport)
            peak["accounted"] = max(peak["accounted"], stuck.pending_bytes)
            await asyncio.sleep(0.002)

    sampler = asyncio.get_running_loop().create_task(sample())
    try:
        for _ in range(3):
            await flood(jobq, 40)  # 120 changes, ~3 MB offered to each viewer
            await hub.tick()
            await asyncio.sleep(0.05)
    finally:
        sampler.cancel()
    print(f"never-reading client: peak pending {peak} (bound {BOUND})")
    assert peak["independent"] <= BOUND, peak
    assert peak["accounted"] <= BOUND, peak
    assert stuck.pending_bytes == stuck.queued_bytes + transport_buffer(stuck)
    assert stuck.resyncs >= 1 and stuck.state == "behind"  # the stream was dropped for a snapshot later
    # The watcher alongside kept receiving (the stream, or snapshots when it fell behind).
    sentinel = await jobq.submit()
    await sees(watcher, sentinel["jobId"])
    await watcher.close()


async def test_a_reader_that_catches_up_gets_a_fresh_snapshot_then_the_stream(
    make_harness: HarnessFactory, open_raw: OpenRaw
) -> None:
    jobq = await make_harness(ws_max_pending_bytes=BOUND)
    hub = hub_of(jobq)
    raw = await open_raw(jobq, "acme_read")
    stuck = client_of(jobq, "acme/read")
    shrink_kernel_buffer(stuck)
    await raw.message("snapshot")
    await overwhelm(jobq, stuck)
    await hub.tick()
    assert stuck.state == "behind"  # still behind: its buffer has not drained, so no snapshot is queued
    assert stuck.queued_bytes == 0
    # It starts reading: what was written before it fell behind, then, once
    # its buffer is empty, the next tick sends a fresh snapshot.
    reading = asyncio.get_running_loop().create_task(raw.message("snapshot"))
    await until(lambda: stuck.buffered() == 0)
    await hub.tick()
    async with asyncio.timeout(5):
        snapshot = await reading
    assert snapshot["counts"]["succeeded"] == (await jobq.store.counts("acme"))["succeeded"]
    assert stuck.state == "live" and stuck.stuck_since is None
    job = await jobq.submit()
    async with asyncio.timeout(5):
        assert (await raw.message("job"))["job"]["jobId"] == job["jobId"]


async def test_a_reader_stuck_past_the_deadline_is_closed(make_harness: HarnessFactory, open_raw: OpenRaw) -> None:
    jobq = await make_harness(ws_max_pending_bytes=BOUND, ws_stuck_seconds=30.0)
    hub = hub_of(jobq)
    watcher = await connect(jobq)
    await receive_message(watcher, "snapshot")
    await open_raw(jobq, "acme_read")
    stuck = client_of(jobq, "acme/read")
    shrink_kernel_buffer(stuck)
    await until(lambda: stuck.state == "live")
    await overwhelm(jobq, stuck)
    assert stuck.stuck_since is not None
    jobq.clock.advance(29)
    await hub.tick()
    assert stuck in hub.clients
    jobq.clock.advance(2)
    await hub.tick()
    await until(lambda: stuck not in hub.clients, within=2)
    assert health_of(jobq).refusals["ws_slow_reader"] == 1
    sentinel = await jobq.submit()
    await sees(watcher, sentinel["jobId"])
    assert not watcher.closed
    await watcher.close()


# ---- 3. the key or session ends: its sockets end -------------------------------------


async def test_removing_a_key_closes_its_sockets_within_two_seconds(jobq: Harness) -> None:
    doomed = await connect(jobq, "acme_read")
    kept = await connect(jobq, "acme")
    for ws in (doomed, kept):
        await receive_message(ws, "snapshot")
    path = jobq.settings.tenants_file
    doc = TenantsDoc.read(path)
    removed = hash_key(jobq.key("acme_read"))
    doc.tenants["acme"]["keys"] = [k for k in doc.tenants["acme"]["keys"] if k["hash"] != removed]
    doc.write(path)
    jobq.clock.advance(1.5)  # the registry looks at the file at most once a (fake) second
    started = time.monotonic()
    assert await closed_with(doomed, within=2.5) == AUTH_CLOSE
    assert time.monotonic() - started < 2.0
    assert health_of(jobq).refusals["ws_key_revoked"] == 1
    job = await jobq.submit()
    assert (await receive_message(kept, "job"))["job"]["jobId"] == job["jobId"]
    await kept.close()


async def session_socket(jobq: Harness, token: str) -> aiohttp.ClientWebSocketResponse:
    ws: aiohttp.ClientWebSocketResponse = await jobq.client.ws_connect(
        "/ws", headers={"Cookie": f"{COOKIE_NAME}={token}"}, origin=own_origin(jobq)
    )
    await receive_message(ws, "snapshot")
    return ws


async def test_signing_out_closes_that_sessions_sockets_at_once(jobq: Harness) -> None:
    codec = jobq.app[SESSIONS]
    token = codec.issue(hash_key(jobq.key("acme")))
    jobq.clock.advance(1)
    other = codec.issue(hash_key(jobq.key("acme")))  # another browser, same key
    assert other != token
    mine = [await session_socket(jobq, token), await session_socket(jobq, token)]
    theirs = await session_socket(jobq, other)
    response = await jobq.client.post(
        "/logout", headers={"Cookie": f"{COOKIE_NAME}={token}", "Origin": own_origin(jobq)}, allow_redirects=False
    )
    assert response.status == 303
    for ws in mine:
        assert await closed_with(ws, within=1.0) == AUTH_CLOSE
    job = await jobq.submit()
    assert (await receive_message(theirs, "job"))["job"]["jobId"] == job["jobId"]
    await theirs.close()


async def test_an_expired_session_closes_its_sockets(jobq: Harness) -> None:
    codec = jobq.app[SESSIONS]
    token = codec.issue(hash_key(jobq.key("acme")))
    ws = await session_socket(jobq, token)
    by_key = await connect(jobq)
    await receive_message(by_key, "snapshot")
    jobq.clock.advance(codec.lifetime_seconds - 1)
    await hub_of(jobq).tick()
    assert len(hub_of(jobq).clients) == 2  # not expired yet
    jobq.clock.advance(1)  # expired now; the background tick (every real second) notices
    assert await closed_with(ws, within=2.0) == AUTH_CLOSE
    assert health_of(jobq).refusals["ws_session_expired"] == 1
    job = await jobq.submit()
    assert (await receive_message(by_key, "job"))["job"]["jobId"] == job["jobId"]  # keys do not expire
    await by_key.close()


async def test_a_snapshot_keeps_the_newest_jobs_that_fit_in_half_the_bound(make_harness: HarnessFactory) -> None:
    jobq = await make_harness(ws_max_pending_bytes=BOUND)
    specs = [NewJob("echo", {"i": i, "blob": BLOB}) for i in range(20)]
    await store_submit(jobq.store, "acme", specs, jobq.clock.now(), max_queued=100_000)
    hub = hub_of(jobq)
    encoded = await hub.messages.encoded_snapshot("acme")
    assert len(encoded) <= BOUND // 2
    full = orjson.loads(orjson.dumps(await hub.messages.snapshot("acme")))
    cut = orjson.loads(encoded)
    assert cut["type"] == "snapshot" and cut["counts"] == full["counts"]
    assert 0 < len(cut["jobs"]) < len(full["jobs"]) == 20
    assert cut["jobs"] == full["jobs"][: len(cut["jobs"])]  # the newest ones, in order
    roomy = LiveHub(jobq.store, jobq.clock, max_pending_bytes=64 << 20)
    assert orjson.loads(await roomy.messages.encoded_snapshot("acme")) == full  # nothing cut when it all fits


async def test_shutdown_does_not_wait_for_a_reader_that_never_reads(
    make_harness: HarnessFactory, open_raw: OpenRaw
) -> None:
    jobq = await make_harness(ws_max_pending_bytes=BOUND)
    await open_raw(jobq, "acme_read")
    stuck = client_of(jobq, "acme/read")
    shrink_kernel_buffer(stuck)
    await until(lambda: stuck.state == "live")
    await overwhelm(jobq, stuck)
    started = time.monotonic()
    async with asyncio.timeout(5):
        await jobq.client.server.close()  # before: waited for ever to flush the close frame
    assert time.monotonic() - started < 3.0
    assert not hub_of(jobq).clients
