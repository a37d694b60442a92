"""The JSON store's delivery and alert operations (SPEC §9), a part of
`JsonStore` kept in its own module: the webhook outbox the sender drains,
redelivery, and the alerts the monitor raises and clears.

Every mutating call here is atomic and durable when it returns, like the
rest of the store; it raises `StoreUnavailable` with nothing changed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from jobq.core.errors import Conflict, RateLimited
from jobq.core.models import Job, OperatorAction
from jobq.core.timefmt import to_ms
from jobq.rules.alerts import Alert
from jobq.rules.delivery_policy import Decision
from jobq.rules.outbox import DELIVERY_STATUSES, PENDING, Delivery, attempted, redelivered, round_robin
from jobq.rules.transitions import REDELIVER_INTERVAL_SECONDS, redeliver_wait_seconds, with_action
from jobq.storage.jsonfile.index import JobIndex
from jobq.storage.jsonfile.transaction import Transaction, atomic


class OutboxOperations:
    """Mixed into `JsonStore`, which provides `index`, `_commit` and `_get_visible`."""

    index: JobIndex
    if TYPE_CHECKING:

        async def _commit(self, tx: Transaction) -> list[Job]: ...
        def _get_visible(self, job_id: str, tenant_id: str | None) -> Job: ...

    # ---- reads -------------------------------------------------------------

    async def deliveries(self, job_id: str, tenant_id: str | None) -> list[Delivery]:
        """The job's webhook deliveries, oldest first; `NotFound` like `get`."""
        self._get_visible(job_id, tenant_id)
        return [self.index.deliveries[d] for d in self.index.deliveries_of_job.get(job_id, ())]

    async def get_deliveries(self, delivery_ids: Sequence[str]) -> list[Delivery]:
        deliveries = self.index.deliveries
        return [deliveries[d] for d in delivery_ids if d in deliveries]

    async def claim_deliveries(
        self, sender_id: str, now: datetime, *, limit: int, per_tenant: int, lease_seconds: float
    ) -> list[Delivery]:
        """Due deliveries leased to `sender_id` (see the protocol). Leases live
        in memory, like job leases: after a restart every pending delivery is
        due again. One whose commit is still being written is left out: that
        write may yet fail."""
        leases = self.index.delivery_leases
        held: Counter[str | None] = Counter()
        for delivery_id, (holder, until) in list(leases.items()):
            delivery = self.index.deliveries.get(delivery_id)
            if until <= now or delivery is None or delivery.status != PENDING:
                del leases[delivery_id]
            elif holder == sender_id or delivery.lane is None:  # notifications go one at a time, globally
                held[delivery.lane] += 1
        due: list[Delivery] = []
        unwritten = self.index.unwritten_deliveries
        for lane in list(self.index.pending_deliveries):
            room = (1 if lane is None else per_tenant) - held[lane]
            for delivery in self.index.due_deliveries(lane, now):
                if room <= 0:
                    break
                if delivery.delivery_id in leases or delivery.delivery_id in unwritten:
                    continue
                due.append(delivery)
                room -= 1
        claimed = round_robin(due)[:limit]
        until = now + timedelta(seconds=lease_seconds)
        for delivery in claimed:
            leases[delivery.delivery_id] = (sender_id, until)
        return claimed

    async def next_delivery_at(self) -> datetime | None:
        """When the next pending delivery falls due (None: none is pending)."""
        return self.index.next_delivery_at()

    async def delivery_counts(self, tenant_id: str | None) -> dict[str, int]:
        """Tenants' deliveries by status (alert notifications not counted)."""
        totals: Counter[str] = Counter()
        for tenant, counts in self.index.delivery_counts.items():
            if tenant_id is None or tenant == tenant_id:
                totals.update(counts)
        return {status: totals[status] for status in DELIVERY_STATUSES}

    async def latest_failed_delivery(self, tenant_id: str) -> Delivery | None:
        """The tenant's delivery that most recently failed for good, if any."""
        for delivery_id in reversed(self.index.failed_deliveries):
            delivery = self.index.deliveries[delivery_id]
            if delivery.tenant_id == tenant_id:
                return delivery
        return None

    async def alerts(self, tenant_id: str | None) -> list[Alert]:
        """The alerts the scope may see, active and recently cleared, oldest raised first."""
        found = [a for a in self.index.alerts.values() if tenant_id is None or a.tenant_id == tenant_id]
        return sorted(found, key=lambda a: (a.raised_at, a.alert_id))

    # ---- the sender's side -------------------------------------------------

    async def record_delivery_attempt(
        self, delivery_id: str, attempt: dict[str, object], decision: Decision, now: datetime
    ) -> Delivery | None:
        """Append one attempt and move the delivery as `decision` says (a
        pending one falls due again after `decision.delay_seconds`). None when
        the delivery is gone (purged with its job while it was being sent)."""
        now = to_ms(now)
        delivery = self.index.deliveries.get(delivery_id)
        if delivery is None:
            return None
        next_at = None
        if decision.status == PENDING:
            assert decision.delay_seconds is not None
            next_at = now + timedelta(milliseconds=round(decision.delay_seconds * 1000))
        with atomic(self.index) as tx:
            updated = attempted(delivery, attempt, decision.status, next_at)
            tx.put_delivery(updated)
        await self._commit(tx)
        self.index.delivery_leases.pop(delivery_id, None)
        return updated

    # ---- operator actions --------------------------------------------------

    async def redeliver(self, job_id: str, tenant_id: str | None, actor: str, now: datetime) -> Delivery:
        """Send the job's final webhook again, with the same `webhook-id`, due
        now. `NotFound` like `get`; `Conflict` when the job has no webhook or
        has not ended. Recorded on the job as an operator action."""
        now = to_ms(now)
        job = self._get_visible(job_id, tenant_id)
        ids = self.index.deliveries_of_job.get(job_id)
        if job.webhook_url is None:
            raise Conflict(f"job {job_id} has no webhookUrl")
        if not job.terminal or not ids:
            raise Conflict(f"job {job_id} is {job.status.value}; only an ended job's webhook can be redelivered")
        wait = redeliver_wait_seconds(job, now)
        if wait:
            raise RateLimited(
                f"job {job_id}'s webhook was redelivered less than {REDELIVER_INTERVAL_SECONDS} s ago",
                retry_after=wait,
            )
        with atomic(self.index) as tx:
            delivery = redelivered(self.index.deliveries[ids[-1]], now)
            tx.put_delivery(delivery)
            tx.put(job.evolve(**with_action(job, OperatorAction("redeliver", actor, now)), updated_at=now))
        await self._commit(tx)
        return delivery

    # ---- alerts ------------------------------------------------------------

    async def save_alerts(self, alerts: list[Alert], notifications: list[Delivery]) -> None:
        """Raise or clear `alerts` and queue their `notifications`, in one commit."""
        with atomic(self.index) as tx:
            for alert in alerts:
                tx.put_alert(alert)
            for delivery in notifications:
                tx.put_delivery(delivery)
        await self._commit(tx)

    def _purge_outbox(self, tx: Transaction, cutoff: datetime) -> int:
        """Alerts cleared and alert notifications ended before `cutoff` (a
        job's deliveries go with the job)."""
        purged = 0
        for alert in list(self.index.alerts.values()):
            if alert.cleared_at is not None and alert.cleared_at < cutoff:
                tx.remove_alert(alert.alert_id)
                purged += 1
        for delivery in list(self.index.deliveries.values()):
            if delivery.for_operator and delivery.status != PENDING and delivery.next_attempt_at < cutoff:
                tx.remove_delivery(delivery.delivery_id)
                purged += 1
        return purged

