"""Operator alerts (SPEC §9): the record, and the pure rule that turns the
conditions seen now into alerts raised and cleared.

Three kinds, each with a stable id, so one condition is one alert however
often it is seen:
- `dlq_not_empty` (`dlq:<tenant>`): the tenant's DLQ has held jobs for
  `JOBQ_DLQ_ALERT_SECONDS`; cleared when it is empty.
- `delivery_failed` (`deliveries:<tenant>`): webhook deliveries of the tenant
  failed for good; cleared when none is failed any more (redelivered, or
  purged with its job). One alert per tenant, not per delivery: a receiver
  that is down for a day must not page the operator once per job.
- `lease_expired` (`lease:<jobId>`): a job was found running past its lease
  (its worker stopped heartbeating); cleared when that job has ended.

An alert is raised once (`raised_at`) and cleared once (`cleared_at`); seen
again after it cleared, it is raised anew. `alert_monitor.py` finds the
conditions and makes the changes durable.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from jobq.core.timefmt import format_ts, parse_ts

DLQ_NOT_EMPTY, DELIVERY_FAILED, LEASE_EXPIRED = "dlq_not_empty", "delivery_failed", "lease_expired"
ALERT_KINDS = (DLQ_NOT_EMPTY, DELIVERY_FAILED, LEASE_EXPIRED)


@dataclass(frozen=True, slots=True)
class Condition:
    """Something wrong, seen now: what an alert with `alert_id` would say."""

    alert_id: str
    kind: str
    tenant_id: str
    message: str
    subject: str | None = None  # the job or delivery it is about


@dataclass(frozen=True, slots=True)
class Alert:
    alert_id: str
    kind: str
    tenant_id: str
    message: str
    raised_at: datetime
    subject: str | None = None
    cleared_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.cleared_at is None

    @property
    def storage_key(self) -> str:
        return "alert:" + self.alert_id

    def condition(self) -> Condition:
        """The condition this alert was raised for."""
        return Condition(self.alert_id, self.kind, self.tenant_id, self.message, self.subject)

    def to_record(self) -> dict[str, Any]:
        return {
            "alertId": self.alert_id,
            "kind": self.kind,
            "tenantId": self.tenant_id,
            "message": self.message,
            "subject": self.subject,
            "raisedAt": format_ts(self.raised_at),
            "clearedAt": format_ts(self.cleared_at),
        }

    to_api = to_record

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Alert:
        raised = parse_ts(r["raisedAt"])
        assert raised is not None
        return cls(
            alert_id=r["alertId"],
            kind=r["kind"],
            tenant_id=r["tenantId"],
            message=r["message"],
            subject=r.get("subject"),
            raised_at=raised,
            cleared_at=parse_ts(r.get("clearedAt")),
        )


def reconcile(known: Mapping[str, Alert], seen: Mapping[str, Condition], now: datetime) -> list[Alert]:
    """The alerts that change now: each condition seen without an active
    alert is raised, each active alert whose condition is gone is cleared.
    An active alert whose condition is still seen stays as it was (its
    message is not rewritten, so it is never raised twice)."""
    changes: list[Alert] = []
    for alert_id, condition in seen.items():
        alert = known.get(alert_id)
        if alert is None or not alert.active:
            changes.append(
                Alert(
                    alert_id, condition.kind, condition.tenant_id, condition.message, now, subject=condition.subject
                )
            )
    for alert_id, alert in known.items():
        if alert.active and alert_id not in seen:
            changes.append(replace(alert, cleared_at=now))
    return changes


def dlq_condition(tenant_id: str, fatal: int, since: datetime, now: datetime, after_seconds: float) -> Condition | None:
    """The DLQ alert's condition, when the tenant's DLQ has held `fatal` jobs since `since` long enough."""
    if fatal <= 0 or (now - since).total_seconds() < after_seconds:
        return None
    return Condition(
        "dlq:" + tenant_id,
        DLQ_NOT_EMPTY,
        tenant_id,
        f"the DLQ of {tenant_id} has held jobs for {after_seconds:g} s or more",
    )
