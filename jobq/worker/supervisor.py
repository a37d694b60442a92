"""The autoscaling supervisor behind `python worker.py --autoscale MIN..MAX`:
it runs worker processes (`command`, e.g. `python worker.py --concurrency N`,
in the same environment), polls the store's counts every `interval_seconds`,
and starts or stops workers as `jobq.rules.autoscale.decide` says. A worker
is stopped gracefully: SIGTERM, after which it drains its running attempts
within `JOBQ_SHUTDOWN_GRACE_SECONDS` (killed if it has not exited some
seconds after that). A worker that dies is replaced at once. On its own
SIGTERM/SIGINT the supervisor stops every worker the same way and returns.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Sequence
from typing import Protocol

from jobq.core.clock import Clock
from jobq.core.errors import StoreUnavailable
from jobq.rules.autoscale import Decision, Observation, ScalePolicy, decide

logger = logging.getLogger("jobq")

BOUNDS_REASONS = ("below_min", "above_max")  # corrections that start no cooldown
KILL_AFTER_GRACE_SECONDS = 10.0  # past the drain's grace, a worker that has not exited is killed


class CountSource(Protocol):
    """What the supervisor reads: the store's job counts by status (`JobReads.counts`)."""

    async def counts(self, tenant_id: str | None) -> dict[str, int]: ...


class Supervisor:
    """Worker processes scaled between `policy.min_workers` and `policy.max_workers`."""

    def __init__(
        self,
        store: CountSource,
        clock: Clock,
        policy: ScalePolicy,
        command: Sequence[str],
        *,
        interval_seconds: float,
        grace_seconds: float,
    ) -> None:
        self.store = store
        self.clock = clock
        self.policy = policy
        self.command = list(command)
        self.interval_seconds = interval_seconds
        self.grace_seconds = grace_seconds
        self.workers: list[asyncio.subprocess.Process] = []  # live, newest last
        self.draining: set[asyncio.Task[None]] = set()
        self.last_change: float | None = None

    async def _spawn(self, reason: str) -> None:
        proc = await asyncio.create_subprocess_exec(*self.command)
        self.workers.append(proc)
        logger.info("action=autoscale_spawn pid=%d workers=%d reason=%s", proc.pid, len(self.workers), reason)

    async def _drain(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM, then wait for the worker to drain; kill it if it overstays."""
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.grace_seconds + KILL_AFTER_GRACE_SECONDS)
        except TimeoutError:
            logger.warning("action=autoscale_kill pid=%d reason=drain_overdue", proc.pid)
            proc.kill()
            await proc.wait()
        logger.info("action=autoscale_stopped pid=%d status=%s", proc.pid, proc.returncode)

    def _stop_one(self, reason: str) -> None:
        proc = self.workers.pop()  # the newest: the oldest have warmed up
        logger.info("action=autoscale_drain pid=%d workers=%d reason=%s", proc.pid, len(self.workers), reason)
        task = asyncio.create_task(self._drain(proc), name=f"jobq-drain-{proc.pid}")
        self.draining.add(task)
        task.add_done_callback(self.draining.discard)

    async def _replace_dead(self) -> None:
        dead = [proc for proc in self.workers if proc.returncode is not None]
        for proc in dead:
            self.workers.remove(proc)
            logger.warning("action=autoscale_worker_died pid=%d status=%s", proc.pid, proc.returncode)
            await self._spawn("replace_dead")

    async def observe(self) -> Observation:
        """The store's counts as the rule's input (every tenant)."""
        counts = await self.store.counts(None)
        since = None if self.last_change is None else self.clock.monotonic() - self.last_change
        return Observation(
            workers=len(self.workers),
            backlog=counts.get("queued", 0) + counts.get("retry", 0),
            running=counts.get("running", 0),
            since_change_seconds=since,
        )

    async def step(self) -> Decision | None:
        """One poll: replace dead workers, then scale as the rule says. None
        when the store could not be read (nothing changes then)."""
        await self._replace_dead()
        try:
            seen = await self.observe()
        except StoreUnavailable as exc:
            logger.warning("action=autoscale_counts_failed reason=%s", exc)
            return None
        decision = decide(self.policy, seen)
        delta = decision.delta(seen.workers)
        if delta:
            logger.info(
                "action=autoscale from=%d to=%d reason=%s backlog=%d running=%d",
                seen.workers,
                decision.target,
                decision.reason,
                seen.backlog,
                seen.running,
            )
            if decision.reason not in BOUNDS_REASONS:  # filling up to MIN is no scaling step
                self.last_change = self.clock.monotonic()
        for _ in range(delta):
            await self._spawn(decision.reason)
        for _ in range(-delta):
            self._stop_one(decision.reason)
        return decision

    async def run(self, stop: Awaitable[object]) -> int:
        """Poll until `stop` completes, then stop every worker gracefully. Returns 0."""
        stopping = asyncio.ensure_future(stop)
        logger.info(
            "action=autoscale_start min=%d max=%d concurrency=%d intervalSeconds=%g cooldownSeconds=%g",
            self.policy.min_workers,
            self.policy.max_workers,
            self.policy.concurrency,
            self.interval_seconds,
            self.policy.cooldown_seconds,
        )
        try:
            while not stopping.done():
                await self.step()
                await asyncio.wait([stopping], timeout=self.interval_seconds)
        finally:
            logger.info("action=autoscale_shutdown workers=%d", len(self.workers))
            while self.workers:
                self._stop_one("shutdown")
            if self.draining:
                await asyncio.wait(set(self.draining))
            stopping.cancel()
        logger.info("action=stopped")
        return 0
