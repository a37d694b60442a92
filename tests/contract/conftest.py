"""The contract suite: behaviour every store backend must show, written once.

Each test here runs once per backend through the parametrized `backend`
fixture; `make_harness` (and so `jobq`) starts jobq on that backend. Only the
JSON store exists so far; the PostgreSQL backend (issue 10) adds its value to
`BACKENDS` and its branch to `make_harness`, and every test here runs on it.
Tests here use the store only through its protocol and the HTTP API; anything
that needs one backend's internals belongs in that backend's own tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Harness, HarnessFactory

BACKENDS = ["json"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_harness(backend: str, make_harness: HarnessFactory) -> HarnessFactory:
    """The root factory, on `backend`."""
    assert backend == "json", backend

    async def start(**overrides: Any) -> Harness:
        return await make_harness(**overrides)

    return start
