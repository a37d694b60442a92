"""What an entry point does to its own process: garbage-collector tuning and
waiting for SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import os
import signal


def tune_gc() -> None:
    """jobq keeps every job in memory, so a full collection of the cyclic GC
    walks millions of objects (~150 ms at 100k jobs, a pause of every
    request). Young collections stay frequent, full ones become rare, and
    everything loaded at start is frozen out of them (Instagram's recipe)."""
    gc.set_threshold(50_000, 50, 100)
    gc.freeze()


async def wait_for_signal() -> None:
    """Return on the first SIGTERM/SIGINT; a second one exits at once."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(1)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    await stop.wait()
