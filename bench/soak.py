"""The soak (issue 8): `--soak-seconds` (600 by default) of mixed load on one
`python app.py`, its resident memory sampled every `SAMPLE_SECONDS`; over
the second half it must be flat (a leak grows it steadily; a steady state
does not).

The load, each part paced at its own rate from this process: single submits
(a quarter of them with a webhookUrl at a fast receiver in its own process,
`bench.hook_receiver`), batches of 100, jobs that fail once and are retried
by the worker (retry base 1 s), jobs that fail for good and are retried by
hand (POST /jobs/{id}/retry), delayed jobs cancelled at once, GET /jobs/{id}
and GET /jobs pages, `VIEWERS` WebSocket viewers reading every message, and
one more socket opened and closed every few seconds. The server's own worker
(concurrency 5) claims and drains all of it, and its sender sends the
webhooks.

Jobs are kept `RETENTION_SECONDS` after they end (JOBQ_RETENTION_DAYS), and
the worker purges once a minute, so the retained set reaches its steady
size after about two minutes; the slope is taken over the second half of
the run (a short run's second half may still be filling).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import statistics
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from bench.client import ECHO_JOB, JSON_HEADERS, every, session_for
from bench.hook_receiver import FAST, receiver_for
from bench.live import viewers_for
from bench.report import Row
from bench.server import Server, temp_server
from bench.stats import count, ms, percentile

if TYPE_CHECKING:
    from bench.scenarios import Plan

MIB = 1 << 20
RETENTION_SECONDS = 60.0
SERVER_ENV = {
    "JOBQ_ALLOW_PRIVATE_URLS": "true",  # the receiver is on 127.0.0.1
    "JOBQ_RETENTION_DAYS": repr(RETENTION_SECONDS / 86400),
    "JOBQ_RETRY_BASE_SECONDS": "1",
    "JOBQ_RETRY_MAX_SECONDS": "5",
}
WORKER_CONCURRENCY = 5
SAMPLE_SECONDS = 5.0
VIEWERS = 3
SLOPE_LIMIT = 1.0  # MiB per minute over the second half
BATCH = 100
RECENT = 2000  # job ids kept for GET /jobs/{id}

# (seconds between actions, what each one does) by part; about 60 requests and 100 jobs a second in all
SUBMIT_EVERY = 1 / 40
BATCH_EVERY = 2.0
FAIL_EVERY = 0.5
RETRY_EVERY = 1.0
CANCEL_EVERY = 0.5
GET_EVERY = 0.1
LIST_EVERY = 0.5
SOCKET_EVERY = 5.0


@dataclass
class Traffic:
    """What the load sent and got: latencies (s) of every request, and each
    answer that was not the expected one, by method, path kind and status."""

    session: aiohttp.ClientSession
    url: str
    latencies: list[float] = field(default_factory=list)
    unexpected: Counter[str] = field(default_factory=Counter)
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT))

    async def call(self, method: str, path: str, expect: tuple[int, ...], body: Any = None, kind: str = "") -> Any:
        data = orjson.dumps(body) if body is not None else None
        sent = time.perf_counter()
        try:
            async with self.session.request(
                method, self.url + path, data=data, headers=JSON_HEADERS if data else None
            ) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.unexpected[f"{method} {kind or path} {type(exc).__name__}"] += 1
            return None
        self.latencies.append(time.perf_counter() - sent)
        if status not in expect:
            self.unexpected[f"{method} {kind or path} {status}"] += 1
            return None
        return orjson.loads(raw) if raw else None

    async def submit(self, job: dict[str, Any]) -> str | None:
        answer = await self.call("POST", "/jobs", (201,), job)
        if answer is None:
            return None
        self.recent.append(answer["jobId"])
        return str(answer["jobId"])


def parts(traffic: Traffic, server: Server, hook_url: str) -> list[tuple[float, Callable[[], Awaitable[None]]]]:
    """The load's parts: (seconds between actions, the action)."""
    submits = itertools.count()
    rng = random.Random(8)

    async def submit() -> None:
        job = ECHO_JOB if next(submits) % 4 else {**ECHO_JOB, "webhookUrl": hook_url}
        await traffic.submit(job)

    async def batch() -> None:
        await traffic.call("POST", "/jobs/batch", (201,), {"jobs": [ECHO_JOB] * BATCH})

    async def fail() -> None:
        await traffic.submit({"type": "fail", "payload": {"times": 1}})  # the worker retries it
        await traffic.submit({"type": "fail", "payload": {"times": 1, "permanent": True}})  # fatal: retried by hand

    async def retry_fatal() -> None:
        page = await traffic.call("GET", "/jobs?status=fatal&limit=20", (200,), kind="/jobs?status=fatal")
        for job in page["jobs"] if page else []:
            # 409: it left `fatal` meanwhile (nothing else moves a fatal job here, so this stays rare)
            await traffic.call("POST", f"/jobs/{job['jobId']}/retry", (200, 409), kind="/jobs/{id}/retry")

    async def cancel() -> None:
        job_id = await traffic.submit({**ECHO_JOB, "delaySeconds": 60})
        if job_id is not None:
            await traffic.call("POST", f"/jobs/{job_id}/cancel", (200,), kind="/jobs/{id}/cancel")

    async def get() -> None:
        if traffic.recent:
            # 404: purged since (kept RETENTION_SECONDS after it ended)
            job_id = rng.choice(traffic.recent)
            await traffic.call("GET", f"/jobs/{job_id}", (200, 404), kind="/jobs/{id}")

    async def list_page() -> None:
        await traffic.call("GET", "/jobs?limit=50", (200,), kind="/jobs?limit=50")

    async def socket() -> None:
        try:
            async with traffic.session.ws_connect(f"{server.url}/ws") as ws:
                await asyncio.wait_for(ws.receive(), 10)  # its first snapshot
        except (aiohttp.ClientError, TimeoutError) as exc:
            traffic.unexpected[f"GET /ws {type(exc).__name__}"] += 1

    return [
        (SUBMIT_EVERY, submit), (BATCH_EVERY, batch), (FAIL_EVERY, fail), (RETRY_EVERY, retry_fatal),
        (CANCEL_EVERY, cancel), (GET_EVERY, get), (LIST_EVERY, list_page), (SOCKET_EVERY, socket),
    ]


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float  # since the load began
    rss: int  # bytes
    fds: int  # the server's open file descriptors
    disk: int  # bytes in the data directory (jobs.json and the journal)
    retained: int  # jobs the tenant has (GET /metrics), -1 if it did not answer


async def sample_server(server: Server, traffic: Traffic, started: float, deadline: float, out: list[Sample]) -> None:
    async def one() -> None:
        metrics = await traffic.call("GET", "/metrics", (200,))
        retained = sum(metrics["counts"].values()) if metrics else -1
        fds = len(os.listdir(f"/proc/{server.pid}/fd"))
        disk = sum(entry.stat().st_size for entry in os.scandir(server.data_dir) if entry.is_file())
        out.append(Sample(time.perf_counter() - started, server.rss_bytes(), fds, disk, retained))

    await every(SAMPLE_SECONDS, deadline, one)
    await one()


def second_half_slope(samples: list[Sample], seconds: float) -> float:
    """MiB per minute: the least-squares slope of RSS over the samples of the second half."""
    half = [(s.seconds / 60, s.rss / MIB) for s in samples if s.seconds >= seconds / 2]
    if len(half) < 2:
        return float("nan")
    slope, _ = statistics.linear_regression([t for t, _ in half], [m for _, m in half])
    return slope


async def soak(plan: Plan) -> list[Row]:
    seconds = plan.soak_seconds
    samples: list[Sample] = []
    async with temp_server(SERVER_ENV) as server, receiver_for(FAST) as hook:
        assert hook is not None
        await server.start(WORKER_CONCURRENCY)
        async with session_for(server, 20) as session, viewers_for(server, VIEWERS, None) as viewers:
            traffic = Traffic(session, server.url)
            started = time.perf_counter()
            deadline = started + seconds
            async with asyncio.TaskGroup() as group:
                group.create_task(sample_server(server, traffic, started, deadline, samples))
                for pause, action in parts(traffic, server, hook.url):
                    group.create_task(every(pause, deadline, action))
            messages = sum(v.messages for v in viewers)
            ready = await traffic.call("GET", "/readyz", (200,))
        received = (await hook.stats())["received"]
    first, last = samples[0], samples[-1]
    middle = next(s for s in samples if s.seconds >= seconds / 2)
    peak_mib = max(s.rss for s in samples) / MIB
    slope = second_half_slope(samples, seconds)
    requests = len(traffic.latencies)
    failures = sum(traffic.unexpected.values())
    conditions = (
        f"{seconds:g} s of mixed load on one server (concurrency {WORKER_CONCURRENCY}, retention "
        f"{RETENTION_SECONDS:g} s, purge every 60 s), {VIEWERS} live viewers"
    )
    trace = ", ".join(f"{s.seconds / 60:.1f} min {s.rss / MIB:.0f}" for s in samples[:: max(1, len(samples) // 12)])
    return [
        Row(
            "soak: server RSS under mixed load", conditions,
            f"{first.rss / MIB:,.0f} → {last.rss / MIB:,.0f} MiB",
            target=f"second-half slope ≤ {SLOPE_LIMIT:g} MiB/min", met=slope <= SLOPE_LIMIT,
            notes=(
                f"slope over the second half {slope:+.2f} MiB/min (least squares, {len(samples)} samples every "
                f"{SAMPLE_SECONDS:g} s); peak {peak_mib:,.0f} MiB; RSS samples (minutes in: MiB) {trace}; "
                f"jobs retained at the start, half-way, the end: {count(first.retained)}, {count(middle.retained)}, "
                f"{count(last.retained)}; open files {first.fds}, {middle.fds}, {last.fds}; data directory "
                f"{first.disk / MIB:.1f}, {middle.disk / MIB:.1f}, {last.disk / MIB:.1f} MiB"
            ),
        ),
        Row(
            "soak: requests answered as expected", conditions,
            f"{count(requests - failures)} of {count(requests + failures)}",
            p50=ms(percentile(traffic.latencies, 0.5)), p99=ms(percentile(traffic.latencies, 0.99)),
            target="all", met=failures == 0 and ready is not None,
            notes=(
                f"submit, batch of {BATCH}, fail-and-retry, fatal and POST retry, delay and cancel, GET job and "
                f"pages, a socket opened and closed every {SOCKET_EVERY:g} s; the viewers read {count(messages)} "
                f"messages; the receiver got {count(received)} webhooks; /readyz at the end "
                f"{'200' if ready is not None else 'not 200'}"
                + (f"; unexpected: {dict(traffic.unexpected)}" if failures else "")
            ),
        ),
    ]
