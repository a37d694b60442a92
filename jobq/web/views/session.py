"""Dashboard sign-in: `GET /login`, `POST /login`, `POST /logout` (SPEC §11).

The form takes an API key; a known key gets a signed session cookie
(`sessions.py`) that is HttpOnly, SameSite=Strict, Path=/, and Secure when the
request came over https. A bad key re-renders the form with a 401 and counts
against the address's bad-key allowance (`auth.AUTH_FAILURES`), shared with
the `X-API-Key` check. Both POSTs must come from this service's own origin,
so another site can neither sign a browser in (login CSRF) nor out. The key
is never echoed back, logged or put in the cookie.
"""

from __future__ import annotations

import logging

from aiohttp import web

from jobq.core.errors import AuthThrottled
from jobq.tenancy.tenants import hash_key
from jobq.web.auth import AUTH_FAILURES, SESSIONS, check_failure, require_same_origin, session_principal
from jobq.web.live.hub import HUB
from jobq.web.pages import redirect, render_page
from jobq.web.request_body import defer_continue, read_form
from jobq.web.services import services_of
from jobq.web.sessions import COOKIE_NAME, session_id

logger = logging.getLogger(__name__)

routes = web.RouteTableDef()

# RFC 9110: a 401 names a scheme, also when it answers a form.
WWW_AUTHENTICATE = {"WWW-Authenticate": 'ApiKey realm="jobq", header="X-API-Key"'}


def set_session_cookie(response: web.StreamResponse, token: str, *, max_age: int, secure: bool) -> None:
    response.set_cookie(
        COOKIE_NAME, token, max_age=max_age, path="/", httponly=True, samesite="Strict", secure=secure or None
    )


def clear_session_cookie(response: web.StreamResponse, *, secure: bool) -> None:
    response.del_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Strict", secure=secure or None)


def _form(request: web.Request, error: str | None, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return render_page(request, "login.html", {"error": error}, status=status, headers=headers)


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    """The sign-in form; someone already signed in is sent on to `/`."""
    services = services_of(request)
    if session_principal(request, services.tenants, request.app[SESSIONS]) is not None:
        return redirect("/")
    return _form(request, None, 200)


@routes.post("/login", expect_handler=defer_continue)
async def login(request: web.Request) -> web.Response:
    """Form field `key`. 303 to `/` with the cookie; the form again with 401
    (bad key), 400 (no key) or 429 + Retry-After (a bad key beyond this
    address's allowance; a valid key always signs in); a 403 problem from
    another origin, a 4xx problem for a body that is not a small UTF-8
    urlencoded form."""
    require_same_origin(request)
    services = services_of(request)
    address = request.remote or "unknown"
    # A form jobq reads itself: small, UTF-8, urlencoded, under the body deadline;
    # anything else is a problem+json 4xx (request_body.py), never a 500.
    form = await read_form(request)
    key = form.get("key", "").strip()
    if not key:
        return _form(request, "Paste an API key.", 400)
    principal = services.tenants.authenticate(key)
    if principal is None:
        try:
            await check_failure(request, request.app[AUTH_FAILURES], services.clock.now())
        except AuthThrottled as throttled:
            message = f"Too many failed sign-ins from this address. Try again in {throttled.retry_after} s."
            return _form(request, message, 429, {"Retry-After": str(throttled.retry_after)})
        logger.info("action=login_failed address=%s", address)
        return _form(request, "That API key is not known.", 401, WWW_AUTHENTICATE)
    codec = request.app[SESSIONS]
    response = redirect("/")
    set_session_cookie(response, codec.issue(hash_key(key)), max_age=int(codec.lifetime_seconds), secure=request.secure)
    logger.info("action=login actor=%s role=%s address=%s", principal.actor, principal.role, address)
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.Response:
    """Clear the cookie, close the live-update sockets opened with it, and go
    back to the form (303); 403 from another origin."""
    require_same_origin(request)
    token = request.cookies.get(COOKIE_NAME)
    if token:
        request.app[HUB].close_session(session_id(token))
    response = redirect("/login")
    clear_session_cookie(response, secure=request.secure)
    return response
