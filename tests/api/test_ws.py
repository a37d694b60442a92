"""The live-update WebSocket (SPEC §5) through real HTTP on loopback: the
checks before the upgrade, the snapshot, job events, tenant isolation,
metrics, slow clients and shutdown."""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType

from jobq.core.models import NewJob
from jobq.rules.throughput import FinishedCounter
from jobq.tenancy.tenants import hash_key
from jobq.web.auth import SESSIONS
from jobq.web.live.hub import HUB, LiveHub
from jobq.web.sessions import COOKIE_NAME
from jobq.web.views.ws import origin_refusal
from tests.conftest import Harness, store_submit

WS_HEADERS = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
}


def hub_of(jobq: Harness) -> LiveHub:
    return jobq.app[HUB]


def own_origin(jobq: Harness) -> str:
    return f"http://{jobq.client.host}:{jobq.client.port}"


async def connect(jobq: Harness, who: str = "acme", query: str = "", **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
    ws: aiohttp.ClientWebSocketResponse = await jobq.client.ws_connect(
        "/ws" + query, headers=jobq.headers(who), **kwargs
    )
    return ws


async def receive_message(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    """The next message of type `kind`, skipping others (the background tick
    may send metrics at any moment)."""
    async with asyncio.timeout(5):
        while True:
            message: dict[str, Any] = await ws.receive_json()
            if message["type"] == kind:
                return message


async def metrics_at(ws: aiohttp.ClientWebSocketResponse, at: str) -> dict[str, Any]:
    """The metrics message of the tick at fake time `at` (skipping any the
    background task sent earlier, at real-time seconds)."""
    while (metrics := await receive_message(ws, "metrics"))["at"] != at:
        pass
    return metrics


async def jobs_until(ws: aiohttp.ClientWebSocketResponse, job_id: str, status: str) -> list[dict[str, Any]]:
    """Every job message up to and including `job_id` reaching `status`."""
    seen = []
    while True:
        job = (await receive_message(ws, "job"))["job"]
        seen.append(job)
        if job["jobId"] == job_id and job["status"] == status:
            return seen


async def submit_direct(jobq: Harness, tenant: str, n: int) -> None:
    """`n` echo jobs through the store, past the API's submit rate limit."""
    specs = [NewJob("echo", {"n": i}) for i in range(n)]
    await store_submit(jobq.store, tenant, specs, jobq.clock.now(), max_queued=100_000)


# ---- before the upgrade ---------------------------------------------------


async def test_foreign_origin_is_403_problem_before_the_upgrade(jobq: Harness) -> None:
    headers = {**WS_HEADERS, **jobq.headers(), "Origin": "http://evil.example"}
    response = await jobq.client.get("/ws", headers=headers)
    assert response.status == 403
    assert response.content_type == "application/problem+json"
    assert "Origin" in (await response.json())["detail"]
    assert not hub_of(jobq).clients
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await connect(jobq, origin=f"http://{jobq.client.host}:1")  # another port is another origin
    assert refused.value.status == 403


async def test_own_origin_and_no_origin_with_an_api_key_are_accepted(jobq: Harness) -> None:
    with_origin = await connect(jobq, origin=own_origin(jobq))
    assert (await receive_message(with_origin, "snapshot"))["counts"]["queued"] == 0
    without_origin = await connect(jobq)  # aiohttp's client sends no Origin
    assert (await receive_message(without_origin, "snapshot"))["jobs"] == []
    await with_origin.close()
    await without_origin.close()


async def test_missing_or_unknown_key_is_401(jobq: Harness) -> None:
    response = await jobq.client.get("/ws", headers=WS_HEADERS)
    assert response.status == 401
    assert response.content_type == "application/problem+json"
    assert "WWW-Authenticate" in response.headers
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await jobq.client.ws_connect("/ws", headers={"X-API-Key": "jq_nope"})
    assert refused.value.status == 401


async def test_plain_get_without_upgrade_is_400(jobq: Harness) -> None:
    response = await jobq.client.get("/ws", headers=jobq.headers())
    assert response.status == 400
    assert response.content_type == "application/problem+json"


async def test_session_cookie_needs_the_services_own_origin(jobq: Harness) -> None:
    token = jobq.app[SESSIONS].issue(hash_key(jobq.key("acme")))
    cookie = {"Cookie": f"{COOKIE_NAME}={token}"}
    for origin in (None, "http://evil.example"):
        headers = {**WS_HEADERS, **cookie, **({"Origin": origin} if origin else {})}
        response = await jobq.client.get("/ws", headers=headers)
        assert response.status == 403, origin
        assert response.content_type == "application/problem+json"
    ws = await jobq.client.ws_connect("/ws", headers=cookie, origin=own_origin(jobq))
    snapshot = await receive_message(ws, "snapshot")
    assert snapshot["counts"]["queued"] == 0
    [client] = hub_of(jobq).clients
    assert client.tenant_id == "acme"
    await ws.close()


OWN = "http://127.0.0.1:8080"


@pytest.mark.parametrize(
    ("origins", "own", "credential", "accepted"),
    [
        ([], OWN, "key", True),
        ([], OWN, "session", False),  # a cookie alone needs the browser's Origin
        ([OWN], OWN, "session", True),
        ([OWN], OWN, "key", True),
        (["HTTP://127.0.0.1:8080"], OWN, "session", True),
        (["http://example.com"], "http://example.com:80", "session", True),
        (["https://example.com:443"], "https://example.com", "session", True),
        (["http://evil.example"], OWN, "key", False),
        (["http://evil.example"], OWN, "session", False),
        (["https://127.0.0.1:8080"], OWN, "session", False),
        (["http://127.0.0.1:8081"], OWN, "session", False),
        (["null"], OWN, "session", False),
        ([OWN + "/page"], OWN, "session", False),
        (["http://user@127.0.0.1:8080"], OWN, "session", False),
        ([OWN, OWN], OWN, "session", False),
        (["http://[::1"], OWN, "key", False),
    ],
)
def test_origin_rules(origins: list[str], own: str, credential: str, accepted: bool) -> None:
    assert (origin_refusal(origins, own, credential) is None) == accepted


# ---- snapshot and events ----------------------------------------------------


async def test_first_message_is_a_snapshot_of_counts_and_newest_jobs(jobq: Harness) -> None:
    first = await jobq.submit(payload={"n": 1})
    await jobq.submit("globex")
    await jobq.drain()
    await submit_direct(jobq, "acme", 104)
    ws = await connect(jobq)
    snapshot = await ws.receive_json()
    assert snapshot["type"] == "snapshot"
    assert snapshot["counts"]["queued"] == 104 and snapshot["counts"]["succeeded"] == 1
    assert len(snapshot["jobs"]) == 100
    assert {j["tenantId"] for j in snapshot["jobs"]} == {"acme"}
    assert first["jobId"] not in {j["jobId"] for j in snapshot["jobs"]}  # the oldest is not among the newest 100
    created = [j["createdAt"] for j in snapshot["jobs"]]
    assert created == sorted(created, reverse=True)
    newest = snapshot["jobs"][0]
    api = await jobq.get(newest["jobId"])
    del api["attemptHistory"]
    assert newest == api  # rendered as GET /jobs renders, waitingReason included
    await ws.close()


async def test_job_arrives_as_queued_running_succeeded(jobq: Harness) -> None:
    ws = await connect(jobq)
    await receive_message(ws, "snapshot")
    job = await jobq.submit(payload={"hello": "live"})
    await jobq.drain()
    seen = await jobs_until(ws, job["jobId"], "succeeded")
    assert [j["status"] for j in seen] == ["queued", "running", "succeeded"]
    assert seen[0]["waitingReason"] is not None
    assert seen[-1]["result"] == {"hello": "live"}
    assert "attemptHistory" not in seen[-1]
    await ws.close()


async def test_events_of_one_tenant_never_reach_another(jobq: Harness) -> None:
    acme_job = await jobq.submit("acme")
    sockets = {
        "acme": await connect(jobq, "acme", "?tenant=globex"),  # a tenant key's filter is ignored
        "globex": await connect(jobq, "globex"),
        "admin": await connect(jobq, "admin"),
        "admin_globex": await connect(jobq, "admin", "?tenant=globex"),
    }
    snapshots = {name: await receive_message(ws, "snapshot") for name, ws in sockets.items()}
    assert [j["jobId"] for j in snapshots["globex"]["jobs"]] == []
    assert snapshots["globex"]["counts"]["queued"] == 0
    assert snapshots["admin"]["counts"]["queued"] == 1
    assert [j["jobId"] for j in snapshots["acme"]["jobs"]] == [acme_job["jobId"]]

    await jobq.drain()
    globex_job = await jobq.submit("globex")
    await jobq.drain()
    sentinel = await jobq.submit("acme")

    def tenants(seen: list[dict[str, Any]]) -> set[str]:
        return {j["tenantId"] for j in seen}

    assert tenants(await jobs_until(sockets["globex"], globex_job["jobId"], "succeeded")) == {"globex"}
    assert tenants(await jobs_until(sockets["admin_globex"], globex_job["jobId"], "succeeded")) == {"globex"}
    assert tenants(await jobs_until(sockets["acme"], sentinel["jobId"], "queued")) == {"acme"}
    assert tenants(await jobs_until(sockets["admin"], sentinel["jobId"], "queued")) == {"acme", "globex"}
    for ws in sockets.values():
        await ws.close()


async def test_read_only_key_may_watch(jobq: Harness) -> None:
    ws = await connect(jobq, "acme_read")
    await receive_message(ws, "snapshot")
    job = await jobq.submit("acme")
    assert [j["jobId"] for j in await jobs_until(ws, job["jobId"], "queued")] == [job["jobId"]]
    await ws.close()


# ---- metrics ------------------------------------------------------------------


async def test_metrics_after_a_tick(jobq: Harness) -> None:
    acme = await connect(jobq)
    globex = await connect(jobq, "globex")
    await receive_message(acme, "snapshot")
    await receive_message(globex, "snapshot")
    for _ in range(3):
        await jobq.submit()
    await jobq.drain()
    await jobq.submit()
    jobq.clock.advance(1)
    await hub_of(jobq).tick()
    metrics = await metrics_at(acme, "2026-11-24T09:30:01.000Z")
    assert metrics["counts"]["succeeded"] == 3 and metrics["counts"]["queued"] == 1
    assert metrics["queueDepth"] == 1
    assert metrics["finishedLastMinute"] == 3
    assert sum(metrics["finishedBySecond"]) == 3 and len(metrics["finishedBySecond"]) == 60
    assert metrics["finishedBySecond"][-2] == 3  # finished one (fake) second ago
    assert metrics["finishedPerSecond"] == 1.5  # 3 jobs over the hub's 2 seconds of life
    other = await metrics_at(globex, "2026-11-24T09:30:01.000Z")
    assert other["finishedLastMinute"] == 0 and other["counts"]["succeeded"] == 0

    jobq.clock.advance(60)
    await hub_of(jobq).tick()
    later = await metrics_at(acme, "2026-11-24T09:31:01.000Z")
    assert later["finishedLastMinute"] == 0 and later["finishedPerSecond"] == 0
    await acme.close()
    await globex.close()


# ---- slow clients -------------------------------------------------------------


class StuckSocket:
    """A socket whose send never completes after the first `free` ones: a
    browser that stopped reading."""

    def __init__(self, free: int = 0) -> None:
        self.free = free
        self.sends = 0
        self.closed_with: int | None = None
        self._never = asyncio.Event()

    async def send_frame(self, message: bytes, opcode: WSMsgType, compress: int | None = None) -> None:
        self.sends += 1
        if self.sends > self.free:
            await self._never.wait()

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.closed_with = code
        return True


def test_publishing_never_awaits_a_socket() -> None:
    # The store's listener and the fan-out are synchronous: a slow socket cannot hold up a commit.
    assert not inspect.iscoroutinefunction(LiveHub.on_events)
    assert not inspect.iscoroutinefunction(LiveHub.publish_job)


async def test_a_client_that_falls_behind_gets_a_fresh_snapshot(jobq: Harness) -> None:
    hub = hub_of(jobq)
    ws = await connect(jobq)
    await receive_message(ws, "snapshot")
    job = await jobq.submit(payload={"n": 1})
    assert (await receive_message(ws, "job"))["job"]["jobId"] == job["jobId"]
    [client] = hub.clients
    stored = await jobq.store.get(job["jobId"], "acme")
    assert stored is not None
    [rendered] = await hub.messages.render([stored])
    for _ in range(hub.queue_size * 4):  # no await in between: the sender cannot drain
        hub.publish_job(stored, rendered)
    assert client.state == "behind" and client.resyncs == 1
    assert client.queue.qsize() == 0  # emptied; nothing more is queued until the next tick
    hub.publish_job(stored, rendered)
    assert client.queue.qsize() == 0
    await hub.tick()
    assert client.state == "live"
    resync = await receive_message(ws, "snapshot")
    assert [j["jobId"] for j in resync["jobs"]] == [job["jobId"]]
    later = await jobq.submit(payload={"n": 2})
    assert (await receive_message(ws, "job"))["job"]["jobId"] == later["jobId"]  # back to events
    await ws.close()


async def test_a_client_that_keeps_falling_behind_gets_snapshots_less_often(jobq: Harness) -> None:
    hub = hub_of(jobq)
    ws = await connect(jobq)
    await receive_message(ws, "snapshot")
    job = await jobq.submit()
    await receive_message(ws, "job")
    [client] = hub.clients
    stored = await jobq.store.get(job["jobId"], "acme")
    assert stored is not None
    [rendered] = await hub.messages.render([stored])

    def flood() -> None:
        for _ in range(hub.queue_size * 2):
            hub.publish_job(stored, rendered)
        assert client.state == "behind"

    waits = []
    for _ in range(5):
        flood()  # behind again right after its snapshot: it cannot keep up
        ticks = 0
        while client.state == "behind":
            await hub.tick()
            ticks += 1
        waits.append(ticks)
    assert waits == [1, 2, 4, 5, 5]  # doubling, capped at MAX_RESYNC_TICKS
    for _ in range(10):  # it keeps up for a while...
        await hub.tick()
    flood()
    await hub.tick()
    assert client.state == "live"  # ...so the next time it is resynced at once
    await ws.close()


async def test_a_stuck_client_never_slows_the_worker(jobq: Harness) -> None:
    hub = hub_of(jobq)
    watcher = await connect(jobq)  # a healthy viewer alongside, with the default queue
    await receive_message(watcher, "snapshot")
    hub.queue_size = 16
    stuck = StuckSocket(free=1)  # takes its snapshot, then never another message
    client = hub.connect(stuck, "acme", "stuck")
    while client.state != "live":
        await asyncio.sleep(0)
    await submit_direct(jobq, "acme", 200)
    await hub.flush()  # the 200 new jobs offered: the stuck client falls behind
    await hub.tick()  # a resync snapshot for the stuck client, which it cannot take either
    await jobq.drain()
    assert (await jobq.store.counts("acme"))["succeeded"] == 200
    assert stuck.sends == 2  # stuck in its second send
    assert client.resyncs >= 2 and client.queue.qsize() <= 16
    sentinel = await jobq.submit()
    await jobs_until(watcher, sentinel["jobId"], "queued")
    await hub.disconnect(client)
    assert client.sender is not None and client.sender.done()
    await watcher.close()


async def test_many_clients_share_a_send_budget(jobq: Harness) -> None:
    hub = LiveHub(jobq.store, jobq.clock, send_budget=1000.0)
    assert hub.client_rate == 1000.0
    clients = [hub.connect(StuckSocket(), "acme") for _ in range(200)]
    assert hub.client_rate == 10.0  # the floor: 1000 / 200 would be 5
    for client in clients:
        await hub.disconnect(client)
    assert hub.client_rate == 1000.0


async def test_a_healthy_client_keeps_up_with_a_drain(jobq: Harness) -> None:
    ws = await connect(jobq)
    await receive_message(ws, "snapshot")
    await submit_direct(jobq, "acme", 50)
    await jobq.drain()
    last = await jobq.submit()
    seen = await jobs_until(ws, last["jobId"], "queued")
    assert sum(1 for j in seen if j["status"] == "succeeded") == 50
    [client] = hub_of(jobq).clients
    assert client.resyncs == 0
    await ws.close()


# ---- shutdown -------------------------------------------------------------------


async def test_sockets_are_closed_on_shutdown(jobq: Harness) -> None:
    hub = hub_of(jobq)
    sockets = [await connect(jobq), await connect(jobq, "admin")]
    stuck = StuckSocket()
    hub.connect(stuck, "globex")
    for ws in sockets:
        await receive_message(ws, "snapshot")
    closing = asyncio.get_running_loop().create_task(jobq.client.server.close())
    for ws in sockets:
        async with asyncio.timeout(5):
            while (message := await ws.receive()).type is WSMsgType.TEXT:
                pass
        assert message.type is WSMsgType.CLOSE
        assert message.data == aiohttp.WSCloseCode.GOING_AWAY
    async with asyncio.timeout(10):
        await closing
    assert stuck.closed_with == aiohttp.WSCloseCode.GOING_AWAY
    assert not hub.clients and hub.closed


def test_finished_counter_keeps_a_sliding_minute() -> None:
    counter = FinishedCounter(started_second=100)
    counter.record("acme", 100)
    counter.record("acme", 100)
    counter.record("globex", 130)
    counter.record("acme", 129)
    counter.record("acme", 128)  # a clock read a little behind another lands in the last bucket
    assert counter.by_second("acme", 100)[-1] == 2
    assert counter.by_second("acme", 129)[-1] == 2
    assert sum(counter.by_second(None, 130)) == 5
    assert counter.per_second(counter.by_second(None, 130), 130) == 5 / 31
    assert sum(counter.by_second("acme", 159)) == 4
    assert sum(counter.by_second("acme", 160)) == 2  # second 100 has left the window
    assert counter.by_second("initech", 160) == [0] * 60
    for second in range(200, 400):
        counter.record("acme", second)
    assert sum(counter.by_second("acme", 399)) == 60  # at most a minute of buckets is kept


async def test_webhook_deliveries_are_pushed_to_their_tenant_only(make_harness: Any, receive: Any) -> None:
    from jobq.web.factory import SENDER
    from tests.support.receivers import answer

    jobq = await make_harness(allow_private_urls=True)
    hook = await receive(answer(204))
    acme, globex = await connect(jobq), await connect(jobq, "globex")
    for ws in (acme, globex):
        await receive_message(ws, "snapshot")
    job = await jobq.submit(webhookUrl=hook.url())
    await jobq.drain()
    made = (await receive_message(acme, "delivery"))["delivery"]
    assert (made["jobId"], made["status"], made["attempts"]) == (job["jobId"], "pending", [])
    assert "body" not in made
    await jobq.app[SENDER].run_until_idle()
    sent = (await receive_message(acme, "delivery"))["delivery"]
    assert sent["deliveryId"] == made["deliveryId"] and sent["status"] == "delivered"
    assert [a["statusCode"] for a in sent["attempts"]] == [204]

    sentinel = await jobq.submit("globex")
    seen = []
    async with asyncio.timeout(5):
        while True:
            message = await globex.receive_json()
            seen.append(message["type"])
            if message["type"] == "job" and message["job"]["jobId"] == sentinel["jobId"]:
                break
    assert "delivery" not in seen
    await acme.close()
    await globex.close()
