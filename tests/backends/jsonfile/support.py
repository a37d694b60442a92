"""What the JSON store's own tests share: the store of a harness as the
`JsonStore` it is (the harness types it as the protocol, so that the
backend-neutral suites cannot reach into one backend's internals)."""

from __future__ import annotations

from jobq.storage.jsonfile.store import JsonStore
from tests.conftest import Harness


def json_store(h: Harness) -> JsonStore:
    assert isinstance(h.store, JsonStore), type(h.store)
    return h.store
