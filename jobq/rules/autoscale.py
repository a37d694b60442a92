"""How many worker processes `python worker.py --autoscale MIN..MAX` should
run: a pure decision from what the store counts, table-tested.

Scale up (by as many workers as the backlog fills, at most MAX) when jobs are
waiting, the slots are busy (utilisation at or above `up_utilisation`) and,
when the oldest job's wait is known, it has waited at least
`up_wait_seconds`. Scale down by one when nothing waits, utilisation is at or
below `down_utilisation` and would stay below `up_utilisation` with one
worker fewer (hysteresis: a step down never sets off a step up). Either
change waits `cooldown_seconds` after the last one; a count outside
MIN..MAX is corrected at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ScalePolicy:
    """Bounds and thresholds. Utilisation is running / (workers * concurrency)."""

    min_workers: int
    max_workers: int
    concurrency: int
    up_utilisation: float = 0.8
    down_utilisation: float = 0.3
    up_wait_seconds: float = 2.0
    cooldown_seconds: float = 30.0

    def __post_init__(self) -> None:
        if not 1 <= self.min_workers <= self.max_workers:
            raise ValueError(f"need 1 <= MIN <= MAX, got {self.min_workers}..{self.max_workers}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {self.concurrency}")
        if not 0 <= self.down_utilisation < self.up_utilisation <= 1:
            raise ValueError("need 0 <= down_utilisation < up_utilisation <= 1")


@dataclass(frozen=True, slots=True)
class Observation:
    """One poll: live workers (not counting those draining), jobs waiting to
    run (queued + retry), jobs running (on any worker), the oldest waiting
    job's age in seconds if known, seconds since the last change (None: none yet)."""

    workers: int
    backlog: int
    running: int
    oldest_wait_seconds: float | None = None
    since_change_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """Run `target` workers; `reason` is a stable word for the log."""

    target: int
    reason: str

    def delta(self, workers: int) -> int:
        return self.target - workers


def utilisation(running: int, workers: int, concurrency: int) -> float:
    """Share of the slots in use; 1.0 when there are no slots."""
    slots = workers * concurrency
    return 1.0 if slots <= 0 else min(1.0, running / slots)


def decide(policy: ScalePolicy, seen: Observation) -> Decision:
    """The worker count to run next (see the module's docstring)."""
    workers = seen.workers
    if workers < policy.min_workers:
        return Decision(policy.min_workers, "below_min")
    if workers > policy.max_workers:
        return Decision(policy.max_workers, "above_max")
    cooling = seen.since_change_seconds is not None and seen.since_change_seconds < policy.cooldown_seconds
    busy = utilisation(seen.running, workers, policy.concurrency)
    waited = seen.oldest_wait_seconds is None or seen.oldest_wait_seconds >= policy.up_wait_seconds
    if seen.backlog > 0 and busy >= policy.up_utilisation and waited and workers < policy.max_workers:
        if cooling:
            return Decision(workers, "cooldown")
        needed = math.ceil((seen.running + seen.backlog) / policy.concurrency)
        return Decision(max(workers + 1, min(needed, policy.max_workers)), "backlog")
    if seen.backlog == 0 and busy <= policy.down_utilisation and workers > policy.min_workers:
        if utilisation(seen.running, workers - 1, policy.concurrency) >= policy.up_utilisation:
            return Decision(workers, "hold")
        if cooling:
            return Decision(workers, "cooldown")
        return Decision(workers - 1, "idle")
    return Decision(workers, "hold")


def parse_bounds(text: str) -> tuple[int, int]:
    """`MIN..MAX` (or a single `N` for N..N) as two integers, 1 <= MIN <= MAX.
    Raises `ValueError` with a message for the operator."""
    low, sep, high = text.partition("..")
    try:
        bounds = (int(low), int(high)) if sep else (int(low), int(low))
    except ValueError:
        raise ValueError(f"--autoscale takes MIN..MAX (e.g. 1..4), got {text!r}") from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise ValueError(f"--autoscale needs 1 <= MIN <= MAX, got {text!r}")
    return bounds
