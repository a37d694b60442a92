"""Checking request bodies and query strings by hand, field by field (SPEC §4).

Every problem is collected as a `FieldError` so one 422 names them all.
`True` is not an integer here, and unknown fields are errors, not ignored.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from jobq.core.errors import BadRequest, FieldError, PayloadTooLarge, ValidationFailed
from jobq.core.models import ListQuery, NewJob, Status
from jobq.rules.addrguard import check_url
from jobq.worker.handlers import Registry

SUBMIT_FIELDS = frozenset(
    {
        "type",
        "payload",
        "priority",
        "maxAttempts",
        "timeoutSeconds",
        "runAt",
        "delaySeconds",
        "expiresAt",
        "webhookUrl",
        "dependsOn",
    }
)
MAX_ATTEMPTS_LIMIT = 100
MAX_TIMEOUT_SECONDS = 86400.0
MAX_DELAY_SECONDS = 366 * 86400.0
MAX_DEPENDENCIES = 100
MAX_BATCH = 1000
MAX_LIST_LIMIT = 500
TYPE_PATTERN = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


@dataclass(frozen=True, slots=True)
class SubmitDefaults:
    max_attempts: int
    timeout_seconds: float
    max_payload_bytes: int
    allow_private_urls: bool  # JOBQ_ALLOW_PRIVATE_URLS: lifts the address guard (SPEC §9)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def parse_timestamp(value: object) -> datetime | None:
    """An RFC 3339 timestamp with an offset, as UTC; None if it is not one."""
    if not isinstance(value, str) or not RFC3339.match(value):
        return None
    text = value.upper().replace("Z", "+00:00")
    text = re.sub(r"\.(\d{6})\d+", r".\1", text)
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 shifted out of range
        return None


def parse_new_job(
    body: Any, registry: Registry, defaults: SubmitDefaults, now: datetime, *, prefix: str = "", batch: bool = False
) -> tuple[NewJob | None, list[FieldError]]:
    """One job of a submit body; returns it, or None with the field errors.
    Raises `PayloadTooLarge` for a payload over the limit."""
    errors: list[FieldError] = []

    def err(name: str, message: str) -> None:
        errors.append(FieldError(prefix + name, message))

    if not isinstance(body, dict):
        return None, [FieldError(prefix.rstrip(".") or "body", "a JSON object")]
    allowed = SUBMIT_FIELDS | {"ref"} if batch else SUBMIT_FIELDS
    for name in sorted(set(body) - allowed):
        err(name, "unknown field")

    job_type = body.get("type")
    if not isinstance(job_type, str) or not TYPE_PATTERN.match(job_type):
        err("type", "a job type name (letters, digits, _ . : -)")
    elif registry.get(job_type) is None:
        err("type", f"no handler is registered for {job_type!r}; known types: {', '.join(registry.names())}")

    payload = body.get("payload", {})
    if not isinstance(payload, dict):
        err("payload", "a JSON object")
        payload = {}
    size = len(orjson.dumps(payload))
    if size > defaults.max_payload_bytes:
        raise PayloadTooLarge(
            f"{prefix}payload is {size} bytes serialized; the limit is {defaults.max_payload_bytes}",
            errors=[FieldError(prefix + "payload", f"at most {defaults.max_payload_bytes} bytes serialized")],
        )
    spec = registry.get(job_type) if isinstance(job_type, str) else None
    if spec is not None and spec.validate is not None:
        errors.extend(FieldError(prefix + e.field, e.message) for e in spec.validate(payload))

    priority = body.get("priority", 1)
    if not is_int(priority) or not 0 <= priority <= 3:
        err("priority", "an integer 0 (low), 1 (medium), 2 (high) or 3 (critical)")
    max_attempts = body.get("maxAttempts", defaults.max_attempts)
    if not is_int(max_attempts) or not 1 <= max_attempts <= MAX_ATTEMPTS_LIMIT:
        err("maxAttempts", f"an integer from 1 to {MAX_ATTEMPTS_LIMIT}")
    timeout = body.get("timeoutSeconds", defaults.timeout_seconds)
    if not is_number(timeout) or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
        err("timeoutSeconds", f"a number of seconds above 0 and at most {MAX_TIMEOUT_SECONDS:g}")

    run_at = None
    if "runAt" in body and "delaySeconds" in body:
        err("runAt", "give runAt or delaySeconds, not both")
    elif "runAt" in body:
        run_at = parse_timestamp(body["runAt"])
        if run_at is None:
            err("runAt", "an RFC 3339 timestamp with a time zone, e.g. 2026-11-24T09:30:00Z")
        elif run_at > now + timedelta(seconds=MAX_DELAY_SECONDS):
            err("runAt", "at most a year ahead")
    delay = body.get("delaySeconds")
    if delay is not None and (not is_number(delay) or not 0 <= delay <= MAX_DELAY_SECONDS):
        err("delaySeconds", f"a number of seconds from 0 to {MAX_DELAY_SECONDS:g}")
    expires_at = None
    if body.get("expiresAt") is not None:
        expires_at = parse_timestamp(body["expiresAt"])
        if expires_at is None:
            err("expiresAt", "an RFC 3339 timestamp with a time zone")
        elif expires_at <= now:
            err("expiresAt", "must be in the future")

    webhook_url = check_url(
        body.get("webhookUrl"), prefix + "webhookUrl", errors, allow_private=defaults.allow_private_urls
    )
    depends_on = body.get("dependsOn", [])
    if (
        not isinstance(depends_on, list)
        or len(depends_on) > MAX_DEPENDENCIES
        or not all(isinstance(d, str) and 0 < len(d) <= 100 for d in depends_on)
    ):
        err("dependsOn", f"a list of at most {MAX_DEPENDENCIES} job ids (or refs in a batch)")
        depends_on = []
    elif len(set(depends_on)) != len(depends_on):
        err("dependsOn", "lists a job more than once")
    ref = body.get("ref")
    if batch and ref is not None and (not isinstance(ref, str) or not 0 < len(ref) <= 100):
        err("ref", "a string of 1 to 100 characters naming the job within the batch")

    if errors or not isinstance(job_type, str):
        return None, errors
    return (
        NewJob(
            type=job_type,
            payload=payload,
            priority=priority,
            max_attempts=max_attempts,
            timeout_seconds=float(timeout),
            run_at=run_at,
            delay_seconds=float(delay) if delay is not None else None,
            expires_at=expires_at,
            webhook_url=webhook_url,
            depends_on=tuple(depends_on),
            ref=ref,
        ),
        [],
    )


def parse_submit(body: Any, registry: Registry, defaults: SubmitDefaults, now: datetime) -> NewJob:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    job, errors = parse_new_job(body, registry, defaults, now)
    if job is None:
        raise ValidationFailed("the job is not valid", errors=errors)
    return job


def parse_batch(body: Any, registry: Registry, defaults: SubmitDefaults, now: datetime) -> list[NewJob]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    errors = [FieldError(name, "unknown field") for name in sorted(set(body) - {"jobs"})]
    items = body.get("jobs")
    if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
        raise ValidationFailed(
            "jobs must be a list", errors=[*errors, FieldError("jobs", f"a list of 1 to {MAX_BATCH} jobs")]
        )
    jobs: list[NewJob] = []
    for position, item in enumerate(items):
        job, item_errors = parse_new_job(item, registry, defaults, now, prefix=f"jobs[{position}].", batch=True)
        errors.extend(item_errors)
        if job is not None:
            jobs.append(job)
    refs = [job.ref for job in jobs if job.ref is not None]
    if len(set(refs)) != len(refs):
        errors.append(FieldError("jobs", "refs must be unique within a batch"))
    if errors:
        raise ValidationFailed("the batch is not valid", errors=errors)
    return jobs


def parse_statuses(raw: str | None, field: str = "status") -> frozenset[Status] | None:
    if raw is None or raw == "":
        return None
    statuses = set()
    for name in raw.split(","):
        try:
            statuses.add(Status(name.strip()))
        except ValueError:
            raise ValidationFailed(
                f"unknown status {name!r}",
                errors=[FieldError(field, "one or more of " + ", ".join(s.value for s in Status))],
            ) from None
    return frozenset(statuses)


LIST_PARAMS = frozenset({"status", "type", "q", "limit", "cursor", "tenant"})


def _query_statuses(raw: str | None) -> frozenset[Status] | None:
    """`status` in a query string: like the other parameters, a 400 when wrong."""
    try:
        return parse_statuses(raw)
    except ValidationFailed as exc:
        raise BadRequest(f"{exc.detail}; status is one or more of " + ", ".join(s.value for s in Status)) from None


def parse_list_query(params: Mapping[str, str], tenant_id: str | None, *, is_admin: bool) -> ListQuery:
    """`GET /jobs` query string; `limit` outside 1-500 is a 400 (SPEC §4)."""
    unknown = sorted(set(params) - LIST_PARAMS)
    if unknown:
        raise BadRequest(f"unknown query parameter {unknown[0]!r}; known: {', '.join(sorted(LIST_PARAMS))}")
    raw_limit = params.get("limit", "50")
    # isdigit() alone admits superscript and non-ASCII digits, which int() refuses
    # (or reads), and int() of thousands of digits raises: ASCII, a few digits.
    digits = raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 9
    if not digits or not 1 <= int(raw_limit) <= MAX_LIST_LIMIT:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}")
    if "tenant" in params and is_admin:
        tenant_id = params["tenant"]
    q = params.get("q") or None
    if q is not None and len(q) > 200:
        raise BadRequest("q is at most 200 characters")
    return ListQuery(
        tenant_id=tenant_id,
        statuses=_query_statuses(params.get("status")),
        type=params.get("type") or None,
        q=q,
        limit=int(raw_limit),
        cursor=params.get("cursor") or None,
    )


def parse_filter(raw: Any, tenant_id: str | None) -> ListQuery:
    """The `filter` object of `POST /jobs/bulk`."""
    if not isinstance(raw, dict):
        raise ValidationFailed("filter must be an object", errors=[FieldError("filter", "an object")])
    errors = [FieldError(f"filter.{k}", "unknown field") for k in sorted(set(raw) - {"status", "type", "q"})]
    for name in ("type", "q"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            errors.append(FieldError(f"filter.{name}", "a string"))
    status = raw.get("status")
    if status is not None and not (
        isinstance(status, str) or (isinstance(status, list) and all(isinstance(s, str) for s in status))
    ):
        errors.append(FieldError("filter.status", "a status or a list of statuses"))
    if errors:
        raise ValidationFailed("filter is not valid", errors=errors)
    joined = ",".join(status) if isinstance(status, list) else status
    # An empty list names no status, so it matches no job (not "any status").
    statuses = frozenset() if status == [] else parse_statuses(joined, "filter.status")
    return ListQuery(
        tenant_id=tenant_id,
        statuses=statuses,
        type=raw.get("type") or None,
        q=raw.get("q") or None,
        limit=MAX_LIST_LIMIT,
    )
