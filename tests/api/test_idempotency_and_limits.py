"""Idempotency-Key (SPEC §4, Stripe semantics), submit rate, maxQueued."""

from __future__ import annotations

from tests.conftest import Harness


async def test_same_key_same_body_replays_the_original_answer(jobq: Harness) -> None:
    headers = jobq.headers(**{"Idempotency-Key": '"order-42"'})
    first = await jobq.client.post("/jobs", json={"type": "echo", "payload": {"a": 1}}, headers=headers)
    first_body = await first.json()
    await jobq.drain()
    # The bare token is the same key as the quoted string.
    again = await jobq.client.post(
        "/jobs", json={"payload": {"a": 1}, "type": "echo"}, headers=jobq.headers(**{"Idempotency-Key": "order-42"})
    )
    assert again.status == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert await again.json() == first_body  # the original body, status queued
    assert "Idempotent-Replayed" not in first.headers
    assert (await jobq.store.counts("acme"))["succeeded"] == 1


async def test_same_key_other_payload_is_422_mismatch(jobq: Harness) -> None:
    await jobq.submit(headers={"Idempotency-Key": "k"}, payload={"a": 1})
    response = await jobq.client.post(
        "/jobs", json={"type": "echo", "payload": {"a": 2}}, headers=jobq.headers(**{"Idempotency-Key": "k"})
    )
    body = await response.json()
    assert response.status == 422
    assert body["type"].endswith("/idempotency-key-mismatch")


async def test_keys_are_per_tenant(jobq: Harness) -> None:
    a = await jobq.submit("acme", headers={"Idempotency-Key": "shared"})
    b = await jobq.submit("globex", headers={"Idempotency-Key": "shared"})
    assert a["jobId"] != b["jobId"]


async def test_batch_is_idempotent_too_and_routes_do_not_mix(jobq: Harness) -> None:
    batch = {"jobs": [{"ref": "a", "type": "echo"}, {"ref": "b", "type": "echo", "dependsOn": ["a"]}]}
    headers = jobq.headers(**{"Idempotency-Key": "b1"})
    first = await jobq.client.post("/jobs/batch", json=batch, headers=headers)
    again = await jobq.client.post("/jobs/batch", json=batch, headers=headers)
    assert first.status == again.status == 201
    assert await first.json() == await again.json()
    other_route = await jobq.client.post("/jobs", json={"type": "echo"}, headers=headers)
    assert other_route.status == 422


async def test_failed_requests_are_not_remembered(jobq: Harness) -> None:
    headers = jobq.headers(**{"Idempotency-Key": "try"})
    bad = await jobq.client.post("/jobs", json={"type": "nope"}, headers=headers)
    assert bad.status == 422
    good = await jobq.client.post("/jobs", json={"type": "echo"}, headers=headers)
    assert good.status == 201 and "Idempotent-Replayed" not in good.headers


async def test_key_survives_restart(make_harness) -> None:
    first = await make_harness()
    job = await first.submit(headers={"Idempotency-Key": "durable"})
    await first.client.close()
    second = await make_harness()
    again = await second.client.post(
        "/jobs", json={"type": "echo", "payload": {}}, headers=second.headers(**{"Idempotency-Key": "durable"})
    )
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["jobId"] == job["jobId"]


async def test_submit_rate_limit_has_headers_and_retry_after(jobq: Harness) -> None:
    # globex: 60 a minute, burst 5.
    for remaining in range(4, -1, -1):
        response = await jobq.client.post("/jobs", json={"type": "echo"}, headers=jobq.headers("globex"))
        assert response.status == 201
        assert response.headers["RateLimit-Policy"] == '"tenant";q=60;w=60'
        assert response.headers["RateLimit"].startswith(f'"tenant";r={remaining};t=')
    limited = await jobq.client.post("/jobs", json={"type": "echo"}, headers=jobq.headers("globex"))
    assert limited.status == 429
    assert limited.headers["Retry-After"] == "1"
    assert limited.headers["RateLimit"].startswith('"tenant";r=0;')
    # Other tenants are not affected; time refills the bucket.
    assert (await jobq.client.post("/jobs", json={"type": "echo"}, headers=jobq.headers("acme"))).status == 201
    jobq.clock.advance(1)
    assert (await jobq.client.post("/jobs", json={"type": "echo"}, headers=jobq.headers("globex"))).status == 201


async def test_max_queued_is_429_with_retry_after_5(make_harness) -> None:
    jobq = await make_harness()  # globex: maxQueued 50
    batch = {"jobs": [{"type": "echo"} for _ in range(5)]}
    for _ in range(10):
        jobq.clock.advance(5)
        response = await jobq.client.post("/jobs/batch", json=batch, headers=jobq.headers("globex"))
        assert response.status == 201
    jobq.clock.advance(60)
    full = await jobq.client.post("/jobs", json={"type": "echo"}, headers=jobq.headers("globex"))
    assert full.status == 429
    assert full.headers["Retry-After"] == "5"
    assert (await full.json())["type"].endswith("/queue-full")
