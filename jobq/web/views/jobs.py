"""HTTP views of jobs: submit, batch, list, get, cancel, retry, bulk, DLQ (SPEC §4).

Views parse and check input, call one store operation and render the result;
errors are raised and rendered by `problems.problem_middleware`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web

from jobq.core import strict_json
from jobq.core.errors import (
    BadRequest,
    FieldError,
    NotFound,
    NotReady,
    RateLimited,
    ShuttingDown,
    StoreUnavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from jobq.core.models import Job, ListQuery, NewJob, Status
from jobq.rules.ratelimit import TokenBucket
from jobq.storage.protocol import AnswerCodec, SubmitResult
from jobq.web.auth import principal_of, require_submitter, require_writer
from jobq.web.connlimits import refuse_request
from jobq.web.idempotency import idem_request
from jobq.web.rendering import jobs_as_api
from jobq.web.request_body import check_utf8, defer_continue, read_body
from jobq.web.services import Services, services_of
from jobq.web.validation import parse_batch, parse_bulk, parse_list_query, parse_submit

routes = web.RouteTableDef()

# Parsing and checking a 1 MiB body of many small objects holds the event loop
# ~100 ms (a 1 MiB string: ~1 ms); above this size it runs in a worker thread.
PARSE_IN_THREAD_BYTES = 64 * 1024
BODY_BURST_SECONDS = 4  # a tenant's body budget holds this many seconds' worth
T = TypeVar("T")

REDELIVERIES_PER_MINUTE = 60  # per tenant (admins share one bucket); each job at most once a minute too
REDELIVERY_BURST = 20


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


async def read_json(request: web.Request) -> Any:
    """The request body as strict JSON; 415, 413, 408 or 400 otherwise (`request_body.py`)."""
    value, _ = await read_json_sized(request)
    return value


async def read_json_sized(request: web.Request) -> tuple[Any, int]:
    """`read_json`, and the size of the body in bytes."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType(f"send Content-Type: application/json, not {request.content_type or 'nothing'}")
    check_utf8(request)
    services = services_of(request)
    budget = _body_budget(request, services)
    if request.content_length is not None and request.content_length <= services.settings.max_body_bytes:
        _charge_body(request, budget, request.content_length)  # before a byte of it is read (over the limit: 413)
    body = await read_body(request, services.settings.max_body_bytes)
    if request.content_length is None:
        _charge_body(request, budget, len(body))  # chunked: known only now, still before parsing
    if len(body) > PARSE_IN_THREAD_BYTES:
        return await off_loop(request, strict_json.loads, body), len(body)
    return strict_json.loads(body), len(body)


def _body_budget(request: web.Request, services: Services) -> TokenBucket:
    """The tenant's budget of request-body KiB (admins share one)."""
    rate = services.settings.tenant_body_kib_per_second
    owner = principal_of(request).tenant_id or ""
    return services.body_budget.bucket(owner, rate * 60, rate * BODY_BURST_SECONDS, services.clock.monotonic())


def _charge_body(request: web.Request, budget: TokenBucket, size: int) -> None:
    kib = max(1, -(-size // 1024))
    if not budget.take(services_of(request).clock.monotonic(), kib):
        refuse_request(request, "body_rate")
        raise RateLimited(
            f"this tenant may send {round(budget.rate)} KiB of request bodies a second; this one has {kib} KiB",
            retry_after=budget.seconds_until(kib),
        )


async def off_loop(request: web.Request, work: Callable[..., T], *args: Any) -> T:
    """Run CPU-heavy `work` (parsing a large body) in a thread, one at a time
    per tenant: a thread still takes turns with the event loop for the GIL, so
    a tenant sending many large bodies at once gets them parsed in turn and
    cannot take the CPU from other tenants' requests."""
    lanes = services_of(request).parse_lanes
    owner = principal_of(request).tenant_id or ""
    lane = lanes.get(owner)
    if lane is None:
        lane = lanes[owner] = asyncio.Lock()
    async with lane:
        return await asyncio.to_thread(work, *args)


async def render_jobs(services: Services, jobs: list[Job], *, with_history: bool = False) -> list[dict[str, Any]]:
    limits = services.tenants.running_limits()
    return await jobs_as_api(services.store, jobs, services.clock.now(), limits, with_history=with_history)


async def render_job(services: Services, job: Job) -> dict[str, Any]:
    return (await render_jobs(services, [job], with_history=True))[0]


# ---- submit -------------------------------------------------------------


async def _submit(
    request: web.Request, parse: Any, encode: AnswerCodec
) -> tuple[SubmitResult, dict[str, str]]:
    services = services_of(request)
    principal = require_submitter(request)
    tenant_id = principal.tenant_id
    assert tenant_id is not None
    if services.shutting_down:
        raise ShuttingDown("jobq is shutting down; submit again shortly", retry_after=5)
    body, size = await read_json_sized(request)
    idem = idem_request(request, body)
    now = services.clock.now()
    specs: list[NewJob]
    if size > PARSE_IN_THREAD_BYTES:
        specs = await off_loop(request, parse, body, services.registry, services.submit_defaults, now)
    else:
        specs = parse(body, services.registry, services.submit_defaults, now)
    limits = services.tenants.limits(tenant_id)
    if len(specs) > limits.submit_burst:
        # A 429 would promise a Retry-After that never comes: the bucket never holds this many.
        refuse_request(request, "batch_over_burst")
        raise ValidationFailed(
            f"this batch has {len(specs)} jobs; the tenant's burst is {limits.submit_burst}, so it can never "
            f"be accepted; split it into batches of at most {limits.submit_burst}",
            errors=[FieldError("jobs", f"at most {limits.submit_burst} jobs (the tenant's submitBurst)")],
        )
    rate = await services.store.take_submit_tokens(
        tenant_id, len(specs), per_minute=limits.submit_per_minute, burst=limits.submit_burst, now=now
    )
    headers = {
        "RateLimit-Policy": f'"tenant";q={limits.submit_per_minute};w=60',
        "RateLimit": f'"tenant";r={rate.remaining};t={rate.seconds_until_full}',
    }
    if not rate.taken:
        raise RateLimited(
            f"tenant {tenant_id} may submit {limits.submit_per_minute} jobs a minute",
            retry_after=rate.retry_after,
            headers=headers,
        )
    try:
        result = await services.store.submit(
            tenant_id,
            specs,
            idem,
            now,
            max_queued=limits.max_queued,
            max_stored_bytes=limits.max_stored_bytes,
            limits=services.tenants.running_limits(),
            encode=encode,
        )
    except Exception:
        await services.store.give_back_submit_tokens(tenant_id, len(specs))
        raise
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    return result, headers


def _one_job(jobs: list[Job], reasons: list[str | None]) -> bytes:
    return orjson.dumps(jobs[0].to_api(reasons[0]))


def _batch(jobs: list[Job], reasons: list[str | None]) -> bytes:
    return orjson.dumps({"jobs": [job.to_api(reason) for job, reason in zip(jobs, reasons, strict=True)]})


@routes.post("/jobs", expect_handler=defer_continue)
async def submit_job(request: web.Request) -> web.Response:
    result, headers = await _submit(request, lambda *a: [parse_submit(*a)], _one_job)
    headers["Location"] = f"/jobs/{result.job_ids[0]}"
    return web.Response(status=201, body=result.answer, content_type="application/json", headers=headers)


@routes.post("/jobs/batch", expect_handler=defer_continue)
async def submit_batch(request: web.Request) -> web.Response:
    result, headers = await _submit(request, parse_batch, _batch)
    return web.Response(status=201, body=result.answer, content_type="application/json", headers=headers)


# ---- read ---------------------------------------------------------------


async def _list(request: web.Request, query: ListQuery) -> web.Response:
    services = services_of(request)
    jobs, cursor = await services.store.list_jobs(query)
    return json_response({"jobs": await render_jobs(services, jobs), "nextCursor": cursor})


@routes.get("/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    principal = principal_of(request)
    return await _list(request, parse_list_query(request.query, principal.tenant_id, is_admin=principal.is_admin))


@routes.get("/dlq")
async def dlq(request: web.Request) -> web.Response:
    principal = principal_of(request)
    params = dict(request.query)
    if "status" in params:
        raise BadRequest("the DLQ holds fatal jobs only; use GET /jobs to filter by status")
    params["status"] = Status.FATAL.value
    return await _list(request, parse_list_query(params, principal.tenant_id, is_admin=principal.is_admin))


@routes.get("/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    services = services_of(request)
    job_id = request.match_info["job_id"]
    job = await services.store.get(job_id, principal_of(request).tenant_id)
    if job is None:
        # The same 404 whether the job is missing or another tenant's.
        raise NotFound(f"job {job_id} not found")
    return json_response(await render_job(services, job))


# ---- operator actions ---------------------------------------------------


@routes.get("/jobs/{job_id}/deliveries")
async def job_deliveries(request: web.Request) -> web.Response:
    """The job's webhook deliveries and their attempts (SPEC §9)."""
    services = services_of(request)
    deliveries = await services.store.deliveries(request.match_info["job_id"], principal_of(request).tenant_id)
    return json_response({"deliveries": [d.to_api() for d in deliveries]})


@routes.post("/jobs/{job_id}/deliveries/redeliver")
async def redeliver(request: web.Request) -> web.Response:
    """Send the job's final webhook again with the same `webhook-id`: 202 with
    the delivery, now due; 409 when the job has no webhook or has not ended."""
    services = services_of(request)
    principal = require_writer(request)
    job_id = request.match_info["job_id"]
    bucket = services.redeliveries.bucket(
        principal.tenant_id or "", REDELIVERIES_PER_MINUTE, REDELIVERY_BURST, services.clock.monotonic()
    )
    if not bucket.take(services.clock.monotonic()):
        refuse_request(request, "redeliver_rate")
        raise RateLimited(
            f"at most {REDELIVERIES_PER_MINUTE} redeliveries a minute per tenant", retry_after=bucket.seconds_until()
        )
    try:
        delivery = await services.store.redeliver(job_id, principal.tenant_id, principal.actor, services.clock.now())
    except Exception:
        bucket.give_back()
        raise
    return json_response(delivery.to_api(), status=202)


async def _operator_action(request: web.Request, action: str) -> web.Response:
    services = services_of(request)
    principal = require_writer(request)
    operation = services.store.cancel if action == "cancel" else services.store.retry
    job = await operation(request.match_info["job_id"], principal.tenant_id, principal.actor, services.clock.now())
    return json_response(await render_job(services, job))


@routes.post("/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    """Cancel a job that has not ended (a running handler is cancelled); 409 once it has."""
    return await _operator_action(request, "cancel")


@routes.post("/jobs/{job_id}/retry")
async def retry_job(request: web.Request) -> web.Response:
    """Move a `fatal` job back to `queued`; 409 for any other status."""
    return await _operator_action(request, "retry")


@routes.post("/jobs/bulk", expect_handler=defer_continue)
async def bulk(request: web.Request) -> web.Response:
    services = services_of(request)
    principal = require_writer(request)
    checked = parse_bulk(await read_json(request), principal.tenant_id)
    now = services.clock.now()
    matched, changed = await services.store.bulk(checked.query, checked.job_ids, checked.action, principal.actor, now)
    return json_response({"matched": matched, "changed": changed})


# ---- health ---------------------------------------------------------------


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """200 when the store can make a change durable now; a 503 problem otherwise."""
    services = services_of(request)
    if services.shutting_down:
        raise ShuttingDown("jobq is shutting down", retry_after=5)
    if not await services.store.ready():
        raise StoreUnavailable("the data directory is not writable", retry_after=5)
    problems = services.health.problems()
    if problems:
        raise NotReady("; ".join(problems), retry_after=5)
    return json_response({"status": "ready"})
