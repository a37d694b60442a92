"""Numbered SQL migrations (`migrations/0001_*.sql`, ...), applied when a
store opens: under a session advisory lock, so processes starting together
apply each one once, every file in its own transaction with the row that
records its version in `jobq_migrations`."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

from jobq.storage.postgres.rows import Conn

logger = logging.getLogger(__name__)

# Any constant key: jobq's migration lock (pg_advisory_lock's keyspace is the database's).
MIGRATION_LOCK = 0x6A6F6271_0001
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with jobq, in version order; a gap or a repeated number is a bug."""
    found = []
    for entry in resources.files(__package__).joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"jobq's migrations are not numbered 1..n: {[m.name for m in found]}")
    return found


async def migrate(conn: Conn) -> list[int]:
    """Apply the migrations this database lacks; returns the versions applied now."""
    applied_now: list[int] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS jobq_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM jobq_migrations")}
        for migration in migrations():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO jobq_migrations (version, name) VALUES ($1, $2)", migration.version, migration.name
                )
            logger.info("action=migrate version=%d name=%s", migration.version, migration.name)
            applied_now.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now
