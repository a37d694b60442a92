"""The measurements of SPEC §12, each a function from a `Plan` to table rows.

Every scenario starts its own `python app.py` over a fresh temp data directory
and talks to it over loopback HTTP from this (separate) process.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from bench.client import (
    BATCH_SIZE,
    ECHO_JOB,
    HEALTHZ,
    SUBMIT,
    Api,
    Load,
    Request,
    api_for,
    parse_ts,
    run_load,
    wait_until_drained,
)
from bench.live import live_drain, live_latency
from bench.neighbours import noisy_neighbour
from bench.payload_memory import payload_memory
from bench.report import Row
from bench.server import BARE_COMMAND, Server, fresh_server, temp_server
from bench.soak import soak
from bench.stats import count, ms, percentile, rate
from bench.webhooks import webhook_drain

logger = logging.getLogger("bench")

SUBMIT_TARGETS = {1: 2000.0, 50: 6000.0}  # submits/s by number of clients
BARE_RATIO_TARGET = 0.5  # one client's submits/s over its POSTs/s to a bare aiohttp JSON handler
BATCH_TARGET = 25_000.0  # jobs/s through POST /jobs/batch
P99_GROWTH_LIMIT = 1.5  # p99 at the most retained jobs over p99 at the fewest
DRAIN_TARGET = 6000.0  # jobs/s
PICKUP_P50_TARGET = 0.001  # seconds
WORKER_CONCURRENCY = 5
MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Plan:
    """How much of everything to do: `FULL` for `make bench`, `QUICK` for a smoke run."""

    levels: tuple[int, ...]  # retained jobs before a submit measurement
    batches: tuple[tuple[int, int, int], ...]  # POST /jobs/batch: (jobs a request, clients, requests measured)
    requests: tuple[tuple[int, int], ...]  # (clients, requests measured)
    warmup: int  # requests before each measurement, not counted
    time_cap: float  # seconds; a measurement stops early after this
    drain_jobs: int
    pickup_samples: int
    memory_jobs: int
    payload_jobs: tuple[int, int]  # retained jobs for the memory per job: small payloads, 60 KB ones
    neighbour_seconds: float  # each phase of the noisy-neighbour measurement
    soak_seconds: float  # the soak's length (`--soak-seconds`)


FULL = Plan(
    levels=(1_000, 10_000, 100_000), requests=((1, 2_000), (50, 10_000)), warmup=200, time_cap=60.0,
    batches=((100, 1, 500), (500, 1, 100), (100, 4, 500), (500, 4, 100)),
    drain_jobs=20_000, pickup_samples=300, memory_jobs=100_000,
    payload_jobs=(20_000, 2_000), neighbour_seconds=15.0, soak_seconds=600.0,
)
QUICK = Plan(
    levels=(1_000, 10_000), requests=((1, 300), (50, 1_500)), warmup=50, time_cap=10.0,
    batches=((100, 1, 50), (500, 4, 20)),
    drain_jobs=2_000, pickup_samples=50, memory_jobs=10_000,
    payload_jobs=(5_000, 500), neighbour_seconds=5.0, soak_seconds=60.0,
)


def clients_label(clients: int) -> str:
    return f"{clients} client" + ("s" if clients != 1 else "")


def load_notes(load: Load) -> str:
    """The worst latency and where the CPU went (a client near 100 % means the
    figure is client-bound, a server near 100 % that it is CPU-bound)."""
    note = (
        f"max {ms(max(load.latencies, default=math.nan))}; "
        f"server CPU {load.server_cpu / load.elapsed:.0%}, client CPU {load.client_cpu / load.elapsed:.0%}"
    )
    if load.done < load.requested:
        note += f"; time cap hit after {count(load.done)} of {count(load.requested)} requests"
    return note


def load_row(benchmark: str, conditions: str, load: Load, target: float | None) -> Row:
    per_second = rate(load.done, load.elapsed)
    return Row(
        benchmark, conditions, f"{count(per_second)} /s",
        p50=ms(percentile(load.latencies, 0.5)), p99=ms(percentile(load.latencies, 0.99)),
        target=f"≥ {count(target)} /s" if target else "—",
        met=None if target is None else per_second >= target,
        notes=load_notes(load),
    )


async def measure(server: Server, request: Request, plan: Plan, clients: int, total: int) -> Load:
    """A warm-up of `plan.warmup` requests, then `total` measured ones."""
    await run_load(server, request, plan.warmup, clients, plan.time_cap)
    return await run_load(server, request, total, clients, plan.time_cap)


# ---- the HTTP floor ------------------------------------------------------------


async def http_floor(plan: Plan) -> list[Row]:
    """GET /healthz: what this client and aiohttp cost with no jobq work at all,
    the ceiling any submit figure on this machine lives under."""
    rows = []
    async with fresh_server(0) as server:
        for clients, total in plan.requests:
            load = await measure(server, HEALTHZ, plan, clients, total)
            rows.append(load_row("HTTP floor: GET /healthz (no store work)", clients_label(clients), load, None))
    return rows


# ---- durable submits -----------------------------------------------------------


async def submit_at(plan: Plan, level: int, clients: int, total: int) -> Load:
    """Submit throughput with `level` jobs retained when measuring starts (worker off)."""
    async with fresh_server(0) as server:
        async with api_for(server) as api:
            await api.fill(max(level - plan.warmup, 0))
        return await measure(server, SUBMIT, plan, clients, total)


BARE_POST = "HTTP floor: POST /jobs to a bare aiohttp handler (orjson parse, 201, nothing stored)"


async def bare_posts(plan: Plan) -> dict[int, Load]:
    """The same POST /jobs bodies to `bench.bare_server`, by number of clients."""
    loads = {}
    async with temp_server(command=BARE_COMMAND) as server:
        await server.start(0)
        for clients, total in plan.requests:
            loads[clients] = await measure(server, SUBMIT, plan, clients, total)
    return loads


async def submits(plan: Plan) -> list[Row]:
    rows: list[Row] = []
    p99: dict[tuple[int, int], float] = {}
    bare = await bare_posts(plan)
    for clients, total in plan.requests:
        rows.append(load_row(BARE_POST, clients_label(clients), bare[clients], None))
        for level in plan.levels:
            logger.info("submit: %s at %s retained jobs", clients_label(clients), count(level))
            load = await submit_at(plan, level, clients, total)
            p99[clients, level] = percentile(load.latencies, 0.99)
            conditions = f"{clients_label(clients)}, {count(level)} retained jobs, worker off (all queued)"
            rows.append(load_row("durable submit: POST /jobs (echo)", conditions, load, SUBMIT_TARGETS.get(clients)))
            if level == plan.levels[0]:
                rows.append(bare_ratio_row(plan, clients, load, bare[clients]))
        rows.append(p99_growth_row(plan, clients, p99))
    return rows


def bare_ratio_row(plan: Plan, clients: int, load: Load, bare: Load) -> Row:
    ratio = rate(load.done, load.elapsed) / rate(bare.done, bare.elapsed)
    target = BARE_RATIO_TARGET if clients == 1 else None
    return Row(
        "durable submit over a bare aiohttp JSON POST",
        f"{clients_label(clients)}, {count(plan.levels[0])} retained jobs",
        f"{ratio:.2f}x",
        target=f"≥ {target:g}x" if target else "—",
        met=None if target is None else ratio >= target,
        notes=f"{count(rate(load.done, load.elapsed))} /s over {count(rate(bare.done, bare.elapsed))} /s",
    )


def p99_growth_row(plan: Plan, clients: int, p99: dict[tuple[int, int], float]) -> Row:
    low, high = plan.levels[0], plan.levels[-1]
    growth = p99[clients, high] / p99[clients, low]
    return Row(
        "submit p99 growth as the store fills",
        f"{clients_label(clients)}: p99 at {count(high)} over p99 at {count(low)} retained",
        f"{growth:.2f}x", p99=f"{ms(p99[clients, low])} → {ms(p99[clients, high])}",
        target=f"≤ {P99_GROWTH_LIMIT:g}x", met=growth <= P99_GROWTH_LIMIT,
    )


# ---- durable batches -----------------------------------------------------------


async def batches(plan: Plan) -> list[Row]:
    """POST /jobs/batch of `size` echo jobs from `clients` clients, each a
    fresh server (worker off): jobs made durable a second."""
    rows = []
    for size, clients, total in plan.batches:
        logger.info("batch: %s jobs a request, %s", count(size), clients_label(clients))
        request = Request("POST", "/jobs/batch", orjson.dumps({"jobs": [ECHO_JOB] * size}), 201)
        async with fresh_server(0) as server:
            await run_load(server, request, max(plan.warmup // 10, 5), clients, plan.time_cap)
            load = await run_load(server, request, total, clients, plan.time_cap)
        per_second = rate(load.done * size, load.elapsed)
        rows.append(
            Row(
                "durable batch submit: POST /jobs/batch",
                f"{clients_label(clients)}, {count(size)} echo jobs a request, worker off",
                f"{count(per_second)} jobs/s",
                p50=ms(percentile(load.latencies, 0.5)),
                p99=ms(percentile(load.latencies, 0.99)),
                target=f"≥ {count(BATCH_TARGET)} jobs/s",
                met=per_second >= BATCH_TARGET,
                notes=f"{count(load.done)} requests; " + load_notes(load),
            )
        )
    return rows


# ---- draining the queue --------------------------------------------------------


async def drain(plan: Plan) -> list[Row]:
    """Queue `plan.drain_jobs` echo jobs with the worker off, restart with
    concurrency 5 and measure how fast they all succeed."""
    total = plan.drain_jobs
    async with temp_server() as server:
        await server.start(0)
        async with api_for(server) as api:
            await api.fill(total)
        await server.stop()
        spawned = await server.start(WORKER_CONCURRENCY)
        ready = time.perf_counter()
        async with api_for(server) as api:
            drained = await wait_until_drained(api)
            jobs = await api.all_jobs("succeeded")
    if len(jobs) != total:
        raise RuntimeError(f"{total} jobs were queued but {len(jobs)} succeeded")
    first = min(parse_ts(job["startedAt"]) for job in jobs)
    last = max(parse_ts(job["finishedAt"]) for job in jobs)
    per_second = rate(total, (last - first).total_seconds())
    return [
        Row(
            "drain: queued no-op echo jobs run to succeeded",
            f"{count(total)} jobs, worker concurrency {WORKER_CONCURRENCY}",
            f"{count(per_second)} jobs/s", target=f"≥ {count(DRAIN_TARGET)} jobs/s", met=per_second >= DRAIN_TARGET,
            notes=(
                "rate = jobs / (last finishedAt - first startedAt); by polling: "
                f"{drained - ready:.1f} s from /healthz ready to none unfinished, "
                f"{drained - spawned:.1f} s from process spawn (includes loading the jobs)"
            ),
        )
    ]


# ---- pickup latency ------------------------------------------------------------


async def until_succeeded(api: Api, job_id: str) -> dict[str, Any]:
    """Poll GET /jobs/{id} back to back until the job has succeeded."""
    while True:
        job = await api.job(job_id)
        if job["status"] == "succeeded":
            return job
        if job["status"] in ("fatal", "cancelled"):
            raise RuntimeError(f"job {job_id} ended {job['status']}")


async def pickup_sample(api: Api) -> tuple[float, float]:
    """One job on an idle service: (startedAt - createdAt, client submit→succeeded)."""
    sent = time.perf_counter()
    job = await until_succeeded(api, (await api.submit())["jobId"])
    round_trip = time.perf_counter() - sent
    return (parse_ts(job["startedAt"]) - parse_ts(job["createdAt"])).total_seconds(), round_trip


async def pickup(plan: Plan) -> list[Row]:
    pickups: list[float] = []
    round_trips: list[float] = []
    async with fresh_server(WORKER_CONCURRENCY) as server, api_for(server) as api:
        for _ in range(min(plan.warmup, 20)):
            await pickup_sample(api)
        for _ in range(plan.pickup_samples):
            started, done = await pickup_sample(api)
            pickups.append(started)
            round_trips.append(done)
    p50 = percentile(pickups, 0.5)
    conditions = f"idle service, concurrency {WORKER_CONCURRENCY}, {plan.pickup_samples} jobs one at a time"
    return [
        latency_row(
            "pickup latency: createdAt → startedAt (server clock)", conditions, pickups,
            target=f"p50 ≤ {ms(PICKUP_P50_TARGET)}", met=p50 <= PICKUP_P50_TARGET,
            notes=(
                f"mean {ms(statistics.fmean(pickups))}; timestamps are whole milliseconds, so each sample is ±1 ms "
                "(the mean is not biased by that); includes the submit's own fsync"
            ),
        ),
        latency_row(
            "submit → succeeded round trip (client clock)", conditions, round_trips,
            notes="POST /jobs, then GET /jobs/{id} back to back until succeeded",
        ),
    ]


def latency_row(benchmark: str, conditions: str, samples: list[float], **extra: Any) -> Row:
    """A row whose result is the median of `samples` (seconds)."""
    p50 = ms(percentile(samples, 0.5))
    return Row(benchmark, conditions, p50, p50=p50, p99=ms(percentile(samples, 0.99)), **extra)


# ---- memory --------------------------------------------------------------------


def rss_row(conditions: str, rss: int, baseline: int, jobs: int, notes: str = "") -> Row:
    per_job = (rss - baseline) / jobs
    return Row(
        "resident memory (VmRSS)", conditions, f"{rss / MIB:,.0f} MiB",
        notes=f"≈ {per_job / 1024:.1f} KiB per job over the empty server's {baseline / MIB:,.0f} MiB" + notes,
    )


async def memory(plan: Plan) -> list[Row]:
    """RSS with `plan.memory_jobs` retained (queued, worker off): right after
    submitting them, and after a restart that loads them from disk."""
    jobs = plan.memory_jobs
    async with temp_server() as server:
        await server.start(0)
        baseline = server.rss_bytes()
        async with api_for(server) as api:
            fill_started = time.perf_counter()
            await api.fill(jobs)
            fill_seconds = time.perf_counter() - fill_started
        filled = server.rss_bytes()
        await server.stop()
        spawned = await server.start(0)
        loaded_in = time.perf_counter() - spawned
        reloaded = server.rss_bytes()
    where = f"{count(jobs)} retained jobs, worker off (all queued)"
    return [
        Row(
            "durable batch submit: POST /jobs/batch", f"1 client, {BATCH_SIZE:,} echo jobs a request, 0 → {where}",
            f"{count(rate(jobs, fill_seconds))} jobs/s", notes="the fill below, timed; one durable write per batch",
        ),
        rss_row(f"{where}, submitted in batches of 1,000", filled, baseline, jobs),
        rss_row(f"{where}, after a restart", reloaded, baseline, jobs, f"; the restart took {loaded_in:.1f} s"),
    ]


Scenario = Callable[[Plan], Awaitable[list[Row]]]

SCENARIOS: dict[str, Scenario] = {
    "floor": http_floor,
    "submit": submits,
    "batch": batches,
    "drain": drain,
    "pickup": pickup,
    "memory": memory,
    "live": live_latency,
    "live-drain": live_drain,
    "webhook-drain": webhook_drain,
    "payload-memory": payload_memory,
    "neighbour": noisy_neighbour,
    "soak": soak,
}
