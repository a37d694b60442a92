"""Pure rules of the job lifecycle: hashing, backoff, claim order, cycles and
why a job waits. No I/O, no clock; callers pass time in."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from datetime import datetime

import orjson

from jobq.core.models import JSON, Job, Status
from jobq.core.timefmt import format_ts

PRIORITY_NAMES = {0: "low", 1: "medium", 2: "high", 3: "critical"}


def canonical_json(value: JSON) -> bytes:
    """Sorted keys, no spaces, UTF-8: the form hashed for `payloadHash` and fingerprints."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def payload_hash(job_type: str, payload: JSON) -> str:
    return "sha256:" + hashlib.sha256(canonical_json({"type": job_type, "payload": payload})).hexdigest()


def backoff_seconds(failures: int, base: float, cap: float, rng: random.Random) -> float:
    """Delay before the retry that follows the `failures`-th failed attempt:
    base * 2^(failures-1), capped, then ±10 % jitter so retries spread out."""
    exponent = min(max(failures - 1, 0), 60)
    delay: float = min(base * float(2**exponent), cap)
    return delay * rng.uniform(0.9, 1.1)


def claim_key(priority: int, next_run_at: datetime, aging_seconds: float) -> float:
    """Sort key among due jobs; smaller runs first.

    Each priority step is worth `aging_seconds` of waiting: a job is ordered as
    if it had become due that much earlier per step. So higher priority goes
    first, ties go to the older `nextRunAt`, and a low-priority job that has
    waited long enough overtakes newer high-priority work (aging without
    re-sorting, since the key never changes while the job waits)."""
    return next_run_at.timestamp() - priority * aging_seconds


def find_cycle(edges: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A cycle in the graph `node -> nodes it depends on`, as the list of its
    nodes in order (first repeated at the end), or None. Edges to nodes outside
    the mapping are ignored."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    for root in edges:
        if state.get(root):
            continue
        path: list[str] = []
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            node, index = stack.pop()
            if index == 0:
                state[node] = 1
                path.append(node)
            deps = [d for d in edges[node] if d in edges]
            if index < len(deps):
                stack.append((node, index + 1))
                child = deps[index]
                if state.get(child) == 1:
                    return [*path[path.index(child):], child]
                if not state.get(child):
                    stack.append((child, 0))
            else:
                state[node] = 2
                path.pop()
    return None


def waiting_reason(
    job: Job,
    now: datetime,
    *,
    first_unfinished_dependency: str | None,
    tenant_running: int,
    tenant_max_running: int,
    jobs_ahead: int,
    slots_running: int = 0,
    worker_slots: int = 0,
) -> str | None:
    """Why a job that is not running is not running now (SPEC §2), or None.
    `worker_slots` is the pool's size (0: unknown, or no worker here) and
    `slots_running` how many of them hold a job now."""
    if job.status is Status.WAITING:
        if first_unfinished_dependency:
            return f"waiting on job {first_unfinished_dependency}"
        return "waiting on dependencies"
    if job.status is Status.RETRY and job.next_run_at > now:
        return f"retry at {format_ts(job.next_run_at)}"
    if job.status is Status.QUEUED and job.next_run_at > now:
        return f"scheduled for {format_ts(job.next_run_at)}"
    if job.status in (Status.QUEUED, Status.RETRY):
        if tenant_running >= tenant_max_running:
            return f"tenant at maxRunning ({tenant_running}/{tenant_max_running})"
        if worker_slots and slots_running >= worker_slots:
            return f"all worker slots busy ({slots_running}/{worker_slots})"
        if jobs_ahead > 0:
            return f"{jobs_ahead} job{'s' if jobs_ahead != 1 else ''} ahead"
        return "next in line"
    return None
