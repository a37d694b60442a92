"""Random ids: job ids (UUID v4) and webhook ids, from a pool of OS randomness."""

from __future__ import annotations

import os


def new_id() -> str:
    """A random (version 4) UUID string, from a pool of OS randomness: one
    `getrandom` call per 256 ids instead of one per id."""
    raw = bytearray(_random_bytes())
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_hex_id() -> str:
    """128 random bits as 32 hex digits (a webhook-id's), from the same pool."""
    return _random_bytes().hex()


def _random_bytes() -> bytes:
    global _random_pool, _random_offset
    if _random_offset >= len(_random_pool):
        _random_pool, _random_offset = os.urandom(16 * 256), 0
    raw = _random_pool[_random_offset : _random_offset + 16]
    _random_offset += 16
    return raw


_random_pool = b""
_random_offset = 0


def _forget_random_pool() -> None:
    # A forked child inherits the pool; what is left of it is the parent's next ids.
    global _random_pool, _random_offset
    _random_pool, _random_offset = b"", 0


os.register_at_fork(after_in_child=_forget_random_pool)
