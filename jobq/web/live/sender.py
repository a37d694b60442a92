"""One viewer's sender task: drains its queue into its socket, within its
share of the hub's send budget (SPEC §5, CONVENTIONS rule 15)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import WSCloseCode, WSMsgType

from jobq.web.live.client import LiveClient, Scope

logger = logging.getLogger(__name__)

TICK_SECONDS = 1.0  # the hub's tick; a client may send a tick's worth of its rate at once


async def send_loop(
    client: LiveClient,
    rate_now: Callable[[], float],
    snapshot: Callable[[Scope], Awaitable[bytes]],
    go_live: Callable[[LiveClient], None],
) -> None:
    """Drain the client's queue into its socket at `rate_now()` messages a
    second at most, until the socket fails or the task is cancelled; a None
    in the queue stands for a fresh `snapshot`, after which the client is live.
    Pacing is real time (the loop's clock, as `asyncio.sleep`): it meters
    socket writes and never becomes a timestamp."""
    loop = asyncio.get_running_loop()
    tokens, refilled = float(client.queue.maxsize), loop.time()
    try:
        while True:
            item = await client.queue.get()
            rate = rate_now()
            burst = min(float(client.queue.maxsize), max(1.0, rate * TICK_SECONDS))
            now = loop.time()
            tokens, refilled = min(burst, tokens + (now - refilled) * rate), now
            if tokens < 1.0:
                # Meanwhile its queue may overflow: then it is behind, and this
                # item goes out just before the snapshot that supersedes it.
                await asyncio.sleep((1.0 - tokens) / rate)
                tokens, refilled = 1.0, loop.time()
            tokens -= 1.0
            if item is None:
                item = await snapshot(client.tenant_id)
                go_live(client)  # changes from now on are queued after the snapshot
            else:
                client.queued_bytes -= len(item)  # written at once, into the transport's buffer
            await client.socket.send_frame(item, WSMsgType.TEXT)
            client.sent += 1
    except ConnectionError as exc:
        # The peer went away; the view's read loop ends and disconnects it.
        logger.info("action=ws_send_failed tenantId=%s viewer=%s error=%s", client.tenant_id, client.label, exc)
    except Exception:
        logger.exception("action=ws_sender_crashed tenantId=%s viewer=%s", client.tenant_id, client.label)
        await client.socket.close(code=WSCloseCode.INTERNAL_ERROR, message=b"live updates failed")
