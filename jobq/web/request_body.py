"""Reading a request body under limits (issue 8), for the JSON API and the
sign-in form alike.

- Size: a declared `Content-Length` over the limit is a 413 before a byte of
  the body is read; a chunked or compressed body is a 413 as soon as what it
  decodes to passes the limit (so a deflate bomb never grows past it).
- Time: the body must be complete within `body_timeout_seconds`, and after
  its first `GRACE_SECONDS` arrive at no less than `body_min_bytes_per_second`
  on average; else 408, and the connection is closed.
- Coding: `Content-Encoding` gzip or deflate (aiohttp decodes them), or none;
  anything else is a 415, and a body that is not what its coding says a 400.
- Charset: JSON and forms are UTF-8; another declared charset is a 415.

Each refusal is counted (`connlimits.refuse_request`).
"""

from __future__ import annotations

import asyncio
import math
from urllib.parse import parse_qsl

from aiohttp import web
from aiohttp.http import HttpVersion11
from aiohttp.http_exceptions import HttpProcessingError

from jobq.core.errors import BadRequest, BodyTimeout, BodyUndecodable, PayloadTooLarge, UnsupportedMediaType
from jobq.web.connlimits import refuse_request
from jobq.web.problems import problem_response
from jobq.web.services import services_of

GRACE_SECONDS = 1.0
DECODED_CODINGS = frozenset({"gzip", "x-gzip", "deflate", "identity"})
UTF8 = frozenset({"utf-8", "utf8"})
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 16 * 1024
MAX_FORM_FIELDS = 20
CONTINUE_DEFERRED = web.RequestKey("jobq.continue_deferred", bool)


async def defer_continue(request: web.Request) -> web.StreamResponse | None:
    """The `expect_handler` of routes that read a body: aiohttp's default sends
    "100 Continue" before any middleware, inviting the body of a request that
    will be refused for its key. Here it is sent by `read_body`, once the key
    has passed; other expectations get a 417 that does not repeat them."""
    if request.version != HttpVersion11:
        return None
    if request.headers.get("Expect", "").lower() == "100-continue":
        request[CONTINUE_DEFERRED] = True
        return None
    return problem_response(417, "expectation-failed", "Expectation failed", "only Expect: 100-continue is supported")


def check_coding(request: web.Request) -> None:
    """415 for a `Content-Encoding` jobq does not decode."""
    raw = request.headers.getall("Content-Encoding", [])
    codings = [c.strip().lower() for value in raw for c in value.split(",") if c.strip()]
    if len(codings) > 1 or any(c not in DECODED_CODINGS for c in codings):
        refuse_request(request, "bad_content_encoding")
        shown = ", ".join(codings)[:60]
        raise UnsupportedMediaType(f"Content-Encoding {shown!r} is not supported; send gzip, deflate or no coding")


def check_utf8(request: web.Request) -> None:
    charset = request.charset
    if charset is not None and charset.strip().lower() not in UTF8:
        refuse_request(request, "bad_charset")
        raise UnsupportedMediaType(f"the body must be UTF-8; charset={charset[:40]!r} is not supported")


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole (decoded) body, at most `max_bytes`; raises 413, 408, 415 or 400 as above."""
    check_coding(request)
    settings = services_of(request).settings
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        refuse_request(request, "body_too_large")
        raise PayloadTooLarge(f"the request body is {declared} bytes; the limit is {max_bytes}")
    if request.get(CONTINUE_DEFERRED):
        request[CONTINUE_DEFERRED] = False
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp does: the answer proper has not started
    content = request.content
    if content.is_eof() and content.exception() is None:
        # The whole body came with the headers (most small requests): nothing
        # to wait for, so no timer to arm.
        whole = content.read_nowait()
        if len(whole) > max_bytes:
            refuse_request(request, "body_too_large")
            raise PayloadTooLarge(f"the request body is over {max_bytes} bytes (after decoding)")
        return whole
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + settings.body_timeout_seconds
    rate = settings.body_min_bytes_per_second
    body = bytearray()
    while True:
        # The next bytes are due before the body falls below the minimum average rate.
        due = min(end, start + GRACE_SECONDS + len(body) / rate) if rate else end
        try:
            async with asyncio.timeout_at(due):
                chunk = await content.readany()
        except TimeoutError:
            refuse_request(request, "body_timeout", f"received={len(body)}")
            raise BodyTimeout(_too_slow(len(body), loop.time() - start, settings.body_timeout_seconds, rate)) from None
        except ConnectionError:
            # The client went away; this answer will not reach it, and is no error of ours.
            raise BadRequest("the connection closed before the body was complete") from None
        except (web.RequestPayloadError, HttpProcessingError):
            # aiohttp's decoder found that the body is not what Content-Encoding says.
            refuse_request(request, "bad_content_encoding")
            raise BodyUndecodable("the body cannot be decoded as its Content-Encoding says") from None
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > max_bytes:
            refuse_request(request, "body_too_large")
            raise PayloadTooLarge(f"the request body is over {max_bytes} bytes (after decoding)")


def _too_slow(received: int, elapsed: float, timeout: float, rate: int) -> str:
    if elapsed >= timeout - 0.001:
        return f"the body was not complete within {timeout:g} s ({received} bytes arrived)"
    return f"the body arrived slower than {rate} bytes a second ({received} bytes in {math.floor(elapsed)} s)"


async def read_form(request: web.Request) -> dict[str, str]:
    """A small `application/x-www-form-urlencoded` UTF-8 form, as its first value per name."""
    if request.content_type != FORM_TYPE:
        raise UnsupportedMediaType(f"send the form as {FORM_TYPE}, not {request.content_type or 'nothing'}")
    check_utf8(request)
    body = await read_body(request, MAX_FORM_BYTES)
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, max_num_fields=MAX_FORM_FIELDS, encoding="utf-8", errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form is not valid UTF-8 application/x-www-form-urlencoded") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form
