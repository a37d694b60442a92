"""The in-process worker pool (SPEC §3, §10): claims jobs from the store under
leases, runs them with at most `concurrency` at once, heartbeats, enforces
per-attempt timeouts and settles each attempt.

Finite modes for tests (arq's burst mode): `run_once()` does one round of
maintenance and claiming; `run_until_idle()` repeats it until nothing is due or
running; `run()` is the service loop, woken at once by new work.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from clock import Clock
from errors import StaleAttempt, StoreUnavailable
from execution import execute
from handlers import Context, Registry
from models import CLAIMABLE, Failed, Interrupted, Job, Outcome, Status
from store import Store

logger = logging.getLogger(__name__)

MAINTAIN_EVERY_SECONDS = 1.0
PURGE_EVERY_SECONDS = 60.0
MAX_IDLE_WAIT_SECONDS = 1.0


@dataclass
class _Running:
    job: Job
    ctx: Context
    deadline: float  # on clock.monotonic()
    last_beat: float
    handler_task: asyncio.Task[Outcome] | None = None
    runner: asyncio.Task[None] | None = None
    stop_reason: str | None = field(default=None)  # "timeout" | "cancelled" | "shutdown" | "lost"
    settling: bool = False  # the handler has ended; its outcome is being made durable


class Worker:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        clock: Clock,
        *,
        concurrency: int = 5,
        lease_seconds: float = 30.0,
        retention_seconds: float = 7 * 86400.0,
        worker_id: str | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.retention_seconds = retention_seconds
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self._running: dict[str, _Running] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._last_maintain = float("-inf")
        self._last_purge = float("-inf")
        store.subscribe(self._on_change)

    # ---- events ----------------------------------------------------------

    def _on_change(self, job: Job) -> None:
        if job.status in CLAIMABLE:
            self._wake.set()
        elif job.status is Status.CANCELLED:
            running = self._running.get(job.job_id)
            if running is not None and running.job.attempts == job.attempts:
                self._stop(running, "cancelled")

    def wake(self) -> None:
        """Look for work now (tests call this after moving a fake clock)."""
        self._wake.set()

    @property
    def active(self) -> int:
        """Handlers running now (attempts whose outcome is being written do not count)."""
        return sum(1 for running in self._running.values() if not running.settling)

    # ---- modes -----------------------------------------------------------

    async def run_once(self) -> int:
        """One round: timeouts, heartbeats, maintenance, then claim into free
        slots and start the handlers. Returns the number of attempts started."""
        mono = self.clock.monotonic()
        for running in list(self._running.values()):
            if mono >= running.deadline and not running.settling:
                self._stop(running, "timeout")
        self._heartbeat(mono)
        now = self.clock.now()
        try:
            if mono - self._last_maintain >= MAINTAIN_EVERY_SECONDS:
                await self.store.maintain(now)
                self._last_maintain = mono
            if mono - self._last_purge >= PURGE_EVERY_SECONDS:
                await self.store.purge(now, self.retention_seconds)
                self._last_purge = mono
            free = self.concurrency - self.active
            if self._stopping or free <= 0:
                return 0
            claimed = await self.store.claim(now, free, self.worker_id, self.lease_seconds)
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
            started = await self.run_once()
            if self._running:
                runners = [r.runner for r in self._running.values() if r.runner is not None]
                await asyncio.wait(runners, return_when=asyncio.FIRST_COMPLETED)
                continue
            if started == 0:
                return

    async def run(self) -> None:
        """The service loop, until `stop()`."""
        logger.info("action=worker_start workerId=%s concurrency=%d", self.worker_id, self.concurrency)
        while not self._stopping:
            self._wake.clear()
            await self.run_once()
            if self._wake.is_set():
                continue
            timer = asyncio.get_running_loop().call_later(self._idle_wait(), self._wake.set)
            await self._wake.wait()
            timer.cancel()

    def _idle_wait(self) -> float:
        wait = MAX_IDLE_WAIT_SECONDS
        mono = self.clock.monotonic()
        for running in self._running.values():
            wait = min(wait, running.deadline - mono, running.last_beat + self.lease_seconds / 3 - mono)
        due = self.store.next_wakeup()
        if due is not None:
            wait = min(wait, (due - self.clock.now()).total_seconds())
        return max(wait, 0.0)

    async def stop(self, grace_seconds: float) -> None:
        """Stop claiming, give running attempts `grace_seconds` to finish, then
        release the rest as `interrupted` (back to queued, not counted)."""
        self._stopping = True
        self._wake.set()
        runners = [r.runner for r in self._running.values() if r.runner is not None]
        if runners:
            logger.info("action=drain running=%d graceSeconds=%g", len(runners), grace_seconds)
            await asyncio.wait(runners, timeout=grace_seconds)
        for running in list(self._running.values()):
            self._stop(running, "shutdown")
        remaining = [r.runner for r in self._running.values() if r.runner is not None]
        if remaining:
            await asyncio.wait(remaining)

    # ---- one attempt -----------------------------------------------------

    def _start(self, job: Job) -> _Running:
        spec = self.registry.get(job.type)
        loop = asyncio.get_running_loop()
        log = logging.LoggerAdapter(
            logging.getLogger(f"jobq.handler.{job.type}"), {"jobId": job.job_id, "attempt": job.attempts}
        )
        attempt = job.attempts

        async def report(fraction: float, message: str | None) -> None:
            try:
                await self.store.report_progress(job.job_id, attempt, fraction, message, self.clock.now())
            except StaleAttempt:
                log.info("progress from a stale attempt ignored")

        ctx = Context(job.job_id, attempt, log, report, loop)
        mono = self.clock.monotonic()
        running = _Running(job, ctx, deadline=mono + job.timeout_seconds, last_beat=mono)
        self._running[job.job_id] = running
        logger.info(
            "action=start jobId=%s tenantId=%s attempt=%d type=%s", job.job_id, job.tenant_id, attempt, job.type
        )
        if spec is None:
            running.handler_task = loop.create_task(self._no_handler(job))
        else:
            running.handler_task = loop.create_task(execute(spec, job, ctx))
        running.runner = loop.create_task(self._settle(running))
        return running

    @staticmethod
    async def _no_handler(job: Job) -> Outcome:
        return Failed(f"no handler is registered for type {job.type!r}", permanent=True)

    def _stop(self, running: _Running, reason: str) -> None:
        if running.stop_reason is None and running.handler_task is not None:
            running.stop_reason = reason
            running.ctx.cancelled.set()
            running.handler_task.cancel()

    async def _settle(self, running: _Running) -> None:
        job = running.job
        assert running.handler_task is not None
        try:
            try:
                outcome = await running.handler_task
            except asyncio.CancelledError:
                if running.stop_reason in ("cancelled", "lost"):
                    return  # the store already holds the cancellation, or never held the claim
                if running.stop_reason == "timeout":
                    outcome = Failed(f"timed out after {job.timeout_seconds:g} s")
                elif running.stop_reason == "shutdown":
                    outcome = Interrupted()
                else:
                    raise
            # The slot is free once the handler has ended: the next claim can
            # share the journal write that makes this outcome durable.
            running.settling = True
            self._wake.set()
            await self.store.finish(job.job_id, job.attempts, outcome, self.clock.now())
        except StaleAttempt as exc:
            logger.warning("action=stale_completion jobId=%s attempt=%d detail=%s", job.job_id, job.attempts, exc)
        except StoreUnavailable as exc:
            # The lease runs out and the attempt is retried: at-least-once.
            logger.error("action=finish_failed jobId=%s attempt=%d error=%s", job.job_id, job.attempts, exc)
        finally:
            if self._running.get(job.job_id) is running:
                del self._running[job.job_id]
            self._wake.set()

    def _heartbeat(self, mono: float) -> None:
        lease_until = self.clock.now() + timedelta(seconds=self.lease_seconds)
        for running in self._running.values():
            if mono - running.last_beat >= self.lease_seconds / 3:
                try:
                    self.store.heartbeat(running.job.job_id, running.job.attempts, lease_until)
                    running.last_beat = mono
                except StaleAttempt:
                    self._stop(running, "cancelled")
