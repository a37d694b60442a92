"""The `Idempotency-Key` header (IETF draft, Stripe semantics; SPEC §4)."""

from __future__ import annotations

import hashlib
import re

from aiohttp import web

from jobq.core.errors import BadRequest
from jobq.rules.jobs import canonical_json
from jobq.storage.protocol import IdemRequest

KEY_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,255}$")


def parse_key(request: web.Request) -> str | None:
    """The key, unquoted (`"abc"` and `abc` are the same key), or None when
    absent; `BadRequest` for anything else."""
    values = request.headers.getall("Idempotency-Key", [])
    if not values:
        return None
    if len(values) > 1:
        raise BadRequest("send one Idempotency-Key header")
    raw = values[0].strip()
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        raw = raw[1:-1]
    if not KEY_PATTERN.match(raw):
        raise BadRequest("Idempotency-Key must be 1-255 characters of A-Z a-z 0-9 . _ : -")
    return raw


def idem_request(request: web.Request, body: object) -> IdemRequest | None:
    key = parse_key(request)
    if key is None:
        return None
    route = f"{request.method} {request.path}"
    digest = hashlib.sha256(route.encode() + b"\n" + canonical_json(body)).hexdigest()
    return IdemRequest(key=key, fingerprint="sha256:" + digest, route=route)
