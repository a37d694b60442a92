"""The webhook outbox (SPEC §9): one delivery per job that ends with a
`webhookUrl`, written in the same commit as the state change that ends it,
so a crash can neither lose nor invent a delivery. Sending it is the
delivery task's job (`webhooks.py`); here are the record and the rule that
makes one.

A delivery's life: `pending` (due at `next_attempt_at`) until an attempt is
answered 2xx (`delivered`) or 410 (`stopped`, the receiver asked for no more),
or the retry schedule runs out (`failed`). `redeliver` makes an ended one
`pending` again for one more attempt (`redelivery`), with the same id.
Alert notifications (`alerts.py`) are deliveries too, with no job: they go to
the operator's `JOBQ_ALERT_URL`, signed with `JOBQ_ALERT_SECRET`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from jobq.core.ids import new_hex_id
from jobq.core.models import Job, Status, encode_opaque_fields
from jobq.core.timefmt import format_ts, parse_ts

MAX_ATTEMPTS_KEPT = 50
# A delivery's status (see the module docstring).
PENDING, DELIVERED, FAILED, STOPPED = "pending", "delivered", "failed", "stopped"
DELIVERY_STATUSES = (PENDING, DELIVERED, FAILED, STOPPED)
EVENTS = {Status.SUCCEEDED: "job.succeeded", Status.FATAL: "job.fatal", Status.CANCELLED: "job.cancelled"}


@dataclass(slots=True)
class Delivery:
    """One event to POST to one URL. `delivery_id` is the `webhook-id`: the
    same on every retry and redelivery of the event."""

    delivery_id: str
    job_id: str | None  # None: an alert notification for the operator
    tenant_id: str
    event: str
    url: str
    body: dict[str, Any]
    created_at: datetime
    next_attempt_at: datetime
    status: str = PENDING  # one of DELIVERY_STATUSES
    attempts: list[dict[str, Any]] = field(default_factory=list)
    redelivery: bool = False  # the pending attempt is a redelivery: one try, no schedule

    @property
    def storage_key(self) -> str:
        return "delivery:" + self.delivery_id

    @property
    def for_operator(self) -> bool:
        return self.job_id is None

    @property
    def lane(self) -> str | None:
        """Whose share of the sender it uses: its tenant's, or None (the operator's)."""
        return None if self.job_id is None else self.tenant_id

    @property
    def attempt_count(self) -> int:
        return int(self.attempts[-1]["attempt"]) if self.attempts else 0

    def to_record(self) -> dict[str, Any]:
        return {
            "deliveryId": self.delivery_id,
            "jobId": self.job_id,
            "tenantId": self.tenant_id,
            "event": self.event,
            "url": self.url,
            "body": self.body,
            "status": self.status,
            "createdAt": format_ts(self.created_at),
            "nextAttemptAt": format_ts(self.next_attempt_at),
            "attempts": self.attempts,
            "redelivery": self.redelivery,
        }

    def to_api(self) -> dict[str, Any]:
        """What `GET /jobs/{id}/deliveries` shows: everything but the body."""
        record = self.to_record()
        del record["body"]
        return record

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Delivery:
        created, next_at = parse_ts(r["createdAt"]), parse_ts(r["nextAttemptAt"])
        assert created is not None and next_at is not None
        return cls(
            delivery_id=r["deliveryId"],
            job_id=r["jobId"],
            tenant_id=r["tenantId"],
            event=r["event"],
            url=r["url"],
            body=_body_from_record(r["body"]),
            created_at=created,
            next_attempt_at=next_at,
            status=r["status"],
            attempts=list(r.get("attempts") or []),
            redelivery=bool(r.get("redelivery", False)),
        )


def _body_from_record(body: Any) -> Any:
    """A stored body with the job inside it held as `to_api` makes it (payload
    and result encoded), not as decoded trees: after a restart a webhook of a
    60 KB payload costs its bytes again, not megabytes of small objects."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        return {**body, "data": encode_opaque_fields(body["data"])}
    return body


def new_delivery(job_id: str | None, tenant_id: str, event: str, url: str, data: Any, now: datetime) -> Delivery:
    """A pending delivery of `{type: event, timestamp, data}`, due now, with a fresh `msg_` id."""
    return Delivery(
        delivery_id="msg_" + new_hex_id(),
        job_id=job_id,
        tenant_id=tenant_id,
        event=event,
        url=url,
        body={"type": event, "timestamp": format_ts(now), "data": data},
        created_at=now,
        next_attempt_at=now,
    )


def delivery_for(job: Job, now: datetime) -> Delivery | None:
    """The delivery a job that has just ended owes its `webhookUrl`, if any."""
    event = EVENTS.get(job.status)
    if event is None or job.webhook_url is None:
        return None
    return new_delivery(job.job_id, job.tenant_id, event, job.webhook_url, job.to_api(None), now)


def attempted(
    delivery: Delivery, attempt: dict[str, Any], status: str, next_attempt_at: datetime | None
) -> Delivery:
    """The next version of `delivery` after one attempt (records are replaced,
    never changed in place). Only the newest `MAX_ATTEMPTS_KEPT` attempts are kept."""
    attempts = [*delivery.attempts, attempt][-MAX_ATTEMPTS_KEPT:]
    return replace(
        delivery,
        status=status,
        attempts=attempts,
        next_attempt_at=next_attempt_at or delivery.next_attempt_at,
        redelivery=False,
    )


def redelivered(delivery: Delivery, now: datetime) -> Delivery:
    """Due now. An ended delivery gets one more attempt (`redelivery`); a
    pending one is only brought forward and keeps its schedule."""
    if delivery.status == PENDING:
        return replace(delivery, next_attempt_at=now)
    return replace(delivery, status=PENDING, next_attempt_at=now, redelivery=True)


def round_robin(due: list[Delivery]) -> list[Delivery]:
    """`due` reordered to take one of each lane in turn, so the global limit
    is shared fairly when more is due than there is room for."""
    lanes: dict[str | None, list[Delivery]] = {}
    for delivery in due:
        lanes.setdefault(delivery.lane, []).append(delivery)
    ordered: list[Delivery] = []
    queues = list(lanes.values())
    depth = 0
    while queues:
        queues = [q for q in queues if len(q) > depth]
        ordered.extend(q[depth] for q in queues)
        depth += 1
    return ordered
