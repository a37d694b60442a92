"""`GET /ws`: the live-update WebSocket (SPEC §5), and `setup_live`, which
wires the hub into an application.

Before the upgrade (so a refusal is an ordinary problem+json answer, never a
socket): the auth middleware has already answered 401 for a missing or
unknown key; then an `Origin` other than the service's own is 403, and so is
a request without `Origin` that is authenticated by the session cookie alone
(only non-browser clients omit `Origin`, and they send `X-API-Key`). Then
the caps (issue 8): a tenant with `JOBQ_WS_MAX_PER_TENANT` sockets open is
answered 429, and past `JOBQ_WS_MAX_TOTAL` sockets in all (admins included)
everyone is answered 503, both with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web
from yarl import URL

from jobq.core.clock import Clock
from jobq.core.errors import BadRequest, Forbidden, ShuttingDown, SocketsFull, TooManySockets, Unauthorized
from jobq.storage.protocol import Store
from jobq.tenancy.tenants import hash_key
from jobq.web.auth import CREDENTIAL, SESSIONS, principal_of
from jobq.web.live.client import Access
from jobq.web.live.hub import HUB, LiveHub
from jobq.web.services import SERVICES, services_of
from jobq.web.sessions import COOKIE_NAME, session_id

routes = web.RouteTableDef()

HEARTBEAT_SECONDS = 30.0  # ping interval; a peer that does not pong within half of it is dropped
CLOSE_TIMEOUT_SECONDS = 5.0  # how long a close waits for the peer's close frame
MAX_INCOMING_BYTES = 4096  # the client has nothing to say; anything big is a protocol error
CAP_RETRY_AFTER_SECONDS = 30  # sockets live long: a place seldom frees up sooner


def _origin_key(url: URL) -> tuple[str, str, int | None]:
    return (url.scheme.lower(), (url.host or "").lower(), url.port)


def origin_refusal(origins: list[str], own_origin: str, credential: str) -> str | None:
    """Why a WebSocket request must be refused (403), or None to accept it.

    `origins` are the request's `Origin` headers; `own_origin` is the
    service's origin as the client addressed it (`scheme://host[:port]`);
    `credential` is how the caller authenticated: "key" or "session".
    Default ports compare equal to no port, and scheme and host ignore case."""
    if not origins:
        if credential == "key":
            return None
        return "a WebSocket without an Origin header must authenticate with X-API-Key"
    if len(origins) > 1:
        return "the request has more than one Origin header"
    try:
        theirs, ours = URL(origins[0]), URL(own_origin)
    except (ValueError, TypeError):
        return "the Origin header is not a valid origin"
    if (
        not theirs.absolute
        or theirs.user is not None
        or theirs.raw_path not in ("", "/")
        or theirs.query_string
        or theirs.fragment
    ):
        return f"Origin {origins[0]!r} is not an origin (scheme://host[:port])"
    if _origin_key(theirs) != _origin_key(ours):
        return f"Origin {origins[0]!r} is not this service's origin"
    return None


@routes.get("/ws")
async def live(request: web.Request) -> web.WebSocketResponse:
    """Upgrade to a WebSocket of live events for what the key may see. Admin
    keys may pass `?tenant=NAME` to see one tenant; a tenant key always sees
    its own tenant (the parameter is ignored, as on `GET /jobs`)."""
    hub = request.app[HUB]
    principal = principal_of(request)
    refusal = origin_refusal(
        request.headers.getall("Origin", []), f"{request.scheme}://{request.host}", request[CREDENTIAL]
    )
    if refusal is not None:
        raise Forbidden(refusal)
    tenant_id = principal.tenant_id
    if principal.is_admin and request.query.get("tenant"):
        tenant_id = request.query["tenant"]
    ws = web.WebSocketResponse(
        heartbeat=HEARTBEAT_SECONDS,
        timeout=CLOSE_TIMEOUT_SECONDS,
        max_msg_size=MAX_INCOMING_BYTES,
        # Deflate would cost a compression per message per viewer; the dashboard is fine without.
        compress=False,
    )
    if not ws.can_prepare(request).ok:
        raise BadRequest("GET /ws speaks WebSocket: send an Upgrade: websocket request")
    if hub.closed:
        raise ShuttingDown("jobq is shutting down", retry_after=5)
    access = _access(request)
    refusal = hub.reserve(access.owner)
    if refusal is not None:
        services_of(request).health.refuse(refusal)
        if refusal == "ws_tenant_limit":
            raise TooManySockets(
                f"this tenant has {hub.max_per_tenant} live-update sockets open, its most; close one",
                retry_after=CAP_RETRY_AFTER_SECONDS,
            )
        raise SocketsFull(
            f"jobq has {hub.max_total} live-update sockets open, its most", retry_after=CAP_RETRY_AFTER_SECONDS
        )
    try:
        await ws.prepare(request)
    except BaseException:
        hub.release(access.owner)
        raise
    if hub.closed:  # shutdown began during the handshake: the hub will not close this one
        hub.release(access.owner)
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"jobq is shutting down")
        return ws
    client = hub.connect(ws, tenant_id, principal.actor, access=access, transport=request.transport, reserved=True)
    try:
        async for _message in ws:
            pass  # nothing is expected from the viewer; aiohttp answers pings and closes
    finally:
        await hub.disconnect(client)
    return ws


def _access(request: web.Request) -> Access:
    """Who the viewer is, for the hub to re-check every second: the hash of
    its API key, or its session's key hash, name and expiry."""
    principal = principal_of(request)
    if request[CREDENTIAL] == "key":
        return Access(principal.tenant_id, key_hash=hash_key(request.headers["X-API-Key"]))
    token = request.cookies[COOKIE_NAME]
    session = request.app[SESSIONS].read(token)
    if session is None:  # expired between the auth middleware and here
        raise Unauthorized("the session has just expired; sign in again at /login")
    return Access(principal.tenant_id, session.key_hash, session_id(token), float(session.expires_at))


def setup_live(app: web.Application, store: Store, clock: Clock) -> LiveHub:
    """Create the hub under `HUB` (its caps and bounds from the settings,
    re-checking keys against the tenants registry and counting refusals in
    the app's health), route `GET /ws`, subscribe the hub to the store, tick
    it in the background, and close every socket on shutdown (before the
    server waits for its handlers to finish)."""
    services = app[SERVICES]
    settings = services.settings
    hub = LiveHub(
        store,
        clock,
        running_limits=services.tenants.running_limits,
        max_per_tenant=settings.ws_max_per_tenant,
        max_total=settings.ws_max_total,
        max_pending_bytes=settings.ws_max_pending_bytes,
        stuck_seconds=settings.ws_stuck_seconds,
        authenticate=services.tenants.authenticate_hash,
        on_refusal=services.health.refuse,
    )
    app[HUB] = hub
    app.add_routes(routes)
    store.subscribe(hub.on_events)

    async def run_ticks(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(hub.run(), name="jobq-live-metrics")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def close_sockets(app: web.Application) -> None:
        await hub.close_all()

    app.cleanup_ctx.append(run_ticks)
    app.on_shutdown.append(close_sockets)
    return hub
