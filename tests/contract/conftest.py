"""The contract suite: behaviour every store backend must show, written once.

Each test here runs once per backend through the parametrized `backend`
fixture; `make_harness` (and so `jobq`) starts jobq on that backend. Both come
from tests/support/backends.py, shared with tests/api/ and tests/browser/: the
PostgreSQL backend (issue 10) adds its value to `BACKENDS` there and every test
here runs on it. Tests here use the store only through its protocol and the
HTTP API; anything that needs one backend's internals belongs in that
backend's own tests (tests/backends/<name>/).
"""

from tests.support.backends import backend, make_harness

__all__ = ["backend", "make_harness"]
