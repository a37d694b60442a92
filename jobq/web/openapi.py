"""`GET /openapi.json`: the API described in OpenAPI 3.1 (SPEC §4)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

routes = web.RouteTableDef()

_PROBLEM = {"$ref": "#/components/responses/Problem"}
_JOB_ID = {"name": "jobId", "in": "path", "required": True, "schema": {"type": "string"}}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "schema": {"type": "string", "pattern": '^"?[A-Za-z0-9._:-]{1,255}"?$'},
}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, **_json(schema)}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _PROBLEM for code in codes}


_HTML = {"content": {"text/html": {"schema": {"type": "string"}}}}
_SEE_OTHER = {"description": "303 See Other", "headers": {"Location": {"schema": {"type": "string"}}}}
_PAGES: dict[str, Any] = {
    "/": {
        "get": {
            "summary": "The dashboard (a browser without a session is sent to /login)",
            "responses": {"200": {"description": "the page", **_HTML}, "303": _SEE_OTHER, **_errors(401)},
        }
    },
    "/ui/jobs/{jobId}": {
        "get": {
            "summary": "A job's page (payload, result, progress, attempts, operator actions)",
            "parameters": [_JOB_ID],
            "responses": {"200": {"description": "the page", **_HTML}, "303": _SEE_OTHER, **_errors(401, 404)},
        }
    },
    "/help": {
        "get": {
            "summary": "Help: the job state diagram",
            "responses": {"200": {"description": "the page", **_HTML}, "303": _SEE_OTHER, **_errors(401)},
        }
    },
    "/login": {
        "get": {
            "summary": "The sign-in form",
            "security": [],
            "responses": {"200": {"description": "the form", **_HTML}, "303": _SEE_OTHER},
        },
        "post": {
            "summary": "Sign in with an API key; sets the session cookie",
            "security": [],
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}}}
                    }
                },
            },
            "responses": {
                "303": _SEE_OTHER,
                "400": {"description": "no key: the form again", **_HTML},
                "401": {"description": "unknown key: the form again", **_HTML},
                "429": {"description": "too many bad keys from this address: the form again", **_HTML},
                **_errors(403),
            },
        },
    },
    "/logout": {
        "post": {
            "summary": "Clear the session cookie",
            "security": [],
            "responses": {"303": _SEE_OTHER, **_errors(403)},
        }
    },
}

_JOB = {"$ref": "#/components/schemas/Job"}
_DELIVERY_ATTEMPT: dict[str, Any] = {
    "type": "object",
    "properties": {
        "attempt": {"type": "integer"},
        "at": {"type": "string", "format": "date-time"},
        "webhookTimestamp": {"type": "integer", "description": "the webhook-timestamp header sent"},
        "statusCode": {"type": ["integer", "null"], "description": "null: no answer (network error, timeout)"},
        "durationMs": {"type": "number"},
        "error": {"type": ["string", "null"]},
        "status": {"enum": ["succeeded", "failed"]},
        "redelivery": {"type": "boolean"},
    },
}
_DELIVERY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "deliveryId": {"type": "string", "description": "the webhook-id header, the same on every attempt"},
        "jobId": {"type": "string"},
        "tenantId": {"type": "string"},
        "event": {"enum": ["job.succeeded", "job.fatal", "job.cancelled"]},
        "url": {"type": "string"},
        "status": {"enum": ["pending", "delivered", "failed", "stopped"]},
        "createdAt": {"type": "string", "format": "date-time"},
        "nextAttemptAt": {"type": "string", "format": "date-time"},
        "redelivery": {"type": "boolean"},
        "attempts": {"type": "array", "items": _DELIVERY_ATTEMPT},
    },
}
_DELIVERY_LIST: dict[str, Any] = {
    "type": "object",
    "properties": {"deliveries": {"type": "array", "items": _DELIVERY}},
}
_JOB_LIST = {
    "type": "object",
    "properties": {"jobs": {"type": "array", "items": _JOB}, "nextCursor": {"type": ["string", "null"]}},
}
_LIST_PARAMS = [
    {"name": "status", "in": "query", "schema": {"type": "string"}, "description": "comma-separated statuses"},
    {"name": "type", "in": "query", "schema": {"type": "string"}},
    {"name": "q", "in": "query", "schema": {"type": "string", "maxLength": 200}},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    {"name": "cursor", "in": "query", "schema": {"type": "string"}},
    {"name": "tenant", "in": "query", "schema": {"type": "string"}, "description": "admin keys only"},
]

SUBMIT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {"type": "string"},
        "payload": {"type": "object"},
        "priority": {"type": "integer", "minimum": 0, "maximum": 3},
        "maxAttempts": {"type": "integer", "minimum": 1, "maximum": 100},
        "timeoutSeconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
        "runAt": {"type": "string", "format": "date-time"},
        "delaySeconds": {"type": "number", "minimum": 0},
        "expiresAt": {"type": "string", "format": "date-time"},
        "webhookUrl": {"type": "string", "format": "uri"},
        "dependsOn": {"type": "array", "items": {"type": "string"}, "maxItems": 100},
    },
}

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "jobq", "version": "1", "description": "Multi-tenant background jobs over HTTP."},
    "components": {
        "securitySchemes": {
            "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            # Set by POST /login; unsafe methods also need this service's own Origin.
            "session": {"type": "apiKey", "in": "cookie", "name": "jobq_session"},
        },
        "responses": {
            "Problem": {
                "description": "RFC 9457 problem details",
                "content": {
                    "application/problem+json": {
                        "schema": {
                            "type": "object",
                            "required": ["type", "title", "status", "detail"],
                            "properties": {
                                "type": {"type": "string"},
                                "title": {"type": "string"},
                                "status": {"type": "integer"},
                                "detail": {"type": "string"},
                                "errors": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                                    },
                                },
                            },
                        }
                    }
                },
            }
        },
        "schemas": {
            "Job": {
                "type": "object",
                "properties": {
                    "jobId": {"type": "string", "format": "uuid"},
                    "tenantId": {"type": "string"},
                    "type": {"type": "string"},
                    "payload": {"type": "object"},
                    "payloadHash": {"type": "string"},
                    "status": {"enum": ["waiting", "queued", "running", "retry", "succeeded", "fatal", "cancelled"]},
                    "priority": {"type": "integer"},
                    "attempts": {"type": "integer"},
                    "maxAttempts": {"type": "integer"},
                    "timeoutSeconds": {"type": "number"},
                    "nextRunAt": {"type": "string", "format": "date-time"},
                    "leaseExpiresAt": {"type": ["string", "null"], "format": "date-time"},
                    "idempotencyKey": {"type": ["string", "null"]},
                    "webhookUrl": {"type": ["string", "null"]},
                    "dependsOn": {"type": "array", "items": {"type": "string"}},
                    "result": {},
                    "lastError": {"type": ["string", "null"]},
                    "progress": {"type": ["number", "null"]},
                    "progressMessage": {"type": ["string", "null"]},
                    "expiresAt": {"type": ["string", "null"], "format": "date-time"},
                    "waitingReason": {"type": ["string", "null"]},
                    "createdAt": {"type": "string", "format": "date-time"},
                    "updatedAt": {"type": "string", "format": "date-time"},
                    "startedAt": {"type": ["string", "null"], "format": "date-time"},
                    "finishedAt": {"type": ["string", "null"], "format": "date-time"},
                    "attemptHistory": {"type": "array", "items": {"type": "object"}},
                    "operatorActions": {
                        "type": "array",
                        "items": {"type": "object"},
                        "description": "who cancelled, retried or redelivered the job by hand: the newest 20",
                    },
                    "operatorActionsOmitted": {"type": "integer", "description": "older operator actions not kept"},
                },
            },
            "Submit": SUBMIT,
        },
    },
    "security": [{"apiKey": []}, {"session": []}],
    "paths": {
        "/jobs": {
            "post": {
                "summary": "Submit a job",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": {"required": True, **_json({"$ref": "#/components/schemas/Submit"})},
                "responses": {
                    "201": _ok("the job, durable", _JOB),
                    **_errors(400, 401, 403, 408, 409, 413, 415, 417, 422, 429, 503),
                },
            },
            "get": {
                "summary": "List jobs, newest first",
                "parameters": _LIST_PARAMS,
                "responses": {"200": _ok("a page of jobs", _JOB_LIST), **_errors(400, 401, 422)},
            },
        },
        "/jobs/batch": {
            "post": {
                "summary": "Submit several jobs atomically; refs may depend on each other",
                "parameters": [_IDEMPOTENCY_KEY],
                "requestBody": {
                    "required": True,
                    **_json({"type": "object", "properties": {"jobs": {"type": "array", "items": SUBMIT}}}),
                },
                "responses": {
                    "201": _ok(
                        "the jobs", {"type": "object", "properties": {"jobs": {"type": "array", "items": _JOB}}}
                    ),
                    **_errors(400, 401, 403, 408, 409, 413, 415, 417, 422, 429, 503),
                },
            }
        },
        "/jobs/bulk": {
            "post": {
                "summary": "Cancel or retry every matching job",
                "requestBody": {"required": True, **_json({"type": "object"})},
                "responses": {
                    "200": _ok("counts", {"type": "object", "properties": {"matched": {}, "changed": {}}}),
                    **_errors(400, 401, 403, 408, 413, 415, 417, 422, 503),
                },
            }
        },
        "/jobs/{jobId}": {
            "get": {
                "summary": "One job with its attempt history",
                "parameters": [_JOB_ID],
                "responses": {"200": _ok("the job", _JOB), **_errors(401, 404)},
            }
        },
        "/jobs/{jobId}/deliveries": {
            "get": {
                "summary": "The job's webhook deliveries (the outbox) and their attempts",
                "parameters": [_JOB_ID],
                "responses": {"200": _ok("deliveries", _DELIVERY_LIST), **_errors(401, 404)},
            }
        },
        "/jobs/{jobId}/deliveries/redeliver": {
            "post": {
                "summary": (
                    "Send the job's final webhook again with the same webhook-id (one attempt); "
                    "409 when the job has no webhookUrl or has not ended"
                ),
                "parameters": [_JOB_ID],
                "responses": {"202": _ok("the delivery, now due", _DELIVERY), **_errors(401, 403, 404, 409, 429, 503)},
            }
        },
        "/jobs/{jobId}/cancel": {
            "post": {
                "summary": "Cancel a job that has not ended",
                "parameters": [_JOB_ID],
                "responses": {"200": _ok("the job", _JOB), **_errors(401, 403, 404, 409, 503)},
            }
        },
        "/jobs/{jobId}/retry": {
            "post": {
                "summary": "Move a fatal job back to queued",
                "parameters": [_JOB_ID],
                "responses": {"200": _ok("the job", _JOB), **_errors(401, 403, 404, 409, 503)},
            }
        },
        "/dlq": {
            "get": {
                "summary": "The tenant's fatal jobs",
                "parameters": [p for p in _LIST_PARAMS if p["name"] != "status"],
                "responses": {"200": _ok("a page of fatal jobs", _JOB_LIST), **_errors(400, 401)},
            }
        },
        "/ws": {
            "get": {
                "summary": (
                    "WebSocket of live events (SPEC §5): a snapshot, then job, delivery and metrics messages. "
                    "A foreign Origin, or no Origin with the session cookie alone, is 403 before the upgrade."
                ),
                "parameters": [
                    {"name": "tenant", "in": "query", "schema": {"type": "string"}, "description": "admin keys only"}
                ],
                "responses": {"101": {"description": "switching to WebSocket"}, **_errors(400, 401, 403, 429, 503)},
            }
        },
        "/metrics": {
            "get": {
                "summary": (
                    "Counts by status, queue depth, jobs finished per second, DLQ size, webhook deliveries by "
                    "status, and the active alerts (alertId, kind, tenantId, message, subject, raisedAt)"
                ),
                "parameters": [{"name": "tenant", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": _ok("metrics", {"type": "object"}), **_errors(400, 401)},
            }
        },
        "/metrics/prometheus": {
            "get": {
                "summary": "The same figures in the Prometheus text exposition format",
                "parameters": [{"name": "tenant", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "text/plain; version=0.0.4"}, **_errors(400, 401)},
            }
        },
        **_PAGES,
        "/healthz": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "alive"}}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: the store is writable",
                "security": [],
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
    },
}


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(SPEC)
