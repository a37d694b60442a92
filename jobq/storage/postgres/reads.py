"""The PostgreSQL store's reads of jobs (SPEC §4): one job, a batch, a page
of a listing, counts and why jobs wait. Every read sees what was committed
when its statement started; none takes a lock."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from jobq.core.models import CLAIMABLE, Job, ListQuery, Status
from jobq.core.timefmt import to_ms
from jobq.rules.jobs import waiting_reason
from jobq.rules.listing import decode_cursor, encode_cursor, matches
from jobq.rules.transitions import first_unfinished_dependency
from jobq.storage.postgres import rows
from jobq.storage.postgres.base import Base
from jobq.storage.postgres.rows import JOB_COLUMNS, Conn
from jobq.storage.protocol import RunningLimits

PAGE = 500  # rows fetched at a time while a text filter (`q`) is applied


class Reads(Base):
    async def get(self, job_id: str, tenant_id: str | None) -> Job | None:
        """The job, or None when it does not exist or belongs to another tenant."""
        async with self._connection("get") as conn:
            row = await conn.fetchrow(f"SELECT {JOB_COLUMNS} FROM any_job WHERE id = $1", job_id)
        if row is None or (tenant_id is not None and row["tenant_id"] != tenant_id):
            return None
        return rows.job_of(row)

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        if not job_ids:
            return []
        async with self._connection("get_many") as conn:
            found = await conn.fetch(f"SELECT {JOB_COLUMNS} FROM any_job WHERE id = ANY($1::text[])", list(job_ids))
        by_id = {row["id"]: row for row in found}
        return [rows.job_of(by_id[i]) for i in job_ids if i in by_id]

    async def list_jobs(self, query: ListQuery) -> tuple[list[Job], str | None]:
        """Newest first; raises `BadRequest` on a cursor jobq did not make. Status
        and type filter in SQL; the text filter `q` is the same rule as the JSON
        store's (`listing.matches`), applied to pages of rows."""
        conditions, params = self._filters(query)
        async with self._connection("list_jobs") as conn:
            if query.cursor:
                created, after_id = decode_cursor(query.cursor)
                seq = await conn.fetchval("SELECT seq FROM any_job WHERE id = $1", after_id)
                if seq is not None:
                    params.append(seq)
                    conditions.append(f"seq < ${len(params)}")
                else:
                    params.append(created)
                    conditions.append(f"created_at < ${len(params)}")
            found = await self._scan(conn, query, conditions, params)
        if len(found) > query.limit:
            del found[query.limit :]
            return found, encode_cursor(found[-1])
        return found, None

    @staticmethod
    def _filters(query: ListQuery) -> tuple[list[str], list[Any]]:
        conditions: list[str] = []
        params: list[Any] = []
        if query.tenant_id is not None:
            params.append(query.tenant_id)
            conditions.append(f"tenant_id = ${len(params)}")
        if query.statuses is not None:
            params.append([s.value for s in query.statuses])
            conditions.append(f"status = ANY(${len(params)}::text[])")
        if query.type is not None:
            params.append(query.type)
            conditions.append(f"type = ${len(params)}")
        return conditions, params

    async def _scan(self, conn: Conn, query: ListQuery, conditions: list[str], params: list[Any]) -> list[Job]:
        """Up to `limit + 1` matching jobs, newest first."""
        found: list[Job] = []
        after: int | None = None
        while True:
            where = list(conditions)
            args = list(params)
            if after is not None:
                args.append(after)
                where.append(f"seq < ${len(args)}")
            clause = f"WHERE {' AND '.join(where)}" if where else ""
            batch = PAGE if query.q else query.limit + 1
            args.append(batch)
            page = await conn.fetch(
                f"SELECT {JOB_COLUMNS} FROM any_job {clause} ORDER BY seq DESC LIMIT ${len(args)}", *args
            )
            for row in page:
                job = rows.job_of(row)
                if matches(job, query):
                    found.append(job)
                    if len(found) > query.limit:
                        return found
            if len(page) < batch:
                return found
            after = page[-1]["seq"]

    async def counts(self, tenant_id: str | None) -> dict[str, int]:
        totals = {status.value: 0 for status in Status}
        async with self._connection("counts") as conn:
            for table in ("job", "job_history"):
                if tenant_id is None:
                    found = await conn.fetch(f"SELECT status, count(*) AS n FROM {table} GROUP BY status")
                else:
                    found = await conn.fetch(
                        f"SELECT status, count(*) AS n FROM {table} WHERE tenant_id = $1 GROUP BY status", tenant_id
                    )
                for row in found:
                    totals[row["status"]] += row["n"]
        return totals

    async def waiting_reasons(self, jobs: Iterable[Job], now: datetime, limits: RunningLimits) -> list[str | None]:
        """`waitingReason` of each job (SPEC §2), computed, never stored."""
        async with self._connection("waiting_reasons") as conn:
            return await self._reasons(conn, list(jobs), to_ms(now), limits)

    async def _reasons(self, conn: Conn, jobs: list[Job], now: datetime, limits: RunningLimits) -> list[str | None]:
        if not jobs:
            return []
        running = {
            row["tenant_id"]: row["n"]
            for row in await conn.fetch(
                "SELECT tenant_id, count(*) AS n FROM job WHERE status = 'running' GROUP BY tenant_id"
            )
        }
        due = [j.job_id for j in jobs if j.status in CLAIMABLE and j.next_run_at <= now]
        ahead: dict[str, int] = {}
        if due:
            found = await conn.fetch(
                "SELECT t.id, (SELECT count(*) FROM job j WHERE j.tenant_id = t.tenant_id"
                " AND j.status IN ('queued', 'retry') AND j.next_run_at <= $2"
                " AND (j.sort_key, j.seq) < (t.sort_key, t.seq)) AS n"
                " FROM job t WHERE t.id = ANY($1::text[])",
                due,
                now,
            )
            ahead = {row["id"]: row["n"] for row in found}
        deps = {d for j in jobs if j.status is Status.WAITING for d in j.depends_on}
        unfinished: dict[str, Job] = {}
        if deps:
            # Only unfinished jobs are in `job`; a dependency not there has ended
            # (one that failed would have cancelled its dependants).
            found = await conn.fetch(f"SELECT {JOB_COLUMNS} FROM job WHERE id = ANY($1::text[])", list(deps))
            unfinished = {row["id"]: rows.job_of(row) for row in found}
        slots_running = sum(running.values())
        return [
            waiting_reason(
                job,
                now,
                first_unfinished_dependency=first_unfinished_dependency(job, unfinished.get),
                tenant_running=running.get(job.tenant_id, 0),
                tenant_max_running=limits.of(job.tenant_id),
                jobs_ahead=ahead.get(job.job_id, 0),
                slots_running=slots_running,
                worker_slots=self.worker_slots,
            )
            for job in jobs
        ]
