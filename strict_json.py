"""Strict JSON parsing at the edge (CONVENTIONS rule 9).

Rejects what lenient parsers let through: invalid UTF-8, NaN and Infinity,
numbers that overflow, duplicate object keys, lone surrogates and nesting
deeper than `MAX_DEPTH`. Every rejection is a `BadRequest` with a reason.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from errors import BadRequest

MAX_DEPTH = 64


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequest(f"malformed JSON: duplicate key {key!r}")
        result[key] = value
    return result


def _int_in_range(text: str) -> int:
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise BadRequest(f"malformed JSON: integer {text[:40]} does not fit in 64 bits")
    return value


def _reject_constant(name: str) -> Any:
    raise BadRequest(f"malformed JSON: {name} is not a JSON number")


def loads(body: bytes) -> Any:
    """Parse `body` strictly; raises `BadRequest` naming what is wrong."""
    try:
        # orjson rejects invalid UTF-8, NaN/Infinity, overflowing numbers and
        # lone surrogates, quickly; the stdlib pass then catches duplicate keys.
        orjson.loads(body)
        value = json.loads(
            body, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant, parse_int=_int_in_range
        )
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest(f"malformed JSON: nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    if _depth_exceeds(value, MAX_DEPTH):
        raise BadRequest(f"malformed JSON: nested deeper than {MAX_DEPTH} levels")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in item)
    return False
