"""A PostgreSQL database for this test session, for the tests that run on the
PostgreSQL backend (tests/support/backends.py, tests/backends/postgres/).

The server is found through `JOBQ_TEST_PG_DSN` (default: the local one, trust
auth, database `postgres`). The session creates its own database,
`jobq_test_<pid>_<random>`, on first use and drops it when the tests end.
Where no server is reachable the tests that need one are skipped, saying why,
except under CI (`CI=true` or `1`), where that fails them: CI must run them.
Each test starts from empty tables (`clean`): rows deleted, schema kept, so a
test costs milliseconds, not a migration."""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import threading
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
# Every table jobq's migrations make, emptied between tests (jobq_migrations stays).
TABLES = ("job", "job_history", "job_dependency", "idempotency", "delivery", "alert", "submit_bucket", "bad_key")

_state: dict[str, str] = {}
_lock = threading.Lock()


def server_dsn() -> str:
    return os.environ.get("JOBQ_TEST_PG_DSN") or DEFAULT_DSN


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _run(coro_factory: object) -> object:
    """Run a coroutine on a loop of its own, in a thread (a test's loop may be running)."""
    result: dict[str, object] = {}

    def target() -> None:
        try:
            result["value"] = asyncio.run(coro_factory())  # type: ignore[operator]
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result.get("value")


async def _create(server: str, name: str) -> None:
    conn = await asyncpg.connect(server, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop(server: str, name: str) -> None:
    conn = await asyncpg.connect(server, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def create_database(prefix: str = "jobq_test") -> str:
    """A fresh database on the test server, dropped at exit; its DSN. Skips (or
    fails, under CI) when no server is reachable."""
    server = server_dsn()
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    try:
        _run(lambda: _create(server, name))
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        reason = f"no PostgreSQL reachable at JOBQ_TEST_PG_DSN={server!r}: {exc!r}"
        if in_ci():
            pytest.fail(reason + " (CI must run the PostgreSQL tests; .ci/run starts the server)")
        pytest.skip(reason)
    atexit.register(lambda: _run(lambda: _drop(server, name)))
    return with_database(server, name)


def session_dsn() -> str:
    """This session's database (created on first use)."""
    with _lock:
        if "dsn" not in _state:
            _state["dsn"] = create_database()
        return _state["dsn"]


async def clean(dsn: str) -> None:
    """Empty every jobq table of the database, if it has been migrated."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        migrated = await conn.fetchval("SELECT to_regclass('jobq_migrations') IS NOT NULL")
        if migrated:
            await conn.execute("; ".join(f"DELETE FROM {table}" for table in TABLES))
    finally:
        await conn.close()
