"""A noisy neighbour (issue 8): other tenants' submit latency while one
tenant sends 1 MiB bodies in a loop, against the same without it.

Each variant runs on a fresh server (worker off, every tenant's limits out
of the way) for `plan.neighbour_seconds`: tenant `bench` submits echo jobs
at a steady `VICTIM_RATE` a second from `VICTIM_CLIENTS` clients (paced, not
back to back, so a slower answer shows as latency rather than as fewer
requests), while tenant `flood` sends its bodies back to back on
`FLOOD_CONNECTIONS` connections:

- none (the baseline);
- 1 MiB POST /jobs whose payload (many small objects) is over the 64 KiB
  payload limit: read and refused;
- 1 MiB POST /jobs/batch of 17 jobs with 60 KB payloads: read, validated,
  stored and fsynced.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import orjson

from bench.client import ECHO_BODY, ECHO_JOB, JSON_HEADERS, every
from bench.payload_memory import BODY_LIMIT, LARGE_PAYLOAD_BYTES, batch_size, many_small_objects
from bench.report import Row
from bench.server import Server, temp_server
from bench.stats import count, ms, percentile

if TYPE_CHECKING:
    from bench.scenarios import Plan

# The default per-tenant body budget (JOBQ_TENANT_BODY_KIB_PER_SECOND), which
# the other scenarios lift out of the way: this one measures the protection.
DEFAULT_BODY_BUDGET = {"JOBQ_TENANT_BODY_KIB_PER_SECOND": "1024"}

MIB = 1 << 20
FLOOD_TENANT = "flood"
VICTIM_CLIENTS = 4
VICTIM_RATE = 200.0  # submits a second, all clients together
FLOOD_CONNECTIONS = 2


@dataclass(frozen=True, slots=True)
class Flood:
    label: str
    path: str
    body: bytes | None  # None: no flood


def flood_bodies() -> list[Flood]:
    big = {**ECHO_JOB, "payload": many_small_objects(LARGE_PAYLOAD_BYTES)}
    batch = orjson.dumps({"jobs": [big] * batch_size(big)})
    oversized = {**ECHO_JOB, "payload": many_small_objects(BODY_LIMIT - 4096)}
    return [
        Flood("no other load", "/jobs", None),
        Flood("1 MiB POST /jobs refused (payload over 64 KiB)", "/jobs", orjson.dumps(oversized)),
        Flood(f"1 MiB POST /jobs/batch of {batch_size(big)} jobs with 60 KB payloads, accepted", "/jobs/batch", batch),
    ]


async def victim(session: aiohttp.ClientSession, url: str, gap: float, deadline: float, found: list[float]) -> None:
    async def submit() -> None:
        sent = time.perf_counter()
        async with session.post(url, data=ECHO_BODY, headers=JSON_HEADERS) as response:
            await response.read()
            if response.status != 201:
                raise RuntimeError(f"a victim's POST /jobs: {response.status}")
        found.append(time.perf_counter() - sent)

    await every(gap, deadline, submit)


async def flooder(session: aiohttp.ClientSession, url: str, body: bytes, deadline: float, seen: Counter[int]) -> None:
    while time.perf_counter() < deadline:
        async with session.post(url, data=body, headers=JSON_HEADERS) as response:
            await response.read()
            seen[response.status] += 1


async def measure(server: Server, flood: Flood, seconds: float) -> tuple[list[float], Counter[int], float]:
    """(the victims' latencies, the flood's statuses, its server CPU share)."""
    latencies: list[float] = []
    seen: Counter[int] = Counter()
    timeout = aiohttp.ClientTimeout(total=120)
    victims = aiohttp.ClientSession(
        headers={"X-API-Key": server.key}, connector=aiohttp.TCPConnector(limit=VICTIM_CLIENTS), timeout=timeout
    )
    flooding = aiohttp.ClientSession(
        headers={"X-API-Key": server.keys[FLOOD_TENANT]},
        connector=aiohttp.TCPConnector(limit=FLOOD_CONNECTIONS), timeout=timeout,
    )
    async with victims, flooding:
        cpu, started = server.cpu_seconds(), time.perf_counter()
        deadline = started + seconds
        gap = VICTIM_CLIENTS / VICTIM_RATE
        async with asyncio.TaskGroup() as group:
            for _ in range(VICTIM_CLIENTS):
                group.create_task(victim(victims, server.url + "/jobs", gap, deadline, latencies))
            if flood.body is not None:
                for _ in range(FLOOD_CONNECTIONS):
                    group.create_task(flooder(flooding, server.url + flood.path, flood.body, deadline, seen))
        share = (server.cpu_seconds() - cpu) / (time.perf_counter() - started)
    return latencies, seen, share


async def noisy_neighbour(plan: Plan) -> list[Row]:
    rows = []
    baseline_p99 = None
    for flood in flood_bodies():
        async with temp_server(DEFAULT_BODY_BUDGET, tenants=(FLOOD_TENANT,)) as server:
            await server.start(0)
            latencies, seen, cpu = await measure(server, flood, plan.neighbour_seconds)
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        planned = VICTIM_RATE * plan.neighbour_seconds
        notes = [
            f"{count(len(latencies))} of {count(planned)} planned submits sent (each client waits for its answer), "
            f"max {ms(max(latencies))}",
            f"server CPU {cpu:.0%}",
        ]
        if flood.body is None:
            baseline_p99 = p99
        else:
            sent = sum(seen.values())
            notes.insert(0, (
                f"the flood sent {count(sent)} bodies of {len(flood.body) / MIB:.2f} MiB "
                f"({sent * len(flood.body) / MIB / plan.neighbour_seconds:,.1f} MiB/s), answered "
                + ", ".join(f"{status} x{n}" for status, n in sorted(seen.items()))
            ))
            if baseline_p99:
                notes.insert(1, f"p99 {p99 / baseline_p99:.1f}x the baseline's")
        rows.append(Row(
            "other tenants' submit latency beside a tenant sending 1 MiB bodies",
            f"{VICTIM_RATE:g} POST /jobs a second from {VICTIM_CLIENTS} clients of tenant bench, worker off, "
            f"{plan.neighbour_seconds:g} s; tenant flood on {FLOOD_CONNECTIONS} connections: {flood.label}",
            ms(p50), p50=ms(p50), p99=ms(p99), notes="; ".join(notes),
        ))
    return rows
