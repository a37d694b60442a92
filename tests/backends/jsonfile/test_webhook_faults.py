"""Webhook deliveries when the JSON store's journal cannot be written, or not
yet: an attempt that is not durable is sent again, and nothing is sent before
the ending that owes it is on disk (FaultyFS, GatedFS)."""

from __future__ import annotations

import asyncio
import errno
from datetime import UTC, datetime
from typing import Any

import pytest

from jobq.core.clock import FakeClock
from tests.api.test_webhooks import finished_with_webhook, send_due, sender, the_delivery
from tests.backends.jsonfile.support import json_store
from tests.conftest import HarnessFactory
from tests.support.faults import JOURNAL, FaultyFS, GatedFS
from tests.support.receivers import answer


@pytest.fixture
def clock() -> FakeClock:
    # Receivers verify `webhook-timestamp` against the wall clock: the fake clock starts at the real time.
    return FakeClock(datetime.now(UTC))


async def test_an_attempt_that_cannot_be_written_is_sent_again_later(
    make_harness: HarnessFactory, receive: Any
) -> None:
    fs = FaultyFS()
    jobq = await make_harness(fs=fs, allow_private_urls=True)
    receiver = await receive(answer(200))
    job = await finished_with_webhook(jobq, receiver)
    fs.fail("fsync", errno.EIO, path=JOURNAL)
    await send_due(jobq)
    assert (await the_delivery(jobq, job["jobId"]))["status"] == "pending"
    fs.clear()
    await send_due(jobq)  # still leased: no hammering while the disk is broken
    assert len(receiver.requests) == 1
    jobq.clock.advance(jobq.settings.webhook_timeout_seconds + 6)  # the lease: the send's timeout and 5 s
    await send_due(jobq)
    delivery = await the_delivery(jobq, job["jobId"])
    assert delivery["status"] == "delivered" and len(delivery["attempts"]) == 1
    assert [r[3]["webhook-id"] for r in receiver.requests] == [delivery["deliveryId"]] * 2


async def test_nothing_is_sent_before_the_ending_is_durable(make_harness: HarnessFactory, receive: Any) -> None:
    fs = GatedFS()
    jobq = await make_harness(fs=fs, allow_private_urls=True)
    receiver = await receive(answer(200))
    job = await jobq.submit(delaySeconds=60, webhookUrl=receiver.url())
    fs.gate.clear()
    cancelling = asyncio.ensure_future(jobq.client.post(f"/jobs/{job['jobId']}/cancel", headers=jobq.headers()))
    while not json_store(jobq).index.deliveries:  # the ending and its delivery are in memory, not yet on disk
        await asyncio.sleep(0.001)
    assert await sender(jobq).run_once() == 0  # a write that may yet fail: not sent
    fs.gate.set()
    assert (await cancelling).status == 200
    await send_due(jobq)
    assert len(receiver.requests) == 1
