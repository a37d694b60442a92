"""A guarded HTTP client for outgoing requests, and the `http` job type (SPEC §6, §9).

    async with guarded_session(allow_private=False) as session:
        response = await send(session, "POST", url, headers={}, body=b"...", timeout=15, max_body=MAX_BODY)

The address guard runs twice: `check_url_target` on the URL as written (an IP
literal never reaches a resolver, so it is checked here), and `GuardedResolver`
on every address a host name actually resolves to, just before aiohttp dials
it, so DNS tricks (a public name answering 127.0.0.1, rebinding between submit
and run) cannot get around it. Redirects are never followed: a 3xx comes back
as it is. At most `max_body` bytes of the answer are read; the rest is dropped
unread and `truncated` is set.

The `http` job type, `{url, method?, headers?, body?, timeoutSeconds?}`:
- 2xx succeeds, `result = {status, headers (a few), body (text, capped), truncated}`;
- 408, 5xx, 429 without `Retry-After`, and no answer at all (network error,
  timeout) fail the attempt, which is retried with backoff;
- 429 or 503 with `Retry-After: <seconds>` snooze for that long (at most
  `MAX_RETRY_AFTER_SECONDS`) without using an attempt;
- 3xx is permanent: redirects are not followed, so the job can never get past one;
- any other 4xx, and a refused address (at submit or when connecting), is permanent.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from addrguard import check_url_target, refusal
from errors import FieldError
from handlers import AsyncHandler, Context, PermanentError, Snooze, Validator
from models import JSON, Job
from validation import check_url

MAX_BODY = 64 * 1024
READ_CHUNK = 16 * 1024
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
DEFAULT_TIMEOUT_SECONDS = 30.0
MAX_TIMEOUT_SECONDS = 300.0
MAX_RETRY_AFTER_SECONDS = 3600.0
MAX_HEADERS = 50
MAX_HEADER_CHARS = 8192
# The answer's headers kept in a job's result.
RESULT_HEADERS = ("content-type", "content-length", "location", "retry-after", "etag", "last-modified")
TOKEN_CHARACTERS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class AddressRefused(Exception):
    """The target is an address (or resolves to one) jobq may not dial.
    Not an `OSError`, so aiohttp does not dress it up as a DNS failure."""


class OutboundError(Exception):
    """The request did not get an answer: connection refused, reset, timed out."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool


def _make_default_resolver() -> AbstractResolver:
    return DefaultResolver()


# What GuardedResolver wraps when it is not given a resolver; a test may swap it.
make_base_resolver: Callable[[], AbstractResolver] = _make_default_resolver


class GuardedResolver(AbstractResolver):
    """Resolves through `base`, then refuses the whole answer if any address in
    it is one `addrguard.refusal` refuses (unless `allow_private`)."""

    def __init__(self, base: AbstractResolver | None = None, *, allow_private: bool = False) -> None:
        self._base = base if base is not None else make_base_resolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._base.resolve(host, port, family)
        if self._allow_private:
            return results
        for result in results:
            try:
                address = ipaddress.ip_address(result["host"])
            except ValueError:
                raise AddressRefused(f"{host} resolved to {result['host']!r}, which is not an IP address") from None
            reason = refusal(address)
            if reason is not None:
                raise AddressRefused(f"{host} resolves to {address}, {reason}")
        return results

    async def close(self) -> None:
        await self._base.close()


def guarded_session(
    *, allow_private: bool = False, base_resolver: AbstractResolver | None = None, limit: int = 10
) -> aiohttp.ClientSession:
    """A session whose every connection goes through `GuardedResolver`, at
    most `limit` at once. It does not read proxy settings from the
    environment and keeps no cookies."""
    resolver = GuardedResolver(base_resolver, allow_private=allow_private)
    connector = aiohttp.TCPConnector(resolver=resolver, limit=limit, force_close=True)
    return aiohttp.ClientSession(
        connector=connector, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=True
    )


def _refused_cause(exc: BaseException) -> AddressRefused | None:
    """The `AddressRefused` an aiohttp error was raised from, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, AddressRefused):
            return current
        seen.add(id(current))
        os_error = getattr(current, "os_error", None)
        if isinstance(os_error, AddressRefused):
            return os_error
        current = current.__cause__ or current.__context__
    return None


async def send(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout_seconds: float,
    max_body: int = MAX_BODY,
    allow_private: bool = False,
) -> Response:
    """One request, redirects not followed, at most `max_body` bytes of the answer
    read, within `timeout_seconds` in all; the `Response` has lower-case header
    names. Raises `AddressRefused` for a target the guard refuses (before any
    connection is made), `OutboundError` when there is no answer (network error,
    timeout)."""
    problem = check_url_target(url, allow_private)
    if problem is not None:
        raise AddressRefused(f"{url} {problem}" if problem.startswith("must") else f"{url}: {problem}")
    try:
        async with session.request(
            method,
            url,
            headers=dict(headers or {}),
            data=body,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout_seconds),
        ) as response:
            chunks: list[bytes] = []
            size = 0
            while size <= max_body:
                chunk = await response.content.read(min(READ_CHUNK, max_body + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
            truncated = len(data) > max_body
            if truncated:
                response.close()  # drop the rest unread
            answer_headers = {name.lower(): value for name, value in response.headers.items()}
            return Response(response.status, answer_headers, data[:max_body], truncated)
    except AddressRefused:
        raise
    except TimeoutError:
        raise OutboundError(f"no complete answer within {timeout_seconds:g} s") from None
    except (aiohttp.ClientError, OSError) as exc:
        refused = _refused_cause(exc)
        if refused is not None:
            raise refused from None
        raise OutboundError(f"{type(exc).__name__}: {exc}") from None


# ---------------------------------------------------------------- the `http` job type


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


def retry_after_seconds(value: str | None, cap: float) -> float | None:
    """`Retry-After` in seconds, at most `cap`; None when absent or not a whole
    number of seconds (the HTTP-date form is not read: it would need the
    receiver's clock to agree with ours)."""
    text = (value or "").strip()
    if not text.isascii() or not text.isdigit():
        return None
    return min(float(int(text)), cap)


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
