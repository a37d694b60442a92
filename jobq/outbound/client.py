"""A guarded HTTP client for outgoing requests, (SPEC §9).

    async with guarded_session(allow_private=False) as session:
        response = await send(session, "POST", url, headers={}, body=b"...", timeout=15, max_body=MAX_BODY)

The address guard runs twice: `check_url_target` on the URL as written (an IP
literal never reaches a resolver, so it is checked here), and `GuardedResolver`
on every address a host name actually resolves to, just before aiohttp dials
it, so DNS tricks (a public name answering 127.0.0.1, rebinding between submit
and run) cannot get around it. Redirects are never followed: a 3xx comes back
as it is. At most `max_body` bytes of the answer are read; the rest is dropped
unread and `truncated` is set.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from jobq.rules.addrguard import check_url_target, refusal

MAX_BODY = 64 * 1024
READ_CHUNK = 16 * 1024


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


def retry_after_seconds(value: str | None, cap: float) -> float | None:
    """`Retry-After` in seconds, at most `cap`; None when absent or not a whole
    number of seconds (the HTTP-date form is not read: it would need the
    receiver's clock to agree with ours)."""
    text = (value or "").strip()
    if not text.isascii() or not text.isdigit():
        return None
    return min(float(int(text)), cap)
