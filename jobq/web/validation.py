"""Checking request bodies and query strings (SPEC §4) with the models of
`schemas.py`, then with what a model cannot say.

`strict_json.loads` has already refused duplicate keys, NaN, Infinity and
deep nesting; here one strict pydantic pass reports every field error of the
body at once (`True` is not an integer, unknown fields are errors), and the
checks after it add theirs to the same 422: a registered `type` and its
handler's payload rules, the address guard on URLs, instants relative to now,
repeated dependencies and refs. A payload over the size limit is a 413 before
any of that. Field paths are the JSON names: `payload.url`, `jobs[3].type`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from jobq.core.errors import BadRequest, FieldError, PayloadTooLarge, ValidationFailed
from jobq.core.models import ListQuery, NewJob, Status
from jobq.rules.addrguard import check_url
from jobq.web.schemas import (
    MAX_ATTEMPTS_LIMIT,
    MAX_BATCH,
    MAX_DELAY_SECONDS,
    MAX_DEPENDENCIES,
    MAX_LIST_LIMIT,
    MAX_QUERY_TEXT,
    MAX_TIMEOUT_SECONDS,
    TYPE_PATTERN,
    BatchItem,
    BatchRequest,
    BulkFilter,
    BulkRequest,
    ListParams,
    SubmitRequest,
    parse_timestamp,
)
from jobq.worker.handlers import Registry

__all__ = [
    "MAX_ATTEMPTS_LIMIT",
    "MAX_BATCH",
    "MAX_DELAY_SECONDS",
    "MAX_DEPENDENCIES",
    "MAX_LIST_LIMIT",
    "MAX_TIMEOUT_SECONDS",
    "TYPE_PATTERN",
    "SubmitDefaults",
    "parse_batch",
    "parse_bulk",
    "parse_list_query",
    "parse_statuses",
    "parse_submit",
    "parse_timestamp",
]

UNKNOWN_FIELD = "unknown field"


@dataclass(frozen=True, slots=True)
class SubmitDefaults:
    max_attempts: int
    timeout_seconds: float
    max_payload_bytes: int
    allow_private_urls: bool  # JOBQ_ALLOW_PRIVATE_URLS: lifts the address guard (SPEC §9)


def _messages(model: type[BaseModel]) -> dict[str, str]:
    """A model's JSON field names and what each must be (its `description`)."""
    return {(info.alias or name): info.description or "not valid" for name, info in model.model_fields.items()}


_JOB_MESSAGES = _messages(BatchItem)
# Where a job's fields come in its error list: unknown fields first, then the model's order.
_JOB_RANK = {name: rank for rank, name in enumerate(_JOB_MESSAGES, start=1)}
_BATCH_MESSAGES = _messages(BatchRequest)
_FILTER_MESSAGES = _messages(BulkFilter)
_BULK_MESSAGES = {**_messages(BulkRequest), "filter": "an object"}


def _field_error(prefix: str, loc: tuple[int | str, ...], kind: str, messages: Mapping[str, str]) -> FieldError:
    """One pydantic error as jobq reports it: the top field of the object at
    `prefix`, and that field's message (nested positions inside a field, such
    as `dependsOn[2]`, are reported on the field)."""
    if not loc:
        return FieldError(prefix.rstrip(".") or "body", "a JSON object")
    name = str(loc[0])
    if kind == "extra_forbidden":
        return FieldError(prefix + name, UNKNOWN_FIELD)
    return FieldError(prefix + name, messages.get(name, "not valid"))


def _job_errors(
    raw: Any, prefix: str, found: list[FieldError], registry: Registry, defaults: SubmitDefaults, now: datetime
) -> list[FieldError]:
    """The checks a model cannot make, on the raw fields of one job (`raw`)
    that passed it, added to the model's errors `found` for this job; the
    job's errors in field order."""
    errors = list(found)
    if not isinstance(raw, dict):
        return errors
    bad = {e.field[len(prefix) :] for e in found}

    def err(name: str, message: str) -> None:
        errors.append(FieldError(prefix + name, message))

    job_type = raw.get("type")
    spec = registry.get(job_type) if "type" not in bad and isinstance(job_type, str) else None
    if spec is None and "type" not in bad:
        err("type", f"no handler is registered for {job_type!r}; known types: {', '.join(registry.names())}")
    if spec is not None and spec.validate is not None and "payload" not in bad:
        errors.extend(FieldError(prefix + e.field, e.message) for e in spec.validate(raw.get("payload", {})))
    if "runAt" in raw and "delaySeconds" in raw:
        err("runAt", "give runAt or delaySeconds, not both")
    elif "runAt" in raw and "runAt" not in bad:
        run_at = parse_timestamp(raw["runAt"])
        if run_at is not None and run_at > now + timedelta(seconds=MAX_DELAY_SECONDS):
            err("runAt", "at most a year ahead")
    expires_at = parse_timestamp(raw.get("expiresAt")) if "expiresAt" not in bad else None
    if expires_at is not None and expires_at <= now:
        err("expiresAt", "must be in the future")
    if "webhookUrl" not in bad:
        check_url(raw.get("webhookUrl"), prefix + "webhookUrl", errors, allow_private=defaults.allow_private_urls)
    depends_on = raw.get("dependsOn", [])
    if "dependsOn" not in bad and len(set(depends_on)) != len(depends_on):
        err("dependsOn", "lists a job more than once")
    errors.sort(
        key=lambda e: _JOB_RANK.get(e.field[len(prefix) :].split(".")[0], 0) if e.message != UNKNOWN_FIELD else 0
    )
    return errors


def _check_payload_size(raw: Any, prefix: str, defaults: SubmitDefaults) -> None:
    """413 for a payload over the limit, before any other check (SPEC §4)."""
    payload = raw.get("payload") if isinstance(raw, dict) else None
    if not isinstance(payload, dict):
        return
    size = len(orjson.dumps(payload))
    if size > defaults.max_payload_bytes:
        raise PayloadTooLarge(
            f"{prefix}payload is {size} bytes serialized; the limit is {defaults.max_payload_bytes}",
            errors=[FieldError(prefix + "payload", f"at most {defaults.max_payload_bytes} bytes serialized")],
        )


def _new_job(model: SubmitRequest, raw: dict[str, Any], defaults: SubmitDefaults, ref: str | None) -> NewJob:
    given = model.model_fields_set
    return NewJob(
        type=model.type,
        payload=raw.get("payload", {}),  # the parsed object itself: the model's copy is equal
        priority=model.priority,
        max_attempts=model.max_attempts if "max_attempts" in given else defaults.max_attempts,
        timeout_seconds=model.timeout_seconds if "timeout_seconds" in given else defaults.timeout_seconds,
        run_at=model.run_at,
        delay_seconds=model.delay_seconds,
        expires_at=model.expires_at,
        webhook_url=model.webhook_url,
        depends_on=tuple(model.depends_on),
        ref=ref,
    )


def parse_submit(body: Any, registry: Registry, defaults: SubmitDefaults, now: datetime) -> NewJob:
    """The body of `POST /jobs`: 400 if not an object, 413 for a payload over
    the limit, 422 naming every field at fault."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    _check_payload_size(body, "", defaults)
    model: SubmitRequest | None = None
    try:
        model = SubmitRequest.model_validate(body)
        found: list[FieldError] = []
    except ValidationError as exc:
        found = _dedupe(_field_error("", e["loc"], e["type"], _JOB_MESSAGES) for e in exc.errors())
    errors = _job_errors(body, "", found, registry, defaults, now)
    if errors or model is None:
        raise ValidationFailed("the job is not valid", errors=errors)
    return _new_job(model, body, defaults, None)


def parse_batch(body: Any, registry: Registry, defaults: SubmitDefaults, now: datetime) -> list[NewJob]:
    """The body of `POST /jobs/batch`, checked like `parse_submit`, item by
    item (`jobs[3].type`), plus refs unique within the batch."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    items = body.get("jobs")
    if isinstance(items, list) and 0 < len(items) <= MAX_BATCH:
        for position, item in enumerate(items):
            _check_payload_size(item, f"jobs[{position}].", defaults)
    model: BatchRequest | None = None
    envelope: list[FieldError] = []
    per_item: dict[int, list[FieldError]] = {}
    try:
        model = BatchRequest.model_validate(body)
    except ValidationError as exc:
        for e in exc.errors():
            loc = e["loc"]
            if loc and loc[0] == "jobs" and len(loc) > 1 and isinstance(loc[1], int):
                prefix = f"jobs[{loc[1]}]."
                per_item.setdefault(loc[1], []).append(_field_error(prefix, loc[2:], e["type"], _JOB_MESSAGES))
            else:
                envelope.append(_field_error("", loc, e["type"], _BATCH_MESSAGES))
    if not isinstance(items, list) or any(e.field == "jobs" for e in envelope):
        raise ValidationFailed("jobs must be a list", errors=_dedupe(envelope))
    errors = _dedupe(envelope)
    for position, item in enumerate(items):
        prefix = f"jobs[{position}]."
        errors.extend(_job_errors(item, prefix, _dedupe(per_item.get(position, [])), registry, defaults, now))
    refs = [item.get("ref") for item in items if isinstance(item, dict) and isinstance(item.get("ref"), str)]
    if len(set(refs)) != len(refs):
        errors.append(FieldError("jobs", "refs must be unique within a batch"))
    if errors or model is None:
        raise ValidationFailed("the batch is not valid", errors=errors)
    return [_new_job(job, raw, defaults, job.ref) for job, raw in zip(model.jobs, items, strict=True)]


def _dedupe(errors: Any) -> list[FieldError]:
    """Errors in order, each once (a union reports a field once per member)."""
    return list(dict.fromkeys(errors))


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


# The query parameters, named once by the model the document describes them with.
LIST_PARAMS = frozenset(info.alias or name for name, info in ListParams.model_fields.items())


def _query_statuses(raw: str | None) -> frozenset[Status] | None:
    """`status` in a query string: like the other parameters, a 400 when wrong."""
    try:
        return parse_statuses(raw)
    except ValidationFailed as exc:
        raise BadRequest(f"{exc.detail}; status is one or more of " + ", ".join(s.value for s in Status)) from None


def parse_list_query(params: Mapping[str, str], tenant_id: str | None, *, is_admin: bool) -> ListQuery:
    """`GET /jobs` query string (`schemas.ListParams`); a wrong parameter is a
    400, as for `limit` outside 1-500 (SPEC §4)."""
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
    if q is not None and len(q) > MAX_QUERY_TEXT:
        raise BadRequest(f"q is at most {MAX_QUERY_TEXT} characters")
    return ListQuery(
        tenant_id=tenant_id,
        statuses=_query_statuses(params.get("status")),
        type=params.get("type") or None,
        q=q,
        limit=int(raw_limit),
        cursor=params.get("cursor") or None,
    )


def _filter_query(model: BulkFilter, tenant_id: str | None) -> ListQuery:
    """The jobs a bulk `filter` names; an empty status list matches no job (not "any status")."""
    status = model.status
    statuses = None if status is None else frozenset(status if isinstance(status, list) else [status])
    return ListQuery(
        tenant_id=tenant_id,
        statuses=statuses,
        type=model.type or None,
        q=model.q or None,
        limit=MAX_LIST_LIMIT,
    )


def _bulk_errors(exc: ValidationError) -> list[FieldError]:
    """A bulk body's pydantic errors: the filter's by its own fields
    (`filter.status`, `filter.colour` unknown), the others by their top field."""
    errors = []
    for e in exc.errors():
        loc = e["loc"]
        if len(loc) > 1 and loc[0] == "filter":
            errors.append(_field_error("filter.", loc[1:], e["type"], _FILTER_MESSAGES))
        else:
            errors.append(_field_error("", loc, e["type"], _BULK_MESSAGES))
    return _dedupe(errors)


@dataclass(frozen=True, slots=True)
class BulkAction:
    """A checked `POST /jobs/bulk`: the action, and either the listed job ids
    or the filter's query (`job_ids` None)."""

    action: str
    job_ids: list[str] | None
    query: ListQuery


def parse_bulk(body: Any, tenant_id: str | None) -> BulkAction:
    """The body of `POST /jobs/bulk` (`schemas.BulkRequest`): 400 if not an
    object, 422 naming every field at fault (the filter's as `filter.status`).
    Exactly one of `filter` and `jobIds`; `"jobIds": null` is an error, never
    "every job of the tenant"."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    model: BulkRequest | None = None
    try:
        model = BulkRequest.model_validate(body)
        errors: list[FieldError] = []
    except ValidationError as exc:
        errors = _bulk_errors(exc)
    if ("filter" in body) == ("jobIds" in body) and not any(e.field == "filter" for e in errors):
        errors.append(FieldError("filter", "give either filter or jobIds"))
    if errors or model is None:
        raise ValidationFailed("the bulk request is not valid", errors=errors)
    if "jobIds" in body:
        return BulkAction(model.action, list(model.job_ids), ListQuery(tenant_id))
    return BulkAction(model.action, None, _filter_query(model.filter, tenant_id))
