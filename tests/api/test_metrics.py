"""GET /metrics and /metrics/prometheus: the viewer's own figures only."""

from __future__ import annotations

from jobq.web.live.hub import HUB
from tests.conftest import Harness


async def test_json_metrics_count_the_callers_jobs_and_what_finished(jobq: Harness) -> None:
    await jobq.submit(type="fail", payload={"times": 1, "permanent": True})
    await jobq.submit()
    await jobq.submit(delaySeconds=60)
    await jobq.submit("globex")
    await jobq.drain()
    response = await jobq.client.get("/metrics", headers=jobq.headers())
    metrics = await response.json()
    assert response.status == 200
    assert metrics["counts"]["succeeded"] == 1
    assert metrics["counts"]["fatal"] == 1
    assert metrics["dlq"] == 1
    assert metrics["queueDepth"] == 1  # the delayed one; globex's job is not acme's
    assert metrics["finishedLastMinute"] == 2
    admin = await (await jobq.client.get("/metrics", headers=jobq.headers("admin"))).json()
    assert admin["counts"]["succeeded"] == 2
    only = await (await jobq.client.get("/metrics?tenant=globex", headers=jobq.headers("admin"))).json()
    assert only["counts"]["succeeded"] == 1
    ignored = await (await jobq.client.get("/metrics?tenant=globex", headers=jobq.headers("acme"))).json()
    assert ignored == metrics | {"at": ignored["at"]}  # a tenant key cannot look at another tenant
    assert jobq.app[HUB] is not None


async def test_prometheus_exposition_is_scoped_and_parseable(jobq: Harness) -> None:
    await jobq.submit()
    await jobq.submit("globex", delaySeconds=60)
    await jobq.drain()
    response = await jobq.client.get("/metrics/prometheus", headers=jobq.headers())
    text = await response.text()
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert 'jobq_jobs{status="succeeded",tenant="acme"} 1.0' in text
    assert "globex" not in text
    assert "jobq_store_" not in text  # service-wide figures are for admins
    admin = await (await jobq.client.get("/metrics/prometheus", headers=jobq.headers("admin"))).text()
    assert 'jobq_jobs{status="queued",tenant="globex"} 1.0' in admin
    assert "jobq_store_commits_total" in admin
    assert (await jobq.client.get("/metrics/prometheus?x=1", headers=jobq.headers())).status == 400
    assert (await jobq.client.get("/metrics/prometheus")).status == 401
