"""The JSON store's operator actions (SPEC §4): cancel, retry from the DLQ
and bulk, a part of `JsonStore` kept in its own module like `store_outbox`.

Each is atomic (a bulk one chunk at a time) and durable when it returns, and
raises `StoreUnavailable` with nothing changed."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from jobq.core.errors import Conflict
from jobq.core.models import Job, ListQuery, Status
from jobq.core.timefmt import to_ms
from jobq.rules.listing import matches
from jobq.storage.jsonfile.index import JobIndex
from jobq.storage.jsonfile.lifecycle import cancel, retry_from_dlq
from jobq.storage.jsonfile.transaction import Transaction, atomic

logger = logging.getLogger(__name__)

BULK_CHUNK = 1000


class OperatorOperations:
    """Mixed into `JsonStore`, which provides `index`, `get`, `_commit` and `_get_visible`."""

    index: JobIndex
    if TYPE_CHECKING:

        async def _commit(self, tx: Transaction) -> list[Job]: ...
        def _get_visible(self, job_id: str, tenant_id: str | None) -> Job: ...
        def _get(self, job_id: str, tenant_id: str | None) -> Job | None: ...

    async def cancel(self, job_id: str, tenant_id: str | None, actor: str, now: datetime) -> Job:
        job = self._get_visible(job_id, tenant_id)
        if job.terminal:
            raise Conflict(f"job {job_id} is already {job.status.value}")
        with atomic(self.index) as tx:
            done = cancel(tx, job, f"cancelled by {actor}", to_ms(now), actor=actor)
        await self._commit(tx)
        logger.info("action=cancel jobId=%s tenantId=%s actor=%s", job_id, job.tenant_id, actor)
        return done

    async def retry(self, job_id: str, tenant_id: str | None, actor: str, now: datetime) -> Job:
        job = self._get_visible(job_id, tenant_id)
        if job.status is not Status.FATAL:
            raise Conflict(f"only fatal jobs can be retried; job {job_id} is {job.status.value}")
        with atomic(self.index) as tx:
            queued = retry_from_dlq(tx, job, actor, to_ms(now))
        await self._commit(tx)
        logger.info("action=retry jobId=%s tenantId=%s actor=%s", job_id, job.tenant_id, actor)
        return queued

    async def bulk(
        self, query: ListQuery, job_ids: list[str] | None, action: str, actor: str, now: datetime
    ) -> tuple[int, int]:
        """Cancel or retry every job matching `query` (or each of `job_ids` the
        caller may see). Applied in chunks of `BULK_CHUNK` jobs, each atomic."""
        now = to_ms(now)
        if job_ids is not None:
            targets = [j for j in (self._get(i, query.tenant_id) for i in dict.fromkeys(job_ids)) if j is not None]
        else:
            targets = [j for j in self.index.newest_first(query.tenant_id, query.statuses) if matches(j, query)]
        changed = 0
        for start in range(0, len(targets), BULK_CHUNK):
            with atomic(self.index) as tx:
                for target in targets[start : start + BULK_CHUNK]:
                    job = tx.latest(target.job_id)
                    if job is None:
                        continue
                    if action == "cancel" and not job.terminal:
                        cancel(tx, job, f"cancelled by {actor}", now, actor=f"{actor} (bulk)")
                        changed += 1
                    elif action == "retry" and job.status is Status.FATAL:
                        retry_from_dlq(tx, job, f"{actor} (bulk)", now)
                        changed += 1
            await self._commit(tx)
        logger.info("action=bulk_%s matched=%d changed=%d actor=%s", action, len(targets), changed, actor)
        return len(targets), changed
