"""The in-process worker pool (SPEC §3, §10): claims jobs from the store under
leases, runs them with at most `concurrency` at once, heartbeats, enforces
per-attempt timeouts and settles each attempt.

Finite modes for tests (arq's burst mode): `run_once()` does one round of
maintenance and claiming; `run_until_idle()` repeats it until nothing is due or
running; `run()` is the service loop, woken at once by new work. A round of
`run()` that raises is logged with its traceback, counted in `Health` and
tried again after a backoff; each round reports progress, so `/readyz` can
name a loop that stalls.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from jobq.core.clock import Clock
from jobq.core.errors import StaleAttempt, StoreUnavailable
from jobq.core.health import Health, run_rounds
from jobq.core.models import CLAIMABLE, Job, Status
from jobq.core.outcomes import Failed, Interrupted, Outcome
from jobq.storage.protocol import Event, JobChanged, LeaseRef, RunningLimits, WorkerStore
from jobq.worker.execution import execute
from jobq.worker.handlers import Context, Registry

logger = logging.getLogger(__name__)

MAINTAIN_EVERY_SECONDS = 1.0
PURGE_EVERY_SECONDS = 60.0
MAX_IDLE_WAIT_SECONDS = 1.0
TASK = "worker"  # its name in Health, /readyz and the metrics
# Not ready after this long without a round: it waits at most MAX_IDLE_WAIT_SECONDS
# between rounds and 5 s after a failed one, so only a round stuck this long trips it.
STALL_SECONDS = 30.0


@functools.cache
def _handler_logger(job_type: str) -> logging.Logger:
    return logging.getLogger(f"jobq.handler.{job_type}")


@dataclass
class _Running:
    job: Job
    ctx: Context
    deadline: float  # on clock.monotonic()
    last_beat: float
    task: asyncio.Task[None] | None = None
    stop_reason: str | None = field(default=None)  # "timeout" | "cancelled" | "shutdown" | "lost"
    started: bool = False
    handler_done: bool = False


class Worker:
    def __init__(
        self,
        store: WorkerStore,
        registry: Registry,
        clock: Clock,
        *,
        running_limits: Callable[[], RunningLimits],
        concurrency: int = 5,
        lease_seconds: float = 30.0,
        retention_seconds: float = 7 * 86400.0,
        worker_id: str | None = None,
        health: Health | None = None,
    ) -> None:
        self.store = store
        self.running_limits = running_limits  # each tenant's maxRunning, as the tenants file says now
        self.registry = registry
        self.clock = clock
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.retention_seconds = retention_seconds
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.health = health if health is not None else Health(clock.monotonic)
        self._running: dict[str, _Running] = {}  # attempts whose handler runs now, by job id
        self._settling: set[asyncio.Task[None]] = set()  # attempts whose outcome is being written
        self._settled = 0  # attempts whose outcome was written (or refused) so far
        self._wake = asyncio.Event()
        self._stopping = False
        self._stop_requested = asyncio.Event()  # ends a backoff early; new work does not
        self._last_maintain = float("-inf")
        self._last_purge = float("-inf")
        store.subscribe(self._on_events)

    # ---- events ----------------------------------------------------------

    def _on_events(self, events: Sequence[Event]) -> None:
        for event in events:
            if not isinstance(event, JobChanged):
                continue
            if event.status in CLAIMABLE:
                self._wake.set()
            elif event.status is Status.CANCELLED:
                running = self._running.get(event.job_id)
                if running is not None and running.job.attempts == event.attempt:
                    self._stop(running, "cancelled")

    def wake(self) -> None:
        """Look for work now (tests call this after moving a fake clock)."""
        self._wake.set()

    @property
    def active(self) -> int:
        """Handlers running now (attempts whose outcome is being written do not count)."""
        return len(self._running)

    # ---- modes -----------------------------------------------------------

    async def run_once(self) -> int:
        """One round: timeouts, heartbeats, maintenance, then claim into free
        slots and start the handlers. Returns the number of attempts started."""
        mono = self.clock.monotonic()
        for running in list(self._running.values()):
            if mono >= running.deadline:
                self._stop(running, "timeout")
        now = self.clock.now()
        try:
            await self._heartbeat(mono)
            if mono - self._last_maintain >= MAINTAIN_EVERY_SECONDS:
                await self.store.reap(now)
                self._last_maintain = mono
            if mono - self._last_purge >= PURGE_EVERY_SECONDS:
                await self.store.purge(now, self.retention_seconds)
                self._last_purge = mono
            free = self.concurrency - self.active
            if self._stopping or free <= 0:
                return 0
            claimed = await self.store.claim(
                self.worker_id, free, lease_seconds=self.lease_seconds, limits=self.running_limits(), now=now
            )
        except StoreUnavailable as exc:
            logger.error("action=claim_failed error=%s", exc)
            return 0
        started = [self._start(job) for job in claimed.jobs]
        if started:
            claimed.durable.add_done_callback(lambda durable: self._claim_written(durable, started))
        return len(started)

    def _claim_written(self, durable: asyncio.Future[Any], started: list[_Running]) -> None:
        """Stop the handlers of a claim that could not be written (it was undone)."""
        error = durable.exception()
        if error is not None:
            logger.error("action=claim_failed jobs=%d error=%s", len(started), error)
            for running in started:
                self._stop(running, "lost")

    async def run_until_idle(self) -> None:
        """Run until nothing is due and nothing is running (time does not move)."""
        self._last_maintain = float("-inf")
        while True:
            settled_before = self._settled
            started = await self.run_once()
            tasks = self._tasks()
            if tasks:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                continue
            # An outcome written while the store was being asked (a database
            # answers later than memory) may have released jobs that round missed.
            if started == 0 and self._settled == settled_before:
                return

    def _tasks(self) -> list[asyncio.Task[None]]:
        """Every attempt still in this worker's hands: running or being settled."""
        return [r.task for r in self._running.values() if r.task is not None] + list(self._settling)

    async def run(self) -> None:
        """The service loop, until `stop()`. A round that raises is retried
        after `RoundBackoff` (0.1 s doubling to 5 s, real time)."""
        logger.info("action=worker_start workerId=%s concurrency=%d", self.worker_id, self.concurrency)
        await run_rounds(TASK, self.health, self._round, self._wake, self._stop_requested, STALL_SECONDS)

    async def _round(self) -> float:
        """One round of `run`; how long to wait at most before the next."""
        await self.run_once()
        return await self._idle_wait()

    async def _idle_wait(self) -> float:
        wait = MAX_IDLE_WAIT_SECONDS
        mono = self.clock.monotonic()
        for running in self._running.values():
            wait = min(wait, running.deadline - mono, running.last_beat + self.lease_seconds / 3 - mono)
        due = await self.store.next_due()
        if due is not None:
            wait = min(wait, (due - self.clock.now()).total_seconds())
        return max(wait, 0.0)

    async def stop(self, grace_seconds: float) -> None:
        """Stop claiming, give running attempts `grace_seconds` to finish, then
        release the rest as `interrupted` (back to queued, not counted)."""
        self._stopping = True
        self._stop_requested.set()
        self._wake.set()
        tasks = self._tasks()
        if tasks:
            logger.info("action=drain running=%d graceSeconds=%g", len(tasks), grace_seconds)
            await asyncio.wait(tasks, timeout=grace_seconds)
        for running in list(self._running.values()):
            self._stop(running, "shutdown")
        remaining = self._tasks()
        if remaining:
            await asyncio.wait(remaining)

    # ---- one attempt -----------------------------------------------------

    def _start(self, job: Job) -> _Running:
        attempt = job.attempts
        extra = {"jobId": job.job_id, "tenantId": job.tenant_id, "attempt": attempt}
        log = logging.LoggerAdapter(_handler_logger(job.type), extra)

        async def report(fraction: float, message: str | None) -> None:
            try:
                await self.store.report_progress(LeaseRef(job.job_id, attempt), fraction, message, self.clock.now())
            except StaleAttempt:
                log.info("progress from a stale attempt ignored")

        loop = asyncio.get_running_loop()
        ctx = Context(job.job_id, attempt, log, report, loop)
        mono = self.clock.monotonic()
        running = _Running(job, ctx, deadline=mono + job.timeout_seconds, last_beat=mono)
        self._running[job.job_id] = running
        logger.info(
            "action=start jobId=%s tenantId=%s attempt=%d type=%s", job.job_id, job.tenant_id, attempt, job.type
        )
        running.task = loop.create_task(self._attempt(running))
        return running

    def _stop(self, running: _Running, reason: str) -> None:
        """Cancel the attempt's handler, if it still runs, remembering why."""
        if running.stop_reason is None and not running.handler_done and running.task is not None:
            running.stop_reason = reason
            running.ctx.cancelled.set()
            if running.started:  # a task cancelled before its first step would skip our handling
                running.task.cancel()

    async def _attempt(self, running: _Running) -> None:
        """Run one attempt's handler, then report its outcome. One task per
        attempt: `_stop` cancels it while the handler runs, and the cancel is
        turned into the outcome its reason calls for."""
        job = running.job
        running.started = True
        outcome: Outcome | None
        try:
            if running.stop_reason is not None:
                raise asyncio.CancelledError  # stopped before it began
            outcome = await self._run_handler(job, running.ctx)
        except asyncio.CancelledError:
            if running.stop_reason is None:
                raise  # not ours: the loop itself is going away
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                current.uncancel()
            outcome = self._outcome_of_stop(running)
        finally:
            running.handler_done = True
            if self._running.get(job.job_id) is running:
                del self._running[job.job_id]
            self._wake.set()  # the slot is free: the next claim can share this outcome's write
        if outcome is None:
            return
        task = asyncio.current_task()
        assert task is not None
        self._settling.add(task)
        try:
            await self.store.finish(LeaseRef(job.job_id, job.attempts), outcome, self.clock.now())
        except StaleAttempt as exc:
            logger.warning("action=stale_completion jobId=%s attempt=%d detail=%s", job.job_id, job.attempts, exc)
        except StoreUnavailable as exc:
            # The lease runs out and the attempt is retried: at-least-once.
            logger.error("action=finish_failed jobId=%s attempt=%d error=%s", job.job_id, job.attempts, exc)
        except Exception:
            logger.exception("action=finish_crashed jobId=%s attempt=%d", job.job_id, job.attempts)
        finally:
            self._settling.discard(task)
            self._settled += 1
            self._wake.set()

    async def _run_handler(self, job: Job, ctx: Context) -> Outcome:
        spec = self.registry.get(job.type)
        if spec is None:
            return Failed(f"no handler is registered for type {job.type!r}", permanent=True)
        # The handler gets its own copy: setting its fields (or changing the
        # payload, which is decoded afresh for each reader) changes nothing stored.
        return await execute(spec, job.evolve(), ctx)

    @staticmethod
    def _outcome_of_stop(running: _Running) -> Outcome | None:
        """What a stopped attempt ended with; None when the store already knows
        (a cancelled job) or never knew (a claim whose write failed)."""
        if running.stop_reason == "timeout":
            return Failed(f"timed out after {running.job.timeout_seconds:g} s")
        if running.stop_reason == "shutdown":
            return Interrupted()
        return None

    async def _heartbeat(self, mono: float) -> None:
        """Renew the leases a third of the way through; stop the attempts the
        store says are no longer ours (lease lost, or cancelled elsewhere)."""
        due = [r for r in self._running.values() if mono - r.last_beat >= self.lease_seconds / 3]
        if not due:
            return
        now = self.clock.now()
        leases = [LeaseRef(r.job.job_id, r.job.attempts) for r in due]
        beat = await self.store.heartbeat(leases, until=now + timedelta(seconds=self.lease_seconds), now=now)
        for running in due:
            running.last_beat = mono
        for lease, reason in [(lease, "lost") for lease in beat.lost] + [
            (lease, "cancelled") for lease in beat.cancel_requested
        ]:
            held = self._running.get(lease.job_id)
            if held is not None and held.job.attempts == lease.attempt:
                self._stop(held, reason)
