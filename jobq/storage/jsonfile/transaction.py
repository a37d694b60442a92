"""One atomic change to the JSON store's memory, with its undo and its records.

A store operation opens a `Transaction`, applies new job versions through it
(`put`, `remove`, `put_idem`, `remove_idem`), then `commit`s: the records are
queued for the journal and the call returns once they are durable. If the write
fails, the journal calls `undo` (restoring every previous version, newest
first) and the commit raises `StoreUnavailable`. Listeners hear about changed
jobs and deliveries only after they are durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

from jobq.core.errors import JobqError, StoreUnavailable
from jobq.core.models import Job
from jobq.rules.alerts import Alert
from jobq.rules.outbox import Delivery
from jobq.storage.jsonfile.index import IdemRecord, JobIndex, idem_storage_key
from jobq.storage.protocol import DeliveryChanged, Event, JobChanged, Listeners

logger = logging.getLogger(__name__)

CommitFn = Callable[[dict[str, Any], Callable[[], None]], "asyncio.Future[None]"]


class Transaction:
    def __init__(self, index: JobIndex) -> None:
        self.index = index
        self._undo: list[Callable[[], None]] = []
        self._changes: dict[str, Any] = {}
        self._jobs: dict[str, Job] = {}
        self._deliveries: dict[str, Delivery] = {}
        self._rolled_back = False

    def put(self, job: Job) -> Job:
        old = self.index.put(job)
        self._undo.append(lambda: self._restore(job.job_id, old))
        self._changes["job:" + job.job_id] = job.to_record()
        self._jobs[job.job_id] = job
        return job

    def remove(self, job_id: str) -> None:
        old = self.index.remove(job_id)
        if old is not None:
            self._undo.append(lambda: self._restore(job_id, old))
            self._changes["job:" + job_id] = None

    def _restore(self, job_id: str, old: Job | None) -> None:
        if old is None:
            self.index.remove(job_id)
        else:
            self.index.put(old)

    def put_idem(self, record: IdemRecord) -> None:
        old = self.index.put_idem(record)
        self._undo.append(lambda: self._restore_idem(record, old))
        self._changes[record.storage_key] = record.to_record()

    def remove_idem(self, tenant_id: str, key: str) -> None:
        old = self.index.remove_idem(tenant_id, key)
        if old is not None:
            self._undo.append(lambda: self._restore_idem(old, old))
            self._changes[idem_storage_key(tenant_id, key)] = None

    def put_delivery(self, delivery: Delivery) -> None:
        """Also marks the delivery unwritten until this commit ends, so the
        sender never sends what a failed write would take back."""
        old = self.index.put_delivery(delivery)
        self._undo.append(lambda: self._restore_delivery(delivery, old))
        self._changes[delivery.storage_key] = delivery.to_record()
        unwritten = self.index.unwritten_deliveries
        unwritten[delivery.delivery_id] = unwritten.get(delivery.delivery_id, 0) + 1
        self._deliveries[delivery.delivery_id] = delivery

    def remove_delivery(self, delivery_id: str) -> None:
        old = self.index.remove_delivery(delivery_id)
        if old is not None:
            self._undo.append(lambda: self._restore_delivery(old, old))
            self._changes[old.storage_key] = None

    def _restore_delivery(self, delivery: Delivery, old: Delivery | None) -> None:
        self.index.remove_delivery(delivery.delivery_id)
        if old is not None:
            self.index.put_delivery(old)

    def put_alert(self, alert: Alert) -> None:
        old = self.index.put_alert(alert)
        self._undo.append(lambda: self._restore_alert(alert, old))
        self._changes[alert.storage_key] = alert.to_record()

    def remove_alert(self, alert_id: str) -> None:
        old = self.index.remove_alert(alert_id)
        if old is not None:
            self._undo.append(lambda: self._restore_alert(old, old))
            self._changes[old.storage_key] = None

    def _restore_alert(self, alert: Alert, old: Alert | None) -> None:
        self.index.remove_alert(alert.alert_id)
        if old is not None:
            self.index.put_alert(old)

    def _restore_idem(self, record: IdemRecord, old: IdemRecord | None) -> None:
        self.index.remove_idem(record.tenant_id, record.key)
        if old is not None:
            self.index.put_idem(old)

    # A class-based context manager (`atomic`): cheaper than a generator's, on every change.
    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is None:
            return
        self.rollback()
        error = _as_store_error(exc)
        if error is exc:
            return  # raised as it is
        logger.exception("action=change_failed changes=%d", len(self._changes), exc_info=exc)
        raise error from exc

    def latest(self, job_id: str) -> Job | None:
        """The version this transaction wrote, or the index's."""
        return self._jobs.get(job_id) or self.index.jobs.get(job_id)

    @property
    def empty(self) -> bool:
        return not self._changes

    def rollback(self) -> None:
        """Restore every previous version, newest first (the write failed, or
        building the change raised). Only the first call does anything."""
        if self._rolled_back:
            return
        self._rolled_back = True
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def _ended(self) -> None:
        """The write is done (durable, or failed and undone). The undo steps
        go: each refers back to this transaction, a cycle only the garbage
        collector (made rare by `app.tune_gc`) would free, and it would keep
        every replaced version of every job alive until then."""
        self._undo.clear()
        unwritten = self.index.unwritten_deliveries
        for delivery_id in self._deliveries:
            left = unwritten.pop(delivery_id) - 1
            if left > 0:
                unwritten[delivery_id] = left

    def commit_nowait(self, commit_fn: CommitFn, listeners: Listeners) -> asyncio.Future[list[Job]]:
        """Queue the records now (so journal order is the order of changes) and
        return a future of the changed jobs, resolved once they are durable
        (listeners are told first). It fails with `StoreUnavailable`, with
        everything undone, if the write fails."""
        result: asyncio.Future[list[Job]] = asyncio.get_running_loop().create_future()
        if self.empty:
            result.set_result([])
            return result
        try:
            written = commit_fn(self._changes, self.rollback)
        except BaseException as exc:
            self.rollback()
            self._ended()
            raise _as_store_error(exc) from exc
        changed = list(self._jobs.values())

        def on_written(future: asyncio.Future[None]) -> None:
            self._ended()
            error = future.exception()
            if error is not None:
                result.set_exception(error)
            else:
                self._publish(changed, listeners)
                result.set_result(changed)

        written.add_done_callback(on_written)
        return result

    async def commit(self, commit_fn: CommitFn, listeners: Listeners) -> list[Job]:
        """Durable when this returns; the changed jobs' final versions, in order.
        Raises `StoreUnavailable` with everything undone."""
        if self.empty:
            return []
        try:
            written = commit_fn(self._changes, self.rollback)
        except BaseException as exc:
            self.rollback()
            self._ended()
            raise _as_store_error(exc) from exc
        try:
            await written
        finally:
            self._ended()
        changed = list(self._jobs.values())
        self._publish(changed, listeners)
        return changed

    def _publish(self, changed: list[Job], listeners: Listeners) -> None:
        events: list[Event] = [
            JobChanged(j.job_id, j.tenant_id, j.status, j.attempts, j.terminal and j.finished_at == j.updated_at, j)
            for j in changed
        ]
        events.extend(
            DeliveryChanged(d.delivery_id, d.job_id, d.tenant_id, d.status, d.lane, d)
            for d in self._deliveries.values()
        )
        listeners.publish(events)


def atomic(index: JobIndex) -> Transaction:
    """A transaction whose changes to memory are all undone if building them
    raises, whatever the exception: nothing half-applied is ever visible. A
    `JobqError` (a 404, a 409) passes through as it is; anything else is a
    fault in jobq, logged with its traceback and raised as `StoreUnavailable`
    (a 503 with Retry-After, never a bare 500). Use as `with atomic(index) as tx:`."""
    return Transaction(index)


def _as_store_error(exc: BaseException) -> BaseException:
    if isinstance(exc, JobqError) or not isinstance(exc, Exception):
        return exc
    return StoreUnavailable("jobq could not apply this change; nothing was changed", retry_after=5)
