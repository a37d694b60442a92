"""The store's front door (SPEC §10): the seam every backend implements, and
`open_store(settings, clock, tenants)`, which picks the backend from `JOBQ_STORE`
(`json`, the default: `jobs.json` in the data directory; or a `postgresql://`
URL: `jobq.storage.postgres`, imported only then) and opens it.

    store = await open_store(settings, clock, tenants)   # raises StoreUnavailable, StoreLocked, CorruptStore

Only the entry points (`app.py`, `worker.py`) and the tests import this module;
the web layer and the worker see nothing but the protocol.
"""

from __future__ import annotations

from jobq.core.clock import Clock
from jobq.core.config import ConfigError, Settings
from jobq.rules.transitions import RetryPolicy
from jobq.storage.jsonfile.store import JsonStore
from jobq.storage.protocol import Store
from jobq.tenancy.tenants import TenantRegistry

__all__ = ["Store", "create_store", "open_store", "retry_policy"]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        base_seconds=settings.retry_base_seconds,
        max_seconds=settings.retry_max_seconds,
        max_snoozes=settings.max_snoozes,
    )


def create_store(settings: Settings, tenants: TenantRegistry) -> Store:
    """The backend `JOBQ_STORE` names, not yet opened. Raises `ConfigError`
    for a backend this build does not have."""
    if settings.store_url.startswith(POSTGRES_SCHEMES):
        from jobq.storage.postgres.store import PostgresStore

        return PostgresStore(
            settings.store_url,
            retry=retry_policy(settings),
            aging_seconds=settings.aging_seconds,
            worker_slots=settings.worker_concurrency,
        )
    if settings.store_url != "json":
        raise ConfigError(
            f"JOBQ_STORE={settings.store_url!r} is not supported by this build; use 'json' or a postgresql:// URL"
        )
    return JsonStore(
        settings.data_dir,
        retry=retry_policy(settings),
        aging_seconds=settings.aging_seconds,
        worker_slots=settings.worker_concurrency,
        compact_bytes=settings.journal_compact_bytes,
    )


async def open_store(settings: Settings, clock: Clock, tenants: TenantRegistry) -> Store:
    """The backend `JOBQ_STORE` names, opened (locked, loaded, recovered)."""
    store = create_store(settings, tenants)
    await store.open(clock.now())
    return store
