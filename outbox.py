"""The webhook outbox (SPEC §9): one delivery per job that ends with a
`webhookUrl`, written in the same commit as the state change that ends it,
so a crash can neither lose nor invent a delivery. Sending it is the
delivery task's job; here are the record and the rule that makes one."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from models import Job, Status, format_ts, new_id, parse_ts

EVENTS = {Status.SUCCEEDED: "job.succeeded", Status.FATAL: "job.fatal", Status.CANCELLED: "job.cancelled"}


@dataclass(slots=True)
class Delivery:
    """One event to POST to one URL. `delivery_id` is the `webhook-id`: the
    same on every retry and redelivery of the event."""

    delivery_id: str
    job_id: str
    tenant_id: str
    event: str
    url: str
    body: dict[str, Any]
    created_at: datetime
    next_attempt_at: datetime
    status: str = "pending"  # pending | delivered | failed | stopped
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def storage_key(self) -> str:
        return "delivery:" + self.delivery_id

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
            body=r["body"],
            created_at=created,
            next_attempt_at=next_at,
            status=r["status"],
            attempts=list(r.get("attempts") or []),
        )


def delivery_for(job: Job, now: datetime) -> Delivery | None:
    """The delivery a job that has just ended owes its `webhookUrl`, if any."""
    event = EVENTS.get(job.status)
    if event is None or job.webhook_url is None:
        return None
    body = {"type": event, "timestamp": format_ts(now), "data": job.to_api(None)}
    return Delivery(
        delivery_id="msg_" + new_id().replace("-", ""),
        job_id=job.job_id,
        tenant_id=job.tenant_id,
        event=event,
        url=job.webhook_url,
        body=body,
        created_at=now,
        next_attempt_at=now,
    )
