"""`GET /openapi.json`: the API in OpenAPI 3.1 (SPEC §4), generated.

The schemas come from the models of `schemas.py` (the ones `validation.py`
checks requests with), the operations from the table `OPERATIONS` below:
method, path, operationId, request model, answers, problem statuses,
security. `tests/api/test_openapi.py` checks that table against the app's router
both ways, so a route cannot be served undocumented or documented unserved.
Every path of the app is described, the dashboard's HTML pages included;
only `/static/{filename}` (the dashboard's files) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, models_json_schema
from pydantic_core import CoreSchema

from jobq.web import schemas as s

routes = web.RouteTableDef()

UNDOCUMENTED_PATHS = frozenset({"/static/{filename}"})
PROBLEM_TYPE = "application/problem+json"
HTML = "text/html"
PROMETHEUS = "text/plain"
REF = "#/components/schemas/{model}"

# Problems any authenticated request may get: no or a bad key, too many bad keys.
AUTH = (401, 429)
# And any request with a JSON body (request_body.py): malformed, slow, large,
# not JSON, an unsupported Expect, invalid, over the body budget, not writable.
BODY = (400, 408, 413, 415, 417, 422, 429, 503)


@dataclass(frozen=True)
class Answer:
    """One documented answer: a JSON model, an HTML page, text, or nothing."""

    description: str
    model: type[BaseModel] | None = None
    media_type: str = "application/json"
    headers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # as in the document: camelCase parameters, `{jobId}`
    operation_id: str
    summary: str
    answers: dict[int, Answer]
    problems: tuple[int, ...] = ()
    request: type[BaseModel] | None = None
    request_type: str = "application/json"
    query: tuple[dict[str, Any], ...] = ()
    headers: tuple[dict[str, Any], ...] = ()
    public: bool = False  # no key needed
    extra: dict[str, Any] = field(default_factory=dict)


_PAGE = Answer("the page", media_type=HTML)
_SEE_OTHER = Answer("303 See Other", media_type="", headers=("Location",))
_JOB = Answer("the job", s.Job)
_JOB_LIST = Answer("a page of jobs, newest first", s.JobList)
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "description": 'an RFC 8941 string ("abc") or a bare token; replays the first answer',
    "schema": {"type": "string", "pattern": '^"?[A-Za-z0-9._:-]{1,255}"?$'},
}
_TENANT = {"name": "tenant", "in": "query", "schema": {"type": "string"}, "description": "admin keys only"}


def _list_params(*, with_status: bool = True) -> tuple[dict[str, Any], ...]:
    """The query parameters of `GET /jobs`, from `schemas.ListParams`."""
    model = s.ListParams.model_json_schema(ref_template=REF, schema_generator=_Generator)
    params = []
    for name, prop in model["properties"].items():
        if name == "status" and not with_status:
            continue
        schema = _not_null(prop)
        param: dict[str, Any] = {"name": name, "in": "query", "schema": schema}
        if "description" in schema:
            param["description"] = schema.pop("description")
        if schema.get("type") == "array":
            param.update(style="form", explode=False)  # status=queued,retry
        params.append(param)
    return tuple(params)


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without the `null` of an optional field
    (a parameter is absent, never null) and without its default."""
    prop = {k: v for k, v in prop.items() if k != "default"}
    options = [o for o in prop.pop("anyOf", []) if o != {"type": "null"}]
    if len(options) == 1:
        prop.update(options[0])
    return prop


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/jobs",
        "submitJob",
        "Submit a job",
        {201: Answer("the job, durable", s.Job, headers=("Location", "RateLimit", "RateLimit-Policy"))},
        (*AUTH, 403, 409, *BODY),
        request=s.SubmitRequest,
        headers=(_IDEMPOTENCY_KEY,),
    ),
    Operation("get", "/jobs", "listJobs", "List jobs, newest first", {200: _JOB_LIST}, (*AUTH, 400)),
    Operation(
        "post",
        "/jobs/batch",
        "submitBatch",
        "Submit several jobs atomically; refs may depend on each other",
        {201: Answer("the jobs, durable", s.BatchAnswer, headers=("RateLimit", "RateLimit-Policy"))},
        (*AUTH, 403, 409, *BODY),
        request=s.BatchRequest,
        headers=(_IDEMPOTENCY_KEY,),
    ),
    Operation(
        "post",
        "/jobs/bulk",
        "bulkAction",
        "Cancel or retry every matching job",
        {200: Answer("how many jobs matched and how many changed", s.BulkAnswer)},
        (*AUTH, 403, *BODY),
        request=s.BulkRequest,
    ),
    Operation("get", "/jobs/{jobId}", "getJob", "One job with its attempt history", {200: _JOB}, (*AUTH, 404)),
    Operation(
        "get",
        "/jobs/{jobId}/deliveries",
        "listDeliveries",
        "The job's webhook deliveries (the outbox) and their attempts",
        {200: Answer("deliveries", s.DeliveryList)},
        (*AUTH, 404),
    ),
    Operation(
        "post",
        "/jobs/{jobId}/deliveries/redeliver",
        "redeliverWebhook",
        "Send the job's final webhook again with the same webhook-id; 409 when it has no webhookUrl or has not ended",
        {202: Answer("the delivery, now due", s.Delivery)},
        (*AUTH, 403, 404, 409, 503),
    ),
    Operation(
        "post",
        "/jobs/{jobId}/cancel",
        "cancelJob",
        "Cancel a job that has not ended",
        {200: _JOB},
        (*AUTH, 403, 404, 409, 503),
    ),
    Operation(
        "post",
        "/jobs/{jobId}/retry",
        "retryJob",
        "Move a fatal job back to queued",
        {200: _JOB},
        (*AUTH, 403, 404, 409, 503),
    ),
    Operation("get", "/dlq", "listDlq", "The tenant's fatal jobs", {200: _JOB_LIST}, (*AUTH, 400)),
    Operation(
        "get",
        "/ws",
        "liveEvents",
        "WebSocket of live events (SPEC §5): a snapshot, then job, delivery and metrics messages. "
        "A foreign Origin, or no Origin with the session cookie alone, is 403 before the upgrade.",
        {101: Answer("switching to WebSocket", media_type="")},
        (*AUTH, 400, 403, 503),
        query=(_TENANT,),
    ),
    Operation(
        "get",
        "/metrics",
        "getMetrics",
        "Counts by status, queue depth, jobs finished per second, DLQ size, webhook deliveries by status, "
        "and the active alerts (alertId, kind, tenantId, message, subject, raisedAt)",
        {200: Answer("metrics", s.Metrics)},
        (*AUTH, 400),
        query=(_TENANT,),
    ),
    Operation(
        "get",
        "/metrics/prometheus",
        "getPrometheusMetrics",
        "The same figures in the Prometheus text exposition format; the key may come as Authorization: Bearer",
        {200: Answer("text/plain; version=0.0.4", media_type=PROMETHEUS)},
        (*AUTH, 400),
        query=(_TENANT,),
    ),
    Operation(
        "get",
        "/",
        "dashboard",
        "The dashboard (a browser without a session is sent to /login)",
        {200: _PAGE, 303: _SEE_OTHER},
        AUTH,
    ),
    Operation(
        "get",
        "/ui/jobs/{jobId}",
        "jobPage",
        "A job's page (payload, result, progress, attempts, actions)",
        {200: _PAGE, 303: _SEE_OTHER},
        (*AUTH, 404),
    ),
    Operation("get", "/help", "helpPage", "Help: the job state diagram", {200: _PAGE, 303: _SEE_OTHER}, AUTH),
    Operation("get", "/login", "loginForm", "The sign-in form", {200: _PAGE, 303: _SEE_OTHER}, public=True),
    Operation(
        "post",
        "/login",
        "login",
        "Sign in with an API key; sets the session cookie. The form again on 400 (no key), "
        "401 (unknown key) and 429 (too many bad keys from this address)",
        {
            303: _SEE_OTHER,
            400: Answer("no key: the form again", media_type=HTML),
            401: Answer("unknown key: the form again", media_type=HTML, headers=("WWW-Authenticate",)),
            429: Answer("too many bad keys: the form again", media_type=HTML, headers=("Retry-After",)),
        },
        (403, 408, 413, 415, 417),
        request=s.LoginForm,
        request_type="application/x-www-form-urlencoded",
        public=True,
    ),
    Operation("post", "/logout", "logout", "Clear the session cookie", {303: _SEE_OTHER}, (403,), public=True),
    Operation("get", "/openapi.json", "getOpenApi", "This document", {200: Answer("OpenAPI 3.1")}, public=True),
    Operation("get", "/healthz", "healthz", "Liveness", {200: Answer("alive", s.HealthAnswer)}, public=True),
    Operation(
        "get",
        "/readyz",
        "readyz",
        "Readiness: the store can make a change durable now",
        {200: Answer("ready", s.HealthAnswer)},
        (503,),
        public=True,
    ),
)


class _Generator(GenerateJsonSchema):
    """pydantic's JSON Schema without a `title` on every field (the names say it)."""

    def field_title_should_be_set(self, schema: CoreSchema | Any) -> bool:
        return False


def _components() -> dict[str, Any]:
    models = {op.request for op in OPERATIONS if op.request is not None}
    answers = {a.model for op in OPERATIONS for a in op.answers.values() if a.model is not None} | {s.Problem}
    inputs: list[tuple[type[BaseModel], Any]] = [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)]
    outputs: list[tuple[type[BaseModel], Any]] = [
        (m, "serialization") for m in sorted(answers, key=lambda m: m.__name__)
    ]
    _, top = models_json_schema([*inputs, *outputs], ref_template=REF, schema_generator=_Generator)
    return dict(sorted(top.get("$defs", {}).items()))


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _answer(answer: Answer) -> dict[str, Any]:
    body: dict[str, Any] = {"description": answer.description}
    if answer.media_type:
        schema = _ref(answer.model) if answer.model is not None else {}
        if answer.media_type == HTML or answer.media_type == PROMETHEUS:
            schema = {"type": "string"}
        body["content"] = {answer.media_type: {"schema": schema}}
    if answer.headers:
        body["headers"] = {name: {"schema": {"type": "string"}} for name in answer.headers}
    return body


def _operation(op: Operation) -> dict[str, Any]:
    body: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    params = [*op.query, *op.headers]
    if op.operation_id in ("listJobs", "listDlq"):
        params = list(_list_params(with_status=op.operation_id == "listJobs"))
    if "{jobId}" in op.path:
        params.insert(0, {"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}})
    if params:
        body["parameters"] = params
    if op.request is not None:
        body["requestBody"] = {"required": True, "content": {op.request_type: {"schema": _ref(op.request)}}}
    responses = {str(code): _answer(answer) for code, answer in sorted(op.answers.items())}
    for code in sorted(set(op.problems)):
        responses.setdefault(str(code), {"$ref": "#/components/responses/Problem"})
    body["responses"] = responses
    if op.public:
        body["security"] = []
    return {**body, **op.extra}


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document, built once per process."""
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "jobq", "version": "1", "description": "Multi-tenant background jobs over HTTP."},
        "security": [{"apiKey": []}, {"session": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                # Set by POST /login; unsafe methods also need this service's own Origin.
                "session": {"type": "apiKey", "in": "cookie", "name": "jobq_session"},
            },
            "responses": {
                "Problem": {
                    "description": "RFC 9457 problem details",
                    "content": {PROBLEM_TYPE: {"schema": _ref(s.Problem)}},
                }
            },
            "schemas": _components(),
        },
    }


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document())
