"""The autoscaling supervisor (`python worker.py --autoscale MIN..MAX`,
`jobq.worker.supervisor`) with real child processes: first over counts the
test sets (children that only wait for SIGTERM), then on PostgreSQL with real
worker processes, an API process and a backlog of sleep jobs (skipped like
the other PostgreSQL tests when no server is reachable; failed under CI)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from jobq.core.clock import FakeClock
from jobq.rules.autoscale import ScalePolicy
from jobq.tenancy.tenants import TenantsDoc
from jobq.worker.supervisor import Supervisor
from tests.conftest import ROOT
from tests.support import postgres
from tests.support.server_process import Server

pytestmark = pytest.mark.slow

# A stand-in worker: waits for SIGTERM, then "drains" for 0.2 s and exits 0.
STAND_IN = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.2), sys.exit(0)))\n"
    "while True: time.sleep(1)\n"
)


class Counts:
    def __init__(self) -> None:
        self.now: dict[str, int] = {}

    async def counts(self, tenant_id: str | None) -> dict[str, int]:
        return dict(self.now)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


async def test_the_supervisor_scales_drains_replaces_and_stops_its_children() -> None:
    counts = Counts()
    clock = FakeClock()
    policy = ScalePolicy(min_workers=1, max_workers=3, concurrency=2, cooldown_seconds=10)
    supervisor = Supervisor(
        counts, clock, policy, [sys.executable, "-c", STAND_IN], interval_seconds=0.05, grace_seconds=1
    )
    stop = asyncio.Event()
    running = asyncio.create_task(supervisor.run(stop.wait()))
    try:
        await asyncio.sleep(0.2)
        assert len(supervisor.workers) == 1  # MIN at once
        first = supervisor.workers[0]
        counts.now = {"queued": 10, "running": 2}
        await asyncio.sleep(0.2)
        assert len(supervisor.workers) == 3  # up by as many as the backlog fills, at most MAX
        counts.now = {"queued": 0, "running": 0}
        await asyncio.sleep(0.2)
        assert len(supervisor.workers) == 3  # idle, but within the cooldown
        clock.advance(10)
        await asyncio.sleep(0.2)
        assert len(supervisor.workers) == 2  # down by one, then the cooldown again
        assert supervisor.draining and first in supervisor.workers  # the newest is drained, not the oldest
        await asyncio.wait(set(supervisor.draining), timeout=5)
        first.kill()  # a worker that dies is replaced at once, cooldown or not
        await first.wait()
        await asyncio.sleep(0.2)
        assert len(supervisor.workers) == 2 and first not in supervisor.workers
        pids = [proc.pid for proc in supervisor.workers]
        assert all(alive(pid) for pid in pids)
    finally:
        stop.set()
        assert await asyncio.wait_for(running, 10) == 0
    assert not supervisor.workers and not supervisor.draining
    assert not any(alive(pid) for pid in pids)


def spawn_supervisor(log_path: Path, env: dict[str, str], args: list[str]) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "worker.py", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


@pytest.fixture
def pg_dsn() -> str:
    return postgres.create_database("jobq_scale")  # dropped at exit


@pytest.fixture
async def api(tmp_path: Path, pg_dsn: str, session: aiohttp.ClientSession) -> AsyncIterator[tuple[Server, str]]:
    tenants_file = tmp_path / "tenants.json"
    doc = TenantsDoc()
    key = doc.add_tenant("acme")
    doc.tenants["acme"]["limits"] = {"submitPerMinute": 100_000, "submitBurst": 1_000}
    doc.write(tenants_file)
    home = tmp_path / "api"
    home.mkdir()
    server = Server(home, home / "data", tenants_file, JOBQ_STORE=pg_dsn, JOBQ_WORKER_CONCURRENCY="0")
    await server.start(session)
    try:
        yield server, key
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()


async def test_autoscale_on_postgresql_grows_with_a_backlog_shrinks_when_idle_and_stops_its_workers(
    tmp_path: Path, pg_dsn: str, api: tuple[Server, str], session: aiohttp.ClientSession
) -> None:
    server, key = api
    log_path = tmp_path / "supervisor.log"
    env = {
        **os.environ,
        "JOBQ_STORE": pg_dsn,
        "JOBQ_TENANTS_FILE": str(server.tenants_file),
        "JOBQ_DATA_DIR": str(tmp_path / "w"),
        "JOBQ_LOG_LEVEL": "INFO",
        "JOBQ_SHUTDOWN_GRACE_SECONDS": "2",
    }
    args = ["--autoscale", "1..3", "--concurrency", "2", "--autoscale-interval", "0.2", "--autoscale-cooldown", "0.5"]
    proc = spawn_supervisor(log_path, env, args)

    def log() -> str:
        return log_path.read_text(errors="replace")

    def live_workers() -> int:
        return len(re.findall(r"action=autoscale_spawn", log())) - len(re.findall(r"action=autoscale_drain", log()))

    async def until(check: object, within: float, what: str) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while not check():  # type: ignore[operator]
            assert proc.poll() is None, f"supervisor exited with {proc.returncode}:\n{log()[-4000:]}"
            assert asyncio.get_running_loop().time() < deadline, f"not {what} after {within} s:\n{log()[-4000:]}"
            await asyncio.sleep(0.05)

    try:
        await until(lambda: log().count("action=worker_process_start") >= 1, 20, "one worker started")
        assert live_workers() == 1
        for n in range(16):
            body = {"type": "sleep", "payload": {"seconds": 1.0, "n": n}}
            async with session.post(f"{server.url}/jobs", json=body, headers={"X-API-Key": key}) as response:
                assert response.status == 201, await response.text()
        await until(lambda: live_workers() > 1, 15, "more than one worker")
        peak = live_workers()
        await until(lambda: log().count("action=worker_process_start") >= peak, 20, "the new workers started")
        await until(lambda: live_workers() == 1 and "action=autoscale_stopped" in log(), 40, "back to one worker")
        async with session.get(f"{server.url}/jobs?status=succeeded&limit=100", headers={"X-API-Key": key}) as got:
            assert got.status == 200
            assert len((await got.json())["jobs"]) == 16, "every job ran once the workers were gone"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=30)
    text = log()
    assert status == 0, text[-4000:]
    pids = [int(pid) for pid in re.findall(r"action=autoscale_spawn pid=(\d+)", text)]
    assert len(pids) >= 2 and not any(alive(pid) for pid in pids), text[-4000:]
    assert "action=autoscale_kill" not in text and "action=autoscale_worker_died" not in text, text[-4000:]
    assert "interrupted" not in text, text[-4000:]  # drained: no attempt was cut short
