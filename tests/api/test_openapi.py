"""`/openapi.json` is generated from the request models and the operations
table, and agrees with the app's router both ways (issue 9)."""

from __future__ import annotations

from typing import Any

from pydantic.alias_generators import to_camel

from jobq.core.models import Status
from jobq.rules.outbox import DELIVERY_STATUSES, EVENTS
from jobq.web import openapi, schemas
from jobq.web.validation import MAX_DELAY_SECONDS
from tests.conftest import Harness


def _camel_path(path: str) -> str:
    """`/jobs/{job_id}` as the document writes it: `/jobs/{jobId}`."""
    return "/".join("{" + to_camel(part[1:-1]) + "}" if part.startswith("{") else part for part in path.split("/"))


def _served(harness: Harness) -> set[tuple[str, str]]:
    served = set()
    for route in harness.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter", "")
        if route.method != "HEAD" and path not in openapi.UNDOCUMENTED_PATHS:
            served.add((_camel_path(path), route.method.lower()))
    return served


async def _document(harness: Harness) -> dict[str, Any]:
    response = await harness.client.get("/openapi.json")
    assert response.status == 200
    doc: dict[str, Any] = await response.json()
    return doc


async def test_the_document_and_the_router_name_the_same_operations(jobq: Harness) -> None:
    doc = await _document(jobq)
    assert doc["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    served = _served(jobq)
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


async def test_every_operation_has_a_unique_operation_id_and_declared_answers(jobq: Harness) -> None:
    doc = await _document(jobq)
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)) and all(ids)
    for ops in doc["paths"].values():
        for op in ops.values():
            assert op["responses"], op["operationId"]


def _schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = doc["components"]["schemas"][name]
    return schema


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = _schema(doc, schema["$ref"].rsplit("/", 1)[1])
    return schema


async def test_yesterdays_drifts_are_gone(jobq: Harness) -> None:
    doc = await _document(jobq)
    submit = _schema(doc, "SubmitRequest")
    delay = next(option for option in submit["properties"]["delaySeconds"]["anyOf"] if option.get("type") == "number")
    assert delay["maximum"] == MAX_DELAY_SECONDS and delay["minimum"] == 0
    assert submit["required"] == ["type"] and submit["additionalProperties"] is False
    status = _resolve(doc, _schema(doc, "Job")["properties"]["status"])
    assert status["enum"] == [s.value for s in Status]
    batch = _schema(doc, "BatchRequest")["properties"]["jobs"]
    item = _resolve(doc, batch["items"])
    assert "ref" in item["properties"] and "dependsOn" in item["properties"]
    assert batch["maxItems"] == schemas.MAX_BATCH
    [status_param] = [p for p in doc["paths"]["/jobs"]["get"]["parameters"] if p["name"] == "status"]
    assert _resolve(doc, status_param["schema"]["items"])["enum"] == [s.value for s in Status]


async def test_request_bodies_are_the_validation_models(jobq: Harness) -> None:
    doc = await _document(jobq)
    body = doc["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/SubmitRequest"}
    assert _schema(doc, "SubmitRequest") == schemas.SubmitRequest.model_json_schema(
        ref_template=openapi.REF, schema_generator=openapi._Generator
    )
    problem = doc["components"]["responses"]["Problem"]["content"]["application/problem+json"]["schema"]
    assert set(_resolve(doc, problem)["required"]) == {"type", "title", "status", "detail"}


def test_answer_literals_match_the_rules() -> None:
    """`schemas.Delivery` spells the outbox's events and statuses out; they must agree."""
    fields = schemas.Delivery.model_fields
    assert set(fields["event"].annotation.__args__) == set(EVENTS.values())  # type: ignore[union-attr]
    assert set(fields["status"].annotation.__args__) == set(DELIVERY_STATUSES)  # type: ignore[union-attr]


async def test_a_job_answer_fits_the_document(jobq: Harness) -> None:
    """The job the API answers validates against `schemas.Job`: no field missing or extra-typed."""
    job = await jobq.submit(payload={"n": 1}, webhookUrl="https://example.com/hook", delaySeconds=5)
    schemas.Job.model_validate(job)
    schemas.Job.model_validate(await jobq.get(job["jobId"]))
    assert set(job) <= set(schemas.Job.model_json_schema(by_alias=True)["properties"])
