"""`python app.py` as a real process on a loopback port, for tests that need
to kill it, signal it or restart it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """`python app.py` on a data directory, as an operator would start it."""

    def __init__(self, tmp_path: Path, data_dir: Path, tenants_file: Path, **env: str) -> None:
        self.tmp_path, self.data_dir, self.tenants_file = tmp_path, data_dir, tenants_file
        self.extra_env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.starts = 0

    @property
    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.tmp_path.glob("server-*.log")))

    def spawn(self) -> subprocess.Popen[bytes]:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.starts += 1
        env = {
            **os.environ,
            "JOBQ_DATA_DIR": str(self.data_dir),
            "JOBQ_TENANTS_FILE": str(self.tenants_file),
            "JOBQ_PORT": str(port),
            "JOBQ_RETRY_BASE_SECONDS": "0.05",
            "JOBQ_LOG_LEVEL": "WARNING",
            "JOBQ_SHUTDOWN_GRACE_SECONDS": "2",
            **self.extra_env,
        }
        with open(self.tmp_path / f"server-{self.starts}.log", "wb") as log:
            return subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Start jobq and wait (bounded) until it answers /healthz."""
        self.proc = self.spawn()
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            assert self.proc.poll() is None, f"jobq exited with {self.proc.returncode}:\n{self.log}"
            assert asyncio.get_running_loop().time() < deadline, f"jobq did not come up:\n{self.log}"
            try:
                async with session.get(f"{self.url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "jobq died before it was killed"
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=10) == -signal.SIGKILL

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise
