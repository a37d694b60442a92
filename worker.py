"""jobq's worker-only process: `python worker.py [--concurrency N]` runs the
worker pool and the webhook sender, without the HTTP API, over a store that
several processes share (PostgreSQL, issue 10), until SIGTERM or SIGINT.

`python worker.py --autoscale MIN..MAX [--concurrency N]` runs no jobs
itself: it supervises MIN to MAX such worker processes (`python worker.py
--concurrency N`, same environment), started and stopped from the store's
queue depth and utilisation (`jobq.worker.supervisor`,
`jobq.rules.autoscale`); `--autoscale-interval` and `--autoscale-cooldown`
set its poll and the wait between changes (seconds).

On the JSON store it refuses to start (exit status 2): that store's jobs live
in the memory of the one process holding the data directory, so its workers
run inside `python app.py` (`JOBQ_WORKER_CONCURRENCY`). The wiring is in
`jobq.worker.process`. Nothing imports this module.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys

from jobq.core import logsetup
from jobq.core.clock import SystemClock
from jobq.core.config import ConfigError, Settings
from jobq.core.errors import CorruptStore, StoreLocked, StoreUnavailable
from jobq.core.process import wait_for_signal
from jobq.rules.autoscale import ScalePolicy, parse_bounds
from jobq.tenancy.tenants import TenantRegistry, TenantsFileError
from jobq.worker.builtin import default_registry
from jobq.worker.handlers import HandlerModuleError, load_handler_modules
from jobq.worker.process import run_until_stopped
from jobq.worker.supervisor import Supervisor
from store import Store, open_store

WORKER_PATH = os.path.abspath(__file__)  # what the supervisor's children run
JSON_REFUSAL = (
    "jobq: worker.py does not run on the JSON store (JOBQ_STORE=json): its jobs live in the memory of "
    "the one process that holds the data directory, so run the workers inside `python app.py` "
    "(JOBQ_WORKER_CONCURRENCY) or use a store several processes share (PostgreSQL, issue 10)"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python worker.py", description="jobq worker-only process")
    parser.add_argument(
        "--concurrency", type=int, metavar="N", help="jobs run at once (default: JOBQ_WORKER_CONCURRENCY, 5)"
    )
    parser.add_argument(
        "--autoscale", metavar="MIN..MAX", help="supervise MIN to MAX worker processes, scaled from the queue"
    )
    parser.add_argument(
        "--autoscale-interval", type=float, default=5.0, metavar="SECONDS", help="poll of the counts (default 5)"
    )
    parser.add_argument(
        "--autoscale-cooldown",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="least time between two changes of the worker count (default 30)",
    )
    return parser


async def open_shared_store(settings: Settings, clock: SystemClock) -> tuple[Store, TenantRegistry] | None:
    """The store, opened, and the tenants registry; None (said on stderr) when
    the store is the JSON store or cannot be opened."""
    if settings.store_url == "json":
        print(JSON_REFUSAL, file=sys.stderr)
        return None
    try:
        tenants = TenantRegistry(settings.tenants_file, clock.monotonic)
        return await open_store(settings, clock, tenants), tenants
    except (ConfigError, TenantsFileError, StoreLocked, CorruptStore, StoreUnavailable) as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        return None


async def supervise(settings: Settings, policy: ScalePolicy, interval_seconds: float) -> int:
    clock = SystemClock()
    opened = await open_shared_store(settings, clock)
    if opened is None:
        return 2
    store = opened[0]
    command = [sys.executable, WORKER_PATH, "--concurrency", str(policy.concurrency)]
    supervisor = Supervisor(
        store,
        clock,
        policy,
        command,
        interval_seconds=interval_seconds,
        grace_seconds=settings.shutdown_grace_seconds,
    )
    try:
        return await supervisor.run(wait_for_signal())
    finally:
        await store.close()


async def work(settings: Settings) -> int:
    clock = SystemClock()
    registry = default_registry(allow_private_urls=settings.allow_private_urls)
    try:
        load_handler_modules(settings.handler_modules, registry)
    except HandlerModuleError as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        return 2
    opened = await open_shared_store(settings, clock)
    if opened is None:
        return 2
    store, tenants = opened
    return await run_until_stopped(settings, store, registry, clock, tenants)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.concurrency is not None and args.concurrency < 1:
        print(f"jobq: --concurrency must be at least 1, got {args.concurrency}", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        return 2
    if args.concurrency is not None:
        settings = dataclasses.replace(settings, worker_concurrency=args.concurrency)
    if args.autoscale is not None:
        try:
            low, high = parse_bounds(args.autoscale)
            policy = ScalePolicy(
                low, high, max(1, settings.worker_concurrency), cooldown_seconds=args.autoscale_cooldown
            )
            if args.autoscale_interval <= 0 or args.autoscale_cooldown < 0:
                raise ValueError("--autoscale-interval must be positive and --autoscale-cooldown not negative")
        except ValueError as exc:
            print(f"jobq: {exc}", file=sys.stderr)
            return 2
        logsetup.configure(settings.log_level, settings.log_format)
        return asyncio.run(supervise(settings, policy, args.autoscale_interval))
    logsetup.configure(settings.log_level, settings.log_format)
    return asyncio.run(work(settings))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
