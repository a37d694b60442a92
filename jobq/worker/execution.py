"""Running one attempt of one job: call the handler and classify how it ended."""

from __future__ import annotations

import asyncio
import logging

import orjson

from jobq.core.models import Job
from jobq.core.outcomes import Failed, Outcome, Snoozed, Succeeded
from jobq.worker.handlers import Context, HandlerSpec, PermanentError, Snooze

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 2000


def describe(exc: BaseException) -> str:
    text = str(exc)
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return described[:MAX_ERROR_CHARS]


async def execute(spec: HandlerSpec, job: Job, ctx: Context) -> Outcome:
    """Run the handler to its end. Cancellation (timeout, cancel, shutdown)
    propagates as `CancelledError` to the caller, which knows why it happened."""
    try:
        if spec.blocking:
            result = await asyncio.to_thread(spec.fn, job, ctx)
        else:
            result = await spec.fn(job, ctx)
    except PermanentError as exc:
        return Failed(describe(exc), permanent=True)
    except Snooze as exc:
        return Snoozed(exc.seconds)
    except Exception as exc:
        ctx.logger.info("attempt failed: %s", describe(exc))
        return Failed(describe(exc))
    try:
        orjson.dumps(result)
    except (TypeError, orjson.JSONEncodeError) as exc:
        return Failed(f"the handler returned something that is not JSON: {describe(exc)}", permanent=True)
    return Succeeded(result)
