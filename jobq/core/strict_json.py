"""Strict JSON parsing at the edge (CONVENTIONS rule 9).

Rejects what lenient parsers let through: invalid UTF-8, NaN and Infinity,
numbers that overflow, duplicate object keys, lone surrogates and nesting
deeper than `MAX_DEPTH`. Every rejection is a `BadRequest` with a reason.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from jobq.core.errors import BadRequest

MAX_DEPTH = 64
# Bodies past this are parsed in a worker thread (views/jobs.py): their depth is measured on the tree.
LARGE_BODY_BYTES = 64 * 1024
FAST_PATH_BYTES = 8 * 1024


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise BadRequest(f"malformed JSON: duplicate key {key!r}")
        result[key] = value
    return result


def _int_in_range(text: str) -> int:
    # orjson reads an integer past 64 bits as a float instead of refusing it.
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise BadRequest(f"malformed JSON: integer {text[:40]} does not fit in 64 bits")
    return value


def loads(body: bytes) -> Any:
    """Parse `body` strictly; raises `BadRequest` naming what is wrong."""
    try:
        # orjson rejects invalid UTF-8, NaN/Infinity, lone surrogates and
        # nesting past 1024, quickly; the depth is then measured on the bytes.
        # Duplicate keys and integers past 64 bits are what orjson lets through
        # (it keeps one of the values; it reads the integer as a float). For a
        # small body (a submit) whose text has as many `:` outside strings as
        # the parsed objects have keys, and no run of 19 digits, there are
        # neither, and orjson's value is the answer; otherwise (and for large
        # bodies, where walking the tree costs more) the stdlib pass checks.
        value = orjson.loads(body)
        if len(body) > LARGE_BODY_BYTES:
            return _large(body, value)
        bare = _STRING.sub(b"", body)
        if _depth_exceeds(bare, MAX_DEPTH):
            raise BadRequest(f"malformed JSON: nested deeper than {MAX_DEPTH} levels")
        if len(body) <= FAST_PATH_BYTES and _LONG_DIGITS.search(bare) is None and bare.count(b":") == _keys(value):
            return value
        return json.loads(body, object_pairs_hook=_no_duplicates, parse_int=_int_in_range)
    except BadRequest:
        raise
    except RecursionError:
        raise BadRequest(f"malformed JSON: nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None


def _large(body: bytes, value: Any) -> Any:
    """A large body (parsed in a worker thread): its depth measured on the
    tree orjson made, in Python, rather than by regular expressions over the
    bytes. Each of those is one C call holding the GIL for 20 ms or more on a
    MiB, a stall of the event loop that a thread cannot prevent; the walk
    costs more CPU but lets the loop run every switch interval."""
    if _tree_depth_exceeds(value, MAX_DEPTH):
        raise BadRequest(f"malformed JSON: nested deeper than {MAX_DEPTH} levels")
    return json.loads(body, object_pairs_hook=_no_duplicates, parse_int=_int_in_range)


def _tree_depth_exceeds(value: Any, limit: int) -> bool:
    """Is the parsed `value` nested deeper than `limit` (a work list, no recursion)?"""
    level: list[Any] = [value]
    depth = 0
    while level:
        containers = [item for item in level if type(item) is dict or type(item) is list]
        if not containers:
            return False
        depth += 1
        if depth > limit:
            return True
        level = [child for item in containers for child in (item.values() if type(item) is dict else item)]
    return False


def _keys(value: Any) -> int:
    """How many keys the objects in `value` hold, all levels (at most `MAX_DEPTH` deep, checked before)."""
    count = 0
    if type(value) is dict:
        count = len(value)
        value = value.values()
    elif type(value) is not list:
        return 0
    for item in value:
        if type(item) is dict or type(item) is list:
            count += _keys(item)
    return count


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_INNERMOST = re.compile(rb"[\[{][^\[\]{}]*[\]}]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
# 2**63 has 19 digits: a shorter integer always fits in 64 bits.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _depth_exceeds(bare: bytes, limit: int) -> bool:
    """Is valid JSON `bare` (its strings already dropped) nested deeper than
    `limit`? The innermost brackets are removed a level a pass: all in C, some
    milliseconds a MiB (a walk of the parsed tree took ~70 ms)."""
    brackets = bare.translate(None, _NOT_BRACKETS)
    depth = 0
    while brackets:
        depth += 1
        if depth > limit:
            return True
        brackets = _INNERMOST.sub(b"", brackets)
    return False
