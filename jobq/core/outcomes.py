"""What an attempt ended with, as the worker reports it to the store."""

from __future__ import annotations

from dataclasses import dataclass

from jobq.core.models import JSON


@dataclass(frozen=True, slots=True)
class Succeeded:
    result: JSON


@dataclass(frozen=True, slots=True)
class Failed:
    error: str
    permanent: bool = False


@dataclass(frozen=True, slots=True)
class Snoozed:
    seconds: float


@dataclass(frozen=True, slots=True)
class Interrupted:
    """Released by a graceful shutdown: back to queued, not counted."""


Outcome = Succeeded | Failed | Snoozed | Interrupted
