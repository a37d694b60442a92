"""The JSON store's in-memory state: every job, and the indexes that make
claims, counts, dependency promotion and idempotency cheap.

Jobs are replaced, never mutated in place: `put(new_version)`. Entries of the
timer and expiry heaps hold the job object they were made for, so an entry
whose job has since been replaced is recognised as stale by identity and
skipped (lazy deletion). The ready lists are sorted lists, kept exact, so a
job's place in line is a O(log n) lookup. Each tenant's retained bytes (the
sum of its jobs' `stored_size`) are kept as a running total for
`maxStoredBytes`.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sortedcontainers import SortedList

from jobq.core.models import CLAIMABLE, Job, Status, encode_json
from jobq.rules.alerts import Alert
from jobq.rules.jobs import claim_key
from jobq.rules.outbox import FAILED, PENDING, Delivery


def _answer_of(record: dict[str, Any]) -> bytes:
    """A remembered answer's bytes; records written before answers were kept
    as bytes hold the job views (`bodies`), wrapped as the route answered them."""
    if "answer" in record:
        return encode_json(record["answer"])
    bodies = record["bodies"]
    return encode_json({"jobs": bodies} if record["route"].endswith("/batch") else bodies[0])


@dataclass(slots=True)
class IdemRecord:
    """An Idempotency-Key and the answer it was first given (SPEC §4)."""

    tenant_id: str
    key: str
    fingerprint: str
    route: str
    answer: bytes  # the first answer's body, as the web layer encoded it
    job_ids: list[str]
    created_at: str
    committed: bool = field(default=False)

    @property
    def storage_key(self) -> str:
        return idem_storage_key(self.tenant_id, self.key)

    def to_record(self) -> dict[str, Any]:
        return {
            "tenantId": self.tenant_id,
            "key": self.key,
            "fingerprint": self.fingerprint,
            "route": self.route,
            "answer": orjson.Fragment(self.answer),
            "jobIds": self.job_ids,
            "createdAt": self.created_at,
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> IdemRecord:
        return cls(
            tenant_id=r["tenantId"],
            key=r["key"],
            fingerprint=r["fingerprint"],
            route=r["route"],
            answer=_answer_of(r),
            job_ids=r["jobIds"],
            created_at=r["createdAt"],
            committed=True,
        )


def idem_storage_key(tenant_id: str, key: str) -> str:
    return f"idem:{tenant_id}:{key}"


ReadyEntry = tuple[float, int, str]
TimerEntry = tuple[datetime, int, Job]


class JobIndex:
    def __init__(self, aging_seconds: float) -> None:
        self.aging_seconds = aging_seconds
        self.jobs: dict[str, Job] = {}
        self.by_tenant: dict[str, dict[str, None]] = {}
        # Job ids per (tenant, status), and each job's place in creation order,
        # so a status filter need not scan every job.
        self.by_status: dict[tuple[str, Status], dict[str, None]] = {}
        self._order: dict[str, int] = {}
        self.counts: dict[str, Counter[Status]] = {}
        self._stored_bytes: dict[str, int] = {}
        self.running: dict[str, dict[str, Job]] = {}
        # Due claimable jobs per tenant, in claim order: (claim key, seq, job id).
        self.ready: dict[str, SortedList] = {}
        self._ready_entry: dict[str, ReadyEntry] = {}
        self.timers: list[TimerEntry] = []
        self.expiries: list[TimerEntry] = []
        self.dependents: dict[str, set[str]] = {}
        self.idem: dict[tuple[str, str], IdemRecord] = {}
        self.deliveries: dict[str, Delivery] = {}
        self.deliveries_of_job: dict[str, list[str]] = {}
        # Pending deliveries by lane (a tenant, or None for alert notifications),
        # in the order they fall due: (next_attempt_at, delivery id).
        self.pending_deliveries: dict[str | None, SortedList] = {}
        self.delivery_counts: dict[str, Counter[str]] = {}
        self.failed_deliveries: dict[str, None] = {}  # ids of tenants' deliveries that failed for good
        # Deliveries changed by a commit not yet durable, and by how many such commits.
        self.unwritten_deliveries: dict[str, int] = {}
        # Deliveries being sent: id -> (sender, lease end). In memory only, like job leases.
        self.delivery_leases: dict[str, tuple[str, datetime]] = {}
        self.alerts: dict[str, Alert] = {}
        self.idem_of_job: dict[str, tuple[str, str]] = {}
        self._seq = itertools.count()

    # ---- writes ---------------------------------------------------------

    def put(self, job: Job) -> Job | None:
        """Insert or replace `job`; returns the version it replaced."""
        old = self.jobs.get(job.job_id)
        if old is not None:
            self._unindex(old)
        else:
            self.by_tenant.setdefault(job.tenant_id, {})[job.job_id] = None
            self._order[job.job_id] = next(self._seq)
        self.jobs[job.job_id] = job
        self._stored_bytes[job.tenant_id] = self._stored_bytes.get(job.tenant_id, 0) + job.stored_size
        counts = self.counts.get(job.tenant_id)
        if counts is None:
            counts = self.counts[job.tenant_id] = Counter()
        counts[job.status] += 1
        in_status = self.by_status.get((job.tenant_id, job.status))
        if in_status is None:
            in_status = self.by_status[(job.tenant_id, job.status)] = {}
        in_status[job.job_id] = None
        if job.status is Status.RUNNING:
            self.running.setdefault(job.tenant_id, {})[job.job_id] = job
        elif job.status in CLAIMABLE:
            heapq.heappush(self.timers, (job.next_run_at, next(self._seq), job))
        elif job.status is Status.WAITING:
            for dep in job.depends_on:
                self.dependents.setdefault(dep, set()).add(job.job_id)
        if job.expires_at is not None and job.attempts == 0 and not job.terminal:
            heapq.heappush(self.expiries, (job.expires_at, next(self._seq), job))
        return old

    def remove(self, job_id: str) -> Job | None:
        old = self.jobs.pop(job_id, None)
        if old is None:
            return None
        self._unindex(old)
        tenant_jobs = self.by_tenant.get(old.tenant_id, {})
        tenant_jobs.pop(job_id, None)
        self._order.pop(job_id, None)
        self.dependents.pop(job_id, None)
        return old

    def _unindex(self, old: Job) -> None:
        self._stored_bytes[old.tenant_id] -= old.stored_size
        counts = self.counts[old.tenant_id]
        counts[old.status] -= 1
        del self.by_status[(old.tenant_id, old.status)][old.job_id]
        entry = self._ready_entry.pop(old.job_id, None)
        if entry is not None:
            self.ready[old.tenant_id].remove(entry)
        if old.status is Status.RUNNING:
            self.running[old.tenant_id].pop(old.job_id, None)
        elif old.status is Status.WAITING:
            for dep in old.depends_on:
                waiting = self.dependents.get(dep)
                if waiting is not None:
                    waiting.discard(old.job_id)
                    if not waiting:
                        del self.dependents[dep]

    def put_idem(self, record: IdemRecord) -> IdemRecord | None:
        key = (record.tenant_id, record.key)
        old = self.idem.get(key)
        self.idem[key] = record
        for job_id in record.job_ids:
            self.idem_of_job[job_id] = key
        return old

    def remove_idem(self, tenant_id: str, key: str) -> IdemRecord | None:
        old = self.idem.pop((tenant_id, key), None)
        if old is not None:
            for job_id in old.job_ids:
                if self.idem_of_job.get(job_id) == (tenant_id, key):
                    del self.idem_of_job[job_id]
        return old

    def put_delivery(self, delivery: Delivery) -> Delivery | None:
        old = self.deliveries.get(delivery.delivery_id)
        if old is not None:
            self._unindex_delivery(old)
        elif delivery.job_id is not None:
            self.deliveries_of_job.setdefault(delivery.job_id, []).append(delivery.delivery_id)
        self.deliveries[delivery.delivery_id] = delivery
        if delivery.status == PENDING:
            lane = self.pending_deliveries.get(delivery.lane)
            if lane is None:
                lane = self.pending_deliveries[delivery.lane] = SortedList()
            lane.add((delivery.next_attempt_at, delivery.delivery_id))
        if not delivery.for_operator:
            counts = self.delivery_counts.get(delivery.tenant_id)
            if counts is None:
                counts = self.delivery_counts[delivery.tenant_id] = Counter()
            counts[delivery.status] += 1
            if delivery.status == FAILED:
                self.failed_deliveries[delivery.delivery_id] = None
        return old

    def remove_delivery(self, delivery_id: str) -> Delivery | None:
        old = self.deliveries.pop(delivery_id, None)
        if old is not None:
            self._unindex_delivery(old)
            if old.job_id is not None:
                ids = self.deliveries_of_job.get(old.job_id, [])
                if delivery_id in ids:
                    ids.remove(delivery_id)
                if not ids:
                    self.deliveries_of_job.pop(old.job_id, None)
        return old

    def _unindex_delivery(self, old: Delivery) -> None:
        if old.status == PENDING:
            self.pending_deliveries[old.lane].remove((old.next_attempt_at, old.delivery_id))
        if not old.for_operator:
            self.delivery_counts[old.tenant_id][old.status] -= 1
            self.failed_deliveries.pop(old.delivery_id, None)

    def due_deliveries(self, lane: str | None, now: datetime) -> Iterator[Delivery]:
        """The lane's pending deliveries due by `now`, the longest due first."""
        for due_at, delivery_id in self.pending_deliveries.get(lane, ()):
            if due_at > now:
                return
            yield self.deliveries[delivery_id]

    def next_delivery_at(self) -> datetime | None:
        return min((lane[0][0] for lane in self.pending_deliveries.values() if lane), default=None)

    def put_alert(self, alert: Alert) -> Alert | None:
        old = self.alerts.get(alert.alert_id)
        self.alerts[alert.alert_id] = alert
        return old

    def remove_alert(self, alert_id: str) -> Alert | None:
        return self.alerts.pop(alert_id, None)

    # ---- reads ----------------------------------------------------------

    def is_current(self, job: Job) -> bool:
        return self.jobs.get(job.job_id) is job

    def promote_due(self, now: datetime) -> None:
        """Move claimable jobs whose `nextRunAt` has come into their tenant's ready list."""
        timers = self.timers
        while timers and timers[0][0] <= now:
            _, seq, job = heapq.heappop(timers)
            if self.is_current(job) and job.status in CLAIMABLE and job.job_id not in self._ready_entry:
                entry = (claim_key(job.priority, job.next_run_at, self.aging_seconds), seq, job.job_id)
                ready = self.ready.get(job.tenant_id)
                if ready is None:
                    ready = self.ready[job.tenant_id] = SortedList()
                ready.add(entry)
                self._ready_entry[job.job_id] = entry

    def pop_ready(self, tenant_id: str) -> Job | None:
        """The tenant's first due job in claim order, taken off the ready list."""
        ready = self.ready.get(tenant_id)
        if not ready:
            return None
        _, _, job_id = ready.pop(0)
        del self._ready_entry[job_id]
        return self.jobs[job_id]

    def tenants_with_ready(self) -> list[str]:
        return [t for t, ready in self.ready.items() if ready]

    def jobs_ahead(self, job: Job) -> int:
        """How many due jobs of the same tenant come before `job` in claim order."""
        entry = self._ready_entry.get(job.job_id)
        if entry is None:
            return 0
        return int(self.ready[job.tenant_id].index(entry))

    def next_timer(self) -> datetime | None:
        while self.timers and not self.is_current(self.timers[0][2]):
            heapq.heappop(self.timers)
        return self.timers[0][0] if self.timers else None

    def pop_expired(self, now: datetime) -> Iterator[Job]:
        while self.expiries and self.expiries[0][0] <= now:
            _, _, job = heapq.heappop(self.expiries)
            if self.is_current(job) and job.attempts == 0 and not job.terminal:
                yield job

    def running_jobs(self) -> list[Job]:
        return [job for jobs in self.running.values() for job in jobs.values()]

    def stored_bytes(self, tenant_id: str) -> int:
        """About how many bytes the tenant's retained jobs take in storage: the
        sum of their `Job.stored_size`, every status counted until purged."""
        return self._stored_bytes.get(tenant_id, 0)

    def running_count(self, tenant_id: str) -> int:
        return len(self.running.get(tenant_id, ()))

    def active_count(self, tenant_id: str) -> int:
        counts = self.counts.get(tenant_id)
        if counts is None:
            return 0
        return sum(
            n for status, n in counts.items() if status not in (Status.SUCCEEDED, Status.FATAL, Status.CANCELLED)
        )

    def newest_first(self, tenant_id: str | None, statuses: frozenset[Status] | None = None) -> Iterator[Job]:
        """The tenant's jobs (every job for None), newest first. With
        `statuses`, only those are promised: when they are few (under an
        eighth of the jobs) they come from the status index, sorted; otherwise
        from a scan, where the caller's filter finds them densely."""
        jobs = self.jobs
        if statuses:
            tenants = list(self.by_tenant) if tenant_id is None else [tenant_id]
            groups = [self.by_status.get((t, s), {}) for t in tenants for s in statuses]
            scope = len(jobs) if tenant_id is None else len(self.by_tenant.get(tenant_id, {}))
            if sum(map(len, groups)) * 8 <= scope:
                ids = sorted((i for group in groups for i in group), key=self._order.__getitem__, reverse=True)
                for job_id in ids:
                    yield jobs[job_id]
                return
        if tenant_id is None:
            every: Iterator[str] = reversed(jobs)
        else:
            every = reversed(self.by_tenant.get(tenant_id, {}))
        for job_id in every:
            yield jobs[job_id]
