"""Real crashes: `kill -9` of a loaded `python app.py`, and a process killed at
every step of a journal append and of a snapshot. Every acknowledged job must
be there afterwards (SPEC §10: a 201 is sent only after the job is durable)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from jobq.rules.transitions import RetryPolicy
from jobq.storage.jsonfile.files import FORMAT, VERSION
from jobq.storage.jsonfile.store import JsonStore
from jobq.tenancy.tenants import TenantsDoc
from tests.conftest import ROOT
from tests.support.faults import CRASH_EXIT_CODE, JOURNAL, SNAPSHOT_TMP
from tests.support.server_process import Server

pytestmark = pytest.mark.slow

TERMINAL = {"succeeded", "fatal", "cancelled"}
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def assert_snapshot_parses(data_dir: Path) -> int:
    """jobs.json is a whole jobq snapshot; its generation."""
    doc = orjson.loads((data_dir / "jobs.json").read_bytes())
    assert doc["format"] == FORMAT and doc["version"] == VERSION
    assert isinstance(doc["records"], list)
    generation: int = doc["generation"]
    return generation


async def list_all(session: aiohttp.ClientSession, url: str, key: str) -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
        async with session.get(f"{url}/jobs", params=params, headers={"X-API-Key": key}) as response:
            assert response.status == 200, await response.text()
            body = await response.json()
        jobs.update((job["jobId"], job) for job in body["jobs"])
        cursor = body["nextCursor"]
        if cursor is None:
            return jobs


JOB_MIX: list[dict[str, Any]] = [
    {"type": "sleep", "payload": {"seconds": 0.2}},
    {"type": "fail", "payload": {"times": 1}},
    {"type": "echo", "payload": {"hello": "world"}},
    {"type": "echo", "payload": {"n": 1}},
    {"type": "echo", "payload": {"n": 2}},
]


async def test_kill_9_under_load_loses_no_acknowledged_job(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    data_dir = tmp_path / "data"
    tenants_file = tmp_path / "tenants.json"
    doc = TenantsDoc()
    key = doc.add_tenant("acme")
    doc.tenants["acme"]["limits"] = {
        "maxRunning": 5, "submitPerMinute": 1_000_000, "submitBurst": 1_000_000, "maxQueued": 1_000_000,
    }
    doc.write(tenants_file)
    # A small compaction threshold: snapshots happen under load, so the kill can hit one.
    server = Server(tmp_path, data_dir, tenants_file, JOBQ_JOURNAL_COMPACT_BYTES=str(64 * 1024))
    await server.start(session)

    acked: dict[str, str] = {}
    refused: list[int] = []
    enough = asyncio.Event()

    async def client(n: int) -> None:
        for i in range(n, 1_000_000):
            body = JOB_MIX[i % len(JOB_MIX)]
            try:
                async with session.post(f"{server.url}/jobs", json=body, headers={"X-API-Key": key}) as response:
                    if response.status != 201:
                        refused.append(response.status)
                        continue
                    acked[(await response.json())["jobId"]] = body["type"]
            except (aiohttp.ClientError, TimeoutError):
                return  # the server is gone
            if len(acked) >= 200:
                enough.set()

    try:
        clients = [asyncio.create_task(client(n)) for n in range(20)]
        await asyncio.wait_for(enough.wait(), timeout=20)
        # Kill while a handler runs, so the restart has an attempt to recover.
        deadline = asyncio.get_running_loop().time() + 20
        while not await list_running(session, server.url, key):
            assert asyncio.get_running_loop().time() < deadline, "no job was ever seen running"
        server.kill()
        await asyncio.wait_for(asyncio.gather(*clients), timeout=15)
        assert refused == []
        assert assert_snapshot_parses(data_dir) >= 1  # snapshots were taken under load

        await server.start(session)
        found = await list_all(session, server.url, key)
        lost = set(acked) - set(found)
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged jobs lost"

        deadline = asyncio.get_running_loop().time() + 30
        while True:
            found = await list_all(session, server.url, key)
            pending = {job_id for job_id in acked if found[job_id]["status"] not in TERMINAL}
            if not pending:
                break
            running = [job_id for job_id in pending if found[job_id]["status"] == "running"]
            assert asyncio.get_running_loop().time() < deadline, (
                f"{len(pending)} jobs not finished ({len(running)} running):\n{server.log[-3000:]}"
            )
            await asyncio.sleep(0.2)
        statuses = {found[job_id]["status"] for job_id in acked}
        assert statuses == {"succeeded"}, statuses
        assert "action=recover" in server.log  # a job was running at the kill and was recovered
        assert server.stop() == 0, server.log[-3000:]
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(timeout=10)


async def list_running(session: aiohttp.ClientSession, url: str, key: str) -> bool:
    params = {"status": "running", "limit": "1"}
    async with session.get(f"{url}/jobs", params=params, headers={"X-API-Key": key}) as response:
        assert response.status == 200, await response.text()
        return bool((await response.json())["jobs"])


# ---- a crash at each step of a write ---------------------------------------------

CRASH_STEPS: list[tuple[str, int, str | None, bool]] = [
    # op, nth call after the store opened, file-name pattern, torn write
    ("write", 3, JOURNAL, False),
    ("write", 3, JOURNAL, True),
    ("fsync", 3, JOURNAL, False),
    ("open_append", 2, JOURNAL, False),  # a new journal, at a snapshot
    ("fsync_dir", 3, None, False),  # its directory entry
    ("open_new", 2, SNAPSHOT_TMP, False),
    ("write", 2, SNAPSHOT_TMP, True),
    ("fsync", 2, SNAPSHOT_TMP, False),
    ("replace", 2, SNAPSHOT_TMP, False),
    ("fsync_dir", 4, None, False),  # after the 2nd snapshot's rename
    ("unlink", 2, JOURNAL, False),  # the journals a snapshot made redundant
]


@pytest.mark.parametrize(
    ("op", "nth", "path", "torn"),
    CRASH_STEPS,
    ids=[f"{op}-{nth}-{'journal' if p == JOURNAL else 'snapshot' if p else 'dir'}{'-torn' if t else ''}"
         for op, nth, p, t in CRASH_STEPS],
)
async def test_crash_at_each_write_step_keeps_every_acknowledged_job(
    tmp_path: Path, op: str, nth: int, path: str | None, torn: bool
) -> None:
    data_dir = tmp_path / "data"
    argv = [sys.executable, "-m", "tests.support.crash_driver", str(data_dir), op, str(nth)]
    if path is not None:
        argv += ["--path", path]
    if torn:
        argv.append("--torn")
    result = await asyncio.to_thread(
        subprocess.run, argv, cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == CRASH_EXIT_CODE, f"the crash step was never reached:\n{result.stderr}"
    acked = [line for line in result.stdout.split("\n")[:-1] if UUID.match(line)]
    assert acked, result.stdout

    assert_snapshot_parses(data_dir)
    for _ in range(2):  # and a second start finds the same
        store = JsonStore(data_dir, retry=RetryPolicy())
        await store.open(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
        try:
            jobs = set(store.index.jobs)
        finally:
            await store.close()
        missing = set(acked) - jobs
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged jobs lost"
        assert len(jobs - set(acked)) <= 1  # at most the one being written at the crash
        assert_snapshot_parses(data_dir)
        assert not [name for name in os.listdir(data_dir) if ".tmp-" in name]
