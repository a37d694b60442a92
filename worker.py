"""jobq's worker-only process: `python worker.py [--concurrency N]` runs the
worker pool and the webhook sender, without the HTTP API, over a store that
several processes share (PostgreSQL, issue 10), until SIGTERM or SIGINT.

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
from jobq.tenancy.tenants import TenantRegistry, TenantsFileError
from jobq.worker.builtin import default_registry
from jobq.worker.handlers import HandlerModuleError, load_handler_modules
from jobq.worker.process import run_until_stopped
from store import open_store

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
    return parser


async def work(settings: Settings) -> int:
    clock = SystemClock()
    registry = default_registry(allow_private_urls=settings.allow_private_urls)
    try:
        load_handler_modules(settings.handler_modules, registry)
    except HandlerModuleError as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        return 2
    if settings.store_url == "json":
        print(JSON_REFUSAL, file=sys.stderr)
        return 2
    try:
        tenants = TenantRegistry(settings.tenants_file, clock.monotonic)
        store = await open_store(settings, clock, tenants)
    except (ConfigError, TenantsFileError, StoreLocked, CorruptStore, StoreUnavailable) as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        return 2
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
    logsetup.configure(settings.log_level, settings.log_format)
    return asyncio.run(work(settings))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
