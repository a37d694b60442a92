"""A process's background parts built from the settings: the worker pool and
the webhook sender over an opened store, and `run_until_stopped`, which runs
both until a signal and stops them within the grace period. `worker.py` (a
worker-only process) uses it; the API process builds the same parts in
`jobq.web.factory`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import datetime

from jobq.core.clock import Clock
from jobq.core.config import Settings
from jobq.core.health import Health
from jobq.core.process import wait_for_signal
from jobq.outbound.sender import DeliverySender, SenderLimits
from jobq.rules.delivery_policy import RetrySchedule
from jobq.storage.protocol import Store
from jobq.tenancy.tenants import TenantRegistry
from jobq.worker.handlers import Registry
from jobq.worker.pool import Worker

logger = logging.getLogger("jobq")


def build_worker(
    settings: Settings, store: Store, registry: Registry, clock: Clock, tenants: TenantRegistry, health: Health
) -> Worker:
    """The worker pool the settings describe (`JOBQ_WORKER_CONCURRENCY`, lease,
    retention), claiming within each tenant's `maxRunning` as the tenants registry says."""
    return Worker(
        store,
        registry,
        clock,
        running_limits=tenants.running_limits,
        concurrency=settings.worker_concurrency,
        lease_seconds=settings.lease_seconds,
        retention_seconds=settings.retention_days * 86400.0,
        health=health,
    )


def build_sender(
    settings: Settings, store: Store, clock: Clock, tenants: TenantRegistry, health: Health
) -> DeliverySender:
    """The webhook sender: tenants' secrets from the tenants registry, the
    alert secret from the settings."""

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


async def run_until_stopped(
    settings: Settings,
    store: Store,
    registry: Registry,
    clock: Clock,
    tenants: TenantRegistry,
    stop: Awaitable[object] | None = None,
) -> int:
    """Run the worker pool and (unless `JOBQ_WEBHOOK_CONCURRENCY=0`) the
    webhook sender over the opened `store` until `stop` completes (default:
    SIGTERM or SIGINT) or a loop ends on its own, then stop both within
    `JOBQ_SHUTDOWN_GRACE_SECONDS` (running attempts left by then are released
    as `interrupted`) and close the store. Returns the exit status: 0, or 1
    when a loop ended before it was asked to."""
    health = Health(clock.monotonic)
    worker = build_worker(settings, store, registry, clock, tenants, health)
    sender = build_sender(settings, store, clock, tenants, health)
    loops = [asyncio.create_task(worker.run(), name="jobq-worker")]
    if settings.webhook_concurrency:
        loops.append(asyncio.create_task(sender.run(), name="jobq-sender"))
    stopping = asyncio.ensure_future(stop if stop is not None else wait_for_signal())
    logger.info(
        "action=worker_process_start concurrency=%d webhookConcurrency=%d",
        settings.worker_concurrency,
        settings.webhook_concurrency,
    )
    await asyncio.wait([stopping, *loops], return_when=asyncio.FIRST_COMPLETED)
    died = [task for task in loops if task.done()]
    for task in died:
        error = None if task.cancelled() else task.exception()
        logger.error("action=background_task_died task=%s reason=%s", task.get_name(), error or "returned")
    logger.info("action=shutdown graceSeconds=%g", settings.shutdown_grace_seconds)
    try:
        grace = settings.shutdown_grace_seconds
        await asyncio.gather(worker.stop(grace), sender.stop(min(grace, settings.webhook_timeout_seconds)))
        await asyncio.wait(loops)
    finally:
        stopping.cancel()
        await store.close()
    logger.info("action=stopped")
    return 1 if died else 0
