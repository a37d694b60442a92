"""The delivery task: sends the webhook outbox (SPEC §9).

Each due delivery is POSTed in its own task, signed per Standard Webhooks 1.0
(`signing.sign`, a fresh `webhook-timestamp` per attempt, the same
`webhook-id` always) through the guarded client (`outbound.send`: 15 s in
all, no redirects, at most 64 KiB of the answer read). What the answer means
is `delivery_policy.decide`; the attempt and the delivery's next state are
written in one store commit.

It never blocks or slows a worker: it has its own tasks and its own limits
(`concurrency` requests in flight, at most `tenant_concurrency` of them for
one tenant, so one tenant's hanging receiver cannot hold up another's), and
a hanging receiver only holds one of its slots until the timeout.

At-least-once: a delivery stays `pending` until an attempt's outcome is
durable, so a crash or a failed write means it is sent again after the
restart, with the same `webhook-id` for the receiver to drop the copy.

Finite modes for tests, like the worker's: `run_once()` starts the due
deliveries; `run_until_idle()` repeats until none is due or being sent;
`run()` is the service loop; a round of it that raises is logged, counted in
`Health` and tried again after a backoff, and each round reports progress.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import orjson

from jobq.core.clock import Clock
from jobq.core.errors import StoreUnavailable
from jobq.core.health import Health, run_rounds
from jobq.core.timefmt import format_ts
from jobq.outbound.client import (
    MAX_BODY,
    AddressRefused,
    OutboundError,
    Response,
    guarded_session,
    retry_after_seconds,
    send,
)
from jobq.outbound.signing import WebhookSecretError, sign
from jobq.rules.delivery_policy import Decision, RetrySchedule, decide
from jobq.rules.outbox import DELIVERED, PENDING, Delivery
from jobq.storage.protocol import DeliveryChanged, Event, OutboxStore

logger = logging.getLogger(__name__)

MAX_IDLE_WAIT_SECONDS = 1.0
LEASE_MARGIN_SECONDS = 5.0  # a delivery's lease: the send's timeout, and this
USER_AGENT = "jobq-webhooks/1"
TASK = "webhook_sender"  # its name in Health, /readyz and the metrics
STALL_SECONDS = 30.0  # a round is quick (sends run in their own tasks) and comes at least every second

SecretsFn = Callable[[str, datetime], list[str]]


@dataclass(frozen=True, slots=True)
class SenderLimits:
    timeout_seconds: float = 15.0
    concurrency: int = 32
    tenant_concurrency: int = 8
    max_body: int = MAX_BODY
    allow_private: bool = False


class DeliverySender:
    """`tenant_secrets(tenant, now)` gives the secrets that sign a tenant's
    webhooks now (the current one first); `operator_secret` signs alert
    notifications."""

    def __init__(
        self,
        store: OutboxStore,
        clock: Clock,
        tenant_secrets: SecretsFn,
        *,
        schedule: RetrySchedule,
        limits: SenderLimits,
        operator_secret: str | None = None,
        health: Health | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.tenant_secrets = tenant_secrets
        self.schedule = schedule
        self.limits = limits
        self.operator_secret = operator_secret
        self.health = health if health is not None else Health(clock.monotonic)
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._finished = 0  # sends ended so far
        self._lane_busy: Counter[str | None] = Counter()
        self._sessions: dict[bool, aiohttp.ClientSession] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._stop_requested = asyncio.Event()  # ends a backoff early; new deliveries do not
        self.sender_id = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        store.subscribe(self._on_events)

    def _on_events(self, events: Sequence[Event]) -> None:
        # Only when one could start now: with its tenant's share busy (a hanging
        # receiver), waking the loop for each new delivery would be wasted work.
        for event in events:
            if (
                isinstance(event, DeliveryChanged)
                and event.status == PENDING
                and event.delivery_id not in self._sending
                and self._has_room(event.lane)
            ):
                self._wake.set()
                return

    def wake(self) -> None:
        """Look for due deliveries now (tests call this after moving a fake clock)."""
        self._wake.set()

    # ---- modes -------------------------------------------------------------

    async def run_once(self) -> int:
        """Lease the due deliveries there is room for and start a send for
        each; returns how many started. The lease outlives the send's timeout:
        one whose outcome could not be written (or whose send crashed) stays
        leased, so it is tried again only when the lease runs out."""
        free = self.limits.concurrency - len(self._sending)
        if self._stopping or free <= 0:
            return 0
        due = await self.store.claim_deliveries(
            self.sender_id,
            self.clock.now(),
            limit=free,
            per_tenant=self.limits.tenant_concurrency,
            lease_seconds=self.limits.timeout_seconds + LEASE_MARGIN_SECONDS,
        )
        for delivery in due:
            self._start(delivery)
        return len(due)

    def _has_room(self, lane: str | None) -> bool:
        return self._room(lane) > 0 and len(self._sending) < self.limits.concurrency

    def _room(self, lane: str | None) -> int:
        # Alert notifications go one at a time, so "raised" is sent before its "cleared".
        share = 1 if lane is None else self.limits.tenant_concurrency
        return share - self._lane_busy[lane]

    async def run_until_idle(self) -> None:
        """Send until nothing is due or being sent (time does not move)."""
        while True:
            finished_before = self._finished
            started = await self.run_once()
            if self._sending:
                await asyncio.wait(list(self._sending.values()), return_when=asyncio.FIRST_COMPLETED)
                continue
            # A send that ended while the store was being asked (a database
            # answers later than memory) freed room that round could not see.
            if started == 0 and self._finished == finished_before:
                return

    async def run(self) -> None:
        """The service loop, until `stop()`. A round that raises is retried
        after `RoundBackoff` (0.1 s doubling to 5 s, real time)."""
        logger.info("action=sender_start concurrency=%d", self.limits.concurrency)
        await run_rounds(TASK, self.health, self._round, self._wake, self._stop_requested, STALL_SECONDS)

    async def _round(self) -> float:
        """One round of `run`; how long to wait at most before the next."""
        await self.run_once()
        return await self._idle_wait()

    async def _idle_wait(self) -> float:
        due = await self.store.next_delivery_at()
        now = self.clock.now()
        if due is None or due <= now:
            # Nothing pending, or all that is due waits for a slot: a finished send wakes us.
            return MAX_IDLE_WAIT_SECONDS
        return min(MAX_IDLE_WAIT_SECONDS, (due - now).total_seconds())

    async def stop(self, grace_seconds: float) -> None:
        """Start nothing more; give sends in flight `grace_seconds`, then cancel
        them (their deliveries stay pending and go out after a restart)."""
        self._stopping = True
        self._stop_requested.set()
        self._wake.set()
        tasks = list(self._sending.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_seconds)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    # ---- one attempt -------------------------------------------------------

    def _start(self, delivery: Delivery) -> None:
        self._lane_busy[delivery.lane] += 1
        task = asyncio.get_running_loop().create_task(self._attempt(delivery), name="jobq-webhook")
        self._sending[delivery.delivery_id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._sending.pop(delivery.delivery_id, None)
            self._lane_busy[delivery.lane] -= 1
            self._finished += 1
            self._wake.set()

        task.add_done_callback(done)

    def _session(self, operator: bool) -> aiohttp.ClientSession:
        """One guarded session for tenants' URLs; the operator's own alert URL
        (configuration, not tenant input) may be a private address."""
        session = self._sessions.get(operator)
        if session is None:
            allow = operator or self.limits.allow_private
            session = guarded_session(allow_private=allow, limit=self.limits.concurrency)
            self._sessions[operator] = session
        return session

    async def _attempt(self, delivery: Delivery) -> None:
        try:
            await self._send_and_record(delivery)
        except Exception:
            # A bug must not kill the sender; the delivery stays pending and leased, and is tried again later.
            logger.exception("action=webhook_crashed deliveryId=%s", delivery.delivery_id)

    async def _send_and_record(self, delivery: Delivery) -> None:
        number = delivery.attempt_count + 1
        now = self.clock.now()
        started = self.clock.monotonic()
        response, error, refused = await self._post(delivery, now)
        code = response.status if response is not None else None
        retry_after = None
        if response is not None:
            retry_after = retry_after_seconds(response.headers.get("retry-after"), self.schedule.max_retry_after)
        decision = decide(
            self.schedule, number, code, retry_after=retry_after, refused=refused, redelivery=delivery.redelivery
        )
        if error is None and decision.status != DELIVERED:
            error = f"answered {code}"
        attempt = {
            "attempt": number,
            "at": format_ts(now),
            "webhookTimestamp": int(now.timestamp()),
            "statusCode": code,
            "durationMs": round((self.clock.monotonic() - started) * 1000.0, 1),
            "error": error,
            "status": "succeeded" if decision.status == DELIVERED else "failed",
            "redelivery": delivery.redelivery,
        }
        await self._record(delivery, attempt, decision)

    async def _post(self, delivery: Delivery, now: datetime) -> tuple[Response | None, str | None, bool]:
        """(the answer, or None with why there was none, whether the address was refused)."""
        operator = delivery.for_operator
        secrets = [self.operator_secret] if operator and self.operator_secret else []
        if not operator:
            secrets = self.tenant_secrets(delivery.tenant_id, now)
        body = orjson.dumps(delivery.body)
        try:
            headers = sign(delivery.delivery_id, int(now.timestamp()), body, secrets)
        except WebhookSecretError as exc:
            return None, f"cannot sign: {exc}", False
        headers["Content-Type"] = "application/json"
        headers["User-Agent"] = USER_AGENT
        allow = operator or self.limits.allow_private
        try:
            response = await send(
                self._session(operator),
                "POST",
                delivery.url,
                headers=headers,
                body=body,
                timeout_seconds=self.limits.timeout_seconds,
                max_body=self.limits.max_body,
                allow_private=allow,
            )
        except AddressRefused as exc:
            return None, f"address refused: {exc}", True
        except OutboundError as exc:
            return None, str(exc), False
        return response, None, False

    async def _record(self, delivery: Delivery, attempt: dict[str, Any], decision: Decision) -> None:
        try:
            await self.store.record_delivery_attempt(delivery.delivery_id, attempt, decision, self.clock.now())
        except StoreUnavailable as exc:
            # Still pending and leased: sent again (same webhook-id) when the lease runs out.
            logger.error("action=webhook_record_failed deliveryId=%s error=%s", delivery.delivery_id, exc)
            return
        logger.info(
            "action=webhook_attempt deliveryId=%s jobId=%s tenantId=%s attempt=%d code=%s status=%s",
            delivery.delivery_id,
            delivery.job_id,
            delivery.tenant_id,
            attempt["attempt"],
            attempt["statusCode"],
            decision.status,
        )
