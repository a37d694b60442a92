"""Moved to tests/support/faults.py; this re-export goes once the last importers move."""

from tests.support.faults import JOURNAL, FaultyFS, GatedFS

__all__ = ["JOURNAL", "FaultyFS", "GatedFS"]
