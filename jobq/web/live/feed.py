"""From the store's change events to the hub (SPEC §5): `LiveFeed` notes each
change the store announces (counting the jobs that ended, for the metrics)
and, if anyone watches, publishes it soon after, in order, in one batch.

An event carries the new version when the backend has it in this process
(the JSON store), so every status change is shown as it was; a backend in
another process sends ids, which are fetched in one `get_many` (a job that
changed twice before the fetch is then shown once, as it is now).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from jobq.core.clock import Clock
from jobq.core.models import Job
from jobq.rules.outbox import Delivery
from jobq.storage.protocol import DeliveryChanged, Event, JobChanged, JobReads
from jobq.web.live.messages import LiveMessages

logger = logging.getLogger(__name__)

T = TypeVar("T", Job, Delivery)


class LiveFeed:
    def __init__(
        self,
        store: JobReads,
        messages: LiveMessages,
        clock: Clock,
        *,
        watched: Callable[[], bool],
        publish_job: Callable[[Job, dict[str, Any]], None],
        publish_delivery: Callable[[Delivery], None],
    ) -> None:
        self.store = store
        self.messages = messages
        self.clock = clock
        self.watched = watched
        self.publish_job = publish_job
        self.publish_delivery = publish_delivery
        self.closed = False
        # Changes waiting for `flush`, in order: a version, or the id to fetch.
        self._pending_jobs: list[Job | str] = []
        self._pending_deliveries: list[Delivery | str] = []
        self._flushing: asyncio.Task[None] | None = None

    def on_events(self, events: Sequence[Event]) -> None:
        """The store listener: synchronous, it never awaits."""
        watched = self.watched()
        for event in events:
            if isinstance(event, JobChanged):
                if event.ended:
                    self.messages.finished.record(event.tenant_id, int(self.clock.monotonic()))
                if watched:
                    self._pending_jobs.append(event.version or event.job_id)
            elif watched and isinstance(event, DeliveryChanged) and event.lane is not None:
                self._pending_deliveries.append(event.version or event.delivery_id)
        if (self._pending_jobs or self._pending_deliveries) and self._flushing is None and not self.closed:
            self._flushing = asyncio.get_running_loop().create_task(self._flush_soon(), name="jobq-live-flush")

    async def _flush_soon(self) -> None:
        try:
            while self._pending_jobs or self._pending_deliveries:
                await self.flush()
        except Exception:
            logger.exception("action=ws_flush_failed")
        finally:
            self._flushing = None

    async def flush(self) -> None:
        """Render the noted changes (waiting reasons in one batch) and publish them."""
        pending_jobs, self._pending_jobs = self._pending_jobs, []
        pending_deliveries, self._pending_deliveries = self._pending_deliveries, []
        if pending_jobs:
            jobs = await _resolve(pending_jobs, self.store.get_many)
            for job, rendered in zip(jobs, await self.messages.render(jobs), strict=True):
                self.publish_job(job, rendered)
        if pending_deliveries:
            for delivery in await _resolve(pending_deliveries, self.store.get_deliveries):
                self.publish_delivery(delivery)

    def close(self) -> None:
        self.closed = True
        if self._flushing is not None:
            self._flushing.cancel()


async def _resolve(pending: list[T | str], fetch: Callable[[Sequence[str]], Awaitable[list[T]]]) -> list[T]:
    """The versions in `pending`, in order, with the ids among them fetched in one batch."""
    ids = list(dict.fromkeys(item for item in pending if isinstance(item, str)))
    fetched = {_id_of(item): item for item in await fetch(ids)} if ids else {}
    resolved: list[T] = []
    for item in pending:
        if not isinstance(item, str):
            resolved.append(item)
        elif item in fetched:
            resolved.append(fetched.pop(item))  # once: it is sent as it is now
    return resolved


def _id_of(item: Job | Delivery) -> str:
    return item.job_id if isinstance(item, Job) else item.delivery_id
