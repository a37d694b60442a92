"""The guarded outgoing client and the `http` job type (SPEC §6, §9), against
real aiohttp receivers on loopback, with the fake clock driving retries."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from jobq.core.timefmt import parse_ts
from jobq.outbound import client as outbound
from jobq.outbound.client import MAX_BODY, AddressRefused, guarded_session, send
from jobq.worker import http_job
from jobq.worker.builtin import register_builtins
from jobq.worker.handlers import Registry
from tests.conftest import Harness
from tests.support.receivers import FakeResolver, answer

ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def allow_private() -> bool:
    """Loopback receivers need the guard lifted; guard tests parametrize this to False."""
    return True


@pytest.fixture
def registry(allow_private: bool) -> Registry:
    return register_builtins(Registry(), allow_private_urls=allow_private)


def seconds_between(start: str, end: str) -> float:
    a, b = parse_ts(start), parse_ts(end)
    assert a is not None and b is not None
    return (b - a).total_seconds()


async def run_http(jobq: Harness, **payload: Any) -> Any:
    job = await jobq.submit(type="http", payload=payload)
    await asyncio.wait_for(jobq.drain(), timeout=10)
    return await jobq.get(job["jobId"])


# ---------------------------------------------------------------- the job type


async def test_2xx_succeeds_with_status_headers_and_body(jobq: Harness, receive: Any) -> None:
    receiver = await receive(answer(200, "hello", X_Custom="x"))
    done = await run_http(
        jobq, url=receiver.url(), method="post", headers={"X-Token": "t"}, body={"a": 1}, timeoutSeconds=5
    )
    assert done["status"] == "succeeded", done
    result = done["result"]
    assert result["status"] == 200 and result["body"] == "hello" and result["truncated"] is False
    assert result["headers"]["content-type"].startswith("text/plain")
    assert "x-custom" not in result["headers"]  # only a few headers are kept
    method, path, body, headers = receiver.requests[0]
    assert (method, path, body) == ("POST", "/hook", b'{"a":1}')
    assert headers["X-Token"] == "t" and headers["Content-Type"] == "application/json"


async def test_500_then_200_retries_then_succeeds(jobq: Harness, receive: Any) -> None:
    receiver = await receive(answer(500, "boom"), answer(200, "ok"))
    job = await jobq.submit(type="http", payload={"url": receiver.url()})
    await jobq.drain()
    first = await jobq.get(job["jobId"])
    assert first["status"] == "retry" and first["attempts"] == 1
    assert "answered 500" in first["lastError"]
    jobq.clock.advance(seconds_between(first["updatedAt"], first["nextRunAt"]) + 1)
    await jobq.drain()
    done = await jobq.get(job["jobId"])
    assert done["status"] == "succeeded" and done["result"]["body"] == "ok"
    assert [a["status"] for a in done["attemptHistory"]] == ["failed", "succeeded"]
    assert len(receiver.requests) == 2


@pytest.mark.parametrize("status", [408, 502, 503])
async def test_408_and_5xx_fail_the_attempt(jobq: Harness, receive: Any, status: int) -> None:
    receiver = await receive(answer(status))
    failed = await run_http(jobq, url=receiver.url())
    assert failed["status"] == "retry" and f"answered {status}" in failed["lastError"]


@pytest.mark.parametrize("status", [400, 404, 410])
async def test_other_4xx_is_fatal_at_once(jobq: Harness, receive: Any, status: int) -> None:
    receiver = await receive(answer(status, "nope"))
    dead = await run_http(jobq, url=receiver.url())
    assert dead["status"] == "fatal" and dead["attempts"] == 1
    assert f"answered {status}" in dead["lastError"]
    assert len(receiver.requests) == 1


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_snoozes(jobq: Harness, receive: Any, status: int) -> None:
    receiver = await receive(answer(status, Retry_After="7"), answer(200, "later"))
    job = await jobq.submit(type="http", payload={"url": receiver.url()})
    await jobq.drain()
    snoozed = await jobq.get(job["jobId"])
    assert snoozed["status"] == "retry"
    assert snoozed["attemptHistory"][0]["status"] == "interrupted"
    assert seconds_between(snoozed["updatedAt"], snoozed["nextRunAt"]) == pytest.approx(7, abs=0.01)
    jobq.clock.advance(6)
    await jobq.drain()
    assert len(receiver.requests) == 1  # not due yet
    jobq.clock.advance(2)
    await jobq.drain()
    done = await jobq.get(job["jobId"])
    assert done["status"] == "succeeded" and done["result"]["body"] == "later"


async def test_a_huge_retry_after_is_bounded(jobq: Harness, receive: Any) -> None:
    receiver = await receive(answer(429, Retry_After="99999999"))
    snoozed = await run_http(jobq, url=receiver.url())
    delay = seconds_between(snoozed["updatedAt"], snoozed["nextRunAt"])
    assert delay == pytest.approx(http_job.MAX_RETRY_AFTER_SECONDS, abs=0.01)


async def test_429_without_retry_after_fails_the_attempt(jobq: Harness, receive: Any) -> None:
    receiver = await receive(answer(429))
    failed = await run_http(jobq, url=receiver.url())
    assert failed["status"] == "retry" and failed["attemptHistory"][0]["status"] == "failed"


async def test_a_redirect_is_not_followed_and_is_permanent(jobq: Harness, receive: Any) -> None:
    elsewhere = await receive(answer(200, "should not be reached"))
    receiver = await receive(answer(302, Location=elsewhere.url("/other")))
    dead = await run_http(jobq, url=receiver.url())
    assert dead["status"] == "fatal"
    assert "302" in dead["lastError"] and "redirects are not followed" in dead["lastError"]
    assert elsewhere.requests == []


async def test_a_huge_body_is_truncated_to_the_cap(jobq: Harness, receive: Any) -> None:
    receiver = await receive(answer(200, "x" * (1024 * 1024)))
    done = await run_http(jobq, url=receiver.url())
    assert done["status"] == "succeeded"
    assert done["result"]["truncated"] is True
    assert len(done["result"]["body"]) == MAX_BODY


async def test_a_slow_receiver_past_timeout_seconds_fails_the_attempt(jobq: Harness, receive: Any) -> None:
    async def slow(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(text="too late")

    receiver = await receive(slow)
    failed = await run_http(jobq, url=receiver.url(), timeoutSeconds=0.3)
    assert failed["status"] == "retry"
    assert "no complete answer within 0.3 s" in failed["lastError"]


async def test_a_closed_port_fails_the_attempt(jobq: Harness) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    failed = await run_http(jobq, url=f"http://127.0.0.1:{port}/", timeoutSeconds=5)
    assert failed["status"] == "retry" and "ClientConnectorError" in failed["lastError"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "payload.url"),
        ({"url": "ftp://example.com/"}, "payload.url"),
        ({"url": "http://user:pw@example.com/"}, "payload.url"),
        ({"url": "https://example.com/", "method": "BREW"}, "payload.method"),
        ({"url": "https://example.com/", "headers": ["X"]}, "payload.headers"),
        ({"url": "https://example.com/", "headers": {"X-A": "a\r\nInjected: 1"}}, "payload.headers.X-A"),
        ({"url": "https://example.com/", "headers": {"Bad Name": "a"}}, "payload.headers.Bad Name"),
        ({"url": "https://example.com/", "headers": {"Host": "a"}}, "payload.headers.Host"),
        ({"url": "https://example.com/", "timeoutSeconds": 0}, "payload.timeoutSeconds"),
        ({"url": "https://example.com/", "timeoutSeconds": "5"}, "payload.timeoutSeconds"),
    ],
)
async def test_a_bad_payload_is_422_naming_the_field(jobq: Harness, payload: dict[str, Any], field: str) -> None:
    refused = await jobq.submit(expect=422, type="http", payload=payload)
    assert [e["field"] for e in refused["errors"]] == [field]


# ---------------------------------------------------------------- the address guard


@pytest.mark.parametrize("allow_private", [False])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_a_local_target_is_refused_at_submit(jobq: Harness, receive: Any, host: str) -> None:
    receiver = await receive(answer(200))
    refused = await jobq.submit(expect=422, type="http", payload={"url": receiver.url(host=host)})
    assert refused["errors"][0]["field"] == "payload.url"
    assert host.strip("[]") in refused["errors"][0]["message"]
    assert receiver.requests == []


@pytest.mark.parametrize("address", ["127.0.0.1", "::ffff:127.0.0.1", "169.254.169.254", "10.0.0.7"])
async def test_the_resolver_refuses_a_name_resolving_to_a_refused_address(receive: Any, address: str) -> None:
    receiver = await receive(answer(200))
    base = FakeResolver(address)
    async with guarded_session(allow_private=False, base_resolver=base) as session:
        with pytest.raises(
            AddressRefused, match=re.escape(f"evil.example resolves to {ipaddress.ip_address(address)}, ")
        ):
            await send(session, "GET", receiver.url(host="evil.example"), timeout_seconds=5)
    assert base.asked == ["evil.example"]
    assert receiver.requests == []


async def test_the_resolver_lets_an_allowed_name_through_to_the_address_it_checked(receive: Any) -> None:
    receiver = await receive(answer(200, "pinned"))
    async with guarded_session(allow_private=True, base_resolver=FakeResolver("127.0.0.1")) as session:
        response = await send(session, "GET", receiver.url(host="evil.example"), timeout_seconds=5, allow_private=True)
    assert (response.status, response.body, response.truncated) == (200, b"pinned", False)
    assert len(receiver.requests) == 1


async def test_send_refuses_an_ip_literal_before_connecting(receive: Any) -> None:
    receiver = await receive(answer(200))
    async with guarded_session(allow_private=False) as session:
        with pytest.raises(AddressRefused, match=re.escape("127.0.0.1, a loopback address")):
            await send(session, "GET", receiver.url(), timeout_seconds=5)
    assert receiver.requests == []


@pytest.mark.parametrize("allow_private", [False])
async def test_a_job_whose_name_resolves_to_loopback_is_fatal_without_a_request(
    jobq: Harness, receive: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = await receive(answer(200))
    monkeypatch.setattr(outbound, "make_base_resolver", lambda: FakeResolver("127.0.0.1"))
    dead = await run_http(jobq, url=receiver.url(host="evil.example"))
    assert dead["status"] == "fatal" and dead["attempts"] == 1
    assert "address refused" in dead["lastError"] and "127.0.0.1, a loopback address" in dead["lastError"]
    assert receiver.requests == []
