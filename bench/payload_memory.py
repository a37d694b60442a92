"""Memory per retained job, by payload (issue 8): small payloads, and 60 KB
payloads of many small objects (the shape that costs most as Python objects).

For each: a server with the worker off, its RSS when empty, then after
submitting `n` jobs in batches (as big as the 1 MiB body limit allows), then
after a restart that loads them from disk. The figure is the RSS delta over
the empty server's, divided by `n`; the journal's size on disk per job is
in the notes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from bench.client import ECHO_JOB, JSON_HEADERS, api_for
from bench.report import Row
from bench.server import Server, temp_server
from bench.stats import count

if TYPE_CHECKING:
    from bench.scenarios import Plan

KIB, MIB = 1 << 10, 1 << 20
BODY_LIMIT = 1 << 20  # JOBQ_MAX_BODY_BYTES, its default
LARGE_PAYLOAD_BYTES = 60 * KIB


def many_small_objects(size: int) -> dict[str, Any]:
    """A payload of about `size` bytes of JSON (not more): a list of small objects."""
    items: list[dict[str, Any]] = []
    length = len(b'{"items":[]}')
    while True:
        item = {"n": len(items), "ok": True, "s": "ab"}
        length += len(orjson.dumps(item)) + (1 if items else 0)
        if length > size:
            return {"items": items}
        items.append(item)


def batch_size(job: dict[str, Any]) -> int:
    """How many copies of `job` fit in one POST /jobs/batch body (at most 1,000)."""
    return min(1000, (BODY_LIMIT - 1024) // (len(orjson.dumps(job)) + 1))


async def fill(server: Server, job: dict[str, Any], total: int) -> None:
    size = batch_size(job)
    async with api_for(server) as api:
        for start in range(0, total, size):
            body = orjson.dumps({"jobs": [job] * min(size, total - start)})
            async with api.session.post(f"{api.url}/jobs/batch", data=body, headers=JSON_HEADERS) as response:
                if response.status != 201:
                    raise RuntimeError(f"POST /jobs/batch: {response.status} {(await response.read())[:300]!r}")


def disk_bytes(data_dir: Path) -> int:
    return sum(path.stat().st_size for path in data_dir.rglob("*") if path.is_file())


async def per_job(label: str, job: dict[str, Any], total: int) -> list[Row]:
    async with temp_server() as server:
        await server.start(0)
        empty = server.rss_bytes()
        await fill(server, job, total)
        filled = server.rss_bytes()
        await server.stop()
        await server.start(0)
        reloaded = server.rss_bytes()
        on_disk = disk_bytes(server.data_dir)
    payload = len(orjson.dumps(job["payload"]))
    conditions = f"{count(total)} jobs, {label} ({count(payload)} bytes of JSON each), worker off"
    return [
        Row(
            "memory per retained job (RSS delta / jobs)", f"{conditions}, {when}",
            f"{(rss - empty) / total / KIB:,.1f} KiB",
            notes=(
                f"RSS {empty / MIB:,.0f} MiB empty → {rss / MIB:,.0f} MiB; "
                f"{(rss - empty) / total / max(payload, 1):.1f}x the payload's JSON; "
                f"data directory {on_disk / total / KIB:,.1f} KiB a job on disk"
            ),
        )
        for when, rss in (("after submitting them", filled), ("after a restart (loaded from disk)", reloaded))
    ]


async def payload_memory(plan: Plan) -> list[Row]:
    small, large = plan.payload_jobs
    big = {**ECHO_JOB, "payload": many_small_objects(LARGE_PAYLOAD_BYTES)}
    return [
        *await per_job("small payload", ECHO_JOB, small),
        *await per_job("60 KB payload of many small objects", big, large),
    ]
