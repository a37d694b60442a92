"""Live updates (SPEC §5, §12): how soon a status change reaches the
WebSocket viewers, with 1 and 200 of them, and whether 200 open dashboards
slow the workers down (issue 3: by no more than 10 %).

The viewers are aiohttp WebSocket clients in this (separate) process,
authenticated with the bench tenant's key, reading every message as a
browser would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from bench.client import BATCH_SIZE, ECHO_JOB, JSON_HEADERS, Api, api_for, parse_ts
from bench.report import Row
from bench.server import Server, fresh_server
from bench.stats import count, ms, percentile, rate
from jobq.web.live.hub import SEND_BUDGET

if TYPE_CHECKING:
    from bench.scenarios import Plan

VIEWER_COUNTS = (1, 200)
DRAIN_VIEWERS = (0, 200)
DRAIN_SLOWDOWN_LIMIT = 0.10  # 200 open dashboards may cost at most this much of the drain rate
WORKER_CONCURRENCY = 5  # as the other drain and pickup benchmarks
WARMUP_SAMPLES = 20
WAIT_SECONDS = 30.0  # for one job's message to reach every viewer
SCHEDULE_LEAD_SECONDS = 2.0  # plus fill time: when the scheduled drain jobs become due
SNAPSHOT_PREFIX = '{"type":"snapshot"'
SUCCEEDED = '"status":"succeeded"'


@dataclass
class Arrivals:
    """When each job's `succeeded` message reached each viewer:
    (time.perf_counter(), time.time(), the job's updatedAt)."""

    viewers: int
    times: dict[str, list[tuple[float, float, str]]] = field(default_factory=dict)
    complete: dict[str, asyncio.Event] = field(default_factory=dict)

    def _event(self, job_id: str) -> asyncio.Event:
        return self.complete.setdefault(job_id, asyncio.Event())

    def arrived(self, job_id: str, updated_at: str) -> None:
        seen = self.times.setdefault(job_id, [])
        seen.append((time.perf_counter(), time.time(), updated_at))
        if len(seen) == self.viewers:
            self._event(job_id).set()

    async def wait(self, job_id: str) -> list[tuple[float, float, str]]:
        async with asyncio.timeout(WAIT_SECONDS):
            await self._event(job_id).wait()
        return self.times[job_id]


@dataclass
class Viewer:
    """One open dashboard: reads every message; counts them and snapshots;
    with `arrivals`, records when it first learnt that a job succeeded (from
    its job message or, if it fell behind, from a resync snapshot)."""

    ws: aiohttp.ClientWebSocketResponse
    arrivals: Arrivals | None
    messages: int = 0
    snapshots: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    seen: set[str] = field(default_factory=set)

    async def run(self) -> None:
        async for message in self.ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            self.messages += 1
            text: str = message.data
            if text.startswith(SNAPSHOT_PREFIX):
                self.snapshots += 1
                self.ready.set()
            if self.arrivals is not None and SUCCEEDED in text:
                data: dict[str, Any] = orjson.loads(text)
                for job in [data["job"]] if data["type"] == "job" else data.get("jobs", []):
                    if job["status"] == "succeeded" and job["jobId"] not in self.seen:
                        self.seen.add(job["jobId"])
                        self.arrivals.arrived(job["jobId"], job["updatedAt"])


@asynccontextmanager
async def viewers_for(server: Server, n: int, arrivals: Arrivals | None) -> AsyncIterator[list[Viewer]]:
    """`n` viewers connected to `GET /ws`, each past its first snapshot."""
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(headers={"X-API-Key": server.key}, connector=connector) as session:
        viewers = [Viewer(await session.ws_connect(f"{server.url}/ws"), arrivals) for _ in range(n)]
        async with asyncio.TaskGroup() as group:
            for viewer in viewers:
                group.create_task(viewer.run())
            async with asyncio.timeout(WAIT_SECONDS):
                for viewer in viewers:
                    await viewer.ready.wait()
            yield viewers
            for viewer in viewers:
                await viewer.ws.close()


def viewers_label(n: int) -> str:
    return f"{n} viewer" + ("s" if n != 1 else "")


# ---- latency ------------------------------------------------------------------


def sample_gap(viewers: int) -> float:
    """Seconds between samples, so that no viewer is offered more than its
    share of the hub's send budget (3 job messages a sample, and metrics):
    one offered more falls behind and gets snapshots instead."""
    return 4.0 * viewers / SEND_BUDGET


@dataclass
class Latencies:
    """Seconds, one sample per viewer per job, and per job for the fastest viewer."""

    round_trips: list[float] = field(default_factory=list)  # submit → message (client clock)
    from_change: list[float] = field(default_factory=list)  # updatedAt → message (wall clock)
    first_viewer: list[float] = field(default_factory=list)  # updatedAt → the first viewer's message
    resyncs: int = 0


async def latency_at(plan: Plan, viewers: int) -> Latencies:
    """Submit jobs one at a time on an idle service; for each, when its
    `succeeded` message reached every viewer."""
    arrivals = Arrivals(viewers)
    result = Latencies()
    async with (
        fresh_server(WORKER_CONCURRENCY) as server,
        api_for(server) as api,
        viewers_for(server, viewers, arrivals) as group,
    ):
        for sample in range(WARMUP_SAMPLES + plan.pickup_samples):
            await asyncio.sleep(sample_gap(viewers))
            sent = time.perf_counter()
            job = await api.submit()
            times = await arrivals.wait(job["jobId"])
            if sample < WARMUP_SAMPLES:
                continue
            changed = parse_ts(times[0][2]).timestamp()
            for received, wall, _ in times:
                result.round_trips.append(received - sent)
                result.from_change.append(wall - changed)
            result.first_viewer.append(min(wall for _, wall, _ in times) - changed)
        result.resyncs = sum(v.snapshots for v in group) - viewers
    return result


async def live_latency(plan: Plan) -> list[Row]:
    rows = []
    for viewers in VIEWER_COUNTS:
        found = await latency_at(plan, viewers)
        conditions = (
            f"{viewers_label(viewers)} on GET /ws, idle service, concurrency {WORKER_CONCURRENCY}, "
            f"{plan.pickup_samples} jobs one at a time, {sample_gap(viewers) * 1000:.1f} ms apart "
            f"({count(len(found.round_trips))} messages)"
        )
        resynced = f"; {found.resyncs} resync snapshots" if found.resyncs else ""
        shared = ""
        if viewers > 1:
            shared = (
                f"; the first viewer to hear of a job: p50 {ms(percentile(found.first_viewer, 0.5))}, "
                f"p99 {ms(percentile(found.first_viewer, 0.99))} (the viewers share one client process, "
                "whose reading of every socket is part of the later ones' figures)"
            )
        rows.append(latency_row(
            "live update: status change (updatedAt) → WebSocket message (wall clock)", conditions, found.from_change,
            "updatedAt is whole milliseconds (truncated), so each sample reads up to 1 ms long; "
            "the change is durable (fsynced) before it is sent" + shared + resynced,
        ))
        rows.append(latency_row(
            "live update: submit → `succeeded` message (client clock)", conditions, found.round_trips,
            "POST /jobs, then wait for the job's succeeded message on every socket; "
            "includes the submit's fsync, pickup, the run and the finish's fsync" + resynced,
        ))
    return rows


def latency_row(benchmark: str, conditions: str, samples: list[float], notes: str) -> Row:
    p50 = ms(percentile(samples, 0.5))
    notes = f"max {ms(max(samples))}; {notes}"
    return Row(benchmark, conditions, p50, p50=p50, p99=ms(percentile(samples, 0.99)), notes=notes)


# ---- the drain rate with viewers connected -------------------------------------


async def fill_scheduled(api: Api, total: int, run_at: datetime) -> None:
    """`total` echo jobs that all become due at `run_at`."""
    job = {**ECHO_JOB, "runAt": run_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    for start in range(0, total, BATCH_SIZE):
        body = orjson.dumps({"jobs": [job] * min(BATCH_SIZE, total - start)})
        async with api.session.post(f"{api.url}/jobs/batch", data=body, headers=JSON_HEADERS) as response:
            if response.status != 201:
                raise RuntimeError(f"POST /jobs/batch: {response.status} {(await response.read())[:300]!r}")


async def drain_with(plan: Plan, viewers: int) -> tuple[float, str]:
    """Drain rate (jobs/s) of `plan.drain_jobs` scheduled echo jobs with
    `viewers` sockets open, and notes."""
    total = plan.drain_jobs
    async with fresh_server(WORKER_CONCURRENCY) as server, api_for(server) as api:
        async with viewers_for(server, viewers, None) as group:
            lead = SCHEDULE_LEAD_SECONDS + total / 2000
            due = time.perf_counter() + lead
            await fill_scheduled(api, total, datetime.now(UTC) + timedelta(seconds=lead))
            if time.perf_counter() > due:
                raise RuntimeError(f"filling {total} jobs took longer than the {lead:g} s lead")
            await asyncio.sleep(due - time.perf_counter())
            cpu = server.cpu_seconds()
            before = sum(v.messages for v in group), sum(v.snapshots for v in group)
            while await api.unfinished():
                await asyncio.sleep(0.1)
            cpu = server.cpu_seconds() - cpu
            messages = sum(v.messages for v in group) - before[0]
            snapshots = sum(v.snapshots for v in group) - before[1]
        jobs = await api.all_jobs("succeeded")
    if len(jobs) != total:
        raise RuntimeError(f"{total} jobs were queued but {len(jobs)} succeeded")
    first = min(parse_ts(job["startedAt"]) for job in jobs)
    last = max(parse_ts(job["finishedAt"]) for job in jobs)
    seconds = (last - first).total_seconds()
    notes = f"server CPU {cpu:.1f} s over the drain"
    if viewers:
        notes += (
            f"; the viewers got {count(messages)} messages ({count(messages / viewers)} each), "
            f"{count(snapshots)} of them resync snapshots"
        )
    return rate(total, seconds), notes


async def live_drain(plan: Plan) -> list[Row]:
    rates: dict[int, float] = {}
    rows = []
    for viewers in DRAIN_VIEWERS:
        rates[viewers], notes = await drain_with(plan, viewers)
        rows.append(Row(
            "drain with open dashboards: scheduled echo jobs run to succeeded",
            f"{count(plan.drain_jobs)} jobs due at once, concurrency {WORKER_CONCURRENCY}, "
            f"{viewers_label(viewers)} on GET /ws",
            f"{count(rates[viewers])} jobs/s",
            notes=f"rate = jobs / (last finishedAt - first startedAt); {notes}",
        ))
    low, high = DRAIN_VIEWERS
    slowdown = 1 - rates[high] / rates[low]
    rows.append(Row(
        "drain slowdown from open dashboards", f"{viewers_label(high)} vs {viewers_label(low)}",
        f"{slowdown:+.1%}", target=f"≤ {DRAIN_SLOWDOWN_LIMIT:.0%}", met=slowdown <= DRAIN_SLOWDOWN_LIMIT,
        notes="1 - rate with viewers / rate without; a negative figure is noise in jobq's favour",
    ))
    return rows
