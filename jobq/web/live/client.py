"""One viewer of the live-update hub (`hub.py`): who it is (`Access`), its
bounded queue of encoded messages and what it has pending in bytes."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import WSMsgType

Scope = str | None  # a tenant, or None: every tenant


class Socket(Protocol):
    """What the hub needs of a WebSocket (aiohttp's `WebSocketResponse` is one)."""

    async def send_frame(self, message: bytes, opcode: WSMsgType, compress: int | None = None) -> None: ...
    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


STARTING, LIVE, BEHIND = "starting", "live", "behind"
Item = bytes | None  # an encoded message, or None: build and send the first snapshot


@dataclass(frozen=True, slots=True)
class Access:
    """Who a viewer is, as the hub re-checks it every tick."""

    owner: str | None  # the tenant whose place it takes; None: an admin key
    key_hash: str | None = None  # `sha256:<hex>`, re-authenticated every tick; None: not re-checked
    session_id: str | None = None  # the signed-in session it came through (`sessions.session_id`)
    expires_at: float | None = None  # that session's end, Unix seconds


@dataclass(eq=False)
class LiveClient:
    """One connected viewer; `tenant_id` is its scope (None: every tenant)."""

    socket: Socket
    tenant_id: Scope
    queue: asyncio.Queue[Item]
    access: Access
    transport: asyncio.WriteTransport | None = None
    label: str = ""
    state: str = STARTING
    resyncs: int = 0  # times it fell behind
    backoff: int = 1  # ticks it waits for its next snapshot once behind
    resync_at: int = 0  # the tick at which it gets that snapshot
    last_resync: int = -(10**9)
    sent: int = 0  # messages written to its socket
    queued_bytes: int = 0  # encoded messages in its queue or held by its sender, not yet written
    stuck_since: float | None = None  # monotonic: since when it has been over its byte bound
    closing: bool = False
    sender: asyncio.Task[None] | None = field(default=None, repr=False)

    def buffered(self) -> int:
        """Bytes its transport holds, written by the sender but not yet taken by the kernel."""
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None and not transport.is_closing() else 0

    @property
    def pending_bytes(self) -> int:
        return self.queued_bytes + self.buffered()
