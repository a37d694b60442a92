"""Property-based fuzzing of the HTTP API: no input, however malformed, gives a
5xx; every 4xx is RFC 9457 problem+json; a request that is not answered 2xx
leaves the store exactly as it was (SPEC §4, "No request ... gives a 500").

How hypothesis meets the async fixtures: each test is an `async def` decorated
with `@given`. pytest-asyncio (auto mode) recognises hypothesis tests and runs
every generated example's coroutine on the test's own event loop, the same loop
the `jobq` fixture started the server on. So the harness (server, store, fake
clock) is built once per test function and shared by all its examples; the
`function_scoped_fixture` health check, which warns exactly about that, is
suppressed on purpose. Because the store outlives single examples, the
invariants are checked per request (snapshot before, compare after), never
against an empty store. `database=None` keeps CI independent of a local
example database; `deadline=None` because a request's latency is not the
property under test.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import string
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from yarl import URL

from tests.conftest import Harness
from tests.support.backends import durable_state

PROBLEM = "application/problem+json"
MISSING_ID = "00000000-0000-4000-8000-000000000000"


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# ---- the invariant -------------------------------------------------------------


async def store_state(jobq: Harness) -> dict[str, Any]:
    return await durable_state(jobq)


PAGES = frozenset({"/", "/login", "/help"})  # browser pages answer HTML; the API answers JSON


def expected_type(path: str) -> str:
    """The content type of a 2xx answer for `path`, as the client normalised it."""
    normal = posixpath.normpath(path) if path else path
    if normal in PAGES or normal.startswith("/ui/"):
        return "text/html"
    if normal == "/metrics/prometheus":
        return "text/plain"
    return "application/json"


def check_answer(method: str, status: int, content_type: str, raw: bytes, path: str = "") -> None:
    event(f"status {status}")  # see the spread with --hypothesis-show-statistics
    assert status < 500, (status, raw[:500])
    if 200 <= status < 300:
        assert content_type == expected_type(path), (status, content_type, path)
    if status >= 400:
        assert content_type == PROBLEM, (status, content_type, raw[:500])
        if method == "HEAD":
            return
        body = json.loads(raw)
        assert isinstance(body, dict), body
        assert {"type", "title", "status", "detail"} <= set(body), body
        assert body["status"] == status, body
        assert all(isinstance(body[k], str) and body[k] for k in ("type", "title", "detail")), body
        for error in body.get("errors", []):
            assert isinstance(error["field"], str) and isinstance(error["message"], str), body


async def send(
    jobq: Harness,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    headers: list[tuple[str, str]] | None = None,
    omit_content_type: bool = False,
) -> int:
    """Send one request and check the invariant; returns the status."""
    before = await store_state(jobq)
    # Built already encoded, so the path is sent byte for byte (a str path such
    # as "//jobs" would be read by the client as a URL with a host).
    raw_path, _, query = path.partition("?")
    response = await jobq.client.request(
        method,
        URL.build(path=raw_path, query_string=query, encoded=True),
        data=body,
        headers=CIMultiDict(headers or []),
        skip_auto_headers=("Content-Type",) if omit_content_type else (),
    )
    raw = await response.read()
    check_answer(method, response.status, response.content_type, raw, raw_path)
    if not 200 <= response.status < 300:
        assert await store_state(jobq) == before, (method, path, response.status, raw[:300])
    after_request(jobq, response.status)
    return response.status


def after_request(jobq: Harness, status: int) -> None:
    if status == 429:
        # Bad keys throttle the address and submits drain the tenant's bucket for
        # a minute; move past it so later examples reach the views again.
        jobq.clock.advance(61)


async def seed(jobq: Harness) -> dict[str, str]:
    """Things the examples can aim at, made once per harness: a queued and a fatal
    job of tenant acme, a job of tenant globex, and a listing cursor."""
    if "ids" not in jobq.extra:
        fatal = await jobq.submit(type="fail", payload={"times": 99, "permanent": True})
        foreign = await jobq.submit("globex")
        await jobq.drain()
        assert (await jobq.get(fatal["jobId"]))["status"] == "fatal"
        queued = await jobq.submit(payload={"seed": 1})
        listing = await jobq.client.get("/jobs?limit=1", headers=jobq.headers())
        cursor = (await listing.json())["nextCursor"]
        assert cursor
        jobq.extra["ids"] = {
            "QUEUED": queued["jobId"], "FATAL": fatal["jobId"], "FOREIGN": foreign["jobId"], "CURSOR": cursor
        }
    ids: dict[str, str] = jobq.extra["ids"]
    return ids


# ---- strategies -------------------------------------------------------------------


def weighted(*branches: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """`st.one_of` with weights. (`one_of` is far from uniform here: hypothesis
    avoids repeating an example, so a branch with few distinct values, such as
    "the valid key", would be starved by one with many.)"""
    indexes = [i for i, (weight, _) in enumerate(branches) for _ in range(weight)]
    return st.sampled_from(indexes).flatmap(lambda i: branches[i][1])


weird_text = st.text(
    st.one_of(
        st.characters(),  # includes lone surrogates, which json.dumps escapes as \udXXX
        st.sampled_from(["\x00", "\u2028", "\ufeff", "\U0001f600", "\u0301", "\\", '"', "\x7f", "\ud800"]),
    ),
    max_size=20,
)
big_ints = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**400]),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), big_ints, st.floats(allow_nan=True, allow_infinity=True), weird_text
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(weird_text, children, max_size=4)
    ),
    max_leaves=12,
)

TIMESTAMPS = [
    "2026-11-24T10:00:00Z", "2026-11-24T10:00:00.123+01:00", "2026-11-24T10:00:00", "2020-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-02-30T00:00:00Z", "2099-01-01T00:00:00Z",
    "2026-11-24t10:00:00z", "2026-11-24T10:00:00Z\n", "٢٠٢٦-11-24T10:00:00Z", "",
]
URLS = [
    "https://example.com/hook", "http://example.com", "ftp://example.com", "http://", "https://u:p@example.com/",
    "http://xn--/", "http://[::1", "http://example.com:99999/", "http://\u3002/", "//example.com", "http:\\\\x",
]
interesting = st.one_of(
    json_values,
    st.sampled_from(TIMESTAMPS),
    st.sampled_from(URLS),
    st.sampled_from([0, 1, 3, 4, -1, 100, 101, 1.0, 0.5, 86400, 86401, True, False, None, "1", [], {}]),
    st.lists(st.sampled_from(["QUEUED", "FATAL", "FOREIGN", MISSING_ID, "", "x", "a", "b"]), max_size=3),
)
FIELDS = [
    "type", "payload", "priority", "maxAttempts", "timeoutSeconds", "runAt", "delaySeconds", "expiresAt",
    "webhookUrl", "dependsOn", "ref", "tenantId", "jobId", "status",
]
FIELD_VALUES = {
    "runAt": weighted((3, st.sampled_from(TIMESTAMPS)), (1, interesting)),
    "expiresAt": weighted((3, st.sampled_from(TIMESTAMPS)), (1, interesting)),
    "webhookUrl": weighted((3, st.sampled_from(URLS)), (1, interesting)),
}
JOB_TYPES = st.sampled_from(["echo", "echo", "fail", "sleep", "nope", "", "ECHO", "echo ", "x" * 101])


@st.composite
def mutated_submit(draw: st.DrawFn) -> dict[str, Any]:
    """A submit body (type, payload) with a few fields set to odd values, removed or added."""
    payload = draw(st.dictionaries(weird_text, json_values, max_size=3))
    body: dict[str, Any] = {"type": draw(JOB_TYPES), "payload": payload}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        if draw(st.booleans()):
            body[name] = draw(FIELD_VALUES.get(name, interesting))
        else:
            body.pop(name, None)
    for name, value in draw(st.dictionaries(weird_text, json_values, max_size=1)).items():
        body[name] = value
    return body


plain_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=20)
plain_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | plain_text,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(plain_text, children, max_size=3),
    max_leaves=8,
)
valid_submit = st.fixed_dictionaries(
    {"type": st.just("echo"), "payload": st.dictionaries(plain_text, plain_json, max_size=3)},
    optional={
        "priority": st.integers(0, 3),
        "maxAttempts": st.integers(1, 100),
        "timeoutSeconds": st.floats(0.001, 86400),
        "delaySeconds": st.floats(0, 86400),
        "expiresAt": st.just("2027-01-01T00:00:00Z"),
        "webhookUrl": st.sampled_from(["https://example.com/hook", "http://hooks.example.org:8080/x?y=1"]),
        "dependsOn": st.sampled_from([["QUEUED"], []]),
    },
)


def encode(value: Any, style: str) -> bytes:
    """JSON text of `value`: ASCII-escaped (lone surrogates become \\udXXX) or raw UTF-8
    (lone surrogates become invalid bytes); NaN and Infinity are written as such."""
    if style == "ascii":
        return json.dumps(value).encode()
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def byte_mutations(draw: st.DrawFn, base: bytes) -> bytes:
    """`base` with a few bytes inserted, deleted or replaced."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = draw(st.sampled_from([*b'{}[]",:\\0123456789eE.-+ntfu', 0x00, 0x80, 0xC0, 0xED, 0xFF]))
        if action == "insert" or not data:
            data.insert(position, byte)
        elif action == "delete":
            del data[min(position, len(data) - 1)]
        else:
            data[min(position, len(data) - 1)] = byte
    return bytes(data)


VALID_SUBMIT = b'{"type": "echo", "payload": {"a": [1, 2.5, "x"]}, "priority": 2}'

submit_bodies = weighted(
    (3, st.builds(encode, valid_submit, st.sampled_from(["ascii", "utf8"]))),
    (5, st.builds(encode, mutated_submit(), st.sampled_from(["ascii", "utf8"]))),
    (2, st.builds(encode, json_values, st.sampled_from(["ascii", "utf8"]))),
    (1, st.binary(max_size=64)),
    (2, byte_mutations(VALID_SUBMIT)),
)

batch_bodies = weighted(
    (3, st.builds(
        encode,
        st.fixed_dictionaries(
            {"jobs": st.lists(st.one_of(mutated_submit(), json_values), min_size=0, max_size=4)},
            optional={"extra": json_values},
        ),
        st.just("ascii"),
    )),
    (3, st.builds(
        lambda refs: encode({"jobs": [{"ref": r, "type": "echo", "dependsOn": d} for r, d in refs]}, "ascii"),
        st.lists(st.tuples(st.sampled_from("abc"), st.lists(st.sampled_from(["a", "b", "c", "QUEUED"]), max_size=2)),
                 min_size=1, max_size=4),
    )),
    (2, st.builds(
        lambda items: encode({"jobs": [{**item, "ref": f"r{i}", "dependsOn": [f"r{j}" for j in range(i)][-2:]}
                                       for i, item in enumerate(items)]}, "ascii"),
        st.lists(valid_submit, min_size=1, max_size=4),
    )),
    (1, st.builds(encode, json_values, st.just("utf8"))),
    (1, byte_mutations(b'{"jobs": [{"ref": "a", "type": "echo"}, {"ref": "b", "type": "echo", "dependsOn": ["a"]}]}')),
)

bulk_bodies = weighted(
    (2, st.builds(
        encode,
        st.fixed_dictionaries(
            {"action": st.sampled_from(["cancel", "retry"])},
            optional={
                "jobIds": st.lists(st.sampled_from(["QUEUED", "FATAL", "FOREIGN"])),
                "filter": st.fixed_dictionaries({"status": st.sampled_from(["fatal", "retry"])}),
            },
        ),
        st.just("ascii"),
    )),
    (4, st.builds(
        encode,
        st.fixed_dictionaries(
            {},
            optional={
                "action": st.one_of(st.sampled_from(["cancel", "retry", "delete"]), json_values),
                "filter": st.one_of(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "status": st.one_of(
                                st.sampled_from(["queued", "fatal", "bogus", ["fatal"], [1]]), json_values
                            ),
                            "type": st.one_of(JOB_TYPES, json_values),
                            "q": weird_text,
                            "other": json_values,
                        },
                    ),
                    json_values,
                ),
                "jobIds": st.one_of(
                    st.lists(st.sampled_from(["QUEUED", "FATAL", "FOREIGN", MISSING_ID, "x"]), max_size=3), json_values
                ),
                "extra": json_values,
            },
        ),
        st.just("ascii"),
    )),
    (1, st.builds(encode, json_values, st.just("utf8"))),
    (1, byte_mutations(b'{"action": "cancel", "jobIds": ["x"]}')),
)

header_text = st.text(st.characters(exclude_categories=("Cc", "Cs")), max_size=40)
content_types = weighted(
    (8, st.just("application/json")),
    (2, st.sampled_from(
        [
            "application/json", "application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
            "application/json;charset=latin-1", "application/json; foo", "text/plain", "application/problem+json",
            "application/x-www-form-urlencoded", "", ";;;", "application/json, text/plain", "*/*", None,
        ]
    )),
    (1, header_text),
)
idempotency_keys = weighted(
    (6, st.none()),
    (2, st.sampled_from(["k1", '"k1"', "k2", "", "k" * 255, "k" * 256, '"k1', "a b", "ключ", "TWO"])),
    (1, st.text(string.ascii_letters + string.digits + "._:-", min_size=1, max_size=8)),
    (1, header_text),
)
api_keys = weighted(
    (16, st.just("acme")),
    (3, st.sampled_from(["acme_read", "globex", "admin", None])),
    (1, st.builds(lambda s: "jq_" + s, header_text)),
)


def make_headers(
    jobq: Harness, api_key: str | None, content_type: str | None, idem: str | None
) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    if api_key is not None:
        known = api_key in ("acme", "acme_read", "globex", "admin")
        headers.append(("X-API-Key", jobq.key(api_key) if known else api_key))
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    if idem == "TWO":
        headers += [("Idempotency-Key", "k1"), ("Idempotency-Key", "k2")]
    elif idem is not None:
        headers.append(("Idempotency-Key", idem))
    return headers


def resolve(body: bytes, ids: dict[str, str]) -> bytes:
    """Put the seeded job ids where the strategies left placeholders."""
    for name, job_id in ids.items():
        body = body.replace(f'"{name}"'.encode(), f'"{job_id}"'.encode())
    return body


# ---- the tests ---------------------------------------------------------------------


@fuzz_settings(120)
@given(body=submit_bodies, api_key=api_keys, content_type=content_types, idem=idempotency_keys)
@example(body=b'{"type": "echo", "runAt": "0001-01-01T00:00:00+01:00"}', api_key="acme",
         content_type="application/json", idem=None)
@example(body=b'{"type": "echo", "webhookUrl": "http://xn--/"}', api_key="acme", content_type="application/json",
         idem=None)
async def test_fuzz_submit(jobq: Harness, body: bytes, api_key: str | None, content_type: str | None, idem: str | None):
    ids = await seed(jobq)
    headers = make_headers(jobq, api_key, content_type, idem)
    await send(jobq, "POST", "/jobs", body=resolve(body, ids), headers=headers, omit_content_type=content_type is None)


@fuzz_settings(60)
@given(
    target=st.sampled_from(["/jobs/batch", "/jobs/batch", "/jobs/bulk"]),
    batch=batch_bodies,
    bulk=bulk_bodies,
    api_key=api_keys,
    content_type=content_types,
    idem=idempotency_keys,
)
async def test_fuzz_batch_and_bulk(
    jobq: Harness, target: str, batch: bytes, bulk: bytes, api_key: str | None, content_type: str | None,
    idem: str | None,
):
    ids = await seed(jobq)
    body = resolve(batch if target == "/jobs/batch" else bulk, ids)
    headers = make_headers(jobq, api_key, content_type, idem)
    await send(jobq, "POST", target, body=body, headers=headers, omit_content_type=content_type is None)


query_values = weighted(
    (3, st.sampled_from([
        "", "0", "1", "50", "500", "501", "-1", "1.5", "abc", "\u00b2", "\u0665", "9" * 5000,
        "queued", "fatal", "queued,bogus", "echo", "acme", "globex", "QUEUED", "CURSOR",
    ])),
    (1, st.text(max_size=30)),
)
query_names = st.sampled_from(["status", "type", "q", "limit", "cursor", "tenant", "status", "limit", "cursor", "x"])


@fuzz_settings(60)
@given(
    path=st.sampled_from(["/jobs", "/jobs", "/dlq"]),
    params=st.lists(st.tuples(weighted((5, query_names), (1, st.text(max_size=8))), query_values), max_size=4),
    raw=weighted((5, st.none()), (1, st.text(max_size=40))),
    api_key=api_keys,
)
@example(path="/jobs", params=[("limit", "²")], raw=None, api_key="acme")
async def test_fuzz_list_queries(
    jobq: Harness, path: str, params: list[tuple[str, str]], raw: str | None, api_key: str | None
):
    ids = await seed(jobq)
    resolved = [(name, ids.get(value, value)) for name, value in params]
    query = urlencode(resolved) if raw is None else quote(raw, safe="=&%+")
    # A request line over aiohttp's 8190 bytes is refused by its HTTP parser
    # (a text/plain 400) before the application sees it: out of our hands.
    assume(len(path) + len(query) < 8000)
    await send(jobq, "GET", f"{path}?{query}", headers=make_headers(jobq, api_key, None, None))


METHODS = ["GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
PATHS = [
    "/jobs/{id}", "/jobs/{id}", "/jobs/{id}/cancel", "/jobs/{id}/retry", "/jobs/{id}/deliveries",
    "/jobs/{id}/deliveries/redeliver", "/jobs/{id}/{seg}", "/jobs", "/jobs/batch", "/jobs/bulk", "/dlq", "/healthz",
    "/readyz", "/metrics", "/openapi.json", "/{seg}", "/{seg}/{seg}", "/", "/static/{seg}", "/login", "//jobs",
    "/jobs/", "/JOBS",
]
ids_in_paths = st.one_of(
    st.sampled_from(["QUEUED", "FATAL", "FOREIGN", MISSING_ID, "", ".", "..", "%2F", "%00", "%FF", "a%20b"]),
    st.builds(lambda s: quote(s, safe=""), st.text(max_size=40)),
    st.text(string.ascii_letters + string.digits + "-._~", min_size=1, max_size=60),
)


@fuzz_settings(90)
@given(
    method=st.sampled_from(METHODS),
    template=st.sampled_from(PATHS),
    job_id=ids_in_paths,
    segment=ids_in_paths,
    body=st.one_of(st.none(), st.just(b'{"type": "echo", "payload": {}}'), st.binary(max_size=32)),
    api_key=api_keys,
    content_type=content_types,
)
async def test_fuzz_paths_and_methods(
    jobq: Harness, method: str, template: str, job_id: str, segment: str, body: bytes | None, api_key: str | None,
    content_type: str | None,
):
    ids = await seed(jobq)
    path = template.replace("{id}", ids.get(job_id, job_id)).replace("{seg}", segment)
    headers = make_headers(jobq, api_key, content_type if body is not None else None, None)
    omit = body is not None and content_type is None
    await send(jobq, method, path, body=body, headers=headers, omit_content_type=omit)


# ---- raw header bytes, which the aiohttp client will not send -------------------

# Bytes HTTP allows in a field value (VCHAR, obs-text, inner SP and HTAB): the
# server must cope with all of them, including ones that are not UTF-8.
field_value = st.binary(min_size=1, max_size=24).map(
    lambda raw: bytes(b if 0x21 <= b <= 0x7E or b >= 0x80 or b in (0x20, 0x09) else 0x41 for b in raw).strip()
)


async def raw_request(jobq: Harness, request: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(jobq.client.host, jobq.client.port)
    try:
        writer.write(request)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@fuzz_settings(40)
@given(
    which=st.sampled_from(["X-API-Key", "Idempotency-Key", "Content-Type"]),
    value=field_value,
    method=st.sampled_from(["POST", "GET"]),
)
@example(which="X-API-Key", value=b"\xff\xfe", method="GET")
@example(which="Idempotency-Key", value=b"k\xe9y", method="POST")
async def test_fuzz_raw_header_bytes(jobq: Harness, which: str, value: bytes, method: str):
    await seed(jobq)
    before = await store_state(jobq)
    body = b'{"type": "echo", "payload": {}}' if method == "POST" else b""
    headers = {
        "Host": b"localhost",
        "Connection": b"close",
        "X-API-Key": jobq.key("acme").encode(),
        "Content-Type": b"application/json",
        "Content-Length": str(len(body)).encode(),
    }
    headers[which] = value
    request = f"{method} /jobs HTTP/1.1\r\n".encode()
    request += b"".join(name.encode() + b": " + header + b"\r\n" for name, header in headers.items()) + b"\r\n" + body
    status, response_headers, raw = await raw_request(jobq, request)
    content_type = response_headers.get("content-type", "").split(";")[0]
    check_answer(method, status, content_type, raw)
    if not 200 <= status < 300:
        assert await store_state(jobq) == before
    after_request(jobq, status)
