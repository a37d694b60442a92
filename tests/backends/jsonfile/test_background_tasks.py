"""The background loops (worker, webhook sender, alert monitor) as the
service runs them, from `create_app`'s cleanup context (issue 8): a round
that raises is logged with its traceback, counted and retried; a loop that
died or stopped making progress turns `/readyz` to 503 naming it.

Faults are injected through the store only (a `JsonStore` whose operation
raises or hangs on cue); everything else is jobq's own parts on loopback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from jobq.core.clock import FakeClock
from jobq.core.config import Settings
from jobq.core.health import RoundBackoff
from jobq.rules.alerts import Alert
from jobq.rules.outbox import Delivery
from jobq.storage.jsonfile.store import JsonStore
from jobq.storage.protocol import Reaped
from jobq.tenancy.tenants import TenantRegistry
from jobq.web.factory import create_app
from jobq.worker.handlers import Registry
from store import retry_policy
from tests.conftest import Keys
from tests.support.receivers import Receiver, answer

pytestmark = pytest.mark.timeout(30)


class Killed(BaseException):
    """Not an `Exception`: nothing in a loop may catch it, so the task dies."""


class FaultyStore(JsonStore):
    """A `JsonStore` whose next `reap`, `claim_deliveries` or `alerts(None)`
    raises what it is armed with (once, or until disarmed), or whose `reap` hangs until released."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raise_in: dict[str, BaseException] = {}  # once
        self.always: dict[str, BaseException] = {}
        self.calls: dict[str, int] = {"reap": 0, "claim_deliveries": 0, "alerts": 0}
        self.hang = asyncio.Event()
        self.hang.set()
        self.hanging = asyncio.Event()

    def _fault(self, operation: str) -> None:
        self.calls[operation] += 1
        error = self.raise_in.pop(operation, None) or self.always.get(operation)
        if error is not None:
            raise error

    async def reap(self, now: datetime) -> Reaped:
        self._fault("reap")
        if not self.hang.is_set():
            self.hanging.set()
            await self.hang.wait()
        return await super().reap(now)

    async def claim_deliveries(
        self, sender_id: str, now: datetime, *, limit: int, per_tenant: int, lease_seconds: float
    ) -> list[Delivery]:
        self._fault("claim_deliveries")
        return await super().claim_deliveries(
            sender_id, now, limit=limit, per_tenant=per_tenant, lease_seconds=lease_seconds
        )

    async def alerts(self, tenant_id: str | None) -> list[Alert]:
        if tenant_id is None:  # the monitor's look; views ask for one tenant's
            self._fault("alerts")
        return await super().alerts(tenant_id)


Client = TestClient[Any, Any]
Start = Callable[..., Awaitable[tuple[Client, FaultyStore]]]


@pytest.fixture
def start(aiohttp_client: Any, clock: FakeClock, settings: Settings, registry: Registry) -> Start:
    """jobq with its background loops running (as `python app.py` has them)."""

    async def run(arm: dict[str, BaseException] | None = None, hang: bool = False) -> tuple[Client, FaultyStore]:
        effective = replace(settings, allow_private_urls=True)
        tenants = TenantRegistry(effective.tenants_file, clock.monotonic)
        store = FaultyStore(effective.data_dir, retry=retry_policy(effective))
        store.raise_in.update(arm or {})
        if hang:
            store.hang.clear()
        await store.open(clock.now())
        app = create_app(effective, store, clock, registry=registry, tenants=tenants, run_worker=True)
        return await aiohttp_client(app), store

    return run


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def job_status(client: Client, keys: Keys, job_id: str) -> str:
    response = await client.get(f"/jobs/{job_id}", headers={"X-API-Key": keys.acme})
    return str((await response.json())["status"])


async def prometheus(client: Client, keys: Keys) -> str:
    response = await client.get("/metrics/prometheus", headers={"X-API-Key": keys.admin})
    assert response.status == 200
    return await response.text()


async def readyz(client: Client) -> tuple[int, str]:
    response = await client.get("/readyz")
    return response.status, await response.text()


def round_failures(caplog: pytest.LogCaptureFixture, task: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if f"action={task}_round_failed" in r.getMessage()]


# ---- the backoff rule -----------------------------------------------------------


def test_backoff_doubles_from_a_tenth_of_a_second_to_five_and_resets_on_a_good_round() -> None:
    backoff = RoundBackoff()
    assert [backoff.failed() for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    backoff.succeeded()
    assert backoff.failed() == 0.1


# ---- a round that raises ---------------------------------------------------------


async def test_the_worker_survives_a_round_that_raises(
    start: Start, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client, _ = await start(arm={"reap": RuntimeError("disk gremlin")})
    response = await client.post("/jobs", json={"type": "echo", "payload": {}}, headers={"X-API-Key": keys.acme})
    job_id = (await response.json())["jobId"]

    async def succeeded() -> bool:
        return await job_status(client, keys, job_id) == "succeeded"

    await eventually(succeeded)
    assert 'jobq_background_errors_total{task="worker"} 1.0' in await prometheus(client, keys)
    [record] = round_failures(caplog, "worker")
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert "RuntimeError: disk gremlin" in caplog.text  # the traceback
    assert (await readyz(client))[0] == 200


async def test_the_webhook_sender_survives_a_round_that_raises(
    start: Start, keys: Keys, receive: Callable[..., Awaitable[Receiver]], caplog: pytest.LogCaptureFixture
) -> None:
    receiver = await receive(answer(204))
    client, _ = await start(arm={"claim_deliveries": RuntimeError("outbox gremlin")})
    body = {"type": "echo", "payload": {}, "webhookUrl": receiver.url()}
    response = await client.post("/jobs", json=body, headers={"X-API-Key": keys.acme})
    assert response.status == 201

    async def delivered() -> bool:
        return len(receiver.requests) == 1

    await eventually(delivered)
    assert 'jobq_background_errors_total{task="webhook_sender"} 1.0' in await prometheus(client, keys)
    [record] = round_failures(caplog, "webhook_sender")
    assert record.exc_info is not None and "RuntimeError: outbox gremlin" in caplog.text
    assert (await readyz(client))[0] == 200


async def test_the_alert_monitor_survives_a_round_that_raises(
    start: Start, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    client, store = await start(arm={"alerts": RuntimeError("alert gremlin")})

    async def looked_again() -> bool:
        return store.calls["alerts"] >= 2

    await eventually(looked_again)
    assert 'jobq_background_errors_total{task="alert_monitor"} 1.0' in await prometheus(client, keys)
    [record] = round_failures(caplog, "alert_monitor")
    assert record.exc_info is not None and "RuntimeError: alert gremlin" in caplog.text
    assert (await readyz(client))[0] == 200


# ---- dead or stalled: not ready ------------------------------------------------------


async def test_a_worker_killed_for_good_makes_readyz_name_it(
    start: Start, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = await start(arm={"reap": Killed("out of luck")})

    async def not_ready() -> bool:
        return (await readyz(client))[0] == 503

    await eventually(not_ready)
    text = (await readyz(client))[1]
    assert "not-ready" in text and "background task worker stopped: Killed: out of luck" in text
    assert "action=background_task_died task=worker" in caplog.text


async def test_a_cancelled_sender_makes_readyz_name_it(start: Start) -> None:
    client, _ = await start()
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == "jobq-webhook_sender"]
    task.cancel()
    await asyncio.sleep(0)

    async def not_ready() -> bool:
        return (await readyz(client))[0] == 503

    await eventually(not_ready)
    assert "background task webhook_sender stopped: cancelled" in (await readyz(client))[1]


async def test_a_stalled_worker_makes_readyz_name_it_until_it_moves_again(start: Start, clock: FakeClock) -> None:
    client, store = await start(hang=True)
    try:
        await asyncio.wait_for(store.hanging.wait(), 5)
        assert (await readyz(client))[0] == 200
        clock.advance(31)  # the worker's round is stuck in `reap` meanwhile
        status, text = await readyz(client)
        assert status == 503 and "background task worker made no progress for 31 s" in text
    finally:
        store.hang.set()

    async def ready() -> bool:
        return (await readyz(client))[0] == 200

    await eventually(ready)  # the other loops' next rounds come within about a second


async def test_a_loop_failing_every_round_is_not_ready(start: Start, clock: FakeClock, keys: Keys) -> None:
    client, store = await start()
    store.always["claim_deliveries"] = RuntimeError("always")

    async def failed_twice() -> bool:
        return store.calls["claim_deliveries"] >= 3

    await eventually(failed_twice)
    clock.advance(31)
    status, text = await readyz(client)
    assert status == 503 and "background task webhook_sender failing every round for 31 s" in text
    del store.always["claim_deliveries"]

    async def ready() -> bool:
        return (await readyz(client))[0] == 200

    await eventually(ready)
