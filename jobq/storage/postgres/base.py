"""What every part of the PostgreSQL store shares: the connection pool, one
SQL transaction per store operation (run again on a deadlock or
serialization failure), errors translated at the edge, and events published
after COMMIT, never before: in this process at once, and to the others
through `notify.Notifier` (coalesced NOTIFY, sent outside the transaction)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import asyncpg

from jobq.core.errors import StoreUnavailable
from jobq.rules.transitions import RetryPolicy
from jobq.storage.postgres.errors import retryable, translated
from jobq.storage.postgres.notify import Notifier
from jobq.storage.postgres.rows import Conn
from jobq.storage.postgres.unit import Unit
from jobq.storage.protocol import Event, EventListener, Listeners

logger = logging.getLogger(__name__)

T = TypeVar("T")
ATTEMPTS = 5  # runs of one transaction that hit a deadlock or serialization failure


class Base:
    """The pool and the transaction runner; the store's parts are mixed in on top."""

    def __init__(self, dsn: str, *, retry: RetryPolicy, aging_seconds: float, worker_slots: int) -> None:
        self.dsn = dsn
        self.policy = retry
        self.aging_seconds = aging_seconds
        self.worker_slots = worker_slots
        self._pool: asyncpg.Pool | None = None
        self._listeners = Listeners()
        self._notifier: Notifier | None = None  # set by `open`
        self.commits = 0

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreUnavailable("the job database is not open", retry_after=5)
        return self._pool

    def subscribe(self, listener: EventListener) -> None:
        self._listeners.listeners.append(listener)

    def _publish(self, events: Sequence[Event]) -> None:
        self._listeners.publish(events)

    async def _transact(self, action: str, body: Callable[[Unit], Awaitable[T]]) -> T:
        """Run `body` in one SQL transaction, flush its unit, commit, then publish.
        Raises `StoreUnavailable` (nothing changed) when the database cannot."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with translated(action):
                    async with self.pool.acquire() as conn, conn.transaction():
                        unit = Unit(conn, self.aging_seconds)
                        result = await body(unit)
                        await unit.write()
                        events = unit.events()
            except Exception as exc:
                if retryable(exc) and attempt < ATTEMPTS:
                    logger.info("action=transaction_retry op=%s attempt=%d error=%r", action, attempt, exc)
                    continue
                raise
            self.commits += 1
            self._publish(events)
            if self._notifier is not None and events:
                self._notifier.note(events)  # after COMMIT, never inside the transaction
            return result
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def _connection(self, action: str) -> AsyncIterator[Conn]:
        """A connection for reads (each statement sees what is committed when it starts)."""
        with translated(action):
            async with self.pool.acquire() as conn:
                yield conn
