"""Connection limits (issue 8): how `serve()` builds its HTTP server.

What aiohttp 3.14 offers and jobq uses: `keepalive_timeout` (idle seconds
between requests; it is also armed at connect, so a silent client is closed
by it too), `max_line_size`, `max_field_size` and `max_headers` (the parser
refuses longer request lines and headers), `lingering_time` (how long the
unread rest of a body is drained after an answer). What it lacks and
`GuardedHandler` adds:

- a header timeout: a client gets `header_timeout_seconds` from connecting,
  or from the first byte of a request on a kept-alive connection, to finish
  that request's headers; else the socket is closed (slowloris);
- a cap on open connections: at `max_connections`, a new connection takes the
  place of the longest-silent one that is waiting for a request and has sent
  none of it; with none such, it gets a bare 503 and is closed. The accept
  loop itself never stops;
- an error page for a request the HTTP parser refuses that is problem+json
  and never echoes the offending bytes (aiohttp's own repeats them, and they
  may hold an API key or a session cookie). aiohttp's log line for it is kept
  (its formatter redacts keys and cookies) but throttled like the others.

Every refusal is counted (`Health.refuse`, shown in `/metrics`) and logged at
most once per `LOG_INTERVAL_SECONDS` per kind, with the number left unlogged.
Request bodies have their own deadline and rate (`request_body.py`).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import Counter
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from jobq.core.config import Settings
from jobq.core.errors import PROBLEM_BASE
from jobq.core.health import Health
from jobq.web.problems import PROBLEM_TYPE, problem_response
from jobq.web.services import SERVICES, services_of

logger = logging.getLogger(__name__)

LOG_INTERVAL_SECONDS = 10.0
# aiohttp's defaults, named here so the documentation can state them.
MAX_LINE_BYTES = 8190  # request line, and each header line
MAX_HEADERS = 128
LINGERING_SECONDS = 5.0


class LogThrottle:
    """At most one log line per kind per `interval` seconds. Process-wide on
    purpose: log lines are; the counts themselves live in each app's Health."""

    def __init__(self, interval: float = LOG_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def allow(self, kind: str, now: float) -> int | None:
        """None: stay silent (and count it); else how many were left unlogged since the last line."""
        last = self._last.get(kind)
        if last is not None and now - last < self.interval:
            self._suppressed[kind] += 1
            return None
        self._last[kind] = now
        return self._suppressed.pop(kind, 0)


THROTTLE = LogThrottle()


def note_refusal(health: Health, kind: str, address: object, detail: str = "") -> None:
    """Count a refusal and log it, throttled. `detail` must never hold client bytes."""
    health.refuse(kind)
    suppressed = THROTTLE.allow(kind, asyncio.get_running_loop().time())
    if suppressed is not None:
        logger.warning(
            "action=refused kind=%s address=%s suppressed=%d%s",
            kind,
            address,
            suppressed,
            f" {detail}" if detail else "",
        )


def refuse_request(request: web.Request, kind: str, detail: str = "") -> None:
    """Count and log (throttled) a request refused for `kind`."""
    note_refusal(services_of(request).health, kind, request.remote or "unknown", detail)


_REFUSAL_BODY = orjson.dumps(
    {
        "type": PROBLEM_BASE + "too-many-connections",
        "title": "Too many connections",
        "status": 503,
        "detail": "jobq has as many connections open as it allows; try again shortly",
    }
)
REFUSAL_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: " + PROBLEM_TYPE.encode() + b"\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n\r\n"
) + _REFUSAL_BODY


class ConnectionGuard:
    """The open connections of one server and the limits on them."""

    def __init__(self, max_connections: int, header_timeout: float, health: Health) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.health = health
        self.open: set[GuardedHandler] = set()

    def admit(self, handler: GuardedHandler) -> bool:
        """Room for `handler`, making some by closing the longest-silent idle
        connection at the cap; False when every connection is busy."""
        if len(self.open) >= self.max_connections:
            idle = [h for h in self.open if h.is_idle()]
            if not idle:
                return False
            victim = min(idle, key=lambda h: h.last_activity)
            self.open.discard(victim)
            note_refusal(self.health, "connection_evicted", victim.address, "reason=idle_at_connection_cap")
            victim.force_close()
        self.open.add(handler)
        return True


class GuardedHandler(RequestHandler):
    """aiohttp's connection protocol with a header timeout, a place under the
    connection cap, and parser-error pages that echo nothing."""

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self.address: object = "unknown"
        self.last_activity = 0.0
        self._admitted = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._header_count = 0  # requests parsed when the header clock started
        self._partial = False  # holds some bytes of a request whose headers are not complete

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.address = peer[0] if isinstance(peer, tuple) else "unknown"
        self.last_activity = self._loop.time()
        if not self._guard.admit(self):
            self._force_close = True  # data_received ignores anything that still arrives
            note_refusal(self._guard.health, "connection_limit", self.address, f"open={len(self._guard.open)}")
            if isinstance(transport, asyncio.Transport):
                transport.write(REFUSAL_503)
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)
        self._start_header_clock()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._admitted:
            self._guard.open.discard(self)
            self._admitted = False
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data:
            self.last_activity = self._loop.time()
            if self._request_count == 0 or self._waiting_for_request():
                self._partial = True
                if self._header_timer is None:
                    self._start_header_clock()
        super().data_received(data)
        if self._request_count != self._header_count:
            self._partial = False
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp logs, with a traceback, a body whose rest it fails to drain
        after the answer (a bad gzip the handler never read): a client's fault,
        logged here in one throttled line."""
        exc = kw.get("exc_info")
        if isinstance(exc, web.RequestPayloadError | HttpProcessingError | ConnectionError):
            if THROTTLE.allow("undrainable_body", self._loop.time()) is not None:
                logger.warning("action=dropped_connection reason=%s address=%s", type(exc).__name__, self.address)
            return
        super().log_exception(*args, **kw)

    def _waiting_for_request(self) -> bool:
        return self._waiter is not None and not self._waiter.done()

    def is_idle(self) -> bool:
        """Waiting for a request and holding none of it: safe to close."""
        if not self._admitted or self._partial:
            return False
        # A connection that never sent a byte is idle even before its task first runs.
        return self._request_count == 0 or self._waiting_for_request()

    def _start_header_clock(self) -> None:
        self._header_count = self._request_count
        self._header_timer = self._loop.call_later(self._guard.header_timeout, self._header_deadline)

    def _header_deadline(self) -> None:
        self._header_timer = None
        if self._request_count == self._header_count and self.transport is not None and not self._force_close:
            note_refusal(self._guard.health, "header_timeout", self.address)
            self.force_close()

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """The answer to a request the parser refused (or, should one reach
        here, a handler's unexpected error): a problem document naming the
        kind of fault, never its bytes."""
        if request.writer.output_size > 0:
            raise ConnectionError("a response was already started; nothing more can be sent")
        if isinstance(exc, ContentEncodingError):
            status, type_, title, detail = (
                415,
                "unsupported-content-encoding",
                "Unsupported Content-Encoding",
                "send the body uncompressed, or with Content-Encoding gzip or deflate",
            )
            kind = "bad_content_encoding"
        elif isinstance(exc, LineTooLong) or (
            isinstance(exc, HttpProcessingError) and "too many headers" in exc.message.lower()
        ):
            status, type_, title, detail = (
                431,
                "request-header-fields-too-large",
                "Request header fields too large",
                f"the request line and each header line may be at most {MAX_LINE_BYTES} bytes, "
                f"and there may be at most {MAX_HEADERS} headers",
            )
            kind = "bad_request_head"
        elif isinstance(exc, HttpProcessingError) or status < 500:
            status, type_, title, detail = (
                400,
                "bad-request",
                "Malformed HTTP request",
                "the request line or a header is not valid HTTP/1.1",
            )
            kind = "bad_request_head"
        else:
            logger.error("action=unhandled_error address=%s error=%s", self.address, type(exc).__name__, exc_info=exc)
            status, type_, title, detail = (
                500,
                "internal",
                "Internal error",
                "Something went wrong; it has been logged.",
            )
            kind = ""
        if kind:
            self._guard.health.refuse(kind)
            suppressed = THROTTLE.allow(kind, self._loop.time())
            if suppressed is not None:
                # aiohttp's own line, on its logger, with the parser's exception (which
                # quotes the bad bytes: logsetup's formatter redacts keys and cookies
                # in it), but at most once per interval per kind.
                self.logger.warning(
                    "Error handling request from %s: kind=%s status=%d suppressed=%d",
                    self.address,
                    kind,
                    status,
                    suppressed,
                    exc_info=exc,
                )
        response = problem_response(status, type_, title, detail)
        response.force_close()
        return response


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are `GuardedHandler`s under one guard."""

    __slots__ = ("_bound_port", "_guard", "_handler_kwargs", "_host", "_port")

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard, handler_kwargs: dict[str, Any]
    ) -> None:
        super().__init__(runner, backlog=min(4096, max(128, guard.max_connections)))
        self._host, self._port, self._bound_port = host, port, port
        self._guard = guard
        self._handler_kwargs = handler_kwargs

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._bound_port}"

    @property
    def port(self) -> int:
        return self._bound_port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        guard, kwargs = self._guard, self._handler_kwargs

        def protocol() -> GuardedHandler:
            return GuardedHandler(server, guard, loop=loop, **kwargs)

        self._server = await loop.create_server(protocol, self._host, self._port, backlog=self._backlog)
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]


def handler_settings(settings: Settings) -> dict[str, Any]:
    return {
        "keepalive_timeout": settings.keepalive_timeout_seconds,
        "max_line_size": MAX_LINE_BYTES,
        "max_field_size": MAX_LINE_BYTES,
        "max_headers": MAX_HEADERS,
        "lingering_time": LINGERING_SECONDS,
        "access_log": None,
    }


async def start_http(
    app: web.Application, settings: Settings, host: str, port: int
) -> tuple[web.AppRunner, GuardedSite]:
    """Set up `app` and listen on `host:port` (0: any free port) with every
    connection limit of `settings`; `runner.cleanup()` stops it. Used by
    `serve()` and by the tests, so both see the same server."""
    kwargs = handler_settings(settings)
    runner = web.AppRunner(app, handle_signals=False, **kwargs)
    await runner.setup()
    guard = ConnectionGuard(settings.max_connections, settings.header_timeout_seconds, app[SERVICES].health)
    warn_if_descriptors_short(settings.max_connections)
    site = GuardedSite(runner, host, port, guard, kwargs)
    await site.start()
    return runner, site


def warn_if_descriptors_short(max_connections: int) -> None:
    """Past the process's file-descriptor limit, accept() fails and asyncio
    pauses accepting: the cap should bind first."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_connections + 64 > soft:
        logger.warning(
            "action=config_warning setting=JOBQ_MAX_CONNECTIONS value=%d openFileLimit=%d "
            "hint=raise ulimit -n or lower JOBQ_MAX_CONNECTIONS",
            max_connections,
            soft,
        )
