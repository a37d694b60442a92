"""A real `python app.py` process on 127.0.0.1 over a fresh data directory.

The bench tenant's limits are raised so rate limits and quotas never answer
for the service; everything else runs with the defaults of SPEC §11.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp

from jobq.tenancy.tenants import TenantsDoc

ROOT = Path(__file__).resolve().parent.parent
TENANT = "bench"
UNLIMITED = 1_000_000_000
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 60.0
SERVER_COMMAND = ("app.py",)  # run by this interpreter, in ROOT
BARE_COMMAND = ("-m", "bench.bare_server")  # a bare aiohttp JSON handler, for comparison


class ServerError(RuntimeError):
    """The server did not start, or exited on its own."""


def write_tenants(path: Path, names: Sequence[str] = (TENANT,)) -> dict[str, str]:
    """A tenants file with tenants whose limits never bind; returns their keys by name."""
    doc = TenantsDoc()
    keys = {}
    for name in names:
        keys[name] = doc.add_tenant(name)
        doc.tenants[name]["limits"] = {
            "maxRunning": 10_000,
            "submitPerMinute": UNLIMITED,
            "submitBurst": UNLIMITED,
            "maxQueued": UNLIMITED,
            "maxStoredBytes": UNLIMITED * 1000,
        }
    doc.write(path)
    return keys


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`python app.py` over one data directory; can be stopped and started
    again on the same directory (with another worker concurrency). `env`:
    more settings (JOBQ_* variables) for every start, over the defaults;
    `tenants`: more tenants than `bench` (their keys in `keys`); `command`:
    what this interpreter runs (`BARE_COMMAND` for the bare aiohttp handler)."""

    def __init__(
        self,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        tenants: Sequence[str] = (),
        command: Sequence[str] = SERVER_COMMAND,
    ) -> None:
        self.command = tuple(command)
        self.data_dir = data_dir
        self.extra_env = dict(env or {})
        self.keys = write_tenants(data_dir / "tenants.json", (TENANT, *tenants))
        self.key = self.keys[TENANT]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / "server.log"
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None, "the server is not running"
        return self._process.pid

    def _env(self, concurrency: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQ_")}
        env.update(
            JOBQ_HOST="127.0.0.1",
            JOBQ_PORT=str(self.port),
            JOBQ_DATA_DIR=str(self.data_dir),
            JOBQ_WORKER_CONCURRENCY=str(concurrency),
            JOBQ_LOG_LEVEL="WARNING",
            # Like the tenants' submit limits, the body budget is out of the way of
            # throughput runs; the neighbour scenario sets the default back.
            JOBQ_TENANT_BODY_KIB_PER_SECOND=str(1 << 30),
            JOBQ_WS_MAX_PER_TENANT="1000",  # the live scenarios open 200 viewers of one tenant
        )
        env.update(self.extra_env)
        return env

    async def start(self, concurrency: int) -> float:
        """Start the process; returns once `/healthz` answers, with the
        `time.perf_counter()` at which the process was spawned."""
        spawned = time.perf_counter()
        with self.log_path.open("ab") as log:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable, *self.command, cwd=ROOT, env=self._env(concurrency),
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )
        await self._wait_healthy()
        return spawned

    async def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self._process is not None and self._process.returncode is not None:
                    raise ServerError(f"the server exited with {self._process.returncode}; see {self.log_path}")
                try:
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.02)
        raise ServerError(f"the server did not answer /healthz within {START_TIMEOUT_SECONDS:g} s")

    async def stop(self) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL if it hangs."""
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise ServerError(f"the server ignored SIGTERM for {STOP_TIMEOUT_SECONDS:g} s") from None

    def rss_bytes(self) -> int:
        """Resident memory now (VmRSS of /proc/<pid>/status)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise ServerError("VmRSS not found")

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the process so far, all threads."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@asynccontextmanager
async def temp_server(
    env: Mapping[str, str] | None = None, tenants: Sequence[str] = (), command: Sequence[str] = SERVER_COMMAND
) -> AsyncIterator[Server]:
    """A server (not yet started) over a new temp data directory, with the
    extra settings `env` and `tenants`; stopped and removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="jobq-bench-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        server = Server(data_dir, env, tenants, command)
        try:
            yield server
        finally:
            await server.stop()


@asynccontextmanager
async def fresh_server(concurrency: int) -> AsyncIterator[Server]:
    """A started server over a new temp data directory."""
    async with temp_server() as server:
        await server.start(concurrency)
        yield server
