"""Handlers: the code that runs a job type (SPEC §6).

    from jobq.worker.handlers import REGISTRY, Context, PermanentError, Snooze

    @REGISTRY.handler("resize")
    async def resize(job: Job, ctx: Context) -> dict:
        await ctx.progress(0.5, "halfway")
        return {"ok": True}

A handler returns JSON (its `result`), raises `PermanentError` to go to `fatal`
at once, `Snooze(seconds)` to run again later without using an attempt, or any
other exception to fail the attempt (retried with backoff). A handler declared
`blocking=True` is a plain function run in a thread so it cannot stall the
event loop; it should look at `ctx.cancelled` now and then. `job.payload` is
decoded from the job's stored JSON on each read, a fresh copy: read it once.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from jobq.core.errors import FieldError
from jobq.core.models import JSON, Job

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, str | None], Awaitable[None]]
Validator = Callable[[dict[str, JSON]], list[FieldError]]


class PermanentError(Exception):
    """The job cannot succeed by retrying: it goes to `fatal` (the DLQ) at once."""


class Snooze(Exception):
    """Run the job again after `seconds`, without using up an attempt."""

    def __init__(self, seconds: float, reason: str = "") -> None:
        super().__init__(reason or f"snooze {seconds} s")
        self.seconds = float(seconds)


class CancelFlag:
    """Set when the attempt is cancelled (cancel, timeout, shutdown); cheap to
    make, safe to read from a handler's thread."""

    __slots__ = ("_set",)

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@dataclass
class Context:
    """What a handler gets besides its job: the attempt number (with `job.jobId`,
    the key to make side effects idempotent), a logger, progress reports and a
    cancellation signal (set on cancel, timeout and shutdown)."""

    job_id: str
    attempt: int
    logger: logging.LoggerAdapter[logging.Logger]
    _report: ProgressFn
    loop: asyncio.AbstractEventLoop
    cancelled: CancelFlag = field(default_factory=CancelFlag)

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Record progress 0..1 on the job (and push it to dashboards)."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("progress is a fraction between 0 and 1")
        await self._report(fraction, message)

    def progress_from_thread(self, fraction: float, message: str | None = None) -> None:
        """`progress` for a blocking handler running in a thread."""
        asyncio.run_coroutine_threadsafe(self.progress(fraction, message), self.loop).result()


AsyncHandler = Callable[[Job, Context], Awaitable[Any]]


@dataclass(frozen=True)
class HandlerSpec:
    name: str
    fn: Callable[..., Any]
    blocking: bool = False
    validate: Validator | None = None


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, HandlerSpec] = {}

    def handler(
        self, name: str, *, blocking: bool = False, validate: Validator | None = None
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering `fn` for job type `name`. `validate(payload)`
        returns field errors, turning a bad payload into a 422 at submit."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._handlers:
                raise ValueError(f"a handler for {name!r} is already registered")
            self._handlers[name] = HandlerSpec(name, fn, blocking, validate)
            return fn

        return register

    def get(self, name: str) -> HandlerSpec | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        return sorted(self._handlers)


REGISTRY = Registry()


class HandlerModuleError(Exception):
    """An operator's handler module (JOBQ_HANDLERS) could not be imported."""


def load_handler_modules(names: tuple[str, ...], registry: Registry) -> None:
    """Import the operator's handler modules, which register their handlers
    on `REGISTRY` (`registry`, with the built-ins already in it, so a module
    cannot take a built-in's name) as they are imported. They are looked up on `sys.path` and
    in the working directory. Raises `HandlerModuleError` naming the module
    that failed, and why, for the first one that does."""
    if names and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken module of any kind must stop the start, not crash it
            raise HandlerModuleError(f"JOBQ_HANDLERS: cannot import {name!r}: {type(exc).__name__}: {exc}") from exc
    if names:
        logger.info("action=handlers_loaded modules=%s types=%s", ",".join(names), ",".join(registry.names()))
