"""The dashboard, driven by Chromium, runs once per store backend (tests/support/backends.py)."""

from tests.support.backends import backend, make_harness

__all__ = ["backend", "make_harness"]
