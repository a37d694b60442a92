"""The client side: a thin jobq API wrapper and a concurrent request load.

It runs in the bench driver process, never in the server's.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from bench.server import Server

ECHO_JOB: dict[str, Any] = {"type": "echo", "payload": {"hello": "bench"}}
ECHO_BODY = orjson.dumps(ECHO_JOB)
JSON_HEADERS = {"Content-Type": "application/json"}
BATCH_SIZE = 1000  # the most POST /jobs/batch takes
UNFINISHED = "queued,retry,running,waiting"
DRAIN_POLL_SECONDS = 0.1
DRAIN_TIMEOUT_SECONDS = 300.0


class UnexpectedResponse(RuntimeError):
    pass


class Api:
    """A tenant's view of one server over one aiohttp session."""

    def __init__(self, session: aiohttp.ClientSession, server: Server) -> None:
        self.session = session
        self.url = server.url

    async def _call(self, method: str, path: str, expect: int, *, body: bytes | None = None, **params: Any) -> Any:
        async with self.session.request(
            method, self.url + path, data=body, params=params or None, headers=JSON_HEADERS if body else None
        ) as response:
            data = await response.read()
            if response.status != expect:
                raise UnexpectedResponse(f"{method} {path}: {response.status} {data[:300]!r}")
            return orjson.loads(data)

    async def submit(self) -> dict[str, Any]:
        job: dict[str, Any] = await self._call("POST", "/jobs", 201, body=ECHO_BODY)
        return job

    async def submit_batch(self, size: int) -> None:
        await self._call("POST", "/jobs/batch", 201, body=orjson.dumps({"jobs": [ECHO_JOB] * size}))

    async def fill(self, total: int) -> None:
        """Submit `total` echo jobs in batches (one durable write each)."""
        for start in range(0, total, BATCH_SIZE):
            await self.submit_batch(min(BATCH_SIZE, total - start))

    async def job(self, job_id: str) -> dict[str, Any]:
        job: dict[str, Any] = await self._call("GET", f"/jobs/{job_id}", 200)
        return job

    async def list_jobs(self, **params: Any) -> dict[str, Any]:
        page: dict[str, Any] = await self._call("GET", "/jobs", 200, **params)
        return page

    async def all_jobs(self, status: str) -> list[dict[str, Any]]:
        """Every job with `status`, following the cursor (500 a page)."""
        jobs: list[dict[str, Any]] = []
        params: dict[str, Any] = {"status": status, "limit": 500}
        while True:
            page = await self.list_jobs(**params)
            jobs.extend(page["jobs"])
            if not page["nextCursor"]:
                return jobs
            params["cursor"] = page["nextCursor"]

    async def unfinished(self) -> bool:
        """Is any job not yet terminal?"""
        return bool((await self.list_jobs(status=UNFINISHED, limit=1))["jobs"])


def session_for(server: Server, connections: int = 10) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"X-API-Key": server.key},
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=300),
    )


@asynccontextmanager
async def api_for(server: Server) -> AsyncIterator[Api]:
    async with session_for(server) as session:
        yield Api(session, server)


@dataclass(frozen=True, slots=True)
class Request:
    """One request the load repeats, and the status it must get."""

    method: str
    path: str
    body: bytes | None
    expect: int


SUBMIT = Request("POST", "/jobs", ECHO_BODY, 201)
HEALTHZ = Request("GET", "/healthz", None, 200)


@dataclass(frozen=True, slots=True)
class Load:
    """What one load measured (latencies in seconds)."""

    latencies: list[float]
    elapsed: float
    requested: int
    client_cpu: float  # seconds of this process's CPU
    server_cpu: float  # seconds of the server's CPU

    @property
    def done(self) -> int:
        return len(self.latencies)


async def run_load(server: Server, request: Request, total: int, clients: int, time_cap: float) -> Load:
    """`total` requests from `clients` concurrent clients, each sending its
    next request when the previous one was answered; stops early after
    `time_cap` seconds."""
    latencies: list[float] = []
    issued = itertools.count()
    url = server.url + request.path
    headers = JSON_HEADERS if request.body is not None else None

    async def one_client(session: aiohttp.ClientSession, deadline: float) -> None:
        while next(issued) < total and time.perf_counter() < deadline:
            sent = time.perf_counter()
            async with session.request(request.method, url, data=request.body, headers=headers) as response:
                await response.read()
                if response.status != request.expect:
                    raise UnexpectedResponse(f"{request.method} {request.path}: {response.status}")
            latencies.append(time.perf_counter() - sent)

    async with session_for(server, clients) as session:
        cpu, server_cpu, started = time.process_time(), server.cpu_seconds(), time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(clients):
                group.create_task(one_client(session, started + time_cap))
        elapsed = time.perf_counter() - started
        return Load(latencies, elapsed, total, time.process_time() - cpu, server.cpu_seconds() - server_cpu)


def parse_ts(value: str) -> datetime:
    """An RFC 3339 timestamp of the API (`2026-11-24T09:30:00.123Z`)."""
    return datetime.fromisoformat(value)


async def wait_until_drained(api: Api) -> float:
    """Poll until no job is unfinished; returns `time.perf_counter()` then."""
    deadline = time.perf_counter() + DRAIN_TIMEOUT_SECONDS
    while await api.unfinished():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"jobs were still unfinished after {DRAIN_TIMEOUT_SECONDS:g} s")
        await asyncio.sleep(DRAIN_POLL_SECONDS)
    return time.perf_counter()


async def every(seconds: float, deadline: float, action: Callable[[], Awaitable[None]]) -> None:
    """Run `action` every `seconds` until `deadline` (perf_counter); late rounds are not made up."""
    next_at = time.perf_counter()
    while next_at < deadline:
        await action()
        next_at += seconds
        delay = next_at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            next_at = time.perf_counter()
