"""Rows to jobq's values and back. A job row holds the columns the queries
need and the rest of the version in `doc` (its record without payload and
result, which are columns of their own: the encoded JSON bytes jobq holds),
all written from the same `Job`. The lease's end is the column's: a
heartbeat renews it without rewriting the document."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
import orjson

from jobq.core.models import Job
from jobq.rules.alerts import Alert
from jobq.rules.jobs import claim_key
from jobq.rules.outbox import Delivery

JOB_COLUMNS = (
    "id, seq, tenant_id, type, status, priority, sort_key, next_run_at, expires_at, lease_until, lease_token,"
    " worker_id, attempts, created_at, finished_at, last_error, stored_size, payload, result, doc, owner"
)
Row: TypeAlias = asyncpg.Record
if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A connection of its own or one lent by the pool: the store uses either.
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    Conn = Any
# Who holds a running job: the lease token, the worker's id, the owning process's key.
Lease = tuple[int | None, str | None, int | None]
NO_LEASE: Lease = (None, None, None)


def job_of(row: Row) -> Job:
    record = orjson.loads(row["doc"])
    job = Job.from_record(record)
    job.payload_json = row["payload"]
    job.result_json = row["result"]
    job.lease_expires_at = row["lease_until"]
    return job


def job_doc(job: Job) -> bytes:
    record = dict(job.to_record())
    record["payload"] = None
    record["result"] = None
    return orjson.dumps(record)


def job_values(job: Job, seq: int, aging_seconds: float, lease: Lease) -> tuple[Any, ...]:
    """The parameters of `INSERT INTO job (JOB_COLUMNS)`, in that order."""
    lease_token, worker_id, owner = lease
    return (
        job.job_id,
        seq,
        job.tenant_id,
        job.type,
        job.status.value,
        job.priority,
        claim_key(job.priority, job.next_run_at, aging_seconds),
        job.next_run_at,
        job.expires_at,
        job.lease_expires_at,
        lease_token,
        worker_id,
        job.attempts,
        job.created_at,
        job.finished_at,
        job.last_error,
        job.stored_size,
        job.payload_json,
        job.result_json,
        job_doc(job),
        owner,
    )


def delivery_of(row: Row) -> Delivery:
    return Delivery.from_record(orjson.loads(row["doc"]))


def delivery_update(delivery: Delivery) -> tuple[Any, ...]:
    return (delivery.delivery_id, delivery.status, delivery.next_attempt_at, orjson.dumps(delivery.to_record()))


def delivery_insert(delivery: Delivery) -> tuple[Any, ...]:
    return (
        delivery.delivery_id,
        delivery.job_id,
        delivery.tenant_id,
        delivery.lane,
        delivery.status,
        delivery.next_attempt_at,
        orjson.dumps(delivery.to_record()),
    )


def alert_of(row: Row) -> Alert:
    return Alert.from_record(orjson.loads(row["doc"]))


def alert_values(alert: Alert) -> tuple[str, str, datetime, datetime | None, bytes]:
    return (alert.alert_id, alert.tenant_id, alert.raised_at, alert.cleared_at, orjson.dumps(alert.to_record()))
