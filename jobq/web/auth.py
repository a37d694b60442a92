"""Who is calling: the API key and session cookie middleware (SPEC §4).

`X-API-Key` is looked up by hash; a missing or unknown key is a 401 with
`WWW-Authenticate`. An address that sends more than
`JOBQ_AUTH_FAILURES_PER_MINUTE` bad keys (through the header or the login
form) gets 429 for its further bad keys until its minute is over; a valid key
from that address still passes (keys are 256-bit random, so the limit is
there to keep floods cheap, not to stop guessing).

Without `X-API-Key`, the dashboard's session cookie (`sessions.py`)
authenticates, as long as its key is still in the tenants file. A
cookie-authenticated request with an unsafe method must come from this
service's own origin (`Origin`, else `Referer`), or it is a 403: the second
line of defence against cross-site requests after `SameSite=Strict`. A browser
page request (a GET accepting `text/html`) without credentials is redirected
to `/login`; everything else gets the 401.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Middleware

from jobq.core.clock import Clock
from jobq.core.errors import AuthThrottled, Forbidden, Unauthorized
from jobq.storage.protocol import LimitStore
from jobq.tenancy.tenants import Principal, TenantRegistry
from jobq.web.connlimits import refuse_request
from jobq.web.pages import redirect
from jobq.web.problems import Handler
from jobq.web.sessions import COOKIE_NAME, SessionCodec

PRINCIPAL = web.RequestKey("jobq.principal", Principal)
# How the caller proved who it is: "key" (X-API-Key) or "session" (the
# dashboard's cookie). The WebSocket refuses a cookie alone without an Origin.
CREDENTIAL = web.RequestKey("jobq.credential", str)
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/login", "/logout"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
@dataclass(frozen=True, slots=True)
class BadKeyLimit:
    """Where bad keys are counted (the store, so every API process agrees) and
    how many an address may send a minute."""

    store: LimitStore
    per_minute: int


# Shared with the login form, which counts its bad keys in the same window.
AUTH_FAILURES = web.AppKey("jobq.auth_failures", BadKeyLimit)
SESSIONS = web.AppKey("jobq.sessions", SessionCodec)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith("/static/")


def own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}".lower()


def is_same_origin(request: web.Request) -> bool:
    """True when `Origin` (or, without one, the origin of `Referer`) is this
    service's own; False when it is another or neither header is sent."""
    origin = request.headers.get("Origin")
    if origin is None:
        referer = request.headers.get("Referer")
        if not referer:
            return False
        try:
            parts = urlsplit(referer)
        except ValueError:
            return False
        origin = f"{parts.scheme}://{parts.netloc}"
    return origin.lower() == own_origin(request)


def require_same_origin(request: web.Request) -> None:
    """Raises `Forbidden` unless the request comes from this service's pages."""
    if not is_same_origin(request):
        raise Forbidden("cross-site request refused: Origin (or Referer) must be this service's own origin")


def wants_page(request: web.Request) -> bool:
    """A browser navigating to a page (not an API client or a script)."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("Accept", "")


def session_principal(request: web.Request, tenants: TenantRegistry, sessions: SessionCodec) -> Principal | None:
    """Who the session cookie stands for: None without a cookie, for a forged,
    expired or malformed one, and once its key is gone from the tenants file."""
    token = request.cookies.get(COOKIE_NAME)
    if not token:
        return None
    key_hash = sessions.verify(token)
    return tenants.authenticate_hash(key_hash) if key_hash else None


async def check_failure(request: web.Request, bad_keys: BadKeyLimit, now: datetime) -> None:
    """A bad key from the request's address: counted, or, past the address's
    allowance this minute, `AuthThrottled` (429 + Retry-After). Only failed
    attempts are throttled: a valid key is never looked at here."""
    address = request.remote or "unknown"
    wait = await bad_keys.store.note_bad_key(address, limit=bad_keys.per_minute, now=now)
    if wait:
        refuse_request(request, "auth_failures")
        raise AuthThrottled(f"too many bad API keys from {address}; try again in {wait} s", retry_after=wait)


def make_auth_middleware(
    tenants: TenantRegistry, bad_keys: BadKeyLimit, clock: Clock, sessions: SessionCodec | None = None
) -> Middleware:
    """Sets `request[PRINCIPAL]` and `request[CREDENTIAL]` on every request to a
    non-public path; without `sessions`, only `X-API-Key` is accepted."""

    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if is_public(request.path):
            return await handler(request)
        key = request.headers.get("X-API-Key")
        if key:
            principal = tenants.authenticate(key)
            if principal is None:
                await check_failure(request, bad_keys, clock.now())
                raise Unauthorized("the API key is not known")
            credential = "key"
        else:
            # A forged cookie is not counted as a bad key: guessing an HMAC
            # online is hopeless, and an expired cookie is an honest mistake.
            principal = session_principal(request, tenants, sessions) if sessions else None
            if principal is None:
                if wants_page(request):
                    response = redirect("/login")
                    if COOKIE_NAME in request.cookies:
                        response.del_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Strict")
                    return response
                if COOKIE_NAME in request.cookies:
                    raise Unauthorized("the session has expired or is not valid; sign in again at /login")
                raise Unauthorized("send an API key in the X-API-Key header")
            if request.method not in SAFE_METHODS:
                require_same_origin(request)
            credential = "session"
        request[PRINCIPAL] = principal
        request[CREDENTIAL] = credential
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
