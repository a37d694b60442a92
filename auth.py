"""Who is calling: the API key middleware (SPEC §4).

`X-API-Key` is looked up by hash; a missing or unknown key is a 401 with
`WWW-Authenticate`. An address that sends more than
`JOBQ_AUTH_FAILURES_PER_MINUTE` bad keys gets 429 until its minute is over.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware

from clock import Clock
from errors import AuthThrottled, Forbidden, Unauthorized
from problems import Handler
from ratelimit import FailureWindow
from tenants import Principal, TenantRegistry

PRINCIPAL = web.RequestKey("jobq.principal", Principal)
# How the caller proved who it is: "key" (X-API-Key) or "session" (the
# dashboard's cookie). The WebSocket refuses a cookie alone without an Origin.
CREDENTIAL = web.RequestKey("jobq.credential", str)
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/login"})


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith("/static/")


def make_auth_middleware(tenants: TenantRegistry, failures: FailureWindow, clock: Clock) -> Middleware:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public(request.path):
            return await handler(request)
        key = request.headers.get("X-API-Key")
        if not key:
            raise Unauthorized("send an API key in the X-API-Key header")
        address = request.remote or "unknown"
        wait = failures.blocked_for(address, clock.monotonic())
        if wait:
            raise AuthThrottled(f"too many bad API keys from {address}; try again in {wait} s", retry_after=wait)
        principal = tenants.authenticate(key)
        if principal is None:
            failures.record(address, clock.monotonic())
            raise Unauthorized("the API key is not known")
        request[PRINCIPAL] = principal
        request[CREDENTIAL] = "key"
        return await handler(request)

    return auth_middleware


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def require_writer(request: web.Request) -> Principal:
    """A key that may change things: a tenant's write key or an admin key."""
    principal = principal_of(request)
    if not principal.can_write:
        raise Forbidden("this API key is read-only")
    return principal


def require_submitter(request: web.Request) -> Principal:
    """Jobs are submitted with a tenant's write key, never an admin key."""
    principal = require_writer(request)
    if principal.tenant_id is None:
        raise Forbidden("admin keys do not submit jobs; use a tenant's key")
    return principal
