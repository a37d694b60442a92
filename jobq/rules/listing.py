"""Filters and cursors of `GET /jobs` and `POST /jobs/bulk`."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

from jobq.core.errors import BadRequest
from jobq.core.models import Job, ListQuery
from jobq.core.timefmt import format_ts, parse_ts


def matches(job: Job, query: ListQuery) -> bool:
    """Does `job` pass the query's status, type and text filters? `q` is a
    case-insensitive substring of the payload's JSON or of the last error."""
    if query.statuses is not None and job.status not in query.statuses:
        return False
    if query.type is not None and job.type != query.type:
        return False
    if query.q:
        needle = query.q.lower()
        if needle in (job.last_error or "").lower():
            return True
        return text_contains(job.payload_json, needle)
    return True


def text_contains(encoded: bytes, needle: str) -> bool:
    """Is the lower-case `needle` in the lower-cased JSON text `encoded`?
    Searched as bytes when the text is ASCII (no decoding, no Python objects)."""
    if encoded.isascii():
        return needle.isascii() and needle.encode() in encoded.lower()
    return needle in encoded.decode().lower()


def encode_cursor(job: Job) -> str:
    raw = f"{format_ts(job.created_at)}|{job.job_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (createdAt, jobId) after which the next page starts; `BadRequest`
    for anything `encode_cursor` did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|", 1)
        created_at = parse_ts(created)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise BadRequest("cursor is not one this service issued") from None
    if created_at is None:
        raise BadRequest("cursor is not one this service issued")
    return created_at, job_id
