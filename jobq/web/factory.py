"""The aiohttp application, wired together: `create_app(settings, store, clock, ...)`
is the one factory, used by the entry points and by the tests alike. It takes
an opened store of any backend (`store.open_store` chooses it) and owns the
process's background tasks: the worker pool, the webhook sender, the alert monitor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web

from jobq.core.clock import Clock
from jobq.core.config import Settings
from jobq.core.health import Health
from jobq.outbound.alert_monitor import TASK as ALERTS_TASK
from jobq.outbound.alert_monitor import AlertMonitor
from jobq.outbound.sender import TASK as SENDER_TASK
from jobq.outbound.sender import DeliverySender
from jobq.storage.protocol import Store
from jobq.tenancy.tenants import TenantRegistry
from jobq.web import openapi
from jobq.web.auth import AUTH_FAILURES, SESSIONS, BadKeyLimit, make_auth_middleware
from jobq.web.pages import setup_pages
from jobq.web.problems import problem_middleware
from jobq.web.services import SERVICES, Services
from jobq.web.sessions import SessionCodec
from jobq.web.views import dashboard as views_dashboard
from jobq.web.views import jobs as views_jobs
from jobq.web.views import metrics as views_metrics
from jobq.web.views import session as views_session
from jobq.web.views import ws as views_ws
from jobq.worker.builtin import default_registry
from jobq.worker.handlers import Registry
from jobq.worker.pool import TASK as WORKER_TASK
from jobq.worker.pool import Worker
from jobq.worker.process import build_sender, build_worker

logger = logging.getLogger("jobq")

WORKER = web.AppKey("jobq.worker", Worker)
SENDER = web.AppKey("jobq.sender", DeliverySender)
ALERTS = web.AppKey("jobq.alerts", AlertMonitor)


def create_app(
    settings: Settings,
    store: Store,
    clock: Clock,
    *,
    registry: Registry | None = None,
    tenants: TenantRegistry | None = None,
    session_codec: SessionCodec | None = None,
    run_worker: bool = True,
) -> web.Application:
    """The aiohttp application over an opened `store`, which it closes on
    cleanup. With `run_worker=False` the worker exists (as `app[WORKER]`) but
    only runs when a test drives it (`run_once`, `run_until_idle`).
    Without `session_codec` the session secret is loaded (or created) here,
    which raises `SessionSecretError` for an unusable `session.key`."""
    registry = registry or default_registry(allow_private_urls=settings.allow_private_urls)
    tenants = tenants or TenantRegistry(settings.tenants_file, clock.monotonic)
    services = Services(
        settings=settings, store=store, clock=clock, registry=registry, tenants=tenants, health=Health(clock.monotonic)
    )
    failures = BadKeyLimit(store, settings.auth_failures_per_minute)
    session_codec = session_codec or SessionCodec.from_settings(settings, clock)
    app = web.Application(
        middlewares=[problem_middleware, make_auth_middleware(tenants, failures, clock, session_codec)],
        client_max_size=settings.max_body_bytes,
    )
    app[SERVICES] = services
    app[AUTH_FAILURES] = failures
    app[SESSIONS] = session_codec
    setup_pages(app)
    app.add_routes(views_session.routes)
    app.add_routes(views_dashboard.routes)
    app.add_routes(views_jobs.routes)
    app.add_routes(views_metrics.routes)
    app.add_routes(openapi.routes)
    worker = build_worker(settings, store, registry, clock, tenants, services.health)
    app[WORKER] = worker
    sender = build_sender(settings, store, clock, tenants, services.health)
    app[SENDER] = sender
    app[ALERTS] = AlertMonitor(
        store,
        clock,
        tenant_names=tenants.tenant_names,
        dlq_alert_seconds=settings.dlq_alert_seconds,
        alert_url=settings.alert_url,
        health=services.health,
    )
    views_ws.setup_live(app, store, clock)

    async def close_store(app: web.Application) -> AsyncIterator[None]:
        yield
        await sender.stop(0)  # already stopped when it ran; this closes its client sessions
        await store.close()

    async def run_worker_loop(app: web.Application) -> AsyncIterator[None]:
        task = start_background(services, worker.run(), WORKER_TASK)
        yield
        services.shutting_down = True
        await worker.stop(settings.shutdown_grace_seconds)
        await asyncio.wait([task])  # one that died was logged when it did

    async def run_outbox(app: web.Application) -> AsyncIterator[None]:
        tasks = [start_background(services, app[ALERTS].run(), ALERTS_TASK)]
        if settings.webhook_concurrency:
            tasks.append(start_background(services, sender.run(), SENDER_TASK))
        yield
        services.shutting_down = True  # the first cleanup step: these tasks end as expected now
        tasks[0].cancel()
        await sender.stop(min(settings.shutdown_grace_seconds, settings.webhook_timeout_seconds))
        await asyncio.wait(tasks)

    app.cleanup_ctx.append(close_store)
    if run_worker:
        # Also with concurrency 0 (API only): it still expires and purges jobs.
        app.cleanup_ctx.append(run_worker_loop)
        app.cleanup_ctx.append(run_outbox)
    return app


def start_background(services: Services, loop_coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """Run a background loop as a task named `jobq-<name>`. When it ends, its
    `Health` state says why (`/readyz` names it); an end before shutdown
    is logged as an error, with the exception's traceback if it raised."""

    def ended(task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        reason = f"{type(error).__name__}: {error}" if error is not None else "returned"
        if task.cancelled():
            reason = "cancelled"
        services.health.task_stopped(name, reason)
        if not services.shutting_down:
            exc_info = (type(error), error, error.__traceback__) if error is not None else None
            logger.error("action=background_task_died task=%s reason=%s", name, reason, exc_info=exc_info)

    task = asyncio.get_running_loop().create_task(loop_coro, name=f"jobq-{name}")
    task.add_done_callback(ended)
    return task
