"""Fixtures of the PostgreSQL store's own tests: the session's database with
empty tables, and stores opened on it (closed at the end of the test)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from jobq.core.clock import FakeClock
from jobq.rules.transitions import RetryPolicy
from jobq.storage.postgres.store import PostgresStore
from tests.support import postgres

StoreFactory = Callable[..., Awaitable[PostgresStore]]


@pytest.fixture
async def pg_dsn() -> str:
    dsn = postgres.session_dsn()
    await postgres.clean(dsn)
    return dsn


@pytest.fixture
async def open_store(pg_dsn: str, clock: FakeClock) -> AsyncIterator[StoreFactory]:
    stores: list[PostgresStore] = []

    async def start(dsn: str | None = None) -> PostgresStore:
        store = PostgresStore(dsn or pg_dsn, retry=RetryPolicy())
        stores.append(store)
        await store.open(clock.now())
        return store

    yield start
    for store in stores:
        await store.close()
