"""Crash driver for tests/process/test_crash.py, run as `python -m tests.support.crash_driver DATA_DIR OP NTH ...`.

Opens a JsonStore over a `FaultyFS` that kills the process (os._exit) at the
NTH call of OP on a matching file, then submits jobs one at a time, printing
each acknowledged jobId on its own line as soon as `submit` returns. The test
then checks that every printed job survived the crash.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jobq.core.models import NewJob
from jobq.rules.transitions import RetryPolicy
from jobq.storage.jsonfile.store import JsonStore
from jobq.storage.protocol import RunningLimits
from tests.support.faults import FaultyFS, Op

START = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="crash_driver")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("op")
    parser.add_argument("nth", type=int)
    parser.add_argument("--path", default=None, help="regex on the file name the step concerns")
    parser.add_argument("--torn", action="store_true", help="a crashing write first writes half its bytes")
    parser.add_argument("--compact-bytes", type=int, default=2048)
    parser.add_argument("--jobs", type=int, default=40)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace) -> int:
    fs = FaultyFS()
    store = JsonStore(args.data_dir, retry=RetryPolicy(), fs=fs, compact_bytes=args.compact_bytes)
    await store.open(START)
    op: Op = args.op
    fs.crash(op, nth=args.nth, path=args.path, torn=args.torn)
    for n in range(args.jobs):
        job = NewJob("echo", {"n": n, "pad": "x" * 200})
        now = START + timedelta(milliseconds=n)
        result = await store.submit(
            "acme",
            [job],
            None,
            now,
            max_queued=1_000_000,
            limits=RunningLimits({}, 5),
            encode=lambda jobs, reasons: b"{}",
        )
        print(result.job_ids[0], flush=True)
    await store.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(run(parse(sys.argv[1:]))))
