"""Graceful shutdown of a real `python app.py` (SPEC §10): stop claiming,
answer submits 503, let running jobs finish within the grace period, release
the rest as interrupted attempts, exit 0."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from jobq.tenancy.tenants import TenantsDoc
from tests.support.server_process import Server

pytestmark = pytest.mark.slow


async def _submit(
    session: aiohttp.ClientSession, server: Server, key: str, body: dict[str, Any]
) -> aiohttp.ClientResponse:
    return await session.post(f"{server.url}/jobs", json=body, headers={"X-API-Key": key})


async def _wait_status(session: aiohttp.ClientSession, server: Server, key: str, job_id: str, status: str) -> Any:
    for _ in range(200):
        async with session.get(f"{server.url}/jobs/{job_id}", headers={"X-API-Key": key}) as response:
            job = await response.json()
        if job["status"] == status:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} stayed {job['status']}")


async def test_sigterm_drains_then_releases_and_exits_zero(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    data_dir = tmp_path / "data"
    doc = TenantsDoc()
    key = doc.add_tenant("acme")
    doc.write(tmp_path / "tenants.json")
    server = Server(tmp_path, data_dir, tmp_path / "tenants.json", JOBQ_SHUTDOWN_GRACE_SECONDS="1")
    await server.start(session)

    short = await (await _submit(session, server, key, {"type": "sleep", "payload": {"seconds": 0.3}})).json()
    long = await (await _submit(session, server, key, {"type": "sleep", "payload": {"seconds": 60}})).json()
    await _wait_status(session, server, key, short["jobId"], "running")
    await _wait_status(session, server, key, long["jobId"], "running")

    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.1)
    refused = await _submit(session, server, key, {"type": "echo"})
    assert refused.status == 503
    assert refused.headers["Retry-After"] == "5"
    assert (await refused.json())["type"].endswith("/shutting-down")
    assert server.proc.wait(timeout=10) == 0

    await server.start(session)
    try:
        finished = await _wait_status(session, server, key, short["jobId"], "succeeded")
        assert finished["attempts"] == 1
        async with session.get(f"{server.url}/jobs/{long['jobId']}", headers={"X-API-Key": key}) as response:
            released = await response.json()
        # Released within the grace period, not counted against maxAttempts, and picked up again.
        assert released["attemptHistory"][0]["status"] == "interrupted"
        assert released["status"] in ("queued", "running")
        assert released["attempts"] <= 2
    finally:
        assert server.stop() == 0


async def test_a_second_signal_exits_at_once(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    doc = TenantsDoc()
    key = doc.add_tenant("acme")
    doc.write(tmp_path / "tenants.json")
    server = Server(tmp_path, tmp_path / "data", tmp_path / "tenants.json", JOBQ_SHUTDOWN_GRACE_SECONDS="60")
    await server.start(session)
    job = await (await _submit(session, server, key, {"type": "sleep", "payload": {"seconds": 60}})).json()
    await _wait_status(session, server, key, job["jobId"], "running")
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.2)
    assert server.proc.poll() is None  # draining: the sleep job has 60 s of grace
    server.proc.send_signal(signal.SIGINT)
    assert server.proc.wait(timeout=5) != 0
