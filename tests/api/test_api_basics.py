"""Submitting, reading and running jobs through real HTTP."""

from __future__ import annotations

from tests.conftest import Harness


async def test_submit_returns_201_with_location_and_job(jobq: Harness) -> None:
    response = await jobq.client.post("/jobs", json={"type": "echo", "payload": {"n": 1}}, headers=jobq.headers())
    body = await response.json()
    assert response.status == 201
    assert response.headers["Location"] == f"/jobs/{body['jobId']}"
    assert body["status"] == "queued"
    assert body["tenantId"] == "acme"
    assert body["priority"] == 1
    assert body["maxAttempts"] == 4
    assert body["payloadHash"].startswith("sha256:")
    assert body["createdAt"].endswith("Z") and len(body["createdAt"]) == 24
    assert body["waitingReason"] == "next in line"


async def test_job_runs_to_success_and_keeps_history(jobq: Harness) -> None:
    job = await jobq.submit(payload={"hello": "world"})
    await jobq.drain()
    done = await jobq.get(job["jobId"])
    assert done["status"] == "succeeded"
    assert done["result"] == {"hello": "world"}
    assert done["attempts"] == 1
    [attempt] = done["attemptHistory"]
    assert attempt["status"] == "succeeded" and attempt["attempt"] == 1
    assert done["waitingReason"] is None


async def test_other_tenants_job_is_the_same_404_as_a_missing_one(jobq: Harness) -> None:
    job = await jobq.submit()
    foreign = await jobq.client.get(f"/jobs/{job['jobId']}", headers=jobq.headers("globex"))
    missing_id = "00000000-0000-4000-8000-000000000000"
    missing = await jobq.client.get(f"/jobs/{missing_id}", headers=jobq.headers("globex"))
    assert foreign.status == missing.status == 404
    foreign_body = (await foreign.text()).replace(job["jobId"], "ID")
    missing_body = (await missing.text()).replace(missing_id, "ID")
    assert foreign_body == missing_body
    cancel = await jobq.client.post(f"/jobs/{job['jobId']}/cancel", headers=jobq.headers("globex"))
    assert cancel.status == 404


async def test_admin_sees_every_tenant_but_cannot_submit(jobq: Harness) -> None:
    await jobq.submit("acme")
    await jobq.submit("globex")
    listing = await (await jobq.client.get("/jobs", headers=jobq.headers("admin"))).json()
    assert {j["tenantId"] for j in listing["jobs"]} == {"acme", "globex"}
    only = await (await jobq.client.get("/jobs?tenant=globex", headers=jobq.headers("admin"))).json()
    assert {j["tenantId"] for j in only["jobs"]} == {"globex"}
    refused = await jobq.client.post("/jobs", json={"type": "echo"}, headers=jobq.headers("admin"))
    assert refused.status == 403


async def test_read_only_key_reads_but_cannot_write(jobq: Harness) -> None:
    job = await jobq.submit()
    assert (await jobq.client.get(f"/jobs/{job['jobId']}", headers=jobq.headers("acme_read"))).status == 200
    for path in ("/jobs", f"/jobs/{job['jobId']}/cancel", f"/jobs/{job['jobId']}/retry"):
        response = await jobq.client.post(path, json={"type": "echo"}, headers=jobq.headers("acme_read"))
        assert response.status == 403, path
        assert response.content_type == "application/problem+json"


async def test_missing_and_unknown_keys_are_401_with_www_authenticate(jobq: Harness) -> None:
    for headers in ({}, {"X-API-Key": "jq_not-a-key"}):
        response = await jobq.client.get("/jobs", headers=headers)
        assert response.status == 401
        assert "WWW-Authenticate" in response.headers
        assert (await response.json())["status"] == 401


async def test_bad_keys_from_one_address_are_throttled_for_the_minute(jobq: Harness) -> None:
    limit = jobq.settings.auth_failures_per_minute
    for _ in range(limit):
        assert (await jobq.client.get("/jobs", headers={"X-API-Key": "wrong"})).status == 401
    throttled = await jobq.client.get("/jobs", headers={"X-API-Key": "wrong"})
    assert throttled.status == 429
    assert int(throttled.headers["Retry-After"]) > 0
    # Only failed attempts are throttled (issue 8): a valid key from the same address passes.
    assert (await jobq.client.get("/jobs", headers=jobq.headers())).status == 200
    jobq.clock.advance(61)
    assert (await jobq.client.get("/jobs", headers={"X-API-Key": "wrong"})).status == 401


async def test_health_endpoints_need_no_key(jobq: Harness) -> None:
    assert (await jobq.client.get("/healthz")).status == 200
    ready = await jobq.client.get("/readyz")
    assert ready.status == 200


async def test_openapi_describes_every_route(jobq: Harness) -> None:
    response = await jobq.client.get("/openapi.json")
    spec = await response.json()
    assert response.status == 200
    assert spec["openapi"].startswith("3.1")
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    served = set()
    for route in jobq.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter", "")
        if route.method != "HEAD" and path not in ("/openapi.json", "/static/{filename}"):
            served.add((path.replace("{job_id}", "{jobId}"), route.method))
    assert served <= documented
