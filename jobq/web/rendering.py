"""Jobs as the HTTP API and the live updates show them (SPEC §2): each with
its computed `waitingReason`, asked of the store in one batch."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobq.core.models import Job
from jobq.storage.protocol import JobReads, RunningLimits


async def jobs_as_api(
    store: JobReads, jobs: list[Job], now: datetime, limits: RunningLimits, *, with_history: bool = False
) -> list[dict[str, Any]]:
    reasons = await store.waiting_reasons(jobs, now, limits)
    return [job.to_api(reason, with_history=with_history) for job, reason in zip(jobs, reasons, strict=True)]
