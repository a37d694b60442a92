"""The PostgreSQL store's webhook outbox and alerts (SPEC §9). Deliveries
are written in the transaction that ends their job (`lifecycle.ended`) and
leased to one sender at a time: a lease is an owner and an end on the row,
taken under a transaction-level advisory lock so two senders' claims never
interleave, and given back when the attempt is recorded."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta

from jobq.core.errors import Conflict, NotFound, RateLimited
from jobq.core.models import OperatorAction
from jobq.core.timefmt import to_ms
from jobq.rules.alerts import Alert
from jobq.rules.delivery_policy import Decision
from jobq.rules.outbox import DELIVERY_STATUSES, PENDING, Delivery, attempted, redelivered, round_robin
from jobq.rules.transitions import REDELIVER_INTERVAL_SECONDS, redeliver_wait_seconds, with_action
from jobq.storage.postgres import rows
from jobq.storage.postgres.operator import Operator
from jobq.storage.postgres.unit import HISTORY, HOT, Unit

DELIVERY_CLAIM_LOCK = 0x6A6F6271_0003
_DELIVERY = "SELECT id, lease_owner, lease_until, doc FROM delivery"


class Outbox(Operator):
    async def deliveries(self, job_id: str, tenant_id: str | None) -> list[Delivery]:
        """The job's webhook deliveries, oldest first; `NotFound` like `get`."""
        if await self.get(job_id, tenant_id) is None:
            raise NotFound(f"job {job_id} not found")
        async with self._connection("deliveries") as conn:
            found = await conn.fetch(f"{_DELIVERY} WHERE job_id = $1 ORDER BY seq", job_id)
        return [rows.delivery_of(row) for row in found]

    async def get_deliveries(self, delivery_ids: Sequence[str]) -> list[Delivery]:
        if not delivery_ids:
            return []
        async with self._connection("get_deliveries") as conn:
            found = await conn.fetch(f"{_DELIVERY} WHERE id = ANY($1::text[])", list(delivery_ids))
        by_id = {row["id"]: row for row in found}
        return [rows.delivery_of(by_id[d]) for d in delivery_ids if d in by_id]

    async def claim_deliveries(
        self, sender_id: str, now: datetime, *, limit: int, per_tenant: int, lease_seconds: float
    ) -> list[Delivery]:
        # `now` as given, not to the millisecond: a notification made at this instant is due.

        async def body(unit: Unit) -> list[Delivery]:
            conn = unit.conn
            await conn.execute("SELECT pg_advisory_xact_lock($1)", DELIVERY_CLAIM_LOCK)
            held: Counter[str | None] = Counter()
            for row in await conn.fetch(
                "SELECT lane, count(*) AS n FROM delivery WHERE status = 'pending' AND lease_until > $1"
                " AND (lease_owner = $2 OR lane IS NULL) GROUP BY lane",
                now,
                sender_id,
            ):
                held[row["lane"]] = row["n"]
            found = await conn.fetch(
                "SELECT id, lane, doc FROM ("
                "  SELECT id, lane, doc, next_attempt_at, seq,"
                "   row_number() OVER (PARTITION BY lane ORDER BY next_attempt_at, seq) AS rank"
                "  FROM delivery WHERE status = 'pending' AND next_attempt_at <= $1"
                "   AND (lease_until IS NULL OR lease_until <= $1)"
                ") d WHERE rank <= $2 ORDER BY next_attempt_at, seq",
                now,
                max(per_tenant, 1),
            )
            room: dict[str | None, int] = {}
            due: list[Delivery] = []
            for row in found:
                lane = row["lane"]
                left = room.setdefault(lane, (1 if lane is None else per_tenant) - held[lane])
                if left > 0:
                    due.append(rows.delivery_of(row))
                    room[lane] = left - 1
            claimed = round_robin(due)[:limit]
            if claimed:
                await conn.execute(
                    "UPDATE delivery SET lease_owner = $2, lease_until = $3 WHERE id = ANY($1::text[])",
                    [d.delivery_id for d in claimed],
                    sender_id,
                    now + timedelta(seconds=lease_seconds),
                )
            return claimed

        return await self._transact("claim_deliveries", body)

    async def next_delivery_at(self) -> datetime | None:
        async with self._connection("next_delivery_at") as conn:
            due: datetime | None = await conn.fetchval(
                "SELECT min(next_attempt_at) FROM delivery WHERE status = 'pending'"
            )
        return due

    async def delivery_counts(self, tenant_id: str | None) -> dict[str, int]:
        """Tenants' deliveries by status (alert notifications not counted)."""
        async with self._connection("delivery_counts") as conn:
            if tenant_id is None:
                found = await conn.fetch(
                    "SELECT status, count(*) AS n FROM delivery WHERE job_id IS NOT NULL GROUP BY status"
                )
            else:
                found = await conn.fetch(
                    "SELECT status, count(*) AS n FROM delivery WHERE job_id IS NOT NULL AND tenant_id = $1"
                    " GROUP BY status",
                    tenant_id,
                )
        counts = {row["status"]: row["n"] for row in found}
        return {status: counts.get(status, 0) for status in DELIVERY_STATUSES}

    async def latest_failed_delivery(self, tenant_id: str) -> Delivery | None:
        async with self._connection("latest_failed_delivery") as conn:
            row = await conn.fetchrow(
                f"{_DELIVERY} WHERE tenant_id = $1 AND job_id IS NOT NULL AND status = 'failed'"
                " ORDER BY changed DESC LIMIT 1",
                tenant_id,
            )
        return None if row is None else rows.delivery_of(row)

    async def alerts(self, tenant_id: str | None) -> list[Alert]:
        async with self._connection("alerts") as conn:
            if tenant_id is None:
                found = await conn.fetch("SELECT doc FROM alert ORDER BY raised_at, id")
            else:
                found = await conn.fetch("SELECT doc FROM alert WHERE tenant_id = $1 ORDER BY raised_at, id", tenant_id)
        return [rows.alert_of(row) for row in found]

    async def record_delivery_attempt(
        self, delivery_id: str, attempt: dict[str, object], decision: Decision, now: datetime
    ) -> Delivery | None:
        """Append one attempt, move the delivery as `decision` says, release its lease."""
        now = to_ms(now)
        next_at = None
        if decision.status == PENDING:
            assert decision.delay_seconds is not None
            next_at = now + timedelta(milliseconds=round(decision.delay_seconds * 1000))

        async def body(unit: Unit) -> Delivery | None:
            row = await unit.conn.fetchrow(f"{_DELIVERY} WHERE id = $1 FOR UPDATE", delivery_id)
            if row is None:
                return None
            updated = attempted(rows.delivery_of(row), attempt, decision.status, next_at)
            unit.put_delivery(updated, new=False)
            await unit.conn.execute(
                "UPDATE delivery SET lease_owner = NULL, lease_until = NULL WHERE id = $1", delivery_id
            )
            return updated

        return await self._transact("record_delivery_attempt", body)

    async def redeliver(self, job_id: str, tenant_id: str | None, actor: str, now: datetime) -> Delivery:
        """The job's final webhook again, same `webhook-id`, due now (see the JSON store)."""
        now = to_ms(now)

        async def body(unit: Unit) -> Delivery:
            found = await unit.load([job_id], table=HISTORY) or await unit.load([job_id], table=HOT)
            if not found or (tenant_id is not None and found[0].tenant_id != tenant_id):
                raise NotFound(f"job {job_id} not found")
            job = found[0]
            row = await unit.conn.fetchrow(
                f"{_DELIVERY} WHERE job_id = $1 ORDER BY seq DESC LIMIT 1 FOR UPDATE", job_id
            )
            if job.webhook_url is None:
                raise Conflict(f"job {job_id} has no webhookUrl")
            if not job.terminal or row is None:
                raise Conflict(f"job {job_id} is {job.status.value}; only an ended job's webhook can be redelivered")
            wait = redeliver_wait_seconds(job, now)
            if wait:
                raise RateLimited(
                    f"job {job_id}'s webhook was redelivered less than {REDELIVER_INTERVAL_SECONDS} s ago",
                    retry_after=wait,
                )
            delivery = unit.put_delivery(redelivered(rows.delivery_of(row), now), new=False)
            unit.put(job.evolve(**with_action(job, OperatorAction("redeliver", actor, now)), updated_at=now))
            return delivery

        return await self._transact("redeliver", body)

    async def save_alerts(self, alerts: list[Alert], notifications: list[Delivery]) -> None:
        """Raise or clear `alerts` and queue their `notifications`, in one transaction."""

        async def body(unit: Unit) -> None:
            if alerts:
                await unit.conn.executemany(
                    "INSERT INTO alert (id, tenant_id, raised_at, cleared_at, doc) VALUES ($1, $2, $3, $4, $5)"
                    " ON CONFLICT (id) DO UPDATE SET tenant_id = $2, raised_at = $3, cleared_at = $4, doc = $5",
                    [rows.alert_values(alert) for alert in alerts],
                )
            for delivery in notifications:
                unit.put_delivery(delivery, new=True)

        await self._transact("save_alerts", body)
