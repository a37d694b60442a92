"""The `http` job type, `{url, method?, headers?, body?, timeoutSeconds?}`:
- 2xx succeeds, `result = {status, headers (a few), body (text, capped), truncated}`;
- 408, 5xx, 429 without `Retry-After`, and no answer at all (network error,
  timeout) fail the attempt, which is retried with backoff;
- 429 or 503 with `Retry-After: <seconds>` snooze for that long (at most
  `MAX_RETRY_AFTER_SECONDS`) without using an attempt;
- 3xx is permanent: redirects are not followed, so the job can never get past one;
- any other 4xx, and a refused address (at submit or when connecting), is permanent.
"""

from __future__ import annotations

import orjson

from jobq.core.errors import FieldError
from jobq.core.models import JSON, Job
from jobq.outbound.client import (
    MAX_BODY,
    AddressRefused,
    OutboundError,
    Response,
    guarded_session,
    retry_after_seconds,
    send,
)
from jobq.rules.addrguard import check_url
from jobq.worker.handlers import AsyncHandler, Context, PermanentError, Snooze, Validator

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DEFAULT_TIMEOUT_SECONDS = 30.0
MAX_TIMEOUT_SECONDS = 300.0
MAX_RETRY_AFTER_SECONDS = 3600.0
MAX_HEADERS = 50
MAX_HEADER_CHARS = 8192
# The answer's headers kept in a job's result.
RESULT_HEADERS = ("content-type", "content-length", "location", "retry-after", "etag", "last-modified")
TOKEN_CHARACTERS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _header_errors(headers: object) -> list[FieldError]:
    field = "payload.headers"
    if not isinstance(headers, dict) or len(headers) > MAX_HEADERS:
        return [FieldError(field, f"an object of at most {MAX_HEADERS} header names to string values")]
    for name, value in headers.items():
        if not name or not set(name) <= TOKEN_CHARACTERS:
            return [FieldError(f"{field}.{name}", "a header name (letters, digits and !#$%&'*+-.^_`|~)")]
        if not isinstance(value, str) or len(value) > MAX_HEADER_CHARS or any(c in value for c in "\r\n\0"):
            return [FieldError(f"{field}.{name}", f"a string of at most {MAX_HEADER_CHARS} characters, one line")]
        if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
            return [FieldError(f"{field}.{name}", "set by jobq, not by the job")]
    return []


def make_http_validator(allow_private: bool) -> Validator:
    """Checks an `http` payload at submit; a refused URL is a 422 on `payload.url`."""

    def validate(payload: dict[str, JSON]) -> list[FieldError]:
        errors: list[FieldError] = []
        if "url" not in payload:
            errors.append(FieldError("payload.url", "required: an http or https URL"))
        else:
            check_url(payload["url"], "payload.url", errors, allow_private=allow_private)
        method = payload.get("method", "GET")
        if not isinstance(method, str) or method.upper() not in METHODS:
            errors.append(FieldError("payload.method", f"one of {', '.join(sorted(METHODS))}"))
        if "headers" in payload:
            errors.extend(_header_errors(payload["headers"]))
        timeout = payload.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)
        if not _is_number(timeout) or not 0 < timeout <= MAX_TIMEOUT_SECONDS:
            errors.append(
                FieldError("payload.timeoutSeconds", f"a number of seconds above 0, at most {MAX_TIMEOUT_SECONDS:g}")
            )
        return errors

    return validate


def _request_body(payload: dict[str, JSON], headers: dict[str, str]) -> bytes | None:
    """A string body is sent as UTF-8 as it is; any other JSON value as JSON."""
    if "body" not in payload or payload["body"] is None:
        return None
    body = payload["body"]
    if isinstance(body, str):
        return body.encode()
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return orjson.dumps(body)


def _result(response: Response) -> JSON:
    headers: dict[str, JSON] = {name: response.headers[name] for name in RESULT_HEADERS if name in response.headers}
    return {
        "status": response.status,
        "headers": headers,
        "body": response.body.decode("utf-8", errors="replace"),
        "truncated": response.truncated,
    }


def make_http_handler(allow_private: bool, *, max_body: int = MAX_BODY) -> AsyncHandler:
    """The `http` job type; one guarded session per attempt."""

    async def http(job: Job, ctx: Context) -> JSON:
        payload = job.payload
        url = str(payload["url"])
        method = str(payload.get("method", "GET")).upper()
        raw_headers = payload.get("headers") or {}
        headers = {str(k): str(v) for k, v in raw_headers.items()} if isinstance(raw_headers, dict) else {}
        body = _request_body(payload, headers)
        raw_timeout = payload.get("timeoutSeconds", DEFAULT_TIMEOUT_SECONDS)
        timeout = float(raw_timeout) if _is_number(raw_timeout) else DEFAULT_TIMEOUT_SECONDS
        try:
            async with guarded_session(allow_private=allow_private) as session:
                response = await send(
                    session,
                    method,
                    url,
                    headers=headers,
                    body=body,
                    timeout_seconds=timeout,
                    max_body=max_body,
                    allow_private=allow_private,
                )
        except AddressRefused as exc:
            raise PermanentError(f"address refused: {exc}") from None
        status = response.status
        if 200 <= status < 300:
            return _result(response)
        if status in (429, 503):
            seconds = retry_after_seconds(response.headers.get("retry-after"), MAX_RETRY_AFTER_SECONDS)
            if seconds is not None:
                raise Snooze(seconds, f"{url} answered {status}, Retry-After {seconds:g} s")
        if 300 <= status < 400:
            where = response.headers.get("location", "nowhere")
            raise PermanentError(f"{url} answered {status} to {where}; redirects are not followed")
        if status == 408 or status == 429 or status >= 500:
            raise OutboundError(f"{url} answered {status}")
        raise PermanentError(f"{url} answered {status}")

    return http
