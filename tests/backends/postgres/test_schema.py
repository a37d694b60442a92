"""The migrations make the schema jobq's queries need, once, however many
processes open a new database together (issue 10)."""

from __future__ import annotations

import asyncio

import asyncpg

from jobq.storage.postgres.migrate import migrations
from tests.backends.postgres.conftest import StoreFactory
from tests.support import postgres

TABLES = {
    "job",
    "job_history",
    "job_dependency",
    "idempotency",
    "delivery",
    "alert",
    "submit_bucket",
    "bad_key",
    "worker_process",
    "jobq_migrations",
}
INDEXES = {
    "job_ready",
    "job_due",
    "job_running",
    "job_lease",
    "job_expiry",
    "job_owner",
    "job_history_finished",
    "idempotency_pkey",
    "delivery_due",
    "job_dependency_job",
}


async def test_migrations_are_numbered_from_one_without_gaps() -> None:
    found = migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "0001_initial.sql"


async def test_concurrent_opens_of_a_new_database_migrate_it_once(open_store: StoreFactory) -> None:
    dsn = postgres.create_database("jobq_migrate")
    stores = await asyncio.gather(*(open_store(dsn) for _ in range(4)))
    assert len({store.owner for store in stores}) == 4  # each process its own owner key
    conn = await asyncpg.connect(dsn)
    try:
        versions = [row["version"] for row in await conn.fetch("SELECT version FROM jobq_migrations ORDER BY 1")]
        tables = {
            row["tablename"] for row in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        indexes = {
            row["indexname"] for row in await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")
        }
        views = {
            row["viewname"] for row in await conn.fetch("SELECT viewname FROM pg_views WHERE schemaname = 'public'")
        }
        processes = await conn.fetchval("SELECT count(*) FROM worker_process")
    finally:
        await conn.close()
    assert versions == [m.version for m in migrations()]
    assert tables == TABLES
    assert indexes >= INDEXES
    assert views == {"any_job"}
    assert processes == 4
    # Opened again: nothing is applied twice (the versions would clash on their key).
    again = await open_store(dsn)
    assert again.owner not in {store.owner for store in stores}
