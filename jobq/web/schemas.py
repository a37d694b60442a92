"""The request bodies and answers of the HTTP API, declared once (SPEC §4).

pydantic v2 models in strict mode (`True` is not an integer, `"1"` is not a
number, unknown fields are errors): `validation.py` checks requests with them,
reporting every field error at once, and `openapi.py` generates the
document's schemas from them, so the two cannot drift. A field's
`description` is also the message a 422 gives for it.

What a model cannot say (a registered `type`, a handler's payload rules, the
address guard on URLs, the payload's encoded size, instants relative to now)
is checked by `validation.py` after the model.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from jobq.core.models import AttemptStatus, Status
from jobq.rules.addrguard import MAX_URL_LENGTH

MAX_ATTEMPTS_LIMIT = 100
MAX_TIMEOUT_SECONDS = 86400.0
MAX_DELAY_SECONDS = 366 * 86400.0
MAX_DEPENDENCIES = 100
MAX_BATCH = 1000
MAX_LIST_LIMIT = 500
MAX_BULK_IDS = 10000
MAX_QUERY_TEXT = 200
MAX_REF_LENGTH = 100
TYPE_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")
_FRACTION = re.compile(r"\.(\d{6})\d+")


def parse_timestamp(value: object) -> datetime | None:
    """An RFC 3339 timestamp with an offset, as UTC; None if it is not one."""
    if not isinstance(value, str) or not RFC3339.match(value):
        return None
    text = _FRACTION.sub(r".\1", value.upper().replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 shifted out of range
        return None


def _rfc3339(value: object) -> object:
    """Before the (strict) datetime check: only an RFC 3339 string with a zone
    becomes a datetime; pydantic's lax forms (Unix seconds, no zone) do not."""
    parsed = parse_timestamp(value)
    if parsed is None:
        raise ValueError("not an RFC 3339 timestamp with a time zone")
    return parsed


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339)]


def _absent() -> Any:
    """The default of a field that may be left out but not sent as null
    (a factory, so the document shows no `default: null`)."""
    return None


class Strict(BaseModel):
    """A request body: strict types, unknown fields refused, camelCase in JSON."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True, alias_generator=to_camel)


class Answer(BaseModel):
    """A response body: documented, never validated on the way out."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True)


# ---- requests ---------------------------------------------------------------

# A status by its name: the enum's values are accepted from parsed JSON (a
# strict enum field would take only `Status` instances).
StatusName = Annotated[Status, Field(strict=False)]
JobRef = Annotated[str, Field(min_length=1, max_length=MAX_REF_LENGTH)]
# The text of a URL; the address guard (`rules.addrguard.check_url`) runs after the model.
HttpUrlText = Annotated[
    str, Field(max_length=MAX_URL_LENGTH, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://", json_schema_extra={"format": "uri"})
]


class SubmitRequest(Strict):
    """`POST /jobs`. `runAt` and `delaySeconds` exclude each other."""

    model_config = ConfigDict(
        json_schema_extra={
            "not": {"required": ["runAt", "delaySeconds"]},
            "examples": [{"type": "echo", "payload": {"orderId": 42}, "priority": 2, "delaySeconds": 30}],
        }
    )

    type: str = Field(pattern=TYPE_PATTERN, description="a job type name (letters, digits, _ . : -)")
    payload: dict[str, Any] = Field(default_factory=dict, description="a JSON object")
    priority: int = Field(default=1, ge=0, le=3, description="an integer 0 (low), 1 (medium), 2 (high) or 3 (critical)")
    max_attempts: int = Field(
        default=4, ge=1, le=MAX_ATTEMPTS_LIMIT, description=f"an integer from 1 to {MAX_ATTEMPTS_LIMIT}"
    )
    timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        le=MAX_TIMEOUT_SECONDS,
        allow_inf_nan=False,
        description=f"a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS:g}",
    )
    run_at: Timestamp = Field(
        default_factory=_absent,  # absent means now; null is refused
        description="an RFC 3339 timestamp with a time zone, e.g. 2026-11-24T09:30:00Z",
    )
    delay_seconds: float | None = Field(
        default=None,
        ge=0,
        le=MAX_DELAY_SECONDS,
        allow_inf_nan=False,
        description=f"a number of seconds from 0 to {MAX_DELAY_SECONDS:.0f} (366 days)",
    )
    expires_at: Timestamp | None = Field(default=None, description="an RFC 3339 timestamp with a time zone")
    webhook_url: HttpUrlText | None = Field(
        default=None, description=f"an http(s) URL of at most {MAX_URL_LENGTH} characters"
    )
    depends_on: list[JobRef] = Field(
        default_factory=list,
        max_length=MAX_DEPENDENCIES,
        json_schema_extra={"uniqueItems": True},
        description=f"a list of at most {MAX_DEPENDENCIES} job ids (or refs in a batch)",
    )


class BatchItem(SubmitRequest):
    """One job of `POST /jobs/batch`; `dependsOn` may name other items' `ref`."""

    ref: JobRef | None = Field(
        default=None, description=f"a string of 1 to {MAX_REF_LENGTH} characters naming the job within the batch"
    )


class BatchRequest(Strict):
    """`POST /jobs/batch`: all accepted or none."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "jobs": [
                        {"ref": "fetch", "type": "echo", "payload": {"step": 1}},
                        {"ref": "report", "type": "echo", "payload": {"step": 2}, "dependsOn": ["fetch"]},
                    ]
                }
            ]
        }
    )

    jobs: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH, description=f"a list of 1 to {MAX_BATCH} jobs")


class BulkFilter(Strict):
    """Which jobs `POST /jobs/bulk` acts on (an empty status list matches none)."""

    status: StatusName | list[StatusName] | None = Field(default=None, description="a status or a list of statuses")
    type: str | None = Field(default=None, description="a string")
    q: str | None = Field(default=None, description="a string")


class BulkRequest(Strict):
    """`POST /jobs/bulk`: either `filter` or `jobIds`."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["filter"]}, {"required": ["jobIds"]}]})

    action: Literal["cancel", "retry"] = Field(description="cancel or retry")
    filter: BulkFilter = Field(default_factory=_absent)
    job_ids: list[str] = Field(
        default_factory=_absent, max_length=MAX_BULK_IDS, description=f"a list of at most {MAX_BULK_IDS} job ids"
    )


class ListParams(Strict):
    """The query string of `GET /jobs` (and, without `status`, `GET /dlq`)."""

    status: list[StatusName] | None = Field(default=None, description="comma-separated statuses")
    type: str | None = None
    q: str | None = Field(default=None, max_length=MAX_QUERY_TEXT)
    limit: int = Field(default=50, ge=1, le=MAX_LIST_LIMIT)
    cursor: str | None = None
    tenant: str | None = Field(default=None, description="admin keys only")


class LoginForm(Strict):
    """`POST /login`, as `application/x-www-form-urlencoded`."""

    key: str


# ---- answers ----------------------------------------------------------------


class AttemptRecord(Answer):
    attempt_id: str
    job_id: str
    attempt: int
    status: AttemptStatus
    error: str | None
    worker_id: str
    started_at: datetime
    finished_at: datetime | None


class OperatorActionRecord(Answer):
    action: str
    actor: str
    at: datetime


class Job(Answer):
    """A job as the API shows it (SPEC §2); `attemptHistory` only on `GET /jobs/{jobId}`
    and the answers about one job."""

    job_id: str
    tenant_id: str
    type: str
    payload: dict[str, Any]
    payload_hash: str
    status: Status
    priority: int = Field(ge=0, le=3)
    attempts: int
    max_attempts: int
    timeout_seconds: float
    next_run_at: datetime
    lease_expires_at: datetime | None
    idempotency_key: str | None
    webhook_url: str | None
    depends_on: list[str]
    result: Any
    last_error: str | None
    progress: float | None
    progress_message: str | None
    expires_at: datetime | None
    waiting_reason: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempt_history: list[AttemptRecord] = Field(default_factory=list)
    operator_actions: list[OperatorActionRecord] = Field(
        description="who cancelled, retried or redelivered the job by hand: the newest 20"
    )
    operator_actions_omitted: int = Field(description="older operator actions not kept")


class JobList(Answer):
    jobs: list[Job]
    next_cursor: str | None


class BatchAnswer(Answer):
    jobs: list[Job]


class BulkAnswer(Answer):
    matched: int
    changed: int


class DeliveryAttempt(Answer):
    attempt: int
    at: datetime
    webhook_timestamp: int = Field(description="the webhook-timestamp header sent")
    status_code: int | None = Field(description="null: no answer (network error, timeout)")
    duration_ms: float
    error: str | None
    status: Literal["succeeded", "failed"]
    redelivery: bool = False


class Delivery(Answer):
    delivery_id: str = Field(description="the webhook-id header, the same on every attempt")
    job_id: str | None
    tenant_id: str
    event: Literal["job.succeeded", "job.fatal", "job.cancelled"]  # rules.outbox.EVENTS
    url: str
    status: Literal["pending", "delivered", "failed", "stopped"]  # rules.outbox.DELIVERY_STATUSES
    created_at: datetime
    next_attempt_at: datetime
    attempts: list[DeliveryAttempt]
    redelivery: bool


class DeliveryList(Answer):
    deliveries: list[Delivery]


class FieldProblem(Answer):
    field: str
    message: str


class Problem(Answer):
    """RFC 9457 problem details; `errors` names every field at fault (422)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] = Field(default_factory=list)


class Metrics(Answer):
    """Counts by status, queue depth, jobs finished per second, DLQ size,
    webhook deliveries by status, and the active alerts."""

    model_config = ConfigDict(extra="allow")

    counts: dict[str, int]
    dlq: int


class HealthAnswer(Answer):
    status: Literal["ok", "ready"]


REQUEST_MODELS: tuple[type[BaseModel], ...] = (SubmitRequest, BatchRequest, BulkRequest, LoginForm)
ANSWER_MODELS: tuple[type[BaseModel], ...] = (
    Job,
    JobList,
    BatchAnswer,
    BulkAnswer,
    Delivery,
    DeliveryList,
    Problem,
    Metrics,
    HealthAnswer,
)
