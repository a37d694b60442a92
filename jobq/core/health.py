"""What the service counts about itself: refusals and background tasks.

`Refusals` counts every request, connection or socket jobq turned away, by
kind (`body_too_large`, `connection_limit`, `auth_failures`, ...); `/metrics`
and `/metrics/prometheus` show them, so an operator sees an attack as a number
rather than a silent wall. `TaskState` tracks each background loop (worker,
webhook sender, alert monitor): when it last made progress, how many of its
rounds raised and since when every round has, so `/readyz` can name a loop
that died, stalled or keeps failing. `RoundBackoff` is how long such a loop
waits after a round that raised.

One `Health` per application (`services.health`), never a process-wide
global: tests run many apps in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class TaskState:
    name: str
    stall_seconds: float  # no progress for this long while running: not ready
    last_progress: float
    errors: int = 0
    failing_since: float | None = None  # every round since then raised
    running: bool = False
    stopped_reason: str | None = None


@dataclass
class Health:
    """Refusal counters and background-task states, read by `/metrics` and `/readyz`."""

    monotonic: Callable[[], float]
    refusals: Counter[str] = field(default_factory=Counter)
    tasks: dict[str, TaskState] = field(default_factory=dict)

    def refuse(self, kind: str, n: int = 1) -> None:
        self.refusals[kind] += n

    def task_started(self, name: str, stall_seconds: float = 30.0) -> None:
        self.tasks[name] = TaskState(name, stall_seconds, self.monotonic(), running=True)

    def progress(self, name: str) -> None:
        """The loop `name` finished a round: it is alive, and no longer failing."""
        state = self.tasks.get(name)
        if state is not None:
            state.last_progress = self.monotonic()
            state.failing_since = None

    def task_error(self, name: str) -> None:
        """A round of `name` raised: counted; the loop is alive but failing."""
        state = self.tasks.get(name)
        if state is not None:
            state.errors += 1
            state.last_progress = self.monotonic()
            if state.failing_since is None:
                state.failing_since = state.last_progress

    def task_stopped(self, name: str, reason: str) -> None:
        state = self.tasks.setdefault(name, TaskState(name, 0.0, self.monotonic()))  # even one that never began
        state.running = False
        state.stopped_reason = reason

    def problems(self) -> list[str]:
        """A sentence for each background task that died, has failed every
        round for longer than its `stall_seconds`, or made no progress that long."""
        now = self.monotonic()
        found = []
        for state in self.tasks.values():
            if not state.running:
                found.append(f"background task {state.name} stopped: {state.stopped_reason}")
            elif state.failing_since is not None and now - state.failing_since > state.stall_seconds:
                found.append(
                    f"background task {state.name} failing every round for {now - state.failing_since:.0f} s"
                )
            elif now - state.last_progress > state.stall_seconds:
                found.append(
                    f"background task {state.name} made no progress for {now - state.last_progress:.0f} s"
                )
        return found


@dataclass
class RoundBackoff:
    """How long a background loop waits after a round that raised: `first`
    seconds, doubling up to `cap`; a good round starts it over."""

    first: float = 0.1
    cap: float = 5.0
    current: float = 0.0

    def failed(self) -> float:
        self.current = self.first if self.current == 0.0 else min(self.cap, self.current * 2)
        return self.current

    def succeeded(self) -> None:
        self.current = 0.0


async def run_rounds(
    task: str,
    health: Health,
    one_round: Callable[[], Awaitable[float]],
    wake: asyncio.Event,
    stop_requested: asyncio.Event,
    stall_seconds: float,
) -> None:
    """A background loop: `one_round()` (which returns how long to wait, at
    most, before the next one), then wait for `wake` or that long, until
    `stop_requested`. A round that raises is logged with its traceback
    (`action=<task>_round_failed`), counted, and retried after `RoundBackoff`;
    every round reports progress, so `/readyz` sees a loop that stalls."""
    health.task_started(task, stall_seconds)
    backoff = RoundBackoff()
    loop = asyncio.get_running_loop()
    while not stop_requested.is_set():
        wake.clear()
        try:
            wait = await one_round()
        except Exception:
            logger.exception("action=%s_round_failed", task)
            health.task_error(task)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_requested.wait(), backoff.failed())
            continue
        backoff.succeeded()
        health.progress(task)
        if wake.is_set():
            continue
        timer = loop.call_later(wait, wake.set)
        await wake.wait()
        timer.cancel()
