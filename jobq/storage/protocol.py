"""The store seam (CONVENTIONS rule 1): the domain operations every backend
provides, each atomic as a whole, and the small types they exchange."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from jobq.core.models import Job, ListQuery, NewJob, Outcome
from jobq.rules.alerts import Alert
from jobq.rules.delivery_policy import Decision
from jobq.rules.outbox import Delivery

JobListener = Callable[[Job], None]
DeliveryListener = Callable[[Delivery], None]


@dataclass(slots=True)
class Listeners:
    """Who hears of changes once they are durable: of jobs, and of deliveries."""

    jobs: list[JobListener] = field(default_factory=list)
    deliveries: list[DeliveryListener] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class IdemRequest:
    key: str
    fingerprint: str
    route: str


@dataclass(frozen=True, slots=True)
class Claimed:
    """Jobs now `running` for the caller, and when that claim is durable.

    The handlers may start before `durable` resolves: delivery is
    at-least-once, and an outcome reported for these attempts is written after
    the claim, so it can never be durable without it. If `durable` fails the
    claim was undone and the attempts' outcomes will be refused as stale."""

    jobs: list[Job]
    durable: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class SubmitResult:
    status_code: int
    bodies: list[dict[str, Any]]
    replayed: bool


class Store(Protocol):
    """Every mutating method is atomic and durable when it returns; it raises
    `StoreUnavailable` (and nothing changed) when it cannot be made durable."""

    async def submit(
        self,
        tenant_id: str,
        jobs: list[NewJob],
        idem: IdemRequest | None,
        now: datetime,
        *,
        max_queued: int,
        max_stored_bytes: int | None = None,
    ) -> SubmitResult: ...
    def get(self, job_id: str, tenant_id: str | None) -> Job | None: ...
    def list_jobs(self, query: ListQuery) -> tuple[list[Job], str | None]: ...
    async def claim(self, now: datetime, limit: int, worker_id: str, lease_seconds: float) -> Claimed: ...
    def heartbeat(self, job_id: str, attempt: int, lease_until: datetime) -> None: ...
    async def report_progress(
        self, job_id: str, attempt: int, fraction: float, message: str | None, now: datetime
    ) -> None: ...
    async def finish(self, job_id: str, attempt: int, outcome: Outcome, now: datetime) -> Job: ...
    async def cancel(self, job_id: str, tenant_id: str | None, actor: str, now: datetime) -> Job: ...
    async def retry(self, job_id: str, tenant_id: str | None, actor: str, now: datetime) -> Job: ...
    async def bulk(
        self, query: ListQuery, job_ids: list[str] | None, action: str, actor: str, now: datetime
    ) -> tuple[int, int]: ...
    async def maintain(self, now: datetime) -> None: ...
    async def purge(self, now: datetime, retention_seconds: float) -> int: ...
    def next_wakeup(self) -> datetime | None: ...
    def counts(self, tenant_id: str | None) -> dict[str, int]: ...
    def deliveries(self, job_id: str, tenant_id: str | None) -> list[Delivery]: ...
    # The outbox and alerts (SPEC §9); see store_outbox.py for the contracts.
    def due_deliveries(
        self, now: datetime, room: Callable[[str | None], int], skip: Container[str]
    ) -> list[Delivery]: ...
    def next_delivery_at(self) -> datetime | None: ...
    def delivery_counts(self, tenant_id: str | None) -> dict[str, int]: ...
    def latest_failed_delivery(self, tenant_id: str) -> Delivery | None: ...
    async def record_delivery_attempt(
        self, delivery_id: str, attempt: dict[str, object], decision: Decision, now: datetime
    ) -> Delivery | None: ...
    async def redeliver(self, job_id: str, tenant_id: str | None, actor: str, now: datetime) -> Delivery: ...
    def alerts(self, tenant_id: str | None) -> list[Alert]: ...
    async def save_alerts(self, alerts: list[Alert], notifications: list[Delivery]) -> None: ...
    def waiting_reasons(self, jobs: Iterable[Job], now: datetime) -> list[str | None]: ...
    def subscribe(self, listener: JobListener) -> None:
        """`listener(job)` for each changed job, once the change is durable; it must not block."""
        ...
    def subscribe_deliveries(self, listener: DeliveryListener) -> None:
        """`listener(delivery)` for each changed delivery, once durable; it must not block."""
        ...
    def stats(self) -> dict[str, int]:
        """Monotonic counters of the backend's own work, for /metrics/prometheus."""
        ...
    async def open(self, now: datetime) -> None:
        """Connect or lock, load, and recover what an earlier process left running."""
        ...
    async def ready(self) -> bool: ...
    async def close(self) -> None: ...


def jobs_as_api(store: Store, jobs: list[Job], now: datetime, *, with_history: bool = False) -> list[dict[str, Any]]:
    """The jobs as the HTTP API (and the live updates) show them, each with its
    computed `waitingReason`."""
    reasons = store.waiting_reasons(jobs, now)
    return [job.to_api(reason, with_history=with_history) for job, reason in zip(jobs, reasons, strict=True)]
