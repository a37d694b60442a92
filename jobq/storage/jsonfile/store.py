"""The store seam (SPEC §10, CONVENTIONS rule 1) and its JSON backend.

`Store` is a small protocol of domain operations, each atomic as a whole and
durable when its awaitable returns. `JsonStore` keeps every job in memory
(`jobindex.JobIndex`) and makes each change durable through
`journal.DurableLog` (`jobs.json` snapshot plus fsynced journal, group commit).
A change is applied to memory first and undone if its write fails, so a failed
write leaves nothing behind: no phantom job, no remembered Idempotency-Key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jobq.core.errors import (
    CorruptStore,
    IdempotencyInFlight,
    IdempotencyMismatch,
    PayloadTooLarge,
    QueueFull,
    StaleAttempt,
    StorageQuotaExceeded,
    StoreUnavailable,
)
from jobq.core.fsio import FileSystem
from jobq.core.ids import new_id
from jobq.core.models import LEASE_EXPIRED_ERROR, Job, NewJob, Status
from jobq.core.outcomes import Failed, Outcome
from jobq.core.timefmt import format_ts, to_ms
from jobq.rules.alerts import Alert
from jobq.rules.outbox import Delivery
from jobq.rules.submission import build_jobs
from jobq.rules.transitions import RECOVERED_ERROR, RECOVERY_FAILED_ERROR, RetryPolicy
from jobq.storage.jsonfile.index import IdemRecord, JobIndex
from jobq.storage.jsonfile.journal import DurableLog
from jobq.storage.jsonfile.lifecycle import cancel, park, settle, start_attempt
from jobq.storage.jsonfile.limits import LimitOperations
from jobq.storage.jsonfile.operator import OperatorOperations
from jobq.storage.jsonfile.outbox import OutboxOperations
from jobq.storage.jsonfile.reads import ReadOperations
from jobq.storage.jsonfile.transaction import Transaction, atomic
from jobq.storage.protocol import (
    AnswerCodec,
    Beat,
    Claimed,
    EventListener,
    IdemRequest,
    LeaseRef,
    Listeners,
    Reaped,
    RunningLimits,
    SubmitResult,
)

logger = logging.getLogger(__name__)

STORAGE_RETRY_AFTER_SECONDS = 60


class JsonStore(ReadOperations, OutboxOperations, OperatorOperations, LimitOperations):
    """The JSON-file backend; one process per data directory (an `flock` on
    the directory keeps others out). Reads are answered from memory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        retry: RetryPolicy,
        aging_seconds: float = 300.0,
        worker_slots: int = 0,
        fs: FileSystem | None = None,
        compact_bytes: int = 64 << 20,
    ) -> None:
        LimitOperations.__init__(self)
        self.log = DurableLog(data_dir, fs=fs, compact_bytes=compact_bytes)
        self.index = JobIndex(aging_seconds)
        self.policy = retry
        self.worker_slots = worker_slots  # this process's pool, for waitingReason (0: none)
        self._listeners = Listeners()
        self._rr = 0

    # ---- lifecycle of the store itself ---------------------------------

    async def open(self, now: datetime) -> None:
        """Lock and load the data directory, start the journal writer, and
        recover jobs an earlier process left `running` (their attempt failed).
        Raises `StoreLocked` or `CorruptStore`."""
        jobs: list[Job] = []

        def decode(records: Mapping[str, Any]) -> None:
            # Before the load rewrites anything: a record jobq cannot read leaves the files as they are.
            try:
                for key, value in records.items():
                    if key.startswith("job:"):
                        jobs.append(Job.from_record(value))
                    elif key.startswith("idem:"):
                        self.index.put_idem(IdemRecord.from_record(value))
                    elif key.startswith("delivery:"):
                        self.index.put_delivery(Delivery.from_record(value))
                    elif key.startswith("alert:"):
                        self.index.put_alert(Alert.from_record(value))
            except (KeyError, TypeError, ValueError, AssertionError) as exc:
                raise CorruptStore(
                    f"{self.log.snapshot_path} or a journal beside it holds a record jobq cannot read: {exc!r}; "
                    "the files were left untouched"
                ) from exc

        self.log.load(decode)
        for job in sorted(jobs, key=lambda j: j.created_at):
            self.index.put(job)
        await self._recover_running(to_ms(now))

    async def _recover_running(self, now: datetime) -> None:
        """Each job left `running` is settled as a failed attempt, in its own
        transaction, so one job whose recovery raises cannot stop the start:
        that one is parked in the DLQ with the reason, and named in the log."""
        for job in list(self.index.running_jobs()):
            logger.warning("action=recover jobId=%s tenantId=%s attempt=%d", job.job_id, job.tenant_id, job.attempts)
            try:
                with atomic(self.index) as tx:
                    settled = settle(tx, job, Failed(RECOVERED_ERROR), now, self.policy)
                    if settled.status is Status.RETRY:
                        tx.put(settled.evolve(next_run_at=now))
            except StoreUnavailable as exc:
                cause = exc.__cause__
                logger.error("action=recover_failed jobId=%s tenantId=%s error=%r", job.job_id, job.tenant_id, cause)
                tx = self._park(job, f"{RECOVERY_FAILED_ERROR}: {cause!r}", now)
            await self._commit(tx)

    def _park(self, job: Job, reason: str, now: datetime) -> Transaction:
        """`job` straight to `fatal` with `reason`, cancelling what waits on it;
        without the cascade if even that raises."""
        try:
            with atomic(self.index) as tx:
                park(tx, job, reason, now)
        except StoreUnavailable:
            with atomic(self.index) as tx:
                park(tx, job, reason, now, cascade=False)
        return tx

    async def ready(self) -> bool:
        # Probe even after a failed commit: readiness must come back with the
        # disk, and an instance that is not ready may never get another commit.
        return await self.log.probe_writable()

    async def close(self) -> None:
        await self.log.close()

    def stats(self) -> dict[str, int]:
        return {"commits": self.log.commits, "fsyncs": self.log.fsyncs}

    def subscribe(self, listener: EventListener) -> None:
        self._listeners.listeners.append(listener)

    async def _commit(self, tx: Transaction) -> list[Job]:
        return await tx.commit(self.log.commit, self._listeners)

    # ---- submit ----------------------------------------------------------

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
    ) -> SubmitResult:
        """Store new jobs, durable when this returns. Refuses with `QueueFull`
        beyond `max_queued` unfinished jobs and with `StorageQuotaExceeded`
        (or `PayloadTooLarge` for a request that could never fit) when the
        tenant's retained jobs would take more than `max_stored_bytes`."""
        now = to_ms(now)
        if idem is not None:
            record = self.index.idem.get((tenant_id, idem.key))
            if record is not None:
                if record.fingerprint != idem.fingerprint:
                    raise IdempotencyMismatch(f"Idempotency-Key {idem.key!r} was used with a different request")
                if not record.committed:
                    raise IdempotencyInFlight(retry_after=1)
                return SubmitResult(record.job_ids, record.answer, replayed=True)
        if self.index.active_count(tenant_id) + len(jobs) > max_queued:
            raise QueueFull(f"tenant has {max_queued} unfinished jobs, the most allowed", retry_after=5)
        new_jobs = build_jobs(
            tenant_id, jobs, now, self.index.jobs.get, new_id, idem.key if idem else None
        )
        if max_stored_bytes is not None:
            self._check_stored_bytes(tenant_id, new_jobs, max_stored_bytes)
        with atomic(self.index) as tx:
            for job in new_jobs:
                tx.put(job)
            answer = encode(new_jobs, await self.waiting_reasons(new_jobs, now, limits))
            job_ids = [j.job_id for j in new_jobs]
            record = None
            if idem is not None:
                record = IdemRecord(
                    tenant_id, idem.key, idem.fingerprint, idem.route, answer, job_ids, format_ts(now) or ""
                )
                tx.put_idem(record)
        await self._commit(tx)
        if record is not None:
            record.committed = True
        self._log_submit(tenant_id, new_jobs)
        return SubmitResult(job_ids, answer, replayed=False)

    @staticmethod
    def _log_submit(tenant_id: str, jobs: list[Job]) -> None:
        """One INFO line a request (a batch of 1,000 jobs would take 1,000 lines,
        ~17 µs each); every job's own line at DEBUG (TRADEOFFS.md)."""
        first = jobs[0]
        if len(jobs) == 1:
            logger.info("action=submit jobId=%s tenantId=%s type=%s", first.job_id, tenant_id, first.type)
            return
        types = sorted({job.type for job in jobs})
        shown = ",".join(types[:10]) + (",..." if len(types) > 10 else "")
        logger.info(
            "action=submit_batch jobs=%d tenantId=%s firstJobId=%s lastJobId=%s types=%s",
            len(jobs), tenant_id, first.job_id, jobs[-1].job_id, shown,
        )
        if logger.isEnabledFor(logging.DEBUG):
            for job in jobs:
                logger.debug("action=submit jobId=%s tenantId=%s type=%s", job.job_id, tenant_id, job.type)

    def _check_stored_bytes(self, tenant_id: str, new_jobs: list[Job], limit: int) -> None:
        incoming = sum(job.stored_size for job in new_jobs)
        if incoming > limit:
            raise PayloadTooLarge(
                f"these jobs take {incoming} bytes, more than the tenant's maxStoredBytes ({limit}) allows in all"
            )
        stored = self.index.stored_bytes(tenant_id)
        if stored + incoming > limit:
            raise StorageQuotaExceeded(
                f"the tenant's retained jobs take {stored} bytes and these would add {incoming}, over its "
                f"maxStoredBytes ({limit}); space comes back as jobs end and are purged after retention",
                retry_after=STORAGE_RETRY_AFTER_SECONDS,
            )

    # ---- the worker's side ---------------------------------------------

    async def claim(
        self, worker_id: str, limit: int, *, lease_seconds: float, limits: RunningLimits, now: datetime
    ) -> Claimed:
        """Up to `limit` due jobs, now `running` under a lease: higher priority
        (with aging) first, tenants served round-robin within their maxRunning.
        Returns without waiting for the write (see `Claimed`)."""
        now = to_ms(now)
        self.index.promote_due(now)
        tenants = self.index.tenants_with_ready()
        if tenants:
            self._rr = (self._rr + 1) % len(tenants)
            tenants = tenants[self._rr :] + tenants[: self._rr]
        claimed: list[Job] = []
        with atomic(self.index) as tx:  # with nothing claimed, its commit is already done
            while tenants and len(claimed) < limit:
                before = len(claimed)
                for tenant in tenants:
                    if len(claimed) >= limit:
                        break
                    if self.index.running_count(tenant) >= limits.of(tenant):
                        continue
                    job = self.index.pop_ready(tenant)
                    if job is not None:
                        claimed.append(start_attempt(tx, job, worker_id, now, lease_seconds))
                if len(claimed) == before:
                    break
        return Claimed(claimed, tx.commit_nowait(self.log.commit, self._listeners))

    def _running_attempt(self, job_id: str, attempt: int) -> Job:
        job = self.index.jobs.get(job_id)
        if job is None or job.status is not Status.RUNNING or job.attempts != attempt:
            raise StaleAttempt(f"job {job_id} attempt {attempt} no longer holds the lease")
        return job

    async def heartbeat(self, leases: Sequence[LeaseRef], *, until: datetime, now: datetime) -> Beat:
        """Renew the leases still held; report the others. In the JSON store
        leases live in memory only: after a restart every running job is
        recovered at once, whatever its lease."""
        until = to_ms(until)
        lost: list[LeaseRef] = []
        cancelled: list[LeaseRef] = []
        for lease in leases:
            job = self.index.jobs.get(lease.job_id)
            if job is not None and job.status is Status.RUNNING and job.attempts == lease.attempt:
                job.renew_lease(until)
            elif job is not None and job.status is Status.CANCELLED and job.attempts == lease.attempt:
                cancelled.append(lease)
            else:
                lost.append(lease)
        return Beat(lost, cancelled)

    async def report_progress(
        self, lease: LeaseRef, fraction: float, message: str | None, now: datetime
    ) -> None:
        job = self._running_attempt(lease.job_id, lease.attempt)
        with atomic(self.index) as tx:
            tx.put(job.evolve(progress=fraction, progress_message=message, updated_at=to_ms(now)))
        await self._commit(tx)

    async def finish(self, lease: LeaseRef, outcome: Outcome, now: datetime) -> Job:
        """Settle a running attempt; raises `StaleAttempt` if it lost its lease."""
        job_id, attempt = lease.job_id, lease.attempt
        job = self._running_attempt(job_id, attempt)
        with atomic(self.index) as tx:
            settled = settle(tx, job, outcome, to_ms(now), self.policy)
        await self._commit(tx)
        logger.info(
            "action=finish jobId=%s tenantId=%s attempt=%d status=%s",
            job_id,
            job.tenant_id,
            attempt,
            settled.status.value,
        )
        return settled

    async def reap(self, now: datetime) -> Reaped:
        """Cancel jobs that expired before starting; fail attempts whose lease ran out."""
        now = to_ms(now)
        expired: list[str] = []
        lost: list[LeaseRef] = []
        with atomic(self.index) as tx:
            for job in list(self.index.pop_expired(now)):
                latest = tx.latest(job.job_id)
                if latest is not None and not latest.terminal and latest.attempts == 0:
                    cancel(tx, latest, "expired", now)
                    expired.append(job.job_id)
            for job in list(self.index.running_jobs()):
                if job.lease_expires_at is not None and job.lease_expires_at < now:
                    logger.warning("action=lease_expired jobId=%s attempt=%d", job.job_id, job.attempts)
                    settle(tx, job, Failed(LEASE_EXPIRED_ERROR), now, self.policy)
                    lost.append(LeaseRef(job.job_id, job.attempts))
        await self._commit(tx)
        return Reaped(expired, lost)

    async def purge(self, now: datetime, retention_seconds: float) -> int:
        """Remove terminal jobs that finished before `now - retention_seconds`,
        with their attempts, deliveries and Idempotency-Keys, and alerts and
        alert notifications that ended before then. Returns how many jobs."""
        cutoff = to_ms(now) - timedelta(seconds=retention_seconds)
        purged = 0
        with atomic(self.index) as tx:
            for job in list(self.index.jobs.values()):
                if job.terminal and job.finished_at is not None and job.finished_at < cutoff:
                    self._purge(tx, job)
                    purged += 1
            self._purge_outbox(tx, cutoff)
        await self._commit(tx)
        if purged:
            logger.info("action=purge jobs=%d", purged)
        return purged

    def _purge(self, tx: Transaction, job: Job) -> None:
        tx.remove(job.job_id)
        for delivery_id in list(self.index.deliveries_of_job.get(job.job_id, ())):
            tx.remove_delivery(delivery_id)
        idem_key = self.index.idem_of_job.get(job.job_id)
        if idem_key is not None:
            record = self.index.idem[idem_key]
            if all(j not in self.index.jobs for j in record.job_ids):
                tx.remove_idem(*idem_key)
