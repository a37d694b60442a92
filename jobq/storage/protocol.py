"""The store seam (SPEC §10, CONVENTIONS rule 1): the domain operations every
backend provides, split by the consumer that needs them, and the small values
they exchange.

What a backend must honour (IMPLEMENTATION.md, "The store seam"):
- every method that may touch a database is `async`, reads included;
- no callbacks into the store: limits are parameters (`RunningLimits`);
- jobs handed out are versions, never shared with the store (a handler gets
  its own copy); changes are announced as values by id (`JobChanged`,
  `DeliveryChanged`) that can cross processes;
- the heartbeat answers back (`Beat`: leases lost, cancels requested);
- maintenance returns what it did (`Reaped`);
- deliveries are leased like jobs (`claim_deliveries`), so several senders
  never send one twice at once.
Each mutating method is atomic and durable when it returns; it raises
`StoreUnavailable` (and nothing changed) when it cannot be made durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from jobq.core.models import Job, ListQuery, NewJob, Status
from jobq.core.outcomes import Outcome
from jobq.rules.alerts import Alert
from jobq.rules.delivery_policy import Decision
from jobq.rules.outbox import Delivery
from jobq.rules.ratelimit import RateDecision

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class JobChanged:
    """A job's new version is durable. `version` is that version when the
    backend has it at hand (the JSON store, in its own process); consumers
    that need the job and get None fetch it by id (`get_many`)."""

    job_id: str
    tenant_id: str
    status: Status
    attempt: int
    ended: bool = False  # it entered a terminal state in this change
    version: Job | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class DeliveryChanged:
    """A webhook delivery was made, attempted or redelivered, durably."""

    delivery_id: str
    job_id: str | None
    tenant_id: str
    status: str
    lane: str | None
    version: Delivery | None = field(default=None, compare=False, repr=False)


Event = JobChanged | DeliveryChanged
# Called with the events of one commit, in order, once it is durable; it must not block.
EventListener = Callable[[Sequence[Event]], None]


@dataclass(slots=True)
class Listeners:
    """Who hears of changes once they are durable."""

    listeners: list[EventListener] = field(default_factory=list)

    def publish(self, events: Sequence[Event]) -> None:
        """Tell every listener; a broken one must not turn a durable change into an error."""
        if not events:
            return
        for listener in self.listeners:
            try:
                listener(events)
            except Exception:
                logger.exception("action=listener_failed events=%d", len(events))


@dataclass(frozen=True, slots=True)
class RunningLimits:
    """How many jobs each tenant may have running at once, across every worker."""

    per_tenant: Mapping[str, int]
    default: int

    def of(self, tenant_id: str) -> int:
        return self.per_tenant.get(tenant_id, self.default)


@dataclass(frozen=True, slots=True)
class LeaseRef:
    """One attempt a worker holds: the job and its attempt number (the fence)."""

    job_id: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Beat:
    """What a heartbeat learned: attempts whose lease is gone (expired and
    taken over, or the job purged) and attempts cancelled elsewhere. The
    worker stops both; their outcomes would be refused as stale."""

    lost: list[LeaseRef]
    cancel_requested: list[LeaseRef]


@dataclass(frozen=True, slots=True)
class Reaped:
    """What one round of maintenance did: jobs cancelled because they expired
    before starting, and attempts failed because their lease ran out."""

    expired: list[str]
    lease_lost: list[LeaseRef]


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


# Renders the answer to a submit from the new jobs and their waiting reasons:
# the web layer's codec. The store keeps the bytes with the Idempotency-Key
# and a replay sends them as they were, without the store knowing their shape.
AnswerCodec = Callable[[list[Job], list[str | None]], bytes]


@dataclass(frozen=True, slots=True)
class SubmitResult:
    job_ids: list[str]  # the jobs the answer is about (the first request's, on a replay)
    answer: bytes  # the body to send: made by the codec now, or remembered
    replayed: bool


# ---------------------------------------------------------------- the protocol, by consumer


class JobReads(Protocol):
    """What the API, the dashboard and the live updates read."""

    async def get(self, job_id: str, tenant_id: str | None) -> Job | None:
        """The job, or None when it does not exist or belongs to another tenant."""
        ...
    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        """The jobs that still exist, in the order asked (any tenant: callers scope)."""
        ...
    async def list_jobs(self, query: ListQuery) -> tuple[list[Job], str | None]: ...
    async def counts(self, tenant_id: str | None) -> dict[str, int]: ...
    async def waiting_reasons(
        self, jobs: Iterable[Job], now: datetime, limits: RunningLimits
    ) -> list[str | None]: ...
    async def deliveries(self, job_id: str, tenant_id: str | None) -> list[Delivery]: ...
    async def get_deliveries(self, delivery_ids: Sequence[str]) -> list[Delivery]:
        """The deliveries that still exist, in the order asked (any tenant: callers scope)."""
        ...
    async def delivery_counts(self, tenant_id: str | None) -> dict[str, int]: ...
    async def alerts(self, tenant_id: str | None) -> list[Alert]: ...


class JobWrites(Protocol):
    """What the API changes: submits and the operator's actions."""

    async def submit(
        self,
        tenant_id: str,
        jobs: list[NewJob],
        idem: IdemRequest | None,
        now: datetime,
        *,
        max_queued: int,
        max_stored_bytes: int | None = None,
        limits: RunningLimits,
        encode: AnswerCodec,
    ) -> SubmitResult: ...
    async def cancel(self, job_id: str, tenant_id: str | None, actor: str, now: datetime) -> Job: ...
    async def retry(self, job_id: str, tenant_id: str | None, actor: str, now: datetime) -> Job: ...
    async def bulk(
        self, query: ListQuery, job_ids: list[str] | None, action: str, actor: str, now: datetime
    ) -> tuple[int, int]: ...
    async def redeliver(self, job_id: str, tenant_id: str | None, actor: str, now: datetime) -> Delivery: ...


class LimitStore(Protocol):
    """Limits that must hold across every API process (SPEC §4): a tenant's
    submit rate, and the bad API keys an address may send a minute. Time is
    the injected clock's `now`, never the database's."""

    async def take_submit_tokens(
        self, tenant_id: str, count: int, *, per_minute: int, burst: int, now: datetime
    ) -> RateDecision: ...
    async def give_back_submit_tokens(self, tenant_id: str, count: int) -> None:
        """Return tokens taken for a submit that then stored nothing."""
        ...
    async def note_bad_key(self, address: str, *, limit: int, now: datetime) -> int:
        """Count a bad key from `address`; the seconds it must wait instead
        (0: counted, within its `limit` a minute)."""
        ...


class WorkerStore(Protocol):
    """All the worker pool uses."""

    async def claim(
        self, worker_id: str, limit: int, *, lease_seconds: float, limits: RunningLimits, now: datetime
    ) -> Claimed: ...
    async def heartbeat(self, leases: Sequence[LeaseRef], *, until: datetime, now: datetime) -> Beat: ...
    async def report_progress(
        self, lease: LeaseRef, fraction: float, message: str | None, now: datetime
    ) -> None: ...
    async def finish(self, lease: LeaseRef, outcome: Outcome, now: datetime) -> Job:
        """Settle a running attempt; raises `StaleAttempt` if it lost its lease."""
        ...
    async def reap(self, now: datetime) -> Reaped: ...
    async def purge(self, now: datetime, retention_seconds: float) -> int: ...
    async def next_due(self) -> datetime | None:
        """When the next scheduled or retrying job falls due (None: none)."""
        ...
    def subscribe(self, listener: EventListener) -> None: ...


class OutboxStore(Protocol):
    """All the webhook sender uses."""

    async def claim_deliveries(
        self, sender_id: str, now: datetime, *, limit: int, per_tenant: int, lease_seconds: float
    ) -> list[Delivery]:
        """Up to `limit` due deliveries, now leased to `sender_id` until
        `now + lease_seconds`: at most `per_tenant` of one tenant (and one
        alert notification) leased to this sender at once, tenants taken in turn."""
        ...
    async def record_delivery_attempt(
        self, delivery_id: str, attempt: dict[str, object], decision: Decision, now: datetime
    ) -> Delivery | None:
        """Append one attempt, move the delivery as `decision` says, and release its lease."""
        ...
    async def next_delivery_at(self) -> datetime | None: ...
    def subscribe(self, listener: EventListener) -> None: ...


class AlertStore(Protocol):
    """All the alert monitor uses."""

    async def get(self, job_id: str, tenant_id: str | None) -> Job | None: ...
    async def get_many(self, job_ids: Sequence[str]) -> list[Job]: ...
    async def counts(self, tenant_id: str | None) -> dict[str, int]: ...
    async def delivery_counts(self, tenant_id: str | None) -> dict[str, int]: ...
    async def latest_failed_delivery(self, tenant_id: str) -> Delivery | None: ...
    async def alerts(self, tenant_id: str | None) -> list[Alert]: ...
    async def save_alerts(self, alerts: list[Alert], notifications: list[Delivery]) -> None: ...
    def subscribe(self, listener: EventListener) -> None: ...


class Store(JobReads, JobWrites, LimitStore, WorkerStore, OutboxStore, AlertStore, Protocol):
    """A whole backend: every consumer's part, and its own lifecycle."""

    async def open(self, now: datetime) -> None:
        """Connect or lock, load, and recover what an earlier process left running."""
        ...
    async def ready(self) -> bool: ...
    async def close(self) -> None: ...
    def stats(self) -> dict[str, int]:
        """Monotonic counters of the backend's own work, for /metrics/prometheus."""
        ...
