"""Plain typed data: jobs, attempts, statuses and the one transition table.

Python names are snake_case; camelCase and RFC 3339 timestamps exist only in
`to_record`/`from_record` (storage) and `to_api` (HTTP) at the edge.

What a job carries as opaque JSON (its payload and result) is held as its
encoded bytes, decoded only when a handler asks for it (`Job.payload`) and
embedded as they are (`orjson.Fragment`) when the job is written out: a 60 KB
payload of 7,500 small objects costs 60 KB, not 1.5 MB of Python objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from jobq.core.timefmt import format_ts, parse_ts

JSON = Any


def encode_json(value: JSON) -> bytes:
    """orjson's compact encoding of `value`, in an exact-size bytes object
    (orjson hands back bytes in a buffer of 4 KiB or more, up to 16x the text
    for a large value: kept as it is, that would be most of a job's memory)."""
    return bytes(memoryview(orjson.dumps(value)))


def encode_opaque_fields(body: JSON) -> JSON:
    """A job as `Job.to_api` shows it, read back from storage (a remembered
    answer, a webhook's data), with its payload and result held encoded as
    `to_api` makes them, not as decoded trees. Anything else is returned as it is."""
    if not isinstance(body, dict):
        return body
    return {
        name: orjson.Fragment(encode_json(value)) if name in _OPAQUE_FIELDS and value is not None else value
        for name, value in body.items()
    }


_OPAQUE_FIELDS = frozenset({"payload", "result"})


class Status(StrEnum):
    WAITING = "waiting"
    QUEUED = "queued"
    RUNNING = "running"
    RETRY = "retry"
    SUCCEEDED = "succeeded"
    FATAL = "fatal"
    CANCELLED = "cancelled"


# The error of an attempt whose lease ran out (the alert monitor looks for it).
LEASE_EXPIRED_ERROR = "lease expired: the worker stopped heartbeating"

TERMINAL = frozenset({Status.SUCCEEDED, Status.FATAL, Status.CANCELLED})
CLAIMABLE = frozenset({Status.QUEUED, Status.RETRY})

# SPEC §3, the whole state machine. `None` is "not yet submitted".
TRANSITIONS: frozenset[tuple[Status | None, Status]] = frozenset(
    {
        (None, Status.WAITING),
        (None, Status.QUEUED),
        (Status.WAITING, Status.QUEUED),
        (Status.WAITING, Status.CANCELLED),
        (Status.QUEUED, Status.RUNNING),
        (Status.RETRY, Status.RUNNING),
        (Status.RUNNING, Status.SUCCEEDED),
        (Status.RUNNING, Status.RETRY),
        (Status.RUNNING, Status.FATAL),
        (Status.RUNNING, Status.CANCELLED),
        # A graceful shutdown releases a running job without using an attempt.
        (Status.RUNNING, Status.QUEUED),
        (Status.QUEUED, Status.CANCELLED),
        (Status.RETRY, Status.CANCELLED),
        (Status.FATAL, Status.QUEUED),
    }
)


class IllegalTransition(Exception):
    pass


def check_transition(old: Status | None, new: Status) -> None:
    """Raise `IllegalTransition` unless SPEC §3 allows `old` -> `new`."""
    if (old, new) not in TRANSITIONS:
        raise IllegalTransition(f"{old.value if old else 'new'} -> {new.value}")


class AttemptStatus(StrEnum):
    RUNNING = "running"
    FAILED = "failed"
    SUCCEEDED = "succeeded"
    INTERRUPTED = "interrupted"


@dataclass(slots=True)
class Attempt:
    attempt_id: str
    job_id: str
    attempt: int
    status: AttemptStatus
    worker_id: str
    started_at: datetime
    error: str | None = None
    finished_at: datetime | None = None

    def to_record(self) -> dict[str, JSON]:
        return {
            "attemptId": self.attempt_id,
            "jobId": self.job_id,
            "attempt": self.attempt,
            "status": self.status.value,
            "error": self.error,
            "workerId": self.worker_id,
            "startedAt": format_ts(self.started_at),
            "finishedAt": format_ts(self.finished_at),
        }

    @classmethod
    def from_record(cls, r: dict[str, JSON]) -> Attempt:
        started = parse_ts(r["startedAt"])
        assert started is not None
        return cls(
            attempt_id=r["attemptId"],
            job_id=r["jobId"],
            attempt=r["attempt"],
            status=AttemptStatus(r["status"]),
            worker_id=r["workerId"],
            started_at=started,
            error=r.get("error"),
            finished_at=parse_ts(r.get("finishedAt")),
        )


@dataclass(slots=True)
class OperatorAction:
    """Who did what to a job by hand (cancel, retry, bulk), and when."""

    action: str
    actor: str
    at: datetime

    def to_record(self) -> dict[str, JSON]:
        return {"action": self.action, "actor": self.actor, "at": format_ts(self.at)}

    @classmethod
    def from_record(cls, r: dict[str, JSON]) -> OperatorAction:
        at = parse_ts(r["at"])
        assert at is not None
        return cls(action=r["action"], actor=r["actor"], at=at)


@dataclass(slots=True)
class Job:
    job_id: str
    tenant_id: str
    type: str
    # The payload's JSON (`encode_json`); `payload` decodes it.
    payload_json: bytes
    payload_hash: str
    status: Status
    priority: int
    max_attempts: int
    timeout_seconds: float
    next_run_at: datetime
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    lease_expires_at: datetime | None = None
    idempotency_key: str | None = None
    webhook_url: str | None = None
    depends_on: list[str] = field(default_factory=list)
    # The result's JSON, None for null; `result` decodes it.
    result_json: bytes | None = None
    last_error: str | None = None
    progress: float | None = None
    progress_message: str | None = None
    expires_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt_history: list[Attempt] = field(default_factory=list)
    operator_actions: list[OperatorAction] = field(default_factory=list)
    operator_actions_omitted: int = 0  # older actions no longer kept (only the newest are)
    # Attempts that do not count against max_attempts: interrupted by a graceful
    # shutdown, snoozed, or made before a retry from the DLQ.
    uncounted_attempts: int = 0
    snoozes: int = 0
    # The stored form, made once per version (jobs are replaced, not mutated).
    cached_record: dict[str, JSON] | None = field(default=None, repr=False, compare=False)

    def evolve(self, **changes: Any) -> Job:
        """A copy with `changes` applied; a cheaper `dataclasses.replace`."""
        new = object.__new__(Job)
        for name in _JOB_FIELDS:
            setattr(new, name, getattr(self, name))
        for name, value in changes.items():
            if name == "payload":
                name, value = "payload_json", encode_json(value)
            elif name == "result":
                name, value = "result_json", None if value is None else encode_json(value)
            elif name not in _JOB_FIELD_SET:
                raise TypeError(f"Job has no field {name!r}")
            setattr(new, name, value)
        new.cached_record = None
        return new

    @property
    def payload(self) -> dict[str, JSON]:
        """The payload, decoded afresh on each call (callers may change it)."""
        payload: dict[str, JSON] = orjson.loads(self.payload_json)
        return payload

    @property
    def result(self) -> JSON:
        """The result, decoded afresh on each call; None for none (or null)."""
        return None if self.result_json is None else orjson.loads(self.result_json)

    @property
    def stored_size(self) -> int:
        """About how many bytes the job's stored record takes (within a few
        percent: strings are counted in characters): what a tenant's
        `maxStoredBytes` counts. Cheap, and fixed for a version of the job."""
        size = _RECORD_BYTES + len(self.payload_json) + len(self.type) + len(self.tenant_id)
        if self.result_json is not None:
            size += len(self.result_json) - 4  # "null" is in the fixed part
        for text in (self.last_error, self.progress_message, self.idempotency_key, self.webhook_url):
            if text is not None:
                size += len(text)
        for at in (self.lease_expires_at, self.expires_at, self.started_at, self.finished_at):
            if at is not None:
                size += 22  # a quoted timestamp instead of null
        size += _DEPENDENCY_BYTES * len(self.depends_on)
        for attempt in self.attempt_history:
            size += _ATTEMPT_BYTES + len(attempt.worker_id) + len(attempt.error or "")
        for action in self.operator_actions:
            size += _ACTION_BYTES + len(action.action) + len(action.actor)
        return size

    @property
    def counted_attempts(self) -> int:
        return self.attempts - self.uncounted_attempts

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def to_record(self) -> dict[str, JSON]:
        """The stored form: the API fields plus the internal counters. Made once
        per version and shared: callers must not change it."""
        if self.cached_record is None:
            self.cached_record = self._record()
        return self.cached_record

    def to_api(self, waiting_reason: str | None, with_history: bool = False) -> dict[str, JSON]:
        """The job as the HTTP API shows it (SPEC §2): a fresh dict."""
        body = dict(self.to_record())  # a C-level copy: cheaper than filtering key by key
        for name in _INTERNAL_FIELDS:
            body.pop(name, None)  # a record read from an older file may lack them
        body["waitingReason"] = waiting_reason
        if not with_history:
            del body["attemptHistory"]
        return body

    def renew_lease(self, lease_expires_at: datetime) -> None:
        """The one change made in place: a heartbeat (leases are not stored)."""
        self.lease_expires_at = lease_expires_at
        self.cached_record = None

    def _record(self) -> dict[str, JSON]:
        return {
            "jobId": self.job_id,
            "tenantId": self.tenant_id,
            "type": self.type,
            "payload": orjson.Fragment(self.payload_json),
            "payloadHash": self.payload_hash,
            "status": self.status,  # a StrEnum: orjson writes its value
            "priority": self.priority,
            "attempts": self.attempts,
            "maxAttempts": self.max_attempts,
            "timeoutSeconds": self.timeout_seconds,
            "nextRunAt": format_ts(self.next_run_at),
            "leaseExpiresAt": format_ts(self.lease_expires_at),
            "idempotencyKey": self.idempotency_key,
            "webhookUrl": self.webhook_url,
            "dependsOn": list(self.depends_on),
            "result": None if self.result_json is None else orjson.Fragment(self.result_json),
            "lastError": self.last_error,
            "progress": self.progress,
            "progressMessage": self.progress_message,
            "expiresAt": format_ts(self.expires_at),
            "createdAt": format_ts(self.created_at),
            "updatedAt": format_ts(self.updated_at),
            "startedAt": format_ts(self.started_at),
            "finishedAt": format_ts(self.finished_at),
            "attemptHistory": [a.to_record() for a in self.attempt_history],
            "operatorActions": [a.to_record() for a in self.operator_actions],
            "operatorActionsOmitted": self.operator_actions_omitted,
            "uncountedAttempts": self.uncounted_attempts,
            "snoozes": self.snoozes,
        }

    @classmethod
    def from_record(cls, r: dict[str, JSON]) -> Job:
        """The job of a stored record. Keeps nothing of `r`: its payload and
        result are encoded again, so their decoded trees can be freed."""

        def ts(name: str) -> datetime:
            value = parse_ts(r[name])
            assert value is not None, name
            return value

        return cls(
            job_id=r["jobId"],
            tenant_id=r["tenantId"],
            type=r["type"],
            payload_json=encode_json(r["payload"]),
            payload_hash=r["payloadHash"],
            status=Status(r["status"]),
            priority=r["priority"],
            max_attempts=r["maxAttempts"],
            timeout_seconds=r["timeoutSeconds"],
            next_run_at=ts("nextRunAt"),
            created_at=ts("createdAt"),
            updated_at=ts("updatedAt"),
            attempts=r["attempts"],
            lease_expires_at=parse_ts(r.get("leaseExpiresAt")),
            idempotency_key=r.get("idempotencyKey"),
            webhook_url=r.get("webhookUrl"),
            depends_on=list(r.get("dependsOn") or []),
            result_json=None if r.get("result") is None else encode_json(r["result"]),
            last_error=r.get("lastError"),
            progress=r.get("progress"),
            progress_message=r.get("progressMessage"),
            expires_at=parse_ts(r.get("expiresAt")),
            started_at=parse_ts(r.get("startedAt")),
            finished_at=parse_ts(r.get("finishedAt")),
            attempt_history=[Attempt.from_record(a) for a in r.get("attemptHistory") or []],
            operator_actions=[OperatorAction.from_record(a) for a in r.get("operatorActions") or []],
            operator_actions_omitted=r.get("operatorActionsOmitted", 0),
            uncounted_attempts=r.get("uncountedAttempts", 0),
            snoozes=r.get("snoozes", 0),
        )


_JOB_FIELDS = tuple(f.name for f in fields(Job))
_INTERNAL_FIELDS = frozenset({"uncountedAttempts", "snoozes"})
_JOB_FIELD_SET = frozenset(_JOB_FIELDS)
# The parts of `Job.stored_size` that do not vary: a record's keys, timestamps
# and numbers (measured on records, rounded up), its attempts' and its
# operator actions', and a dependency's quoted id and comma.
_RECORD_BYTES = 672
_ATTEMPT_BYTES = 234
_ACTION_BYTES = 58
_DEPENDENCY_BYTES = 39


@dataclass(frozen=True, slots=True)
class NewJob:
    """A validated submit request for one job (SPEC §4); `ref` names it inside a batch."""

    type: str
    payload: dict[str, JSON]
    priority: int = 1
    max_attempts: int = 4
    timeout_seconds: float = 300.0
    run_at: datetime | None = None
    delay_seconds: float | None = None
    expires_at: datetime | None = None
    webhook_url: str | None = None
    depends_on: tuple[str, ...] = ()
    ref: str | None = None


@dataclass(frozen=True, slots=True)
class ListQuery:
    tenant_id: str | None  # None: every tenant (admin)
    statuses: frozenset[Status] | None = None
    type: str | None = None
    q: str | None = None
    limit: int = 50
    cursor: str | None = None
