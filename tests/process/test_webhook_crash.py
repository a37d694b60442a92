"""Webhooks across a `kill -9` of a real `python app.py` (SPEC §9): the outbox
is written with the job's ending, so a crash after the ending and before the
delivery still delivers it once after the restart, with the same
`webhook-id`; a crash while a delivery is in flight sends it again (at least
once, same id, for the receiver to drop the copy)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from jobq.tenancy.tenants import TenantsDoc
from tests.support.receivers import Answer, Receiver, ServerFactory, answer, start_receiver
from tests.support.server_process import Server

pytestmark = pytest.mark.slow


async def until(predicate: Any, what: str, seconds: float = 15.0) -> Any:
    """Poll `await predicate()` until it is truthy (bounded)."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = await predicate()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def hang_once(arrived: asyncio.Event) -> Answer:
    """An answer that never comes: the process is stopped while waiting for it."""

    async def hang(request: web.Request) -> web.StreamResponse:
        arrived.set()
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    return hang


class Jobq:
    def __init__(self, tmp_path: Path, session: aiohttp.ClientSession) -> None:
        tenants_file = tmp_path / "tenants.json"
        doc = TenantsDoc()
        self.key = doc.add_tenant("acme")
        self.secret = doc.tenants["acme"]["webhookSecrets"][0]
        doc.write(tenants_file)
        self.server = Server(tmp_path, tmp_path / "data", tenants_file, JOBQ_ALLOW_PRIVATE_URLS="true")
        self.session = session

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"X-API-Key": self.key}
        async with self.session.request(method, self.server.url + path, headers=headers, **kwargs) as response:
            assert response.status < 300, await response.text()
            return await response.json()

    async def delivery(self, job_id: str) -> dict[str, Any]:
        [delivery] = (await self.call("GET", f"/jobs/{job_id}/deliveries"))["deliveries"]
        return delivery  # type: ignore[no-any-return]

    async def until_delivered(self, job_id: str) -> None:
        async def delivered() -> bool:
            return bool((await self.delivery(job_id))["status"] == "delivered")

        await until(delivered, f"the delivery of job {job_id}")

    async def ended_job_with_webhook(self, receiver: Receiver) -> str:
        job = await self.call("POST", "/jobs", json={"type": "echo", "payload": {"n": 1}, "webhookUrl": receiver.url()})
        job_id: str = job["jobId"]

        async def succeeded() -> bool:
            return bool((await self.call("GET", f"/jobs/{job_id}"))["status"] == "succeeded")

        await until(succeeded, "the job to succeed")
        # Reads run up to one group commit ahead of the disk; a submit's 201 is
        # durable, and the journal is in order, so the ending is durable too.
        await self.call("POST", "/jobs", json={"type": "echo", "payload": {}})
        return job_id


async def test_a_crash_before_the_delivery_delivers_it_once_after_restart(
    tmp_path: Path, session: aiohttp.ClientSession, aiohttp_server: ServerFactory
) -> None:
    receiver = await start_receiver(aiohttp_server, answer(204))
    jobq = Jobq(tmp_path, session)
    jobq.server.extra_env["JOBQ_WEBHOOK_CONCURRENCY"] = "0"  # the ending is durable, the sender is not running
    await jobq.server.start(session)
    try:
        job_id = await jobq.ended_job_with_webhook(receiver)
        before = await jobq.delivery(job_id)
        assert before["status"] == "pending" and before["attempts"] == []
        jobq.server.kill()
        assert receiver.requests == []

        del jobq.server.extra_env["JOBQ_WEBHOOK_CONCURRENCY"]
        await jobq.server.start(session)
        await jobq.until_delivered(job_id)
        await asyncio.sleep(0.3)  # room for a duplicate to show up, if there were one
        [(method, _path, body, headers)] = receiver.requests
        assert method == "POST" and headers["webhook-id"] == before["deliveryId"]
        event = Webhook(jobq.secret).verify(body, headers)
        assert event["type"] == "job.succeeded" and event["data"]["jobId"] == job_id
        assert len((await jobq.delivery(job_id))["attempts"]) == 1
    finally:
        jobq.server.stop()


async def test_a_crash_during_the_delivery_sends_it_again_with_the_same_id(
    tmp_path: Path, session: aiohttp.ClientSession, aiohttp_server: ServerFactory
) -> None:
    arrived = asyncio.Event()
    receiver = await start_receiver(aiohttp_server, hang_once(arrived), answer(200))
    jobq = Jobq(tmp_path, session)
    await jobq.server.start(session)
    try:
        job_id = await jobq.ended_job_with_webhook(receiver)
        await asyncio.wait_for(arrived.wait(), timeout=15)
        assert (await jobq.delivery(job_id))["status"] == "pending"
        jobq.server.kill()

        await jobq.server.start(session)
        await jobq.until_delivered(job_id)
        ids = [headers["webhook-id"] for _, _, _, headers in receiver.requests]
        assert len(ids) == 2 and len(set(ids)) == 1
        assert ids[0] == (await jobq.delivery(job_id))["deliveryId"]
    finally:
        jobq.server.stop()


async def test_sigterm_with_a_webhook_in_flight_exits_within_the_grace_and_sends_it_later(
    tmp_path: Path, session: aiohttp.ClientSession, aiohttp_server: ServerFactory
) -> None:
    arrived = asyncio.Event()
    receiver = await start_receiver(aiohttp_server, hang_once(arrived), answer(200))
    jobq = Jobq(tmp_path, session)  # JOBQ_SHUTDOWN_GRACE_SECONDS is 2 (tests.support.server_process)
    await jobq.server.start(session)
    try:
        job_id = await jobq.ended_job_with_webhook(receiver)
        await asyncio.wait_for(arrived.wait(), timeout=15)
        started = asyncio.get_running_loop().time()
        assert await asyncio.to_thread(jobq.server.stop) == 0
        assert asyncio.get_running_loop().time() - started < 10  # the grace (2 s), not the webhook's 15 s

        await jobq.server.start(session)
        await jobq.until_delivered(job_id)
        assert len({headers["webhook-id"] for _, _, _, headers in receiver.requests}) == 1
    finally:
        jobq.server.stop()
