"""`GET /metrics` (JSON) and `GET /metrics/prometheus` (text exposition), SPEC §4.

Both show what the caller may see: a tenant key its own tenant, an admin key
every tenant (or `?tenant=NAME`). The JSON is the same document the
dashboard's WebSocket sends once a second, so polling shows the same numbers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobq.core.errors import BadRequest
from jobq.core.models import Status
from jobq.rules.alerts import ALERT_KINDS
from jobq.web.auth import principal_of
from jobq.web.live.hub import HUB
from jobq.web.services import services_of
from jobq.web.views.jobs import json_response

routes = web.RouteTableDef()

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _scope(request: web.Request) -> str | None:
    """The tenant the caller sees (None: every tenant, admins only)."""
    principal = principal_of(request)
    unknown = sorted(set(request.query) - {"tenant"})
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0]!r}; known: tenant")
    if principal.is_admin:
        return request.query.get("tenant") or None
    return principal.tenant_id


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    hub = request.app[HUB]
    scope = _scope(request)
    document = await hub.messages.metrics(scope, int(hub.clock.monotonic()))
    del document["type"]
    document["dlq"] = document["counts"][Status.FATAL.value]
    if scope is None:
        document["refusals"] = dict(services_of(request).health.refusals)
    return json_response(document)


@dataclass(frozen=True, slots=True)
class _TenantFigures:
    counts: dict[str, int]
    deliveries: dict[str, int]
    alerts: Counter[str]


async def _tenant_figures(request: web.Request, scope: str | None) -> dict[str, _TenantFigures]:
    """What the store says of each tenant in scope, read before the
    (synchronous) collector runs."""
    services = services_of(request)
    store = services.store
    tenants = [scope] if scope is not None else services.tenants.tenant_names()
    return {
        tenant: _TenantFigures(
            await store.counts(tenant),
            await store.delivery_counts(tenant),
            Counter(a.kind for a in await store.alerts(tenant) if a.active),
        )
        for tenant in tenants
    }


class _JobqCollector(Collector):
    """Gauges and counters from the store's figures and the hub."""

    def __init__(self, request: web.Request, scope: str | None, figures: dict[str, _TenantFigures]) -> None:
        self.request = request
        self.scope = scope
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        hub = self.request.app[HUB]
        jobs = GaugeMetricFamily("jobq_jobs", "Jobs retained, by tenant and status", labels=["tenant", "status"])
        finished = GaugeMetricFamily(
            "jobq_jobs_finished_last_minute", "Jobs that ended in the last minute", labels=["tenant"]
        )
        deliveries = GaugeMetricFamily(
            "jobq_webhook_deliveries", "Webhook deliveries retained, by tenant and status", labels=["tenant", "status"]
        )
        alerts = GaugeMetricFamily("jobq_alerts_active", "Alerts raised and not cleared", labels=["tenant", "kind"])
        now_second = int(hub.clock.monotonic())
        for tenant, figures in self.figures.items():
            for status, count in figures.counts.items():
                jobs.add_metric([tenant, status], count)
            finished.add_metric([tenant], sum(hub.finished.by_second(tenant, now_second)))
            for status, count in figures.deliveries.items():
                deliveries.add_metric([tenant, status], count)
            for kind in ALERT_KINDS:
                alerts.add_metric([tenant, kind], figures.alerts[kind])
        yield jobs
        yield finished
        yield deliveries
        yield alerts
        if self.scope is None:
            yield from _process_metrics(self.request)


def _process_metrics(request: web.Request) -> Iterator[Metric]:
    """Service-wide figures, for admin scrapes only."""
    hub = request.app[HUB]
    yield GaugeMetricFamily("jobq_live_clients", "Connected live-update sockets", value=len(hub.clients))
    services = services_of(request)
    for name, value in services.store.stats().items():
        yield CounterMetricFamily(f"jobq_store_{name}", f"Store counter {name}", value=value)
    refusals = CounterMetricFamily("jobq_refusals", "Requests, connections and sockets refused", labels=["kind"])
    for kind, count in sorted(services.health.refusals.items()):
        refusals.add_metric([kind], count)
    yield refusals
    task_errors = CounterMetricFamily(
        "jobq_background_errors", "Rounds of a background task that raised", labels=["task"]
    )
    for name, state in sorted(services.health.tasks.items()):
        task_errors.add_metric([name], state.errors)
    yield task_errors


@routes.get("/metrics/prometheus")
async def prometheus(request: web.Request) -> web.Response:
    registry = CollectorRegistry(auto_describe=False)
    scope = _scope(request)
    registry.register(_JobqCollector(request, scope, await _tenant_figures(request, scope)))
    body: Any = generate_latest(registry)
    return web.Response(body=body, headers={"Content-Type": PROMETHEUS_TYPE})
