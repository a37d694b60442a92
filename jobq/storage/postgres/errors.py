"""asyncpg's errors translated at the backend's edge (CONVENTIONS rule 3):
what means "the database cannot take this now" becomes `StoreUnavailable`
(a 503 with `Retry-After`), keeping the driver's error as `__cause__`;
deadlocks and serialization failures are retried by the caller (`retryable`).
jobq's own errors (`JobqError`, `StaleAttempt`) pass through untouched."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from jobq.core.errors import IdempotencyInFlight, StoreUnavailable

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5

# Class 08 (connection), 53 (insufficient resources: disk full, out of memory, too
# many connections), 57 (operator intervention: shutdown, cannot connect now), 58
# (system error: I/O), and a read-only standby (25006).
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")
_UNAVAILABLE_STATES = {"25006", "55P03", "57014"}  # read-only, lock timeout, statement timeout


def retryable(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the whole transaction may simply run again."""
    return isinstance(exc, asyncpg.DeadlockDetectedError | asyncpg.SerializationError)


def unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OSError | asyncio.TimeoutError | asyncpg.InterfaceError | asyncpg.PostgresConnectionError):
        return True
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state in _UNAVAILABLE_STATES or state[:2] in _UNAVAILABLE_CLASSES
    return False


@contextmanager
def translated(action: str) -> Iterator[None]:
    """Run a store operation; a database that cannot serve it raises `StoreUnavailable`."""
    try:
        yield
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "idempotency_pkey":  # another request with this key is being stored
            raise IdempotencyInFlight(retry_after=1) from exc
        raise
    except Exception as exc:
        if unavailable(exc):
            logger.warning("action=store_unavailable op=%s error=%r", action, exc)
            raise StoreUnavailable(
                "the job database is not reachable or cannot write now", retry_after=RETRY_AFTER_SECONDS
            ) from exc
        raise
