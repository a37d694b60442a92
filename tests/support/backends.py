"""The store backends every backend-neutral test runs on, and the fixtures that choose one.

`BACKENDS` is the one list. tests/contract/, tests/api/ and tests/browser/ import
`backend` and `make_harness` from here into their conftest.py, so each of their
tests runs once per value: the root `make_harness` (tests/conftest.py) starts jobq
with `store_url` set to the backend's. `JOBQ_TEST_BACKENDS` (comma-separated, e.g.
`json`) replaces the default list, both, for a run. PostgreSQL runs on this
session's own database (tests/support/postgres.py), its tables emptied before each
test.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from jobq.storage.jsonfile.store import JsonStore
from jobq.storage.postgres.store import PostgresStore
from tests.conftest import Harness, HarnessFactory
from tests.support import postgres

KNOWN = ("json", "postgres")
DEFAULT_BACKENDS = ["json", "postgres"]


def _backends() -> list[str]:
    raw = os.environ.get("JOBQ_TEST_BACKENDS", "").strip()
    if not raw:
        return list(DEFAULT_BACKENDS)
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in KNOWN]
    if unknown:
        raise ValueError(f"JOBQ_TEST_BACKENDS names unknown backends {unknown}; known: {', '.join(KNOWN)}")
    return names


BACKENDS = _backends()


def store_url(backend: str) -> str:
    """The `JOBQ_STORE` value (Settings.store_url) that selects `backend`."""
    if backend == "json":
        return "json"
    if backend == "postgres":
        return postgres.session_dsn()
    raise AssertionError(f"no store URL for backend {backend!r}")


@pytest.fixture(params=BACKENDS)
async def backend(request: pytest.FixtureRequest) -> str:
    """The backend's name; on PostgreSQL, the session's database with empty tables."""
    name = str(request.param)
    if name == "postgres":
        await postgres.clean(postgres.session_dsn())
    return name


@pytest.fixture
def make_harness(backend: str, make_harness: HarnessFactory) -> HarnessFactory:
    """The root factory, on `backend`. No `fs`: fault injection is one backend's own business."""

    async def start(**overrides: Any) -> Harness:
        assert "fs" not in overrides, "fault injection belongs in tests/backends/<name>/"
        overrides.setdefault("store_url", store_url(backend))
        return await make_harness(**overrides)

    return start


async def durable_state(h: Harness) -> dict[str, Any]:
    """What the store holds, for "a refused request changed nothing" checks:
    every job (status, attempts, updatedAt), the remembered Idempotency-Keys
    and the counts. The protocol has no "every job" read, so each backend
    says how to look."""
    store = h.store
    if isinstance(store, JsonStore):
        jobs = {job_id: (job.status, job.attempts, job.updated_at) for job_id, job in store.index.jobs.items()}
        idem = set(store.index.idem)
    elif isinstance(store, PostgresStore):
        async with store.pool.acquire() as conn:
            found = await conn.fetch("SELECT id FROM any_job")
            keys = await conn.fetch("SELECT tenant_id, key FROM idempotency")
        every = await store.get_many([row["id"] for row in found])
        jobs = {job.job_id: (job.status, job.attempts, job.updated_at) for job in every}
        idem = {(row["tenant_id"], row["key"]) for row in keys}
    else:
        raise AssertionError(f"durable_state does not know {type(store).__name__}")
    return {"jobs": jobs, "idem": idem, "counts": await store.counts(None)}
