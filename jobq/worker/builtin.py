"""The built-in job types: `echo`, `sleep`, `fail`, `http` (SPEC §6)."""

from __future__ import annotations

import asyncio

from jobq.core.errors import FieldError
from jobq.core.models import JSON, Job
from jobq.worker.handlers import REGISTRY, Context, PermanentError, Registry
from jobq.worker.http_job import make_http_handler, make_http_validator

MAX_SLEEP_SECONDS = 86400.0


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _validate_sleep(payload: dict[str, JSON]) -> list[FieldError]:
    seconds = payload.get("seconds")
    if not _is_number(seconds) or not 0 <= seconds <= MAX_SLEEP_SECONDS:  # type: ignore[operator]
        return [FieldError("payload.seconds", f"a number of seconds from 0 to {MAX_SLEEP_SECONDS:g}")]
    return []


def _validate_fail(payload: dict[str, JSON]) -> list[FieldError]:
    errors = []
    times = payload.get("times", 1)
    if not isinstance(times, int) or isinstance(times, bool) or times < 0:
        errors.append(FieldError("payload.times", "a whole number of attempts to fail, 0 or more"))
    if not isinstance(payload.get("permanent", False), bool):
        errors.append(FieldError("payload.permanent", "true or false"))
    if not isinstance(payload.get("message", ""), str):
        errors.append(FieldError("payload.message", "a string"))
    return errors


async def echo(job: Job, ctx: Context) -> JSON:
    return job.payload


async def sleep(job: Job, ctx: Context) -> JSON:
    seconds = float(job.payload["seconds"])
    await asyncio.sleep(seconds)
    return {"slept": seconds}


async def fail(job: Job, ctx: Context) -> JSON:
    payload = job.payload  # decoded on each read: read it once
    times = payload.get("times", 1)
    message = payload.get("message") or f"failing as asked (attempt {ctx.attempt} of the first {times})"
    if ctx.attempt <= times:
        if payload.get("permanent"):
            raise PermanentError(message)
        raise RuntimeError(message)
    return {"failedAttempts": times}


def register_builtins(registry: Registry, *, allow_private_urls: bool = False) -> Registry:
    """Register the built-ins. `allow_private_urls` (JOBQ_ALLOW_PRIVATE_URLS)
    lifts the address guard of the `http` job type, at submit and at connect."""
    registry.handler("echo")(echo)
    registry.handler("sleep", validate=_validate_sleep)(sleep)
    registry.handler("fail", validate=_validate_fail)(fail)
    registry.handler("http", validate=make_http_validator(allow_private_urls))(make_http_handler(allow_private_urls))
    return registry


def default_registry(*, allow_private_urls: bool = False) -> Registry:
    """The process-wide registry, with the built-in handlers (registered once,
    by the first call: `allow_private_urls` is that call's)."""
    if REGISTRY.get("echo") is None:
        register_builtins(REGISTRY, allow_private_urls=allow_private_urls)
    return REGISTRY
