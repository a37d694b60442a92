"""The PostgreSQL store's operator actions (SPEC §4): cancel, retry from the
DLQ and bulk. Each is one SQL transaction (a bulk one per chunk of
`BULK_CHUNK` jobs) and the row is re-read, locked, before the rule applies."""

from __future__ import annotations

import logging
from datetime import datetime

from jobq.core.errors import Conflict, NotFound
from jobq.core.models import Job, ListQuery, Status
from jobq.core.timefmt import to_ms
from jobq.storage.postgres.leases import Leases
from jobq.storage.postgres.lifecycle import cancel, retry_from_dlq
from jobq.storage.postgres.unit import HISTORY, HOT, Unit

logger = logging.getLogger(__name__)

BULK_CHUNK = 1000


async def _load_visible(unit: Unit, job_id: str, tenant_id: str | None) -> Job:
    """The job, locked, wherever it is; `NotFound` for none or another tenant's."""
    found = await unit.load([job_id], table=HOT) or await unit.load([job_id], table=HISTORY)
    if not found or (tenant_id is not None and found[0].tenant_id != tenant_id):
        raise NotFound(f"job {job_id} not found")
    return found[0]


class Operator(Leases):
    async def cancel(self, job_id: str, tenant_id: str | None, actor: str, now: datetime) -> Job:
        async def body(unit: Unit) -> Job:
            job = await _load_visible(unit, job_id, tenant_id)
            if job.terminal:
                raise Conflict(f"job {job_id} is already {job.status.value}")
            return await cancel(unit, job, f"cancelled by {actor}", to_ms(now), actor=actor)

        done = await self._transact("cancel", body)
        logger.info("action=cancel jobId=%s tenantId=%s actor=%s", job_id, done.tenant_id, actor)
        return done

    async def retry(self, job_id: str, tenant_id: str | None, actor: str, now: datetime) -> Job:
        async def body(unit: Unit) -> Job:
            job = await _load_visible(unit, job_id, tenant_id)
            if job.status is not Status.FATAL:
                raise Conflict(f"only fatal jobs can be retried; job {job_id} is {job.status.value}")
            return retry_from_dlq(unit, job, actor, to_ms(now))

        queued = await self._transact("retry", body)
        logger.info("action=retry jobId=%s tenantId=%s actor=%s", job_id, queued.tenant_id, actor)
        return queued

    async def bulk(
        self, query: ListQuery, job_ids: list[str] | None, action: str, actor: str, now: datetime
    ) -> tuple[int, int]:
        """Cancel or retry every job matching `query` (or each of `job_ids` the
        caller may see), in chunks of `BULK_CHUNK` jobs, each atomic."""
        now = to_ms(now)
        if job_ids is not None:
            targets = [
                j.job_id
                for j in await self.get_many(list(dict.fromkeys(job_ids)))
                if query.tenant_id is None or j.tenant_id == query.tenant_id
            ]
        else:
            targets = await self._matching_ids(query)
        changed = 0
        for start in range(0, len(targets), BULK_CHUNK):
            chunk = targets[start : start + BULK_CHUNK]

            async def body(unit: Unit, chunk: list[str] = chunk) -> int:
                done = 0
                table = HISTORY if action == "retry" else HOT
                await unit.load(chunk, table=table)
                for job_id in chunk:
                    job = unit.latest(job_id)
                    if job is None:
                        continue
                    if action == "cancel" and not job.terminal:
                        await cancel(unit, job, f"cancelled by {actor}", now, actor=f"{actor} (bulk)")
                        done += 1
                    elif action == "retry" and job.status is Status.FATAL:
                        retry_from_dlq(unit, job, f"{actor} (bulk)", now)
                        done += 1
                return done

            changed += await self._transact("bulk", body)
        logger.info("action=bulk_%s matched=%d changed=%d actor=%s", action, len(targets), changed, actor)
        return len(targets), changed

    async def _matching_ids(self, query: ListQuery) -> list[str]:
        ids: list[str] = []
        cursor: str | None = None
        while True:
            page, cursor = await self.list_jobs(
                ListQuery(query.tenant_id, query.statuses, query.type, query.q, limit=BULK_CHUNK, cursor=cursor)
            )
            ids.extend(job.job_id for job in page)
            if cursor is None:
                return ids
