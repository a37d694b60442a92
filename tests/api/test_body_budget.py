"""Request-body bytes per tenant (issue 8): parsing costs CPU by the byte and
one process has one interpreter lock, so a tenant sending large bodies at a
high rate is refused before the bytes are read, and others are not."""

from __future__ import annotations

from typing import Any

from jobq.web.services import SERVICES
from tests.conftest import Harness, HarnessFactory

RATE_KIB = 64  # the lowest allowed; the burst is four seconds' worth, 256 KiB


def body_of(kib: int) -> dict[str, Any]:
    """A submit whose JSON body is about `kib` KiB (payloads stay under 64 KiB)."""
    jobs = [{"type": "echo", "payload": {"s": "x" * 30_000}} for _ in range(kib // 30)]
    return {"jobs": jobs}


async def post(h: Harness, who: str, body: dict[str, Any]) -> Any:
    return await h.client.post("/jobs/batch", json=body, headers=h.headers(who))


async def test_a_tenant_over_its_body_budget_is_refused_and_others_are_not(make_harness: HarnessFactory) -> None:
    h = await make_harness(tenant_body_kib_per_second=RATE_KIB)
    big = body_of(120)

    statuses = [(await post(h, "acme", big)).status for _ in range(3)]

    assert statuses == [201, 201, 429]
    refused = await post(h, "acme", big)
    assert refused.status == 429
    problem = await refused.json()
    assert "KiB of request bodies a second" in problem["detail"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert h.app[SERVICES].health.refusals["body_rate"] == 2
    assert (await post(h, "globex", body_of(30))).status == 201  # another tenant's budget is its own
    h.clock.advance(2)  # 128 KiB come back
    assert (await post(h, "acme", big)).status == 201


async def test_a_body_over_the_size_limit_is_a_413_and_costs_no_budget(make_harness: HarnessFactory) -> None:
    h = await make_harness(tenant_body_kib_per_second=RATE_KIB)
    headers = {**h.headers(), "Content-Type": "application/json", "Content-Length": str(2 << 20), "Connection": "close"}

    response = await h.client.post("/jobs", data=b"{}", headers=headers)

    assert response.status == 413
    assert (await post(h, "acme", body_of(120))).status == 201
    assert (await post(h, "acme", body_of(120))).status == 201  # the whole burst was still there
