"""Bad input gets a clear problem+json error and changes nothing (SPEC §4).

Every case goes through real HTTP. Each asserts the exact status, the RFC 9457
shape (`type`, `title`, `status`, `detail`, plus `errors[]` naming the field
for a 422) and that nothing was stored: no job, no Idempotency-Key, not a byte
of the data directory.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest

from jobq.core import strict_json
from jobq.core.errors import BadRequest
from tests.conftest import Harness
from tests.support.backends import durable_state

PROBLEM = "application/problem+json"
JSON_CT = {"Content-Type": "application/json"}
MISSING_ID = "00000000-0000-4000-8000-000000000000"


# ---- helpers ----------------------------------------------------------------


def submit_body(**fields: Any) -> bytes:
    """A submit body that is valid apart from `fields`."""
    return json.dumps({"type": "echo", "payload": {}, **fields}).encode()


def nested_lists(depth: int) -> str:
    return "[" * depth + "]" * depth


async def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == PROBLEM, text
    body = json.loads(text)
    assert isinstance(body, dict)
    assert {"type", "title", "status", "detail"} <= set(body), body
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"].startswith("https://jobq.dev/problems/")
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    if body["type"].endswith("/validation"):
        assert body.get("errors"), body
    for error in body.get("errors", []):
        assert set(error) == {"field", "message"}, error
        assert isinstance(error["field"], str) and isinstance(error["message"], str) and error["message"]
    if field is not None:
        assert field in fields_of(body), body
    return body


def fields_of(body: dict[str, Any]) -> list[str]:
    return [error["field"] for error in body.get("errors", [])]


def files_of(jobq: Harness) -> dict[str, bytes]:
    return {
        str(path.relative_to(jobq.settings.data_dir)): path.read_bytes()
        for path in sorted(Path(jobq.settings.data_dir).rglob("*"))
        if path.is_file() and not path.name.endswith(".lock")
    }


async def snapshot(jobq: Harness) -> dict[str, Any]:
    """Everything a refused request must leave as it was: jobs (with status and
    updatedAt), remembered Idempotency-Keys, counts, and the files on disk."""
    return {**await durable_state(jobq), "files": files_of(jobq)}


async def assert_no_jobs(jobq: Harness, who: str = "acme") -> None:
    response = await jobq.client.get("/jobs", headers=jobq.headers(who))
    assert response.status == 200
    assert (await response.json())["jobs"] == []
    assert sum((await jobq.store.counts(who)).values()) == 0


# ---- POST /jobs: malformed JSON and bodies that are not objects (400) ----------

MALFORMED = [
    pytest.param(b'{"type": "echo",', id="truncated"),
    pytest.param(b"type=echo", id="not-json"),
    pytest.param(b"", id="empty-body"),
    pytest.param(b"   ", id="only-whitespace"),
    pytest.param(b'{"type": "echo"} {}', id="trailing-data"),
    pytest.param(b"{'type': 'echo'}", id="single-quotes"),
    pytest.param(b'{"type": "echo", "payload": {},}', id="trailing-comma"),
    pytest.param(b'\xef\xbb\xbf{"type": "echo"}', id="byte-order-mark"),
    pytest.param(b'[{"type": "echo"}]', id="array"),
    pytest.param(b'"echo"', id="string"),
    pytest.param(b"42", id="number"),
    pytest.param(b"null", id="null"),
    pytest.param(b"true", id="boolean"),
    pytest.param(b'{"type": "echo", "payload": {"x": NaN}}', id="nan"),
    pytest.param(b'{"type": "echo", "payload": {"x": Infinity}}', id="infinity"),
    pytest.param(b'{"type": "echo", "payload": {"x": -Infinity}}', id="minus-infinity"),
    pytest.param(b'{"type": "echo", "timeoutSeconds": NaN}', id="nan-timeout"),
    pytest.param(b'{"type": "echo", "payload": {"x": 1e999}}', id="1e999"),
    pytest.param(b'{"type": "echo", "payload": {"x": -1e999}}', id="minus-1e999"),
    pytest.param(b'{"type": "echo", "delaySeconds": 1e999}', id="1e999-delay"),
    pytest.param(b'{"type": "echo", "payload": {"x": 18446744073709551616}}', id="int-2-pow-64"),
    pytest.param(b'{"type": "echo", "payload": {"x": -9223372036854775809}}', id="int-below-int64"),
    pytest.param(b'{"type": "echo", "priority": 340282366920938463463374607431768211456}', id="int-128-bit-priority"),
    pytest.param(b'{"type": "echo", "payload": {"x": ' + b"7" * 5000 + b"}}", id="int-5000-digits"),
    pytest.param(b'{"type": "echo", "type": "echo"}', id="duplicate-key-top"),
    pytest.param(b'{"type": "echo", "payload": {"a": 1, "a": 1}}', id="duplicate-key-payload"),
    pytest.param(b'{"type": "echo", "payload": {"a": [{"b": 1, "b": 2}]}}', id="duplicate-key-deep"),
    pytest.param(b'{"type": "echo", "payload": {"s": "\\ud800"}}', id="lone-high-surrogate"),
    pytest.param(b'{"type": "echo", "payload": {"s": "\\udc00"}}', id="lone-low-surrogate"),
    pytest.param(b'{"type": "echo", "payload": {"s": "\\udc00\\ud800"}}', id="reversed-surrogates"),
    pytest.param(b'{"type": "echo", "payload": {"\\ud800": 1}}', id="lone-surrogate-key"),
    pytest.param(b'{"type": "echo", "payload": {"s": "\xed\xa0\x80"}}', id="raw-surrogate-bytes"),
    pytest.param(b'{"type": "echo", "payload": {"s": "\xff"}}', id="raw-invalid-utf8"),
    pytest.param(b'{"type": "echo", "payload": {"s": "\xc0\xaf"}}', id="raw-overlong-utf8"),
    pytest.param(b'{"type": "echo", "payload": {"s": "\xe2\x82"}}', id="raw-truncated-utf8"),
    pytest.param(b'{"type": "echo", "payload": {"x": ' + nested_lists(63).encode() + b"}}", id="depth-65"),
    pytest.param(b'{"type": "echo", "payload": {"x": ' + nested_lists(5000).encode() + b"}}", id="depth-5000"),
]


@pytest.mark.parametrize("body", MALFORMED)
async def test_malformed_or_non_object_body_is_400_and_stores_nothing(jobq: Harness, body: bytes) -> None:
    before = await snapshot(jobq)
    response = await jobq.client.post("/jobs", data=body, headers=jobq.headers(**JSON_CT))
    problem = await assert_problem(response, 400)
    assert problem["type"].endswith("/bad-request")
    assert await snapshot(jobq) == before
    await assert_no_jobs(jobq)


async def test_strict_parser_names_what_is_wrong(jobq: Harness) -> None:
    cases = {
        b'{"type": "echo", "type": "echo"}': "duplicate key",
        b'{"type": "echo", "payload": {"x": 18446744073709551616}}': "64 bits",
        b'{"type": "echo", "payload": {"x": ' + nested_lists(63).encode() + b"}}": "deeper than 64",
        b"[]": "JSON object",
    }
    for body, reason in cases.items():
        response = await jobq.client.post("/jobs", data=body, headers=jobq.headers(**JSON_CT))
        assert reason in (await assert_problem(response, 400))["detail"]


async def test_limits_of_the_strict_parser_are_exact(jobq: Harness) -> None:
    """The boundaries themselves are accepted: depth 64, the 64-bit extremes,
    a valid surrogate pair. (So the 400s above are about the limits.)"""
    bodies = [
        b'{"type": "echo", "payload": {"x": ' + nested_lists(62).encode() + b"}}",
        b'{"type": "echo", "payload": {"x": 18446744073709551615, "y": -9223372036854775808}}',
        b'{"type": "echo", "payload": {"s": "\\ud83d\\ude00", "t": "\xf0\x9f\x98\x80", "u": 1.5e308}}',
    ]
    for body in bodies:
        response = await jobq.client.post("/jobs", data=body, headers=jobq.headers(**JSON_CT))
        assert response.status == 201, await response.text()
    assert (await jobq.store.counts("acme"))["queued"] == len(bodies)


# ---- POST /jobs: validation (422, naming the field) --------------------------

LONG_URL = "https://example.com/" + "a" * 2048

INVALID = [
    pytest.param(submit_body(priority=True), "priority", id="priority-true"),
    pytest.param(submit_body(priority=False), "priority", id="priority-false"),
    pytest.param(submit_body(priority=1.0), "priority", id="priority-float-1.0"),
    pytest.param(submit_body(priority=2.5), "priority", id="priority-float-2.5"),
    pytest.param(submit_body(priority=4), "priority", id="priority-4"),
    pytest.param(submit_body(priority=-1), "priority", id="priority-minus-1"),
    pytest.param(submit_body(priority="1"), "priority", id="priority-string"),
    pytest.param(submit_body(priority=None), "priority", id="priority-null"),
    pytest.param(submit_body(maxAttempts=True), "maxAttempts", id="maxAttempts-true"),
    pytest.param(submit_body(maxAttempts=0), "maxAttempts", id="maxAttempts-0"),
    pytest.param(submit_body(maxAttempts=101), "maxAttempts", id="maxAttempts-101"),
    pytest.param(submit_body(maxAttempts=2.0), "maxAttempts", id="maxAttempts-float"),
    pytest.param(submit_body(timeoutSeconds=0), "timeoutSeconds", id="timeout-0"),
    pytest.param(submit_body(timeoutSeconds=-5), "timeoutSeconds", id="timeout-negative"),
    pytest.param(submit_body(timeoutSeconds=True), "timeoutSeconds", id="timeout-true"),
    pytest.param(submit_body(timeoutSeconds="30"), "timeoutSeconds", id="timeout-string"),
    pytest.param(submit_body(timeoutSeconds=86401), "timeoutSeconds", id="timeout-over-a-day"),
    pytest.param(submit_body(color="red"), "color", id="unknown-field"),
    pytest.param(submit_body(tenantId="globex"), "tenantId", id="tenantId-in-body"),
    pytest.param(submit_body(ref="a"), "ref", id="ref-outside-a-batch"),
    pytest.param(submit_body(jobId=MISSING_ID), "jobId", id="jobId-in-body"),
    pytest.param(submit_body(runAt="2026-11-25T00:00:00Z", delaySeconds=5), "runAt", id="runAt-and-delaySeconds"),
    pytest.param(submit_body(runAt="2026-11-25T00:00:00Z", delaySeconds=None), "runAt", id="runAt-and-null-delay"),
    pytest.param(submit_body(runAt="tomorrow"), "runAt", id="runAt-words"),
    pytest.param(submit_body(runAt="2026-11-25"), "runAt", id="runAt-date-only"),
    pytest.param(submit_body(runAt="2026-11-25T09:30:00"), "runAt", id="runAt-naive"),
    pytest.param(submit_body(runAt="2026-11-25T09:30:00.123"), "runAt", id="runAt-naive-millis"),
    pytest.param(submit_body(runAt="2026-11-25 09:30:00Z"), "runAt", id="runAt-space"),
    pytest.param(submit_body(runAt="2026-13-01T00:00:00Z"), "runAt", id="runAt-month-13"),
    pytest.param(submit_body(runAt="2026-02-30T00:00:00Z"), "runAt", id="runAt-feb-30"),
    pytest.param(submit_body(runAt="2026-11-25T25:00:00Z"), "runAt", id="runAt-hour-25"),
    pytest.param(submit_body(runAt="2026-11-25T09:30:00+24:00"), "runAt", id="runAt-offset-24h"),
    pytest.param(submit_body(runAt="0001-01-01T00:00:00+01:00"), "runAt", id="runAt-before-year-1"),
    pytest.param(submit_body(runAt="9999-12-31T23:59:59-01:00"), "runAt", id="runAt-after-year-9999"),
    pytest.param(submit_body(runAt="2028-01-01T00:00:00Z"), "runAt", id="runAt-over-a-year-ahead"),
    pytest.param(submit_body(runAt=1764000000), "runAt", id="runAt-epoch-number"),
    pytest.param(submit_body(runAt=None), "runAt", id="runAt-null"),
    pytest.param(submit_body(delaySeconds=-1), "delaySeconds", id="delay-negative"),
    pytest.param(submit_body(delaySeconds="10"), "delaySeconds", id="delay-string"),
    pytest.param(submit_body(delaySeconds=True), "delaySeconds", id="delay-true"),
    pytest.param(submit_body(delaySeconds=1e10), "delaySeconds", id="delay-centuries"),
    pytest.param(submit_body(expiresAt="2020-01-01T00:00:00Z"), "expiresAt", id="expiresAt-past"),
    pytest.param(submit_body(expiresAt="2026-11-24T09:30:00.000Z"), "expiresAt", id="expiresAt-now"),
    pytest.param(submit_body(expiresAt="2026-12-01T00:00:00"), "expiresAt", id="expiresAt-naive"),
    pytest.param(submit_body(expiresAt="next week"), "expiresAt", id="expiresAt-words"),
    pytest.param(submit_body(expiresAt=1764000000), "expiresAt", id="expiresAt-number"),
    pytest.param(submit_body(expiresAt="0001-01-01T00:00:00+01:00"), "expiresAt", id="expiresAt-before-year-1"),
    pytest.param(submit_body(webhookUrl="ftp://example.com/hook"), "webhookUrl", id="webhook-ftp"),
    pytest.param(submit_body(webhookUrl="file:///etc/passwd"), "webhookUrl", id="webhook-file"),
    pytest.param(submit_body(webhookUrl="javascript:alert(1)"), "webhookUrl", id="webhook-javascript"),
    pytest.param(submit_body(webhookUrl="http://"), "webhookUrl", id="webhook-no-host"),
    pytest.param(submit_body(webhookUrl="https:///hook"), "webhookUrl", id="webhook-empty-host"),
    pytest.param(submit_body(webhookUrl="example.com/hook"), "webhookUrl", id="webhook-relative"),
    pytest.param(submit_body(webhookUrl="https://user:pass@example.com/"), "webhookUrl", id="webhook-user-pass"),
    pytest.param(submit_body(webhookUrl="https://user@example.com/"), "webhookUrl", id="webhook-user"),
    pytest.param(submit_body(webhookUrl="http://xn--/"), "webhookUrl", id="webhook-bad-idna"),
    pytest.param(submit_body(webhookUrl="http://[::1/"), "webhookUrl", id="webhook-bad-ipv6"),
    pytest.param(submit_body(webhookUrl="http://example.com:99999/"), "webhookUrl", id="webhook-bad-port"),
    pytest.param(submit_body(webhookUrl=LONG_URL), "webhookUrl", id="webhook-too-long"),
    pytest.param(submit_body(webhookUrl=42), "webhookUrl", id="webhook-number"),
    pytest.param(submit_body(dependsOn="abc"), "dependsOn", id="dependsOn-string"),
    pytest.param(submit_body(dependsOn={"id": MISSING_ID}), "dependsOn", id="dependsOn-object"),
    pytest.param(submit_body(dependsOn=[1]), "dependsOn", id="dependsOn-number-item"),
    pytest.param(submit_body(dependsOn=[None]), "dependsOn", id="dependsOn-null-item"),
    pytest.param(submit_body(dependsOn=[""]), "dependsOn", id="dependsOn-empty-id"),
    pytest.param(submit_body(dependsOn=["x" * 101]), "dependsOn", id="dependsOn-long-id"),
    pytest.param(submit_body(dependsOn=[f"id-{i}" for i in range(101)]), "dependsOn", id="dependsOn-101"),
    pytest.param(submit_body(dependsOn=[MISSING_ID, MISSING_ID]), "dependsOn", id="dependsOn-duplicate"),
    pytest.param(submit_body(dependsOn=[MISSING_ID]), "dependsOn", id="dependsOn-unknown"),
    pytest.param(submit_body(type="no-such-type"), "type", id="type-unknown"),
    pytest.param(json.dumps({"payload": {}}).encode(), "type", id="type-missing"),
    pytest.param(submit_body(type=""), "type", id="type-empty"),
    pytest.param(submit_body(type=5), "type", id="type-number"),
    pytest.param(submit_body(type="echo; rm"), "type", id="type-bad-characters"),
    pytest.param(submit_body(type="x" * 101), "type", id="type-too-long"),
    pytest.param(submit_body(payload=[]), "payload", id="payload-array"),
    pytest.param(submit_body(payload="text"), "payload", id="payload-string"),
    pytest.param(submit_body(payload=None), "payload", id="payload-null"),
    pytest.param(submit_body(type="sleep", payload={"seconds": -1}), "payload.seconds", id="sleep-negative"),
    pytest.param(submit_body(type="sleep", payload={"seconds": True}), "payload.seconds", id="sleep-true"),
    pytest.param(submit_body(type="fail", payload={"times": True}), "payload.times", id="fail-times-true"),
]


@pytest.mark.parametrize(("body", "field"), INVALID)
async def test_invalid_submit_is_422_naming_the_field_and_stores_nothing(
    jobq: Harness, body: bytes, field: str
) -> None:
    before = await snapshot(jobq)
    response = await jobq.client.post("/jobs", data=body, headers=jobq.headers(**JSON_CT))
    problem = await assert_problem(response, 422, field)
    assert problem["type"].endswith("/validation")
    assert await snapshot(jobq) == before
    await assert_no_jobs(jobq)


async def test_one_422_names_every_bad_field(jobq: Harness) -> None:
    body = submit_body(priority=True, maxAttempts=0, color="red", shape="round", webhookUrl="ftp://x")
    response = await jobq.client.post("/jobs", data=body, headers=jobq.headers(**JSON_CT))
    problem = await assert_problem(response, 422)
    assert set(fields_of(problem)) == {"priority", "maxAttempts", "color", "shape", "webhookUrl"}
    assert {e["message"] for e in problem["errors"] if e["field"] in ("color", "shape")} == {"unknown field"}
    await assert_no_jobs(jobq)


async def test_unknown_type_names_the_known_types(jobq: Harness) -> None:
    response = await jobq.client.post("/jobs", data=submit_body(type="resize"), headers=jobq.headers(**JSON_CT))
    [error] = (await assert_problem(response, 422, "type"))["errors"]
    assert "'resize'" in error["message"] and "echo" in error["message"]


async def test_the_same_fields_valid_are_accepted(jobq: Harness) -> None:
    """Control for the table above: well-formed values of every field pass."""
    dep = await jobq.submit()
    body = submit_body(
        priority=3, maxAttempts=100, timeoutSeconds=0.5, runAt="2026-11-24T10:30:00.123456789+01:00",
        expiresAt="2026-12-01T00:00:00Z", webhookUrl="https://example.com/hook?x=1", dependsOn=[dep["jobId"]],
    )
    response = await jobq.client.post("/jobs", data=body, headers=jobq.headers(**JSON_CT))
    job = await response.json()
    assert response.status == 201, job
    assert job["status"] == "waiting"
    assert job["nextRunAt"] == "2026-11-24T09:30:00.123Z"
    assert job["dependsOn"] == [dep["jobId"]]


async def test_another_tenants_job_as_dependency_is_the_same_422_as_an_unknown_id(jobq: Harness) -> None:
    foreign = await jobq.submit("globex")
    before = await snapshot(jobq)
    answers = []
    for dep in (foreign["jobId"], MISSING_ID):
        response = await jobq.client.post("/jobs", data=submit_body(dependsOn=[dep]), headers=jobq.headers(**JSON_CT))
        problem = await assert_problem(response, 422, "dependsOn")
        answers.append(json.dumps(problem).replace(dep, "ID"))
    assert answers[0] == answers[1]
    assert await snapshot(jobq) == before
    await assert_no_jobs(jobq)


async def test_depending_on_a_cancelled_job_is_422(jobq: Harness) -> None:
    dep = await jobq.submit()
    cancelled = await jobq.client.post(f"/jobs/{dep['jobId']}/cancel", headers=jobq.headers())
    assert cancelled.status == 200
    before = await snapshot(jobq)
    body = submit_body(dependsOn=[dep["jobId"]])
    response = await jobq.client.post("/jobs", data=body, headers=jobq.headers(**JSON_CT))
    problem = await assert_problem(response, 422, "dependsOn")
    assert "cancelled" in problem["errors"][0]["message"]
    assert await snapshot(jobq) == before


# ---- sizes (413) -------------------------------------------------------------


async def test_payload_over_64_kib_is_413_and_exactly_64_kib_is_accepted(jobq: Harness) -> None:
    limit = jobq.settings.max_payload_bytes
    assert limit == 64 * 1024
    filler = limit - len('{"s":""}')
    before = await snapshot(jobq)
    too_big = submit_body(payload={"s": "x" * (filler + 1)})
    response = await jobq.client.post("/jobs", data=too_big, headers=jobq.headers(**JSON_CT))
    problem = await assert_problem(response, 413, "payload")
    assert problem["type"].endswith("/payload-too-large")
    assert await snapshot(jobq) == before
    await assert_no_jobs(jobq)
    just_fits = submit_body(payload={"s": "x" * filler})
    response = await jobq.client.post("/jobs", data=just_fits, headers=jobq.headers(**JSON_CT))
    assert response.status == 201


async def test_payload_over_64_kib_in_a_batch_is_413_for_the_whole_batch(jobq: Harness) -> None:
    body = {"jobs": [{"type": "echo", "payload": {}}, {"type": "echo", "payload": {"s": "x" * 70000}}]}
    response = await jobq.client.post("/jobs/batch", json=body, headers=jobq.headers())
    await assert_problem(response, 413, "jobs[1].payload")
    await assert_no_jobs(jobq)


@pytest.mark.parametrize("path", ["/jobs", "/jobs/batch", "/jobs/bulk"])
async def test_body_over_1_mib_is_413(jobq: Harness, path: str) -> None:
    before = await snapshot(jobq)
    body = b'{"type": "echo", "payload": {}}' + b" " * (1024 * 1024)
    headers = jobq.headers(**JSON_CT, **{"Idempotency-Key": "big"})
    # A file-like body: aiohttp warns about (and -W error fails on) large raw bytes.
    response = await jobq.client.post(path, data=io.BytesIO(body), headers=headers)
    problem = await assert_problem(response, 413)
    assert "1048576" in problem["detail"]
    assert await snapshot(jobq) == before
    await assert_no_jobs(jobq)


# ---- Content-Type (415) --------------------------------------------------------

BAD_CONTENT_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json-patch+json",
    "application/problem+json",
    "text/json",
    "application/jsonx",
    "json",
]


@pytest.mark.parametrize("path", ["/jobs", "/jobs/batch", "/jobs/bulk"])
@pytest.mark.parametrize("content_type", BAD_CONTENT_TYPES)
async def test_wrong_content_type_is_415(jobq: Harness, path: str, content_type: str) -> None:
    before = await snapshot(jobq)
    body = b'{"type": "echo", "payload": {}}'
    response = await jobq.client.post(path, data=body, headers=jobq.headers(**{"Content-Type": content_type}))
    problem = await assert_problem(response, 415)
    assert problem["type"].endswith("/unsupported-media-type")
    assert await snapshot(jobq) == before


@pytest.mark.parametrize("path", ["/jobs", "/jobs/batch", "/jobs/bulk"])
async def test_missing_content_type_is_415(jobq: Harness, path: str) -> None:
    before = await snapshot(jobq)
    response = await jobq.client.post(
        path, data=b'{"type": "echo", "payload": {}}', headers=jobq.headers(), skip_auto_headers=["Content-Type"]
    )
    await assert_problem(response, 415)
    assert await snapshot(jobq) == before
    await assert_no_jobs(jobq)


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8", "Application/JSON"])
async def test_json_content_type_variants_are_accepted(jobq: Harness, content_type: str) -> None:
    body = b'{"type": "echo", "payload": {}}'
    response = await jobq.client.post("/jobs", data=body, headers=jobq.headers(**{"Content-Type": content_type}))
    assert response.status == 201, await response.text()


# ---- GET /jobs and /dlq query strings (400) -----------------------------------


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_QUERIES = [
    pytest.param("limit=0", id="limit-0"),
    pytest.param("limit=501", id="limit-501"),
    pytest.param("limit=abc", id="limit-abc"),
    pytest.param("limit=-1", id="limit-negative"),
    pytest.param("limit=1.5", id="limit-float"),
    pytest.param("limit=", id="limit-empty"),
    pytest.param("limit=%201", id="limit-space"),
    pytest.param("limit=%C2%B2", id="limit-superscript-two"),
    pytest.param("limit=%D9%A5", id="limit-arabic-indic-five"),
    pytest.param("limit=" + "9" * 5000, id="limit-5000-digits"),
    pytest.param("cursor=not-a-cursor", id="cursor-garbage"),
    pytest.param("cursor=%21%21%21", id="cursor-punctuation"),
    pytest.param("cursor=%C3%A9", id="cursor-non-ascii"),
    pytest.param("cursor=" + b64(b"no separator"), id="cursor-no-separator"),
    pytest.param("cursor=" + b64(b"yesterday|x"), id="cursor-bad-time"),
    pytest.param("cursor=" + b64(b"\xff\xfe|x"), id="cursor-not-utf8"),
    pytest.param("cursor=" + b64(b"0001-01-01T00:00:00+01:00|x"), id="cursor-time-out-of-range"),
    pytest.param("colour=red", id="unknown-parameter"),
    pytest.param("Limit=5", id="parameter-names-are-case-sensitive"),
    pytest.param("limit=5&page=2", id="unknown-with-known"),
    pytest.param("q=" + "x" * 201, id="q-too-long"),
]


@pytest.mark.parametrize("path", ["/jobs", "/dlq"])
@pytest.mark.parametrize("query", BAD_QUERIES)
async def test_bad_list_query_is_400(jobq: Harness, path: str, query: str) -> None:
    await jobq.submit()
    before = await snapshot(jobq)
    response = await jobq.client.get(f"{path}?{query}", headers=jobq.headers())
    problem = await assert_problem(response, 400)
    assert problem["type"].endswith("/bad-request")
    assert await snapshot(jobq) == before


async def test_unknown_status_filter_is_400_and_dlq_refuses_a_status(jobq: Harness) -> None:
    response = await jobq.client.get("/jobs?status=queued,bogus", headers=jobq.headers())
    await assert_problem(response, 400)
    response = await jobq.client.get("/dlq?status=queued", headers=jobq.headers())
    await assert_problem(response, 400)


@pytest.mark.parametrize("query", ["limit=1", "limit=500", "limit=050", "cursor=", "q=x&type=echo&status=queued"])
async def test_good_list_queries_pass(jobq: Harness, query: str) -> None:
    await jobq.submit()
    response = await jobq.client.get(f"/jobs?{query}", headers=jobq.headers())
    assert response.status == 200, await response.text()


# ---- Idempotency-Key header (400) -------------------------------------------------

BAD_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("   ", id="only-spaces"),
    pytest.param('""', id="empty-quoted"),
    pytest.param("k" * 256, id="256-chars"),
    pytest.param('"' + "k" * 256 + '"', id="256-chars-quoted"),
    pytest.param("has space", id="inner-space"),
    pytest.param("clé", id="unicode-latin"),
    pytest.param("ключ", id="unicode-cyrillic"),
    pytest.param("🔑", id="emoji"),
    pytest.param("a/b", id="slash"),
    pytest.param("a,b", id="comma"),
    pytest.param('"abc', id="unterminated-quote"),
    pytest.param("'abc'", id="single-quoted"),
    pytest.param(':"abc"', id="quoted-in-the-middle"),
]


@pytest.mark.parametrize("path", ["/jobs", "/jobs/batch"])
@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_idempotency_key_is_400_and_stores_nothing(jobq: Harness, path: str, key: str) -> None:
    body = {"type": "echo", "payload": {}} if path == "/jobs" else {"jobs": [{"type": "echo", "payload": {}}]}
    before = await snapshot(jobq)
    response = await jobq.client.post(path, json=body, headers=jobq.headers(**{"Idempotency-Key": key}))
    problem = await assert_problem(response, 400)
    assert "Idempotency-Key" in problem["detail"]
    assert await snapshot(jobq) == before
    await assert_no_jobs(jobq)


async def test_two_idempotency_key_headers_are_400(jobq: Harness) -> None:
    headers = [("X-API-Key", jobq.key("acme")), ("Idempotency-Key", "a"), ("Idempotency-Key", "a")]
    response = await jobq.client.post("/jobs", json={"type": "echo", "payload": {}}, headers=headers)
    problem = await assert_problem(response, 400)
    assert "one Idempotency-Key" in problem["detail"]
    await assert_no_jobs(jobq)
    assert not (await durable_state(jobq))["idem"]


async def test_longest_key_and_every_allowed_character_are_accepted(jobq: Harness) -> None:
    for key in ("k" * 255, '"' + "k" * 254 + '"', "Az09._:-"):
        response = await jobq.client.post(
            "/jobs", json={"type": "echo", "payload": {}}, headers=jobq.headers(**{"Idempotency-Key": key})
        )
        assert response.status == 201, (key, await response.text())


async def test_nothing_is_remembered_for_a_refused_request(jobq: Harness) -> None:
    headers = jobq.headers(**{"Idempotency-Key": "retry-me"})
    refused = await jobq.client.post("/jobs", json={"type": "echo", "priority": 9}, headers=headers)
    await assert_problem(refused, 422, "priority")
    assert not (await durable_state(jobq))["idem"]
    accepted = await jobq.client.post("/jobs", json={"type": "echo"}, headers=headers)
    assert accepted.status == 201
    assert "Idempotent-Replayed" not in accepted.headers
    # The key now belongs to the accepted request, so another body is a mismatch.
    other = await jobq.client.post("/jobs", json={"type": "echo", "payload": {"x": 1}}, headers=headers)
    problem = await assert_problem(other, 422)
    assert problem["type"].endswith("/idempotency-key-mismatch")
    assert (await jobq.store.counts("acme"))["queued"] == 1


# ---- POST /jobs/bulk (422) ---------------------------------------------------------

BAD_BULK = [
    pytest.param({}, {"action", "filter"}, id="empty"),
    pytest.param({"action": "delete", "jobIds": []}, {"action"}, id="unknown-action"),
    pytest.param({"action": None, "jobIds": []}, {"action"}, id="null-action"),
    pytest.param({"action": ["cancel"], "jobIds": []}, {"action"}, id="list-action"),
    pytest.param({"action": "cancel"}, {"filter"}, id="neither-filter-nor-ids"),
    pytest.param({"action": "cancel", "filter": {}, "jobIds": []}, {"filter"}, id="both-filter-and-ids"),
    pytest.param({"action": "cancel", "jobIds": None}, {"jobIds"}, id="null-jobIds"),
    pytest.param({"action": "cancel", "jobIds": "all"}, {"jobIds"}, id="string-jobIds"),
    pytest.param({"action": "cancel", "jobIds": [1, 2]}, {"jobIds"}, id="number-jobIds"),
    pytest.param({"action": "cancel", "jobIds": {"a": 1}}, {"jobIds"}, id="object-jobIds"),
    pytest.param({"action": "cancel", "jobIds": ["x"] * 10001}, {"jobIds"}, id="too-many-jobIds"),
    pytest.param({"action": "cancel", "filter": None}, {"filter"}, id="null-filter"),
    pytest.param({"action": "cancel", "filter": []}, {"filter"}, id="list-filter"),
    pytest.param({"action": "cancel", "filter": {"colour": "red"}}, {"filter.colour"}, id="unknown-filter-field"),
    pytest.param({"action": "cancel", "filter": {"status": "bogus"}}, {"filter.status"}, id="unknown-status"),
    pytest.param({"action": "cancel", "filter": {"status": 5}}, {"filter.status"}, id="number-status"),
    pytest.param({"action": "cancel", "filter": {"status": ["queued", 5]}}, {"filter.status"}, id="mixed-statuses"),
    pytest.param({"action": "cancel", "filter": {"type": 5}}, {"filter.type"}, id="number-type"),
    pytest.param({"action": "cancel", "filter": {"q": ["x"]}}, {"filter.q"}, id="list-q"),
    pytest.param({"action": "cancel", "jobIds": [], "force": True}, {"force"}, id="unknown-field"),
]


@pytest.mark.parametrize(("body", "fields"), BAD_BULK)
async def test_bad_bulk_body_is_422_and_changes_no_job(jobq: Harness, body: Any, fields: set[str]) -> None:
    jobs = [await jobq.submit(), await jobq.submit(), await jobq.submit("globex")]
    before = await snapshot(jobq)
    response = await jobq.client.post("/jobs/bulk", json=body, headers=jobq.headers())
    problem = await assert_problem(response, 422)
    assert fields <= set(fields_of(problem)), problem
    assert await snapshot(jobq) == before
    for job in jobs[:2]:
        assert (await jobq.get(job["jobId"]))["status"] == "queued"


@pytest.mark.parametrize("body", [b"[]", b'"cancel"', b"null", b"{", b'{"action": "cancel", "action": "retry"}'])
async def test_bulk_body_not_an_object_is_400(jobq: Harness, body: bytes) -> None:
    await jobq.submit()
    before = await snapshot(jobq)
    response = await jobq.client.post("/jobs/bulk", data=body, headers=jobq.headers(**JSON_CT))
    await assert_problem(response, 400)
    assert await snapshot(jobq) == before


# ---- POST /jobs/batch ----------------------------------------------------------------


def echo(ref: str, *deps: str, **extra: Any) -> dict[str, Any]:
    return {"ref": ref, "type": "echo", "payload": {"ref": ref}, "dependsOn": list(deps), **extra}


def cycle_refs(problem: dict[str, Any]) -> list[str]:
    [message] = [e["message"] for e in problem["errors"] if e["field"] == "jobs"]
    assert message.startswith("cycle: ")
    refs: list[str] = message.removeprefix("cycle: ").split(" -> ")
    assert refs[0] == refs[-1]
    return refs[:-1]


async def test_batch_cycle_is_422_naming_exactly_the_cycles_refs(jobq: Harness) -> None:
    body = {"jobs": [echo("entry", "b"), echo("b", "c"), echo("c", "d"), echo("d", "b"), echo("free")]}
    response = await jobq.client.post("/jobs/batch", json=body, headers=jobq.headers())
    problem = await assert_problem(response, 422, "jobs")
    assert "cycle" in problem["detail"]
    refs = cycle_refs(problem)
    assert sorted(refs) == ["b", "c", "d"]
    await assert_no_jobs(jobq)


async def test_batch_self_dependency_is_a_cycle(jobq: Harness) -> None:
    response = await jobq.client.post("/jobs/batch", json={"jobs": [echo("a", "a")]}, headers=jobq.headers())
    assert cycle_refs(await assert_problem(response, 422, "jobs")) == ["a"]
    await assert_no_jobs(jobq)


async def test_batch_with_duplicate_refs_is_422(jobq: Harness) -> None:
    body = {"jobs": [echo("a"), echo("b", "a"), echo("a")]}
    response = await jobq.client.post("/jobs/batch", json=body, headers=jobq.headers())
    problem = await assert_problem(response, 422, "jobs")
    assert any("unique" in e["message"] for e in problem["errors"])
    await assert_no_jobs(jobq)


BAD_BATCH_ITEMS = [
    pytest.param([echo("a"), echo("b", priority=9)], "jobs[1].priority", id="bad-priority"),
    pytest.param([echo("a"), echo("b", "nope")], "jobs[1].dependsOn", id="unknown-ref"),
    pytest.param([echo("a"), echo("b", MISSING_ID)], "jobs[1].dependsOn", id="unknown-job-id"),
    pytest.param([echo("a"), {"ref": "b", "type": "nope"}], "jobs[1].type", id="unknown-type"),
    pytest.param([echo("a"), echo("b", color="red")], "jobs[1].color", id="unknown-field"),
    pytest.param([echo("a"), echo("b", webhookUrl="ftp://x")], "jobs[1].webhookUrl", id="bad-url"),
    pytest.param([echo("a"), echo("", "a")], "jobs[1].ref", id="empty-ref"),
    pytest.param([echo("a"), {"ref": 7, "type": "echo"}], "jobs[1].ref", id="number-ref"),
    pytest.param([echo("a"), ["not", "an", "object"]], "jobs[1]", id="item-not-an-object"),
    pytest.param([echo("a"), echo("b", runAt="x", delaySeconds=1)], "jobs[1].runAt", id="runAt-and-delay"),
]


@pytest.mark.parametrize(("items", "field"), BAD_BATCH_ITEMS)
async def test_one_invalid_item_refuses_the_whole_batch(jobq: Harness, items: list[Any], field: str) -> None:
    before = await snapshot(jobq)
    response = await jobq.client.post("/jobs/batch", json={"jobs": items}, headers=jobq.headers())
    await assert_problem(response, 422, field)
    assert await snapshot(jobq) == before
    await assert_no_jobs(jobq)


async def test_batch_naming_another_tenants_job_is_refused_like_an_unknown_one(jobq: Harness) -> None:
    foreign = await jobq.submit("globex")
    before = await snapshot(jobq)
    answers = []
    for dep in (foreign["jobId"], MISSING_ID):
        body = {"jobs": [echo("a"), echo("b", "a", dep)]}
        response = await jobq.client.post("/jobs/batch", json=body, headers=jobq.headers())
        problem = await assert_problem(response, 422, "jobs[1].dependsOn")
        answers.append(json.dumps(problem).replace(dep, "ID"))
    assert answers[0] == answers[1]
    assert await snapshot(jobq) == before
    await assert_no_jobs(jobq)


BAD_BATCH_BODIES = [
    pytest.param({}, "jobs", id="no-jobs"),
    pytest.param({"jobs": []}, "jobs", id="empty-jobs"),
    pytest.param({"jobs": None}, "jobs", id="null-jobs"),
    pytest.param({"jobs": {"a": echo("a")}}, "jobs", id="object-jobs"),
    pytest.param({"jobs": [echo(f"j{i}") for i in range(1001)]}, "jobs", id="1001-jobs"),
    pytest.param({"jobs": [echo("a")], "atomic": False}, "atomic", id="unknown-field"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BATCH_BODIES)
async def test_bad_batch_body_is_422(jobq: Harness, body: Any, field: str) -> None:
    before = await snapshot(jobq)
    response = await jobq.client.post("/jobs/batch", json=body, headers=jobq.headers())
    await assert_problem(response, 422, field)
    assert await snapshot(jobq) == before
    await assert_no_jobs(jobq)


@pytest.mark.parametrize("body", [b"[]", b"null", b'"jobs"', b'{"jobs": [], "jobs": []}'])
async def test_batch_body_not_an_object_is_400(jobq: Harness, body: bytes) -> None:
    response = await jobq.client.post("/jobs/batch", data=body, headers=jobq.headers(**JSON_CT))
    await assert_problem(response, 400)
    await assert_no_jobs(jobq)


async def test_batch_refs_wait_for_each_other_and_run_in_order(jobq: Harness) -> None:
    earlier = await jobq.submit(payload={"earlier": True})
    body = {
        "jobs": [
            echo("fetch", delaySeconds=60),
            echo("resize", "fetch", delaySeconds=120),
            echo("publish", "resize", "fetch", earlier["jobId"]),
            echo("audit", earlier["jobId"]),
        ]
    }
    response = await jobq.client.post("/jobs/batch", json=body, headers=jobq.headers())
    created = await response.json()
    assert response.status == 201, created
    assert [job["payload"]["ref"] for job in created["jobs"]] == ["fetch", "resize", "publish", "audit"]
    jobs = {job["payload"]["ref"]: job for job in created["jobs"]}
    fetch_id, resize_id = jobs["fetch"]["jobId"], jobs["resize"]["jobId"]
    assert jobs["resize"]["dependsOn"] == [fetch_id]
    assert jobs["publish"]["dependsOn"] == [resize_id, fetch_id, earlier["jobId"]]

    async def state() -> dict[str, tuple[str, str | None]]:
        found = {ref: await jobq.get(job["jobId"]) for ref, job in jobs.items()}
        return {ref: (job["status"], job["waitingReason"]) for ref, job in found.items()}

    assert await state() == {
        "fetch": ("queued", "scheduled for 2026-11-24T09:31:00.000Z"),
        "resize": ("waiting", f"waiting on job {fetch_id}"),
        "publish": ("waiting", f"waiting on job {resize_id}"),
        "audit": ("waiting", f"waiting on job {earlier['jobId']}"),
    }

    # `fetch` is not due yet: only `earlier` runs, which releases `audit`.
    await jobq.drain()
    assert (await state())["audit"] == ("succeeded", None)
    assert (await state())["fetch"][0] == "queued"

    # `fetch` runs; `resize` leaves waiting for queued (still scheduled for later).
    jobq.clock.advance(61)
    await jobq.drain()
    now = await state()
    assert now["fetch"] == ("succeeded", None)
    assert now["resize"] == ("queued", "scheduled for 2026-11-24T09:32:00.000Z")
    assert now["publish"] == ("waiting", f"waiting on job {resize_id}")

    jobq.clock.advance(60)
    await jobq.drain()
    for ref, job in jobs.items():
        done = await jobq.get(job["jobId"])
        assert done["status"] == "succeeded", ref
        assert done["result"] == {"ref": ref}
    assert (await jobq.store.counts("acme"))["succeeded"] == 5


@pytest.mark.parametrize(
    ("text", "deep"),
    [
        pytest.param("[" * 64 + "]" * 64, False, id="64-levels"),
        pytest.param("[" * 65 + "]" * 65, True, id="65-levels"),
        pytest.param('{"a": "' + "[" * 100 + '"}', False, id="brackets-in-a-string"),
        pytest.param('["\\"[[[", ' + "[" * 63 + "]" * 63 + "]", False, id="escaped-quote-then-63-more"),
        pytest.param('["\\\\", ' + "[" * 64 + "]" * 64 + "]", True, id="escaped-backslash-then-64-more"),
        pytest.param('{"a": {"b": {"c": [' * 16 + "1" + "]}}}" * 16, False, id="64-mixed"),
        pytest.param('{"a": {"b": {"c": [' * 16 + "{}" + "]}}}" * 16, True, id="65-mixed"),
    ],
)
def test_nesting_is_measured_on_the_text_not_fooled_by_strings(text: str, deep: bool) -> None:
    if deep:
        with pytest.raises(BadRequest, match="deeper than 64"):
            strict_json.loads(text.encode())
    else:
        assert strict_json.loads(text.encode()) == json.loads(text)
