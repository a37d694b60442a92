"""What the live-update hub sends, built from the store (SPEC §5): a job as
the API shows it, snapshots (cut to fit a client's byte bound) and metrics.

Messages (JSON text frames):
- `{"type":"snapshot","counts":{status: n},"jobs":[newest 100, newest first]}`
- `{"type":"job","job":{...}}` on every status change (and progress report)
- `{"type":"delivery","delivery":{...}}` when a webhook delivery is made,
  attempted or redelivered (as `GET /jobs/{id}/deliveries` shows it)
- `{"type":"metrics","at":ts,"counts":{...},"queueDepth":n,"finishedLastMinute":n,
  "finishedPerSecond":x,"finishedBySecond":[60 ints, oldest first],
  "deliveries":{pending,delivered,failed,stopped},"alerts":[active alerts]}` on `tick()`
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from jobq.core.clock import Clock
from jobq.core.models import Job, ListQuery, Status
from jobq.core.timefmt import format_ts
from jobq.rules.throughput import FinishedCounter
from jobq.storage.protocol import JobReads, RunningLimits
from jobq.web.live.client import Scope
from jobq.web.rendering import jobs_as_api


class LiveMessages:
    def __init__(
        self,
        store: JobReads,
        clock: Clock,
        running_limits: Callable[[], RunningLimits],
        *,
        snapshot_jobs: int,
        max_pending_bytes: int,
    ) -> None:
        self.store = store
        self.clock = clock
        self.running_limits = running_limits
        self.snapshot_jobs = snapshot_jobs
        self.max_pending_bytes = max_pending_bytes
        self.finished = FinishedCounter(int(clock.monotonic()))

    async def render(self, jobs: list[Job]) -> list[dict[str, Any]]:
        """The jobs as the API shows them (one batch of waiting reasons)."""
        return await jobs_as_api(self.store, jobs, self.clock.now(), self.running_limits())

    @staticmethod
    def job(rendered: dict[str, Any]) -> dict[str, Any]:
        return {"type": "job", "job": rendered}

    async def snapshot(self, tenant_id: Scope) -> dict[str, Any]:
        """Counts by status and the newest `snapshot_jobs` jobs of the scope."""
        jobs, _ = await self.store.list_jobs(ListQuery(tenant_id, limit=self.snapshot_jobs))
        return {"type": "snapshot", "counts": await self.store.counts(tenant_id), "jobs": await self.render(jobs)}

    async def encoded_snapshot(self, tenant_id: Scope) -> bytes:
        """`snapshot()` as sent: its jobs cut to the newest that fit in half
        of `max_pending_bytes`, so that a snapshot always fits a client's bound."""
        snapshot = await self.snapshot(tenant_id)
        budget = self.max_pending_bytes // 2
        jobs = []
        for job in snapshot["jobs"]:
            encoded = orjson.dumps(job)
            budget -= len(encoded) + 1
            if budget < 0:
                break
            jobs.append(encoded)
        return b'{"type":"snapshot","counts":%b,"jobs":[%b]}' % (orjson.dumps(snapshot["counts"]), b",".join(jobs))

    async def metrics(self, tenant_id: Scope, now_second: int) -> dict[str, Any]:
        """Counts by status, queue depth (queued + retry) and jobs finished
        (entered succeeded, fatal or cancelled) over the last minute, as seen
        by this hub since it started."""
        counts = await self.store.counts(tenant_id)
        series = self.finished.by_second(tenant_id, now_second)
        return {
            "type": "metrics",
            "at": format_ts(self.clock.now()),
            "counts": counts,
            "queueDepth": counts[Status.QUEUED.value] + counts[Status.RETRY.value],
            "finishedLastMinute": sum(series),
            "finishedPerSecond": round(self.finished.per_second(series, now_second), 3),
            "finishedBySecond": series,
            "deliveries": await self.store.delivery_counts(tenant_id),
            "alerts": [alert.to_api() for alert in await self.store.alerts(tenant_id) if alert.active],
        }
