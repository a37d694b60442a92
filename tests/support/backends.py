"""The store backends every backend-neutral test runs on, and the fixtures that choose one.

`BACKENDS` is the one list. tests/contract/, tests/api/ and tests/browser/ import
`backend` and `make_harness` from here into their conftest.py, so each of their
tests runs once per value: the root `make_harness` (tests/conftest.py) starts jobq
with `store_url` set to the backend's. A new backend (PostgreSQL, issue 10) adds its
value here, its URL to `store_url` and its branch to `durable_state`; nothing in
those folders is copied.
"""

from __future__ import annotations

from typing import Any

import pytest

from jobq.storage.jsonfile.store import JsonStore
from tests.conftest import Harness, HarnessFactory

BACKENDS = ["json"]


def store_url(backend: str) -> str:
    """The `JOBQ_STORE` value (Settings.store_url) that selects `backend`."""
    if backend == "json":
        return "json"
    raise AssertionError(f"no store URL for backend {backend!r}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


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
    else:
        raise AssertionError(f"durable_state does not know {type(store).__name__}")
    return {"jobs": jobs, "idem": idem, "counts": await store.counts(None)}
