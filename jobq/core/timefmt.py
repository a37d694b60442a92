"""Timestamps as jobq stores and shows them: RFC 3339 UTC with milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime


def format_ts(value: datetime | None) -> str | None:
    """RFC 3339 UTC with milliseconds: 2026-11-24T09:30:00.123Z."""
    if value is None:
        return None
    text = _formatted.get(value)
    if text is None:
        if len(_formatted) >= FORMATTED_CACHE_SIZE:
            _formatted.clear()
        utc = value if value.tzinfo is UTC else value.astimezone(UTC)
        text = _formatted[value] = utc.isoformat(timespec="milliseconds")[:-6] + "Z"
    return text


# The same instants are formatted again and again (a job's createdAt in every
# version of its record); remembering them halves the cost of a record. The
# versions of a job follow each other closely, so recent instants are enough:
# 100,000 of them held ~23 MB, which a soak read as a leak.
FORMATTED_CACHE_SIZE = 10_000
_formatted: dict[datetime, str] = {}


def parse_ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def to_ms(value: datetime) -> datetime:
    """Truncate to whole milliseconds, the precision jobq stores and shows."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)
