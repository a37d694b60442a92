"""Each tenant has a cap on retained bytes, `maxStoredBytes` (issue 8):
beyond it submits are refused with a problem that says so."""

from __future__ import annotations

from typing import Any

from jobq.tenancy.tenants import TenantsDoc
from tests.backends.jsonfile.support import json_store
from tests.conftest import Harness, HarnessFactory

LIMIT = 200_000


def big_payload() -> dict[str, Any]:
    return {"blob": "x" * 60_000}


async def with_limit(make_harness: HarnessFactory) -> Harness:
    h = await make_harness()
    doc = TenantsDoc.read(h.settings.tenants_file)
    doc.tenants["acme"]["limits"] = {"maxStoredBytes": LIMIT}
    doc.write(h.settings.tenants_file)
    h.clock.advance(2)  # the registry looks at the file at most once a second
    return h


async def test_submits_beyond_max_stored_bytes_are_refused_until_space_comes_back(
    make_harness: HarnessFactory,
) -> None:
    h = await with_limit(make_harness)
    for _ in range(3):
        await h.submit(payload=big_payload())
    stored = json_store(h).index.stored_bytes("acme")
    assert 180_000 < stored <= LIMIT

    response = await h.client.post("/jobs", json={"type": "echo", "payload": big_payload()}, headers=h.headers())

    assert response.status == 429
    assert response.headers["Content-Type"].startswith("application/problem+json")
    assert response.headers["Retry-After"] == "60"
    problem = await response.json()
    assert problem["type"].endswith("storage-quota-exceeded")
    assert "maxStoredBytes" in problem["detail"]
    assert json_store(h).index.stored_bytes("acme") == stored  # nothing was stored
    assert (await h.submit("globex", payload=big_payload()))["status"] == "queued"  # other tenants unaffected

    await h.drain()
    h.clock.advance(8 * 86400)
    await h.store.purge(h.clock.now(), 7 * 86400)
    assert json_store(h).index.stored_bytes("acme") == 0
    await h.submit(payload=big_payload())


async def test_a_batch_that_could_never_fit_is_a_413(make_harness: HarnessFactory) -> None:
    h = await with_limit(make_harness)
    jobs = [{"type": "echo", "payload": big_payload()} for _ in range(4)]

    response = await h.client.post("/jobs/batch", json={"jobs": jobs}, headers=h.headers())

    assert response.status == 413
    assert "maxStoredBytes" in (await response.json())["detail"]
    assert json_store(h).index.stored_bytes("acme") == 0


async def test_retained_bytes_are_the_same_after_a_restart(make_harness: HarnessFactory) -> None:
    h = await with_limit(make_harness)
    for n in range(3):
        await h.submit(payload={"n": n, "blob": "y" * 1000})
    await h.drain()
    before = json_store(h).index.stored_bytes("acme")
    await h.client.close()

    h = await make_harness()

    assert json_store(h).index.stored_bytes("acme") == before
