"""The webhook receiver of the `webhook-drain` benchmark, in its own process:
`python -m bench.hook_receiver hang|fast` serves POST /hook on 127.0.0.1
(hanging far past the sender's timeout, or answering 204 at once) and GET
/stats, prints its port, and serves until its stdin closes, SIGTERM, or
`RECEIVER_LIFETIME_SECONDS`, so it never outlives the benchmark. Why a
process of its own: see bench/webhooks.py."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.server import ROOT

HANG_SECONDS = 120.0  # the hanging receiver's sleep: far past the sender's timeout
RECEIVER_LIFETIME_SECONDS = 1800.0  # a receiver exits on its own after this, whatever else happens
RECEIVER_START_SECONDS = 30.0
RECEIVER_STOP_SECONDS = 10.0
HOOK_PATH = "/hook"
STATS_PATH = "/stats"
HANG, FAST = "hang", "fast"


async def serve_receiver(mode: str) -> None:
    """Serve POST /hook (hanging or answering 204) and GET /stats on
    127.0.0.1, a free port printed on stdout, until told to stop."""
    received = 0
    hanging = 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def hook(request: web.Request) -> web.Response:
        nonlocal received, hanging
        await request.read()
        received += 1
        if mode == HANG:
            hanging += 1
            try:
                await asyncio.sleep(HANG_SECONDS)  # cancelled when the receiver stops
            finally:
                hanging -= 1
        return web.Response(status=204)

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"received": received, "hanging": hanging})

    app = web.Application()
    app.router.add_post(HOOK_PATH, hook)
    app.router.add_get(STATS_PATH, stats)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        # A short shutdown_timeout: hanging handlers are cancelled, not waited for.
        site = web.TCPSite(runner, "127.0.0.1", 0, shutdown_timeout=0.5)
        await site.start()
        port = runner.addresses[0][1]
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

        def watch_stdin() -> None:  # EOF: the bench process closed it or is gone
            sys.stdin.buffer.read()
            loop.call_soon_threadsafe(stop.set)

        threading.Thread(target=watch_stdin, name="stdin-eof", daemon=True).start()
        print(port, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RECEIVER_LIFETIME_SECONDS)
    finally:
        await runner.cleanup()


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (as `Server.cpu_seconds`)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Receiver:
    """A running receiver process, seen from the bench."""

    process: asyncio.subprocess.Process
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{HOOK_PATH}"

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    async def stats(self) -> dict[str, int]:
        timeout = aiohttp.ClientTimeout(total=10)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"http://127.0.0.1:{self.port}{STATS_PATH}") as response,
        ):
            found: dict[str, int] = await response.json()
            return found


@contextlib.asynccontextmanager
async def receiver_for(mode: str | None) -> AsyncIterator[Receiver | None]:
    """A receiver process in `mode` (None: no receiver), stopped afterwards:
    its stdin closed, then SIGKILL if it has not gone within a few seconds."""
    if mode is None:
        yield None
        return
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.hook_receiver", mode, cwd=ROOT,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), RECEIVER_START_SECONDS)
        if not line.strip().isdigit():
            raise RuntimeError(f"the {mode} receiver did not start (said {line!r})")
        yield Receiver(process, int(line))
    finally:
        if process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), RECEIVER_STOP_SECONDS)
            except TimeoutError:
                process.kill()
                await process.wait()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hook_receiver", description="a receiver for the bench")
    parser.add_argument("mode", choices=(HANG, FAST))
    asyncio.run(serve_receiver(parser.parse_args(argv).mode))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
