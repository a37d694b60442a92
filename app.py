"""jobq's API process. `python app.py` serves the HTTP API, the dashboard and the
WebSocket (and, unless `JOBQ_WORKER_CONCURRENCY=0`, a worker pool);
`python app.py tenants|keys|doctor|new-secret ...` manages tenants and checks a
data directory (`jobq/cli.py`).

The application itself is built by `jobq.web.factory.create_app`; the store by
`store.open_store`. Nothing imports this module.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from jobq.core import logsetup
from jobq.core.clock import SystemClock
from jobq.core.config import ConfigError, Settings
from jobq.core.errors import CorruptStore, StoreLocked
from jobq.core.process import tune_gc, wait_for_signal
from jobq.tenancy.tenants import TenantRegistry, TenantsFileError, ensure_demo_tenant
from jobq.web.connlimits import start_http
from jobq.web.factory import SENDER, WORKER, create_app
from jobq.web.services import SERVICES
from jobq.web.sessions import SessionCodec, SessionSecretError
from jobq.worker.builtin import default_registry
from jobq.worker.handlers import HandlerModuleError, load_handler_modules
from store import open_store

logger = logging.getLogger("jobq")


async def serve(settings: Settings) -> int:
    clock = SystemClock()
    try:
        # Before anything is touched: a broken handler module stops the start.
        load_handler_modules(settings.handler_modules, default_registry(allow_private_urls=settings.allow_private_urls))
    except HandlerModuleError as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        return 2
    try:
        tenants = TenantRegistry(settings.tenants_file, clock.monotonic)
    except TenantsFileError as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        return 2
    try:
        store = await open_store(settings, clock, tenants)
    except (StoreLocked, CorruptStore, ConfigError) as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"jobq: cannot use the data directory {settings.data_dir}: {exc}", file=sys.stderr)
        return 2
    try:
        # After the store: a refused start leaves the data directory untouched.
        demo_key = ensure_demo_tenant(settings.tenants_file)
        if demo_key:
            tenants.reload()
        session_codec = SessionCodec.from_settings(settings, clock)
    except (SessionSecretError, TenantsFileError) as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        await store.close()
        return 2
    tune_gc()
    app = create_app(settings, store, clock, tenants=tenants, session_codec=session_codec)
    # Connection limits, header and keep-alive timeouts, parser-error pages (connlimits.py).
    runner, _ = await start_http(app, settings, settings.host, settings.port)
    url = f"http://{settings.host}:{settings.port}"
    print(f"jobq listening on {url} (data in {settings.data_dir.resolve()})", flush=True)
    if demo_key:
        print(f"created tenant 'demo'; its API key (shown once): {demo_key}", flush=True)
        print(f"  curl -H 'X-API-Key: {demo_key}' {url}/jobs", flush=True)
        print(f"  dashboard: {url}/login", flush=True)
    await wait_for_signal()
    logger.info("action=shutdown graceSeconds=%g", settings.shutdown_grace_seconds)
    app[SERVICES].shutting_down = True
    # Both within the one grace period: a delivery not sent by then stays pending for the next start.
    await asyncio.gather(
        app[WORKER].stop(settings.shutdown_grace_seconds), app[SENDER].stop(settings.shutdown_grace_seconds)
    )
    await runner.cleanup()
    logger.info("action=stopped")
    return 0


def main(argv: list[str]) -> int:
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"jobq: {exc}", file=sys.stderr)
        return 2
    logsetup.configure(settings.log_level, settings.log_format)
    if argv:
        from jobq.cli import run_command

        return run_command(settings, argv)
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
