"""jobq: the HTTP service, wired together. `python app.py` serves; `python app.py
tenants|keys|doctor ...` manages the tenants file and the data directory.

`create_app(settings, store, clock, ...)` is the one factory, used by the
entry point and by the tests alike. Nothing imports this module.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Coroutine
from datetime import datetime
from typing import Any

from aiohttp import web

import openapi
import views_dashboard
import views_jobs
import views_metrics
import views_session
import views_ws
from alert_monitor import TASK as ALERTS_TASK
from alert_monitor import AlertMonitor
from auth import AUTH_FAILURES, SESSIONS, make_auth_middleware
from builtin_handlers import register_builtins
from clock import Clock, SystemClock
from config import ConfigError, Settings
from connlimits import start_http
from delivery_policy import RetrySchedule
from errors import CorruptStore, StoreLocked
from handlers import REGISTRY, HandlerModuleError, Registry, load_handler_modules
from health import Health
from lifecycle import RetryPolicy
from pages import setup_pages
from problems import problem_middleware
from ratelimit import FailureWindow
from services import SERVICES, Services
from sessions import SessionCodec, SessionSecretError
from store import JsonStore
from store_protocol import Store
from tenants import TenantRegistry, TenantsDoc, TenantsFileError, updating
from webhooks import TASK as SENDER_TASK
from webhooks import DeliverySender, SenderLimits
from worker import TASK as WORKER_TASK
from worker import Worker

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
    failures = FailureWindow(settings.auth_failures_per_minute)
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
    worker = Worker(
        store,
        registry,
        clock,
        concurrency=settings.worker_concurrency,
        lease_seconds=settings.lease_seconds,
        retention_seconds=settings.retention_days * 86400.0,
        health=services.health,
    )
    app[WORKER] = worker
    sender = make_sender(settings, store, clock, tenants, services.health)
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


def make_sender(
    settings: Settings, store: Store, clock: Clock, tenants: TenantRegistry, health: Health | None = None
) -> DeliverySender:
    """The webhook sender: tenants' secrets from the tenants file, the alert
    secret from the settings."""

    def tenant_secrets(tenant_id: str, now: datetime) -> list[str]:
        return tenants.webhook_secrets(tenant_id, now, settings.webhook_rotation_hours)

    return DeliverySender(
        store,
        clock,
        tenant_secrets,
        schedule=RetrySchedule(settings.webhook_retry_schedule),
        limits=SenderLimits(
            timeout_seconds=settings.webhook_timeout_seconds,
            concurrency=settings.webhook_concurrency,
            tenant_concurrency=settings.webhook_tenant_concurrency,
            allow_private=settings.allow_private_urls,
        ),
        operator_secret=settings.alert_secret.reveal() if settings.alert_secret else None,
        health=health,
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        base_seconds=settings.retry_base_seconds,
        max_seconds=settings.retry_max_seconds,
        max_snoozes=settings.max_snoozes,
    )


def make_json_store(settings: Settings, tenants: TenantRegistry) -> JsonStore:
    return JsonStore(
        settings.data_dir,
        retry=retry_policy(settings),
        max_running=tenants.max_running,
        aging_seconds=settings.aging_seconds,
        worker_slots=settings.worker_concurrency,
        compact_bytes=settings.journal_compact_bytes,
    )


def ensure_demo_tenant(settings: Settings) -> str | None:
    """On a first start (no tenants file), create tenant `demo`; returns its key.
    Under the tenants file's update lock, like every CLI write."""
    with updating(settings.tenants_file):
        if settings.tenants_file.exists():
            return None
        doc = TenantsDoc()
        key = doc.add_tenant("demo")
        doc.write(settings.tenants_file)
    return key


async def serve(settings: Settings) -> int:
    clock = SystemClock()
    try:
        # Before anything is touched: a broken handler module stops the start.
        load_handler_modules(settings.handler_modules, default_registry(allow_private_urls=settings.allow_private_urls))
    except HandlerModuleError as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        return 2
    try:
        tenants = TenantRegistry(settings.tenants_file, clock.monotonic)
    except TenantsFileError as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        return 2
    if settings.store_url != "json":
        print(f"jobq: JOBQ_STORE={settings.store_url!r} is not supported by this build; use 'json'", file=sys.stderr)
        return 2
    store = make_json_store(settings, tenants)
    try:
        await store.open(clock.now())
    except (StoreLocked, CorruptStore) as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"jobq: cannot use the data directory {settings.data_dir}: {exc}", file=sys.stderr)
        return 2
    try:
        # After the store: a refused start leaves the data directory untouched.
        demo_key = ensure_demo_tenant(settings)
        if demo_key:
            tenants.reload()
        session_codec = SessionCodec.from_settings(settings, clock)
    except (SessionSecretError, TenantsFileError) as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        await store.close()
        return 2
    tune_gc()
    app = create_app(settings, store, clock, tenants=tenants, session_codec=session_codec)
    # Connection limits, header and keep-alive timeouts, parser-error pages (connlimits.py).
    runner, _ = await start_http(app, settings, settings.host, settings.port)
    url = f"http://{settings.host}:{settings.port}"
    print(f"jobq listening on {url} (data in {settings.data_dir.resolve()})", flush=True)
    if demo_key:
        print(f"created tenant 'demo'; its API key (shown once): {demo_key}", flush=True)
        print(f"  curl -H 'X-API-Key: {demo_key}' {url}/jobs", flush=True)
        print(f"  dashboard: {url}/login", flush=True)
    await wait_for_signal()
    logger.info("action=shutdown graceSeconds=%g", settings.shutdown_grace_seconds)
    app[SERVICES].shutting_down = True
    # Both within the one grace period: a delivery not sent by then stays pending for the next start.
    await asyncio.gather(
        app[WORKER].stop(settings.shutdown_grace_seconds), app[SENDER].stop(settings.shutdown_grace_seconds)
    )
    await runner.cleanup()
    logger.info("action=stopped")
    return 0


def tune_gc() -> None:
    """jobq keeps every job in memory, so a full collection of the cyclic GC
    walks millions of objects (~150 ms at 100k jobs, a pause of every
    request). Young collections stay frequent, full ones become rare, and
    everything loaded at start is frozen out of them (Instagram's recipe)."""
    gc.set_threshold(50_000, 50, 100)
    gc.freeze()


async def wait_for_signal() -> None:
    """Return on the first SIGTERM/SIGINT; a second one exits at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(1)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await stop.wait()


def default_registry(*, allow_private_urls: bool = False) -> Registry:
    """The process-wide registry, with the built-in handlers (registered once,
    by the first call: `allow_private_urls` is that call's)."""
    if REGISTRY.get("echo") is None:
        register_builtins(REGISTRY, allow_private_urls=allow_private_urls)
    return REGISTRY


def main(argv: list[str]) -> int:
    import logsetup

    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        return 2
    logsetup.configure(settings.log_level, settings.log_format)
    if argv:
        from cli import run_command

        return run_command(settings, argv)
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
