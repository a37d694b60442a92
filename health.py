"""What the service counts about itself: refusals and background tasks.

`Refusals` counts every request, connection or socket jobq turned away, by
kind (`body_too_large`, `connection_limit`, `auth_failures`, ...); `/metrics`
and `/metrics/prometheus` show them, so an operator sees an attack as a number
rather than a silent wall. `TaskHealth` tracks each background loop (worker,
webhook sender, alert monitor): when it last made progress and how many of
its rounds raised, so `/readyz` can name a loop that died or stalled.

One instance of each per application (`HEALTH` app key, `Health`), never a
process-wide global: tests run many apps in one process.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)


@dataclass
class TaskState:
    name: str
    stall_seconds: float  # no progress for this long while running: not ready
    last_progress: float
    errors: int = 0
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
        """The loop `name` finished a round (successfully or not): it is alive."""
        state = self.tasks.get(name)
        if state is not None:
            state.last_progress = self.monotonic()

    def task_error(self, name: str) -> None:
        state = self.tasks.get(name)
        if state is not None:
            state.errors += 1

    def task_stopped(self, name: str, reason: str) -> None:
        state = self.tasks.get(name)
        if state is not None:
            state.running = False
            state.stopped_reason = reason

    def problems(self, expected_running: bool = True) -> list[str]:
        """A sentence for each background task that died or stopped making progress."""
        now = self.monotonic()
        found = []
        for state in self.tasks.values():
            if not state.running:
                if expected_running:
                    found.append(f"background task {state.name} stopped: {state.stopped_reason}")
            elif now - state.last_progress > state.stall_seconds:
                found.append(
                    f"background task {state.name} made no progress for {now - state.last_progress:.0f} s"
                )
        return found
