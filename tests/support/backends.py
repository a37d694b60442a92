"""The store backends every backend-neutral test runs on, and the fixtures that choose one.

`BACKENDS` is the one list. tests/contract/, tests/api/ and tests/browser/ import
`backend` and `make_harness` from here into their conftest.py, so each of their
tests runs once per value: the root `make_harness` (tests/conftest.py) starts jobq
with `store_url` set to the backend's. A new backend (PostgreSQL, issue 10) adds its
value here and its URL to `store_url`; nothing in those folders is copied.
"""

from __future__ import annotations

from typing import Any

import pytest

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
