"""Alerts (SPEC §9): DLQ non-empty for a while, a delivery failed for good, a
job running past its lease; raised once, cleared when resolved, shown in
/metrics, and POSTed signed to the operator's alert URL. The fake clock
drives the monitor; a real receiver verifies the POSTs with `standardwebhooks`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook

from jobq.core.clock import FakeClock
from jobq.core.config import Secret
from jobq.rules.alerts import DELIVERY_FAILED, DLQ_NOT_EMPTY, LEASE_EXPIRED, Alert, Condition, dlq_condition, reconcile
from jobq.web.factory import ALERTS, SENDER
from jobq.web.views.jobs import json_response
from tests.conftest import Harness, HarnessFactory
from tests.support.receivers import Receiver, answer

ALERT_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime.now(UTC))  # alert POSTs are verified against the wall clock


async def check(jobq: Harness) -> list[Alert]:
    return await jobq.app[ALERTS].check()


async def active_alerts(jobq: Harness, who: str = "acme") -> list[dict[str, Any]]:
    response = await jobq.client.get("/metrics", headers=jobq.headers(who))
    assert response.status == 200
    return (await response.json())["alerts"]  # type: ignore[no-any-return]


async def fatal_job(jobq: Harness, **body: Any) -> dict[str, Any]:
    job = await jobq.submit(type="fail", payload={"times": 100, "permanent": True}, **body)
    await jobq.drain()
    return job  # type: ignore[no-any-return]


# ---- the rules, without I/O --------------------------------------------------------


def condition(alert_id: str, message: str = "wrong") -> Condition:
    return Condition(alert_id, DLQ_NOT_EMPTY, "acme", message)


@pytest.mark.parametrize(
    ("known", "seen", "raised", "cleared"),
    [
        ({}, {}, [], []),
        ({}, {"a"}, ["a"], []),
        ({"a": "active"}, {"a"}, [], []),  # still wrong: not raised twice
        ({"a": "active"}, set(), [], ["a"]),
        ({"a": "cleared"}, set(), [], []),
        ({"a": "cleared"}, {"a"}, ["a"], []),  # wrong again after it cleared: raised anew
        ({"a": "active", "b": "active"}, {"b", "c"}, ["c"], ["a"]),
    ],
)
def test_reconcile(known: dict[str, str], seen: set[str], raised: list[str], cleared: list[str]) -> None:
    now = T0 + timedelta(minutes=1)
    alerts = {
        key: Alert(key, DLQ_NOT_EMPTY, "acme", "old", T0, cleared_at=None if state == "active" else T0)
        for key, state in known.items()
    }
    changes = reconcile(alerts, {key: condition(key) for key in seen}, now)
    assert sorted(a.alert_id for a in changes if a.active) == raised
    assert sorted(a.alert_id for a in changes if not a.active) == cleared
    assert all(a.raised_at == now for a in changes if a.active)
    assert all(a.cleared_at == now for a in changes if not a.active)


@pytest.mark.parametrize(
    ("fatal", "age", "expected"), [(0, 1000, False), (1, 299.999, False), (1, 300, True), (7, 301, True)]
)
def test_dlq_condition(fatal: int, age: float, expected: bool) -> None:
    found = dlq_condition("acme", fatal, T0, T0 + timedelta(seconds=age), 300)
    assert (found is not None) is expected
    if found is not None:
        assert found.alert_id == "dlq:acme" and "300 s or more" in found.message


# ---- the DLQ alert ---------------------------------------------------------------------


async def test_a_dlq_alert_is_raised_once_after_300_s_and_cleared_when_empty(jobq: Harness) -> None:
    job = await fatal_job(jobq)
    assert await check(jobq) == []
    jobq.clock.advance(299)
    assert await check(jobq) == []
    jobq.clock.advance(1)
    [raised] = await check(jobq)
    assert (raised.alert_id, raised.kind, raised.tenant_id, raised.active) == ("dlq:acme", DLQ_NOT_EMPTY, "acme", True)
    jobq.clock.advance(60)
    assert await check(jobq) == []  # still non-empty: not raised again
    [shown] = await active_alerts(jobq)
    assert shown["alertId"] == "dlq:acme" and "DLQ of acme" in shown["message"]
    assert await active_alerts(jobq, "globex") == []
    assert [a["alertId"] for a in await active_alerts(jobq, "admin")] == ["dlq:acme"]

    await jobq.client.post(f"/jobs/{job['jobId']}/retry", headers=jobq.headers())
    [cleared] = await check(jobq)
    assert cleared.alert_id == "dlq:acme" and cleared.cleared_at == jobq.clock.now()
    assert await active_alerts(jobq) == []


async def test_the_dlq_clock_starts_again_when_it_empties(jobq: Harness) -> None:
    first = await fatal_job(jobq)
    await check(jobq)
    jobq.clock.advance(200)
    await jobq.client.post(f"/jobs/{first['jobId']}/retry", headers=jobq.headers())
    await check(jobq)
    await jobq.drain()  # fails again: back in the DLQ
    await check(jobq)
    jobq.clock.advance(200)
    assert await check(jobq) == []  # 400 s since the first, but only 200 s of this stretch
    jobq.clock.advance(100)
    assert [a.alert_id for a in await check(jobq)] == ["dlq:acme"]


async def test_an_alert_survives_a_restart_and_is_not_raised_again(
    make_harness: HarnessFactory, receive: Any
) -> None:
    receiver = await receive(answer(204))
    settings = {"allow_private_urls": True, "alert_url": receiver.url(), "alert_secret": Secret(ALERT_SECRET)}
    first = await make_harness(**settings)
    await fatal_job(first)
    await check(first)
    first.clock.advance(300)
    assert len(await check(first)) == 1
    await first.app[SENDER].run_until_idle()
    await first.client.close()

    second = await make_harness(**settings)
    assert [a["alertId"] for a in await active_alerts(second)] == ["dlq:acme"]
    assert await check(second) == []
    second.clock.advance(600)
    assert await check(second) == []
    await second.app[SENDER].run_until_idle()
    assert len(receiver.requests) == 1


# ---- POSTed to the operator, signed --------------------------------------------------------


async def test_alerts_are_posted_signed_to_the_alert_url(make_harness: HarnessFactory, receive: Any) -> None:
    events: list[dict[str, Any]] = []

    async def verify(request: web.Request) -> web.StreamResponse:
        events.append(Webhook(ALERT_SECRET).verify(await request.read(), dict(request.headers)))
        return json_response({}, status=200)

    receiver: Receiver = await receive(verify)
    jobq = await make_harness(alert_url=receiver.url(), alert_secret=Secret(ALERT_SECRET), dlq_alert_seconds=0)
    job = await fatal_job(jobq)
    await check(jobq)
    jobq.clock.advance(1)
    await jobq.client.post(f"/jobs/{job['jobId']}/retry", headers=jobq.headers())
    await check(jobq)
    await jobq.app[SENDER].run_until_idle()
    assert [(e["type"], e["data"]["alertId"]) for e in events] == [
        ("alert.raised", "dlq:acme"),
        ("alert.cleared", "dlq:acme"),
    ]
    assert events[1]["data"]["clearedAt"] is not None
    ids = [r[3]["webhook-id"] for r in receiver.requests]
    assert len(set(ids)) == 2 and all(i.startswith("msg_") for i in ids)


# ---- a delivery failed for good ----------------------------------------------------------


async def test_failed_deliveries_raise_one_alert_that_good_redeliveries_clear(
    make_harness: HarnessFactory, receive: Any
) -> None:
    jobq = await make_harness(allow_private_urls=True, webhook_retry_schedule=())
    receiver = await receive(answer(500), answer(500), answer(200))
    jobs = [await jobq.submit(webhookUrl=receiver.url()) for _ in range(2)]
    await jobq.drain()
    await jobq.app[SENDER].run_until_idle()
    [raised] = await check(jobq)  # one per tenant, not one per delivery
    assert (raised.alert_id, raised.kind) == ("deliveries:acme", DELIVERY_FAILED)
    assert "webhook deliveries of acme failed for good" in raised.message and "answered 500" in raised.message
    assert raised.subject in {j["jobId"] for j in jobs}
    assert await check(jobq) == []

    for job, still_failing in zip(jobs, (True, False), strict=True):
        response = await jobq.client.post(f"/jobs/{job['jobId']}/deliveries/redeliver", headers=jobq.headers())
        assert response.status == 202
        await jobq.app[SENDER].run_until_idle()
        changes = await check(jobq)
        if still_failing:
            assert changes == []
        else:
            [cleared] = changes
            assert cleared.alert_id == raised.alert_id and not cleared.active


# ---- a job running past its lease ------------------------------------------------------------


async def test_a_lost_lease_raises_an_alert_cleared_when_the_job_ends(jobq: Harness) -> None:
    job = await jobq.submit(type="sleep", payload={"seconds": 3600})
    assert await jobq.worker.run_once() == 1
    jobq.clock.advance(jobq.settings.lease_seconds + 1)  # no heartbeat in between: the worker "hung"
    await jobq.store.reap(jobq.clock.now())
    assert (await jobq.get(job["jobId"]))["status"] == "retry"
    [raised] = await check(jobq)
    assert (raised.alert_id, raised.kind) == (f"lease:{job['jobId']}", LEASE_EXPIRED)
    assert "running past its lease (attempt 1" in raised.message
    assert await check(jobq) == []

    await jobq.client.post(f"/jobs/{job['jobId']}/cancel", headers=jobq.headers())
    [cleared] = await check(jobq)
    assert cleared.alert_id == raised.alert_id and not cleared.active
    await jobq.drain()


async def test_alerts_and_deliveries_are_in_the_prometheus_exposition(jobq: Harness) -> None:
    await fatal_job(jobq, webhookUrl="https://hooks.example.com/x")
    await check(jobq)
    jobq.clock.advance(300)
    await check(jobq)
    text = await (await jobq.client.get("/metrics/prometheus", headers=jobq.headers())).text()
    assert 'jobq_alerts_active{kind="dlq_not_empty",tenant="acme"} 1.0' in text
    assert 'jobq_alerts_active{kind="lease_expired",tenant="acme"} 0.0' in text
    assert 'jobq_webhook_deliveries{status="pending",tenant="acme"} 1.0' in text
    other = await (await jobq.client.get("/metrics/prometheus", headers=jobq.headers("globex"))).text()
    assert 'tenant="acme"' not in other
