"""Errors to responses, in one place (CONVENTIONS rule 8): every error leaves
as RFC 9457 `application/problem+json`; nothing unknown leaks a traceback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from jobq.core.errors import PROBLEM_BASE, FieldError, JobqError

logger = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTTP_TITLES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Missing or unknown API key"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Request or payload too large"),
    415: ("unsupported-media-type", "Body must be application/json"),
}


def problem_response(
    status: int,
    type_: str,
    title: str,
    detail: str,
    *,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body: dict[str, object] = {"type": PROBLEM_BASE + type_, "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    return web.Response(status=status, body=orjson.dumps(body), content_type=PROBLEM_TYPE, headers=headers or {})


def render(error: JobqError) -> web.Response:
    headers = dict(error.headers)
    if error.retry_after is not None:
        headers["Retry-After"] = str(error.retry_after)
    if error.status == 401:
        headers.setdefault("WWW-Authenticate", 'ApiKey realm="jobq", header="X-API-Key"')
    return problem_response(error.status, error.type, error.title, error.detail, errors=error.errors, headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except JobqError as error:
        response = render(error)
        if error.close_connection:
            # E.g. a body too slow or not decodable: draining its rest is pointless.
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        type_, title = _HTTP_TITLES.get(exc.status, ("http-error", exc.reason))
        detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else title
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return problem_response(exc.status, type_, title, detail, headers=headers)
    except Exception:
        logger.exception("action=unhandled_error method=%s path=%s", request.method, request.path)
        return problem_response(500, "internal", "Internal error", "Something went wrong; it has been logged.")
