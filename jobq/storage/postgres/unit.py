"""One SQL transaction's changes to jobs and deliveries (the PostgreSQL
counterpart of the JSON store's `Transaction`): rows are loaded (locked),
turned into `Job` versions, changed by the pure rules, and written back in a
few statements at `flush`. A job that ends moves from `job` to `job_history`
in the same transaction; a job retried from the DLQ moves back. The events
of the change are collected here and published by the store after COMMIT."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from jobq.core.models import Job, Status
from jobq.rules.outbox import Delivery
from jobq.storage.postgres import rows
from jobq.storage.postgres.rows import JOB_COLUMNS, NO_LEASE, Conn, Lease
from jobq.storage.protocol import DeliveryChanged, Event, JobChanged

HOT, HISTORY = "job", "job_history"
_PARAMS = ", ".join(f"${n}" for n in range(1, len(JOB_COLUMNS.split(",")) + 1))
_SET = ", ".join(f"{name.strip()} = ${n}" for n, name in enumerate(JOB_COLUMNS.split(","), start=1) if n > 1)
_DELIVERY_INSERT = (
    "INSERT INTO delivery (id, seq, changed, job_id, tenant_id, lane, status, next_attempt_at, doc)"
    " VALUES ($1, nextval('job_seq'), nextval('change_seq'), $2, $3, $4, $5, $6, $7)"
)
_DELIVERY_UPDATE = (
    "UPDATE delivery SET changed = nextval('change_seq'), status = $2, next_attempt_at = $3, doc = $4 WHERE id = $1"
)


class Unit:
    """The jobs and deliveries one transaction reads and changes."""

    def __init__(self, conn: Conn, aging_seconds: float) -> None:
        self.conn = conn
        self.aging_seconds = aging_seconds
        self.loaded: dict[str, Job] = {}  # as read, by id
        self.jobs: dict[str, Job] = {}  # versions put, by id, in the order first put
        self._place: dict[str, str | None] = {}  # where the row is now: HOT, HISTORY, None (new)
        self._seq: dict[str, int] = {}
        self._lease: dict[str, Lease] = {}
        self._deliveries: dict[str, tuple[Delivery, bool]] = {}  # id -> (version, new)
        self._dirty: dict[str, Job] = {}  # put since the last `write`
        self._dirty_deliveries: dict[str, tuple[Delivery, bool]] = {}
        self._peeked: dict[str, Job] = {}

    # ---- reading ---------------------------------------------------------

    async def load(self, job_ids: Iterable[str], *, table: str = HOT, lock: bool = True) -> list[Job]:
        """The rows of `job_ids` found in `table`, locked (in id order, so two
        transactions lock them in the same order), as jobs."""
        ids = sorted(set(job_ids) - self.loaded.keys())
        if ids:
            suffix = " ORDER BY id FOR NO KEY UPDATE" if lock else ""
            found = await self.conn.fetch(f"SELECT {JOB_COLUMNS} FROM {table} WHERE id = ANY($1::text[]){suffix}", ids)
            self.take(found, table)
        return [self.latest(i) for i in job_ids if i in self.loaded]  # type: ignore[misc]

    def take(self, found: Sequence[Any], table: str) -> list[Job]:
        """Rows read (and locked) by the caller's own query, now part of this unit."""
        jobs = []
        for row in found:
            job = rows.job_of(row)
            self.loaded[job.job_id] = job
            self._place[job.job_id] = table
            self._seq[job.job_id] = row["seq"]
            self._lease[job.job_id] = (row["lease_token"], row["worker_id"], row["owner"])
            jobs.append(job)
        return jobs

    def latest(self, job_id: str) -> Job | None:
        """The job's version in this unit: put, else as loaded, else None (not read)."""
        return self.jobs.get(job_id) or self.loaded.get(job_id)

    def lease_token(self, job_id: str) -> int | None:
        return self._lease.get(job_id, NO_LEASE)[0]

    def peek(self, found: Sequence[Any]) -> None:
        """Rows read without a lock, only to look at (`lookup`), never written."""
        for row in found:
            self._peeked[row["id"]] = rows.job_of(row)

    def lookup(self, job_id: str) -> Job | None:
        """`latest`, else a peeked row: what the rules' `lookup` sees."""
        return self.latest(job_id) or self._peeked.get(job_id)

    # ---- changing --------------------------------------------------------

    def put(self, job: Job, *, lease: Lease | None = None) -> Job:
        if job.job_id not in self.loaded and job.job_id not in self._place:
            self._place[job.job_id] = None
        self.jobs[job.job_id] = job
        self._dirty[job.job_id] = job
        if lease is not None:
            self._lease[job.job_id] = lease
        return job

    def put_delivery(self, delivery: Delivery, *, new: bool) -> Delivery:
        was = self._dirty_deliveries.get(delivery.delivery_id)
        entry = (delivery, new or (was is not None and was[1]))
        self._deliveries[delivery.delivery_id] = self._dirty_deliveries[delivery.delivery_id] = entry
        return delivery

    # ---- writing ---------------------------------------------------------

    async def write(self) -> None:
        """Write the changes made since the last `write` (the transaction stays open)."""
        conn = self.conn
        dirty, self._dirty = self._dirty, {}
        dirty_deliveries, self._dirty_deliveries = self._dirty_deliveries, {}
        new = [j for j in dirty.values() if self._place[j.job_id] is None]
        if new:
            seqs = await conn.fetch("SELECT nextval('job_seq') AS n FROM generate_series(1, $1)", len(new))
            for job, row in zip(new, seqs, strict=True):
                self._seq[job.job_id] = row["n"]
        inserts: dict[str, list[tuple[Any, ...]]] = {HOT: [], HISTORY: []}
        updates: dict[str, list[tuple[Any, ...]]] = {HOT: [], HISTORY: []}
        leaving: dict[str, list[str]] = {HOT: [], HISTORY: []}
        ended: list[str] = []
        for job in dirty.values():
            target = HISTORY if job.terminal else HOT
            place = self._place[job.job_id]
            lease = self._lease.get(job.job_id, NO_LEASE) if job.status is Status.RUNNING else NO_LEASE
            values = rows.job_values(job, self._seq[job.job_id], self.aging_seconds, lease)
            if place == target:
                updates[target].append(values)
            else:
                inserts[target].append(values)
                if place is not None:
                    leaving[place].append(job.job_id)
                if target == HISTORY:
                    ended.append(job.job_id)
            self._place[job.job_id] = target
        for table in (HOT, HISTORY):
            if leaving[table]:
                await conn.execute(f"DELETE FROM {table} WHERE id = ANY($1::text[])", leaving[table])
        for table in (HOT, HISTORY):
            if inserts[table]:
                await conn.executemany(f"INSERT INTO {table} ({JOB_COLUMNS}) VALUES ({_PARAMS})", inserts[table])
            if updates[table]:
                await conn.executemany(f"UPDATE {table} SET {_SET} WHERE id = $1", updates[table])
        edges = [(dep, j.job_id) for j in new for dep in j.depends_on]
        if edges:
            await conn.executemany("INSERT INTO job_dependency (depends_on_id, job_id) VALUES ($1, $2)", edges)
        if ended:
            await conn.execute("DELETE FROM job_dependency WHERE job_id = ANY($1::text[])", ended)
        inserted = [rows.delivery_insert(d) for d, is_new in dirty_deliveries.values() if is_new]
        changed = [rows.delivery_update(d) for d, is_new in dirty_deliveries.values() if not is_new]
        if inserted:
            await conn.executemany(_DELIVERY_INSERT, inserted)
        if changed:
            await conn.executemany(_DELIVERY_UPDATE, changed)

    def events(self) -> list[Event]:
        """What this transaction changed, to publish once it has committed. The
        versions ride along while events stay in this process (the live feed
        then shows each status as it was, not the job's state when it fetches);
        the other processes hear of them without versions (`notify.py`)."""
        events: list[Event] = [
            JobChanged(j.job_id, j.tenant_id, j.status, j.attempts, j.terminal and j.finished_at == j.updated_at, j)
            for j in self.jobs.values()
        ]
        events.extend(
            DeliveryChanged(d.delivery_id, d.job_id, d.tenant_id, d.status, d.lane, d)
            for d, _ in self._deliveries.values()
        )
        return events
