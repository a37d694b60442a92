"""The alert monitor (SPEC §9): looks for the alert conditions about once a
second, raises and clears alerts (`alerts.reconcile`) and queues their
notifications for the operator's `JOBQ_ALERT_URL`, all in one store commit,
so an alert is raised once even across restarts and its notification is as
durable as a webhook (it goes through the same outbox and sender).

Where each condition comes from:
- DLQ: the store's per-tenant `fatal` count, and since when this monitor has
  seen it above zero (after a restart the clock starts again; an alert that
  was already raised stays raised).
- failed deliveries: the store's per-tenant count of deliveries that failed for good.
- lease: a store listener sees each job whose attempt was failed because its
  lease ran out; that raises the alert at the next check even if the job has
  ended since, and the alert clears once the job has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from jobq.core.clock import Clock
from jobq.core.errors import StoreUnavailable
from jobq.core.health import Health, RoundBackoff
from jobq.core.models import LEASE_EXPIRED_ERROR, AttemptStatus, Status
from jobq.rules.alerts import DELIVERY_FAILED, LEASE_EXPIRED, Alert, Condition, dlq_condition, reconcile
from jobq.rules.outbox import FAILED, Delivery, new_delivery
from jobq.storage.protocol import AlertStore, Event, JobChanged

logger = logging.getLogger(__name__)

CHECK_SECONDS = 1.0
TASK = "alert_monitor"  # its name in Health, /readyz and the metrics
STALL_SECONDS = 30.0  # a look every second, at most 5 s apart after failures


class AlertMonitor:
    def __init__(
        self,
        store: AlertStore,
        clock: Clock,
        *,
        tenant_names: Callable[[], list[str]],
        dlq_alert_seconds: float,
        alert_url: str | None = None,
        health: Health | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.tenant_names = tenant_names
        self.dlq_alert_seconds = dlq_alert_seconds
        self.alert_url = alert_url
        self.health = health if health is not None else Health(clock.monotonic)
        self._dlq_since: dict[str, datetime] = {}
        self._lease_expired: dict[str, Condition] = {}  # seen, not yet raised
        self._failed_ids: dict[str, None] = {}  # jobs that went to retry or fatal since the last look
        store.subscribe(self._on_events)

    def _on_events(self, events: Sequence[Event]) -> None:
        # A lost lease settles the attempt as failed: the job is now retry or fatal.
        for event in events:
            if isinstance(event, JobChanged) and event.status in (Status.RETRY, Status.FATAL):
                self._failed_ids[event.job_id] = None

    async def _find_lost_leases(self) -> None:
        """Of the jobs that failed since the last look, those whose attempt
        failed because its lease ran out (fetched in one batch)."""
        ids, self._failed_ids = list(self._failed_ids), {}
        for job in await self.store.get_many(ids) if ids else []:
            if job.status not in (Status.RETRY, Status.FATAL) or not job.attempt_history:
                continue
            last = job.attempt_history[-1]
            if last.status is AttemptStatus.FAILED and last.error == LEASE_EXPIRED_ERROR:
                condition = _lease_condition(job.job_id, job.tenant_id, last.attempt, last.worker_id)
                self._lease_expired[job.job_id] = condition

    async def conditions(self, now: datetime, known: dict[str, Alert]) -> dict[str, Condition]:
        """Every alert condition that holds now, by alert id; `known` are the
        stored alerts (an active one carries its condition over a restart)."""
        seen: dict[str, Condition] = {}
        for tenant in self.tenant_names():
            fatal = (await self.store.counts(tenant))[Status.FATAL.value]
            if fatal == 0:
                self._dlq_since.pop(tenant, None)
            else:
                seen.update(self._dlq_condition(tenant, fatal, now, known))
            if (await self.store.delivery_counts(tenant))[FAILED]:
                seen.update(await self._deliveries_condition(tenant, known))
        for alert in known.values():
            if alert.kind == LEASE_EXPIRED and alert.active and alert.subject is not None:
                job = await self.store.get(alert.subject, None)
                if job is not None and not job.terminal:
                    seen[alert.alert_id] = alert.condition()
        for condition in self._lease_expired.values():
            seen.setdefault(condition.alert_id, condition)
        return seen

    def _dlq_condition(self, tenant: str, fatal: int, now: datetime, known: dict[str, Alert]) -> dict[str, Condition]:
        since = self._dlq_since.setdefault(tenant, now)
        raised = known.get("dlq:" + tenant)
        if raised is not None and raised.active:
            since = min(since, raised.raised_at - timedelta(seconds=self.dlq_alert_seconds))
        condition = dlq_condition(tenant, fatal, since, now, self.dlq_alert_seconds)
        return {} if condition is None else {condition.alert_id: condition}

    async def _deliveries_condition(self, tenant: str, known: dict[str, Alert]) -> dict[str, Condition]:
        alert_id = "deliveries:" + tenant
        raised = known.get(alert_id)
        if raised is not None and raised.active:
            return {alert_id: raised.condition()}  # still failing: no need to find the latest again
        latest = await self.store.latest_failed_delivery(tenant)
        if latest is None:
            return {}
        last = latest.attempts[-1] if latest.attempts else {}
        # No count in the text: it is written once, when raised (the live count is in the metrics).
        message = (
            f"webhook deliveries of {tenant} failed for good; the latest: {latest.delivery_id} "
            f"({latest.event} of job {latest.job_id}), after {latest.attempt_count} attempts: "
            f"{last.get('error') or 'no answer'}"
        )
        return {alert_id: Condition(alert_id, DELIVERY_FAILED, tenant, message, subject=latest.job_id)}

    async def check(self) -> list[Alert]:
        """One look: the alerts raised or cleared now, durable when this returns
        (raises `StoreUnavailable` with nothing changed)."""
        now = self.clock.now()
        await self._find_lost_leases()
        lease_seen = dict(self._lease_expired)
        known = {alert.alert_id: alert for alert in await self.store.alerts(None)}
        changes = reconcile(known, await self.conditions(now, known), now)
        if changes:
            await self.store.save_alerts(changes, self._notifications(changes, now))
            for alert in changes:
                logger.warning(
                    "action=alert_%s alertId=%s tenantId=%s message=%s",
                    "raised" if alert.active else "cleared", alert.alert_id, alert.tenant_id, alert.message,
                )
        for job_id in lease_seen:
            if self._lease_expired.get(job_id) is lease_seen[job_id]:
                del self._lease_expired[job_id]
        return changes

    def _notifications(self, changes: list[Alert], now: datetime) -> list[Delivery]:
        if self.alert_url is None:
            return []
        return [
            new_delivery(None, a.tenant_id, "alert.raised" if a.active else "alert.cleared", self.alert_url,
                         a.to_api(), now)
            for a in changes
        ]

    async def run(self) -> None:
        """Check every `CHECK_SECONDS` until cancelled. A look that raises is
        logged, counted in `Health` and retried after `RoundBackoff` (never
        sooner than `CHECK_SECONDS`); one the store refused only logged."""
        self.health.task_started(TASK, STALL_SECONDS)
        backoff = RoundBackoff()
        pause = CHECK_SECONDS
        while True:
            await asyncio.sleep(pause)
            try:
                await self.check()
            except StoreUnavailable as exc:
                logger.error("action=alert_check_failed error=%s", exc)
            except Exception:
                logger.exception("action=alert_monitor_round_failed")
                self.health.task_error(TASK)
                pause = max(CHECK_SECONDS, backoff.failed())
                continue
            backoff.succeeded()
            pause = CHECK_SECONDS
            self.health.progress(TASK)


def _lease_condition(job_id: str, tenant_id: str, attempt: int, worker_id: str) -> Condition:
    return Condition(
        "lease:" + job_id,
        LEASE_EXPIRED,
        tenant_id,
        f"job {job_id} was running past its lease (attempt {attempt} on worker {worker_id}); "
        "the worker stopped heartbeating",
        subject=job_id,
    )
