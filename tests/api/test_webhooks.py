"""The webhook sender (SPEC §9) against real receivers on loopback: every
delivery verified with the `standardwebhooks` package from PyPI, scripted
answers (500 then 200, 410, 302, 429 with Retry-After, a slow body, a huge
body), the retry schedule driven by the fake clock, redelivery, and the
limits that keep a hanging receiver from holding anything else up."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from jobq.core.clock import FakeClock
from jobq.core.timefmt import parse_ts
from jobq.outbound import client as outbound
from jobq.outbound.sender import DeliverySender
from jobq.tenancy.tenants import TenantsDoc
from jobq.web.factory import SENDER
from jobq.web.views.jobs import REDELIVERY_BURST
from tests.conftest import Harness, HarnessFactory
from tests.support.receivers import FakeResolver, Receiver, answer

SCHEDULE = (5.0, 30.0, 120.0)


@pytest.fixture
def clock() -> FakeClock:
    # Receivers verify `webhook-timestamp` against the wall clock (5 minutes
    # either way), so the fake clock starts at the real time; it still moves
    # only when a test advances it.
    return FakeClock(datetime.now(UTC))


@pytest.fixture
async def jobq(make_harness: HarnessFactory) -> Harness:
    return await make_harness(allow_private_urls=True, webhook_timeout_seconds=0.5, webhook_retry_schedule=SCHEDULE)


def sender(jobq: Harness) -> DeliverySender:
    return jobq.app[SENDER]


async def send_due(jobq: Harness) -> None:
    await sender(jobq).run_until_idle()


async def deliveries(jobq: Harness, job_id: str, who: str = "acme") -> list[dict[str, Any]]:
    response = await jobq.client.get(f"/jobs/{job_id}/deliveries", headers=jobq.headers(who))
    assert response.status == 200, await response.text()
    return (await response.json())["deliveries"]  # type: ignore[no-any-return]


async def the_delivery(jobq: Harness, job_id: str) -> dict[str, Any]:
    [delivery] = await deliveries(jobq, job_id)
    return delivery


def tenant_secret(jobq: Harness, tenant: str = "acme") -> str:
    return str(TenantsDoc.read(jobq.settings.tenants_file).tenants[tenant]["webhookSecrets"][0])


async def finished_with_webhook(jobq: Harness, receiver: Receiver, **body: Any) -> dict[str, Any]:
    job = await jobq.submit(webhookUrl=receiver.url(), **body)
    await jobq.drain()
    return job  # type: ignore[no-any-return]


def seconds_after(start: str, end: str) -> float:
    a, b = parse_ts(start), parse_ts(end)
    assert a is not None and b is not None
    return (b - a).total_seconds()


# ---- signed, and verified by an off-the-shelf library ----------------------------


async def test_every_ending_is_delivered_and_verifies_with_standardwebhooks(jobq: Harness, receive: Any) -> None:
    verified: list[dict[str, Any]] = []
    verifier = Webhook(tenant_secret(jobq))

    async def verify(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        event = verifier.verify(body, dict(request.headers))  # raises unless genuine
        verified.append({"event": event, "id": request.headers["webhook-id"]})
        return web.Response(status=204)

    receiver = await receive(verify)
    ok = await jobq.submit(webhookUrl=receiver.url(), payload={"n": 1})
    dead = await jobq.submit(type="fail", payload={"times": 1, "permanent": True}, webhookUrl=receiver.url())
    later = await jobq.submit(delaySeconds=60, webhookUrl=receiver.url())
    await jobq.drain()
    await jobq.client.post(f"/jobs/{later['jobId']}/cancel", headers=jobq.headers())
    await send_due(jobq)

    assert len(receiver.requests) == 3 and len(verified) == 3
    by_job = {v["event"]["data"]["jobId"]: v for v in verified}
    expected = {ok["jobId"]: "job.succeeded", dead["jobId"]: "job.fatal", later["jobId"]: "job.cancelled"}
    for job_id, event in expected.items():
        got = by_job[job_id]
        assert got["event"]["type"] == event
        assert got["event"]["data"]["status"] == event.removeprefix("job.")
        delivery = await the_delivery(jobq, job_id)
        assert delivery["status"] == "delivered"
        assert got["id"] == delivery["deliveryId"]
        [attempt] = delivery["attempts"]
        assert attempt["statusCode"] == 204 and attempt["status"] == "succeeded" and attempt["error"] is None
    assert by_job[ok["jobId"]]["event"]["data"]["result"] == {"n": 1}


async def test_the_x_signature_is_the_hex_hmac_of_the_body(jobq: Harness, receive: Any) -> None:
    import base64
    import hashlib
    import hmac

    receiver = await receive(answer(200))
    await finished_with_webhook(jobq, receiver)
    await send_due(jobq)
    [(method, _path, body, headers)] = receiver.requests
    key = base64.b64decode(tenant_secret(jobq).removeprefix("whsec_"))
    assert method == "POST" and headers["Content-Type"] == "application/json"
    assert headers["X-Signature"] == "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    assert orjson.loads(body)["type"] == "job.succeeded"


async def test_a_rotated_secret_signs_beside_the_new_one(jobq: Harness, receive: Any) -> None:
    old = tenant_secret(jobq)
    doc = TenantsDoc.read(jobq.settings.tenants_file)
    new = doc.rotate_webhook_secret("acme", jobq.clock.now())
    doc.write(jobq.settings.tenants_file)
    jobq.clock.advance(2)  # past the registry's reload interval
    receiver = await receive(answer(200))
    await finished_with_webhook(jobq, receiver)
    await send_due(jobq)
    [(_, _, body, headers)] = receiver.requests
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(body, headers)


# ---- what each answer means --------------------------------------------------------


async def test_500_then_200_retries_on_the_schedule_with_the_same_id(jobq: Harness, receive: Any) -> None:
    receiver = await receive(answer(500), answer(200))
    job = await finished_with_webhook(jobq, receiver)
    await send_due(jobq)
    first = await the_delivery(jobq, job["jobId"])
    assert first["status"] == "pending"
    [failed] = first["attempts"]
    assert (failed["statusCode"], failed["status"], failed["error"]) == (500, "failed", "answered 500")
    wait = seconds_after(failed["at"], first["nextAttemptAt"])
    assert SCHEDULE[0] * 0.8 <= wait <= SCHEDULE[0] * 1.2

    await send_due(jobq)  # not due yet: nothing is sent
    assert len(receiver.requests) == 1
    jobq.clock.advance(wait)
    await send_due(jobq)
    done = await the_delivery(jobq, job["jobId"])
    assert done["status"] == "delivered"
    assert [a["statusCode"] for a in done["attempts"]] == [500, 200]
    ids = {r[3]["webhook-id"] for r in receiver.requests}
    stamps = [int(r[3]["webhook-timestamp"]) for r in receiver.requests]
    assert ids == {done["deliveryId"]}
    assert stamps[1] - stamps[0] >= int(wait)  # a fresh timestamp on each attempt


async def test_the_schedule_runs_out_and_the_delivery_fails(jobq: Harness, receive: Any) -> None:
    receiver = await receive(answer(503))
    job = await finished_with_webhook(jobq, receiver)
    for _ in range(len(SCHEDULE) + 3):
        await send_due(jobq)
        jobq.clock.advance(SCHEDULE[-1] * 1.3)
    delivery = await the_delivery(jobq, job["jobId"])
    assert delivery["status"] == "failed"
    assert len(delivery["attempts"]) == len(receiver.requests) == len(SCHEDULE) + 1
    attempts = delivery["attempts"]
    gaps = [seconds_after(a["at"], b["at"]) for a, b in itertools.pairwise(attempts)]
    assert all(gap >= base * 0.8 for gap, base in zip(gaps, SCHEDULE, strict=True))
    metrics = await (await jobq.client.get("/metrics", headers=jobq.headers())).json()
    assert metrics["deliveries"]["failed"] == 1


async def test_410_stops_at_once(jobq: Harness, receive: Any) -> None:
    receiver = await receive(answer(410))
    job = await finished_with_webhook(jobq, receiver)
    await send_due(jobq)
    jobq.clock.advance(86400)
    await send_due(jobq)
    delivery = await the_delivery(jobq, job["jobId"])
    assert delivery["status"] == "stopped" and len(receiver.requests) == 1


async def test_a_redirect_is_not_followed_and_is_retried(jobq: Harness, receive: Any) -> None:
    target = await receive(answer(200))
    receiver = await receive(answer(302, Location=target.url()))
    job = await finished_with_webhook(jobq, receiver)
    await send_due(jobq)
    delivery = await the_delivery(jobq, job["jobId"])
    assert delivery["status"] == "pending" and delivery["attempts"][0]["statusCode"] == 302
    assert target.requests == []


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_sets_the_next_attempt(jobq: Harness, receive: Any, status: int) -> None:
    receiver = await receive(answer(status, Retry_After="120"), answer(200))
    job = await finished_with_webhook(jobq, receiver)
    await send_due(jobq)
    delivery = await the_delivery(jobq, job["jobId"])
    assert seconds_after(delivery["attempts"][0]["at"], delivery["nextAttemptAt"]) == 120.0
    jobq.clock.advance(119)
    await send_due(jobq)
    assert len(receiver.requests) == 1
    jobq.clock.advance(1)
    await send_due(jobq)
    assert (await the_delivery(jobq, job["jobId"]))["status"] == "delivered"


async def test_a_slow_answer_times_out_and_is_retried(jobq: Harness, receive: Any) -> None:
    async def dribble(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        for _ in range(50):
            await response.write(b"x")
            await asyncio.sleep(0.05)
        return response

    receiver = await receive(dribble)
    job = await finished_with_webhook(jobq, receiver)
    await send_due(jobq)
    delivery = await the_delivery(jobq, job["jobId"])
    [attempt] = delivery["attempts"]
    assert delivery["status"] == "pending"
    assert attempt["statusCode"] is None and "no complete answer within 0.5 s" in attempt["error"]


async def test_a_huge_answer_is_read_only_up_to_the_cap(jobq: Harness, receive: Any) -> None:
    receiver = await receive(answer(200, "x" * (8 << 20)))
    job = await finished_with_webhook(jobq, receiver)
    await send_due(jobq)
    assert (await the_delivery(jobq, job["jobId"]))["status"] == "delivered"


async def test_a_name_resolving_to_loopback_fails_for_good_without_a_request(
    make_harness: HarnessFactory, receive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobq = await make_harness(allow_private_urls=False, webhook_retry_schedule=SCHEDULE)
    monkeypatch.setattr(outbound, "make_base_resolver", lambda: FakeResolver("127.0.0.1"))
    receiver = await receive(answer(200))
    job = await jobq.submit(webhookUrl=receiver.url(host="hooks.example.com"))
    await jobq.drain()
    await send_due(jobq)
    delivery = await the_delivery(jobq, job["jobId"])
    assert delivery["status"] == "failed"
    assert "127.0.0.1, a loopback address" in delivery["attempts"][0]["error"]
    assert receiver.requests == []


# ---- redelivery ----------------------------------------------------------------------


async def test_redeliver_sends_again_with_the_same_id_once(jobq: Harness, receive: Any) -> None:
    receiver = await receive(answer(200), answer(500))
    job = await finished_with_webhook(jobq, receiver)
    await send_due(jobq)
    url = f"/jobs/{job['jobId']}/deliveries/redeliver"
    response = await jobq.client.post(url, headers=jobq.headers())
    assert response.status == 202, await response.text()
    accepted = await response.json()
    assert accepted["status"] == "pending" and accepted["redelivery"] is True
    await send_due(jobq)
    delivery = await the_delivery(jobq, job["jobId"])
    # A redelivery is one attempt: its 500 fails the delivery, no schedule follows.
    assert delivery["status"] == "failed"
    assert [a["redelivery"] for a in delivery["attempts"]] == [False, True]
    assert {r[3]["webhook-id"] for r in receiver.requests} == {delivery["deliveryId"]}
    history = (await jobq.get(job["jobId"]))["operatorActions"]
    assert [(a["action"], a["actor"]) for a in history] == [("redeliver", "acme/first")]


async def test_redeliver_refusals(jobq: Harness, receive: Any) -> None:
    receiver = await receive(answer(200))
    quiet = await jobq.submit()
    waiting = await jobq.submit(delaySeconds=60, webhookUrl=receiver.url())
    await jobq.drain()
    done = await finished_with_webhook(jobq, receiver)

    async def redeliver(job_id: str, who: str = "acme") -> tuple[int, dict[str, Any]]:
        response = await jobq.client.post(f"/jobs/{job_id}/deliveries/redeliver", headers=jobq.headers(who))
        return response.status, await response.json()

    status, problem = await redeliver(quiet["jobId"])
    assert status == 409 and "no webhookUrl" in problem["detail"]
    status, problem = await redeliver(waiting["jobId"])
    assert status == 409 and "queued" in problem["detail"]
    assert (await redeliver(done["jobId"], "globex"))[0] == 404
    assert (await redeliver(done["jobId"], "acme_read"))[0] == 403
    assert (await redeliver("no-such-job"))[0] == 404
    await send_due(jobq)
    assert len(receiver.requests) == 1


async def test_redeliver_of_one_job_is_limited_to_once_a_minute(jobq: Harness, receive: Any) -> None:
    receiver = await receive(answer(200))
    job = await finished_with_webhook(jobq, receiver)
    url = f"/jobs/{job['jobId']}/deliveries/redeliver"
    assert (await jobq.client.post(url, headers=jobq.headers())).status == 202

    again = await jobq.client.post(url, headers=jobq.headers())
    assert again.status == 429
    assert again.headers["Retry-After"] == "60"
    jobq.clock.advance(45)
    again = await jobq.client.post(url, headers=jobq.headers())
    assert (again.status, again.headers["Retry-After"]) == (429, "15")
    jobq.clock.advance(15)
    assert (await jobq.client.post(url, headers=jobq.headers())).status == 202
    actions = (await jobq.get(job["jobId"]))["operatorActions"]
    assert [a["action"] for a in actions] == ["redeliver", "redeliver"]


async def test_redeliveries_of_a_tenant_are_rate_limited(jobq: Harness, receive: Any) -> None:
    receiver = await receive(answer(200))
    jobs = [await jobq.submit(webhookUrl=receiver.url()) for _ in range(REDELIVERY_BURST + 1)]
    await jobq.drain()
    statuses = []
    for job in jobs:
        response = await jobq.client.post(f"/jobs/{job['jobId']}/deliveries/redeliver", headers=jobq.headers())
        statuses.append(response.status)
    assert statuses == [202] * REDELIVERY_BURST + [429]
    assert response.headers["Retry-After"] == "1"
    other = await jobq.submit("globex", webhookUrl=receiver.url())
    await jobq.drain()
    response = await jobq.client.post(f"/jobs/{other['jobId']}/deliveries/redeliver", headers=jobq.headers("globex"))
    assert response.status == 202  # another tenant's bucket is its own


# ---- never in a worker's way ------------------------------------------------------------


async def test_a_hanging_receiver_holds_neither_the_worker_nor_other_tenants(
    make_harness: HarnessFactory, receive: Any
) -> None:
    jobq = await make_harness(allow_private_urls=True, webhook_timeout_seconds=30, webhook_tenant_concurrency=2)
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=200)

    hanging = await receive(hang)
    fine = await receive(answer(200))
    slow_jobs = [await jobq.submit(webhookUrl=hanging.url()) for _ in range(5)]
    await jobq.drain()
    assert await sender(jobq).run_once() == 2  # acme's share of the sender: 2 in flight
    await asyncio.sleep(0.05)
    assert len(hanging.requests) == 2

    # The worker goes on at full speed, and globex's webhook goes out at once.
    more = [await jobq.submit() for _ in range(20)]
    other = await jobq.submit("globex", webhookUrl=fine.url())
    await asyncio.wait_for(jobq.drain(), timeout=5)
    assert {(await jobq.get(j["jobId"]))["status"] for j in more} == {"succeeded"}
    assert await sender(jobq).run_once() == 1
    for _ in range(100):
        if fine.requests:
            break
        await asyncio.sleep(0.01)
    assert len(fine.requests) == 1 and other["jobId"] in fine.requests[0][2].decode()

    release.set()
    await asyncio.wait_for(send_due(jobq), timeout=5)
    assert len(hanging.requests) == 5
    for job in slow_jobs:
        assert (await the_delivery(jobq, job["jobId"]))["status"] == "delivered"
