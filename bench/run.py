"""`make bench`: run the benchmarks of SPEC §12 and print a Markdown table.

    .venv/bin/python -m bench.run [--quick] [--only NAME ...] [--soak-seconds S] [--output PATH]

The table is also written to bench-results/results.md (results-quick.md for
`--quick`), headed by the command and the machine that produced it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import report
from bench.scenarios import FULL, QUICK, SCENARIOS, Plan
from bench.server import ROOT

logger = logging.getLogger("bench")
RESULTS_DIR = ROOT / "bench-results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts: a smoke run of a few minutes")
    parser.add_argument(
        "--only", action="append", choices=sorted(SCENARIOS), metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(SCENARIOS)}",
    )
    parser.add_argument(
        "--soak-seconds", type=float, metavar="S",
        help="how long the soak runs (default 600, 60 with --quick); its slope is taken over the second half",
    )
    parser.add_argument("--output", type=Path, help="where to write the Markdown (default: bench-results/results.md)")
    return parser.parse_args(argv)


def git_revision() -> str:
    """The commit measured, and whether tracked files differ from it."""
    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown"
    return head + (" + uncommitted changes" if dirty else "")


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def preamble(argv: list[str], plan: Plan, seconds: float, load_before: str) -> list[str]:
    command = " ".join([".venv/bin/python -m bench.run", *argv])
    return [
        f"Command: `{command}` (`make bench` runs it without arguments); "
        f"{'quick' if plan.levels == QUICK.levels else 'full'} run, "
        f"{seconds:.0f} s.",
        f"Machine: {os.cpu_count()} x {cpu_model()}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; jobq {git_revision()}; "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.",
        "Server: `python app.py` on 127.0.0.1, fresh temp JOBQ_DATA_DIR per benchmark, JOBQ_LOG_LEVEL=WARNING, "
        "tenant limits raised out of the way; clients: aiohttp in the bench process (a separate process). "
        "Latencies are per request as the client sees them.",
        f"Load average (1/5/15 min) before: {load_before}, after: {load_average()}; other processes on the "
        "machine compete for its cores and make the figures noisier.",
    ]


async def run(plan: Plan, names: list[str]) -> list[report.Row]:
    rows: list[report.Row] = []
    for name in names:
        logger.info("running %s", name)
        started = time.perf_counter()
        rows.extend(await SCENARIOS[name](plan))
        logger.info("%s done in %.1f s", name, time.perf_counter() - started)
    return rows


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="bench: %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.soak_seconds is not None:
        plan = dataclasses.replace(plan, soak_seconds=args.soak_seconds)
    output = args.output or RESULTS_DIR / ("results-quick.md" if args.quick else "results.md")
    started, load_before = time.perf_counter(), load_average()
    rows = asyncio.run(run(plan, args.only or list(SCENARIOS)))
    context = preamble(argv, plan, time.perf_counter() - started, load_before)
    text = report.render(rows, title="jobq benchmarks (SPEC §12)", preamble=context)
    report.write(text, output)
    print(text)
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
