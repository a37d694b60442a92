"""An Idempotency-Key whose first request is still being written: the JSON
store's journal is held open (GatedFS) to catch the request in flight."""

from __future__ import annotations

import asyncio

from tests.support.faults import GatedFS


async def test_same_key_while_first_is_in_flight_is_409(make_harness) -> None:
    fs = GatedFS()
    jobq = await make_harness(fs=fs)
    headers = jobq.headers(**{"Idempotency-Key": "race"})
    body = {"type": "echo", "payload": {}}
    fs.gate.clear()
    first = asyncio.ensure_future(jobq.client.post("/jobs", json=body, headers=headers))
    while not jobq.store.index.idem:
        await asyncio.sleep(0.001)
    second = await jobq.client.post("/jobs", json=body, headers=headers)
    assert second.status == 409
    assert second.headers["Retry-After"] == "1"
    assert (await second.json())["type"].endswith("/idempotency-key-in-flight")
    fs.gate.set()
    assert (await first).status == 201
    third = await jobq.client.post("/jobs", json=body, headers=headers)
    assert third.headers["Idempotent-Replayed"] == "true"
    assert (await jobq.store.counts("acme"))["queued"] == 1
