"""The JSON store's reads (SPEC §4): a job, many, a page of a list, counts,
waiting reasons and the next due time, all answered from memory; a part of
`JsonStore` kept in its own module like `operator.py` and `outbox.py`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from jobq.core.errors import NotFound
from jobq.core.models import Job, ListQuery, Status
from jobq.rules.jobs import waiting_reason
from jobq.rules.listing import decode_cursor, encode_cursor, matches
from jobq.rules.transitions import first_unfinished_dependency as _first_unfinished
from jobq.storage.jsonfile.index import JobIndex
from jobq.storage.protocol import RunningLimits


class ReadOperations:
    """Mixed into `JsonStore`, which provides `index` and `worker_slots`."""

    index: JobIndex
    worker_slots: int

    async def get(self, job_id: str, tenant_id: str | None) -> Job | None:
        """The job, or None when it does not exist or belongs to another tenant."""
        return self._get(job_id, tenant_id)

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        jobs = self.index.jobs
        return [jobs[job_id] for job_id in job_ids if job_id in jobs]

    def _get(self, job_id: str, tenant_id: str | None) -> Job | None:
        job = self.index.jobs.get(job_id)
        if job is None or (tenant_id is not None and job.tenant_id != tenant_id):
            return None
        return job

    def _get_visible(self, job_id: str, tenant_id: str | None) -> Job:
        job = self._get(job_id, tenant_id)
        if job is None:
            raise NotFound(f"job {job_id} not found")
        return job

    async def list_jobs(self, query: ListQuery) -> tuple[list[Job], str | None]:
        """Newest first; raises `BadRequest` on a cursor jobq did not make."""
        found: list[Job] = []
        after = decode_cursor(query.cursor) if query.cursor else None
        passed = after is None
        for job in self.index.newest_first(query.tenant_id, query.statuses):
            if not passed:
                assert after is not None
                if job.job_id == after[1]:
                    passed = True
                    continue
                if job.created_at >= after[0]:
                    continue
                passed = True
            if matches(job, query):
                found.append(job)
                if len(found) > query.limit:
                    break
        if len(found) > query.limit:
            del found[query.limit :]
            return found, encode_cursor(found[-1])
        return found, None

    async def counts(self, tenant_id: str | None) -> dict[str, int]:
        totals = {status.value: 0 for status in Status}
        for tenant, counts in self.index.counts.items():
            if tenant_id is None or tenant == tenant_id:
                for status, n in counts.items():
                    totals[status.value] += n
        return totals

    async def waiting_reasons(
        self, jobs: Iterable[Job], now: datetime, limits: RunningLimits
    ) -> list[str | None]:
        """`waitingReason` of each job (SPEC §2), computed, never stored."""
        self.index.promote_due(now)
        slots_running = sum(len(jobs) for jobs in self.index.running.values())
        return [
            waiting_reason(
                job,
                now,
                first_unfinished_dependency=_first_unfinished(job, self.index.jobs.get),
                tenant_running=self.index.running_count(job.tenant_id),
                tenant_max_running=limits.of(job.tenant_id),
                jobs_ahead=self.index.jobs_ahead(job),
                slots_running=slots_running,
                worker_slots=self.worker_slots,
            )
            for job in jobs
        ]

    async def next_due(self) -> datetime | None:
        """When the next scheduled or retrying job becomes due (None: none)."""
        return self.index.next_timer()
