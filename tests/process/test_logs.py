"""Log lines (issue 8): tenant text is escaped, handler lines carry their job,
JOBQ_LOG_FORMAT=json writes one object a line, and no API key or session
cookie reaches a log line, whoever logged it (our code or aiohttp's parser)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from jobq.tenancy.tenants import TenantsDoc
from tests.conftest import ROOT
from tests.support.server_process import Server

# Shaped like the real things (tenants.new_key, sessions.SessionCodec.issue), never valid ones.
FAKE_KEY = "jq_" + "Zk9_-x" * 7 + "Q"
FAKE_TOKEN = "v1." + "ab12" * 16 + ".1796000000." + "S1g-n_" * 7 + "X"
FORGED = "2026-12-07 18:00:00,000 INFO jobq action=submit jobId=forged tenantId=victim"
# A forged record, a screen clear, a right-to-left override, an 8-bit CSI, a line separator.
EVIL = f"boom\n{FORGED}\r\x1b[2J\u202etxt.exe\x9b31m\u2028 key={FAKE_KEY} cookie=jobq_session={FAKE_TOKEN}"
RAW_CONTROLS = ("\x1b", "\u202e", "\x9b", "\u2028", "\r")
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def assert_no_secret(log: str) -> None:
    assert FAKE_KEY not in log
    assert FAKE_KEY[:20] not in log
    assert FAKE_TOKEN.rsplit(".", 1)[1] not in log  # the token's signature


async def start_server(tmp_path: Path, session: aiohttp.ClientSession, **env: str) -> tuple[Server, str]:
    tenants_file = tmp_path / "tenants.json"
    doc = TenantsDoc()
    key = doc.add_tenant("acme")
    doc.write(tenants_file)
    server = Server(tmp_path, tmp_path / "data", tenants_file, JOBQ_LOG_LEVEL="INFO", **env)
    await server.start(session)
    return server, key


async def run_failing_job(server: Server, key: str, session: aiohttp.ClientSession) -> str:
    """A `fail` job whose first attempt raises EVIL, then succeeds; its id."""
    headers = {"X-API-Key": key}
    job = {"type": "fail", "payload": {"times": 1, "message": EVIL}}
    async with session.post(f"{server.url}/jobs", json=job, headers=headers) as response:
        assert response.status == 201, await response.text()
        job_id: str = (await response.json())["jobId"]
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        async with session.get(f"{server.url}/jobs/{job_id}", headers=headers) as response:
            body = await response.json()
        if body["status"] == "succeeded":
            return job_id
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.05)


def send_malformed_requests(server: Server) -> None:
    """Requests aiohttp's HTTP parser rejects, each with a key or a session
    cookie on the offending line (the parser quotes that line in its error)."""
    port = int(server.url.rsplit(":", 1)[1])
    key, cookie = FAKE_KEY.encode(), b"jobq_session=" + FAKE_TOKEN.encode()
    requests = [
        b"GET /jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key + b"\x01\r\n\r\n",
        b"GET /jobs HTTP/1.1\r\nHost: x\r\nX-API-Key " + key + b"\r\n\r\n",
        b"GET /jobs HTTP/1.1\r\nHost: x\r\nCookie: " + cookie + b"\x7f\r\n\r\n",
        b"GET /jobs?key=" + key + b" HTTP/1.1 junk\r\n\r\n",
        b"GET /jobs HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key + b"\nX: y\r\n\r\n",
    ]
    for request in requests:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(request)
            assert sock.recv(4096).startswith(b"HTTP/1.")  # a 400, sent after the error was logged


@pytest.mark.slow
async def test_text_log_escapes_tenant_text_and_carries_the_job(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    server, key = await start_server(tmp_path, session)
    job_id = await run_failing_job(server, key, session)
    send_malformed_requests(server)
    assert server.stop() == 0, server.log[-3000:]
    log = server.log

    assert not any(line.startswith(FORGED) for line in log.splitlines()), log
    for char in RAW_CONTROLS:
        assert char not in log, f"{char!r} reached the log"
    [line] = [line for line in log.splitlines() if "attempt failed" in line]
    assert line.startswith(tuple("0123456789")) and " INFO jobq.handler.fail " in line
    assert "\\n" + FORGED in line
    assert "\\x1b[2J\\u202etxt.exe\\x9b31m\\u2028" in line
    assert line.endswith(f" jobId={job_id} tenantId=acme attempt=1"), line
    assert "Error handling request" in log  # the parser's errors were logged ...
    assert_no_secret(log)  # ... without the key or the cookie they quote


@pytest.mark.slow
async def test_json_log_is_one_object_a_line(tmp_path: Path, session: aiohttp.ClientSession) -> None:
    server, key = await start_server(tmp_path, session, JOBQ_LOG_FORMAT="json")
    job_id = await run_failing_job(server, key, session)
    send_malformed_requests(server)
    assert server.stop() == 0, server.log[-3000:]
    log = server.log

    for char in RAW_CONTROLS:
        assert char not in log, f"{char!r} reached the log"
    assert_no_secret(log)
    # stdout's banner shares the file; every line of stderr is an object.
    lines = [line for line in log.splitlines() if not line.startswith(("jobq ", " "))]
    records: list[dict[str, Any]] = [orjson.loads(line) for line in lines]
    assert records and all(set(r) >= {"ts", "level", "logger", "msg"} for r in records)
    assert all(RFC3339_UTC.match(r["ts"]) for r in records), records
    [failed] = [r for r in records if r["msg"].startswith("attempt failed")]
    assert failed["level"] == "INFO" and failed["logger"] == "jobq.handler.fail"
    assert failed["jobId"] == job_id and failed["attempt"] == 1 and failed["tenantId"] == "acme"
    assert "\n" + FORGED + "\r\x1b[2J\u202etxt.exe\x9b31m\u2028" in failed["msg"]  # exact text, escaped only as JSON
    parser_errors = [r for r in records if r["logger"] == "aiohttp.server"]
    assert parser_errors and all("Traceback" in r["exc"] for r in parser_errors)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "value"), [("JOBQ_LOG_FORMAT", "xml"), ("JOBQ_LOG_LEVEL", "LOUD")])
def test_a_bad_log_setting_refuses_to_start(tmp_path: Path, name: str, value: str) -> None:
    env = {**os.environ, "JOBQ_DATA_DIR": str(tmp_path), "JOBQ_PORT": "1", name: value}
    done = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode().startswith(f"jobq: {name} "), done.stderr


# ---- the formatters on their own ---------------------------------------------


@pytest.mark.parametrize(
    ("raw", "logged"),
    [
        ("plain text, café ✓ 日本語", "plain text, café ✓ 日本語"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("\x00\x1b[2J\x7f", "\\x00\\x1b[2J\\x7f"),
        ("\x85\x9b", "\\x85\\x9b"),  # C1 controls: NEL, 8-bit CSI
        ("\u202eevil\u2066\u200b", "\\u202eevil\\u2066\\u200b"),  # bidi override and isolate, zero-width space
        ("\u2028\u2029\xa0", "\\u2028\\u2029\\xa0"),  # line and paragraph separators, no-break space
        ("\ud800", "\\ud800"),  # a lone surrogate (header bytes decoded with surrogateescape)
        ("\U000e0041", "\\U000e0041"),  # a tag character
        ("a literal \\n", "a literal \\\\n"),  # so an escape in the log always means a real control
    ],
)
def test_escape(raw: str, logged: str) -> None:
    from jobq.core.logsetup import escape

    assert escape(raw) == logged


@pytest.mark.parametrize(
    ("raw", "logged"),
    [
        (f"key {FAKE_KEY}.", "key jq_[REDACTED]."),
        (f"X-API-Key: {FAKE_KEY[:24]}", "X-API-Key: jq_[REDACTED]"),  # a truncated copy
        (f"token={FAKE_TOKEN}", "token=v1.[REDACTED]"),
        (f"Cookie: jobq_session={FAKE_TOKEN[:30]}; other=1", "Cookie: jobq_session=[REDACTED]; other=1"),
        ("secret whsec_" + "A+/b" * 10 + "A=", "secret whsec_[REDACTED]"),
        ("jq_short v1.2.3 whsec_ jobq_session=", "jq_short v1.2.3 whsec_ jobq_session="),
    ],
)
def test_redact(raw: str, logged: str) -> None:
    from jobq.core.logsetup import redact

    assert redact(raw) == logged


def make_record(msg: str, *args: object, exc: BaseException | None = None, **extra: object) -> Any:
    record = logging.LogRecord("jobq.handler.x", logging.WARNING, __file__, 1, msg, args, None)
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    record.__dict__.update(extra)
    return record


def raised(message: str) -> BaseException:
    try:
        try:
            raise KeyError(message)
        except KeyError as cause:
            raise RuntimeError(message) from cause
    except RuntimeError as exc:
        return exc


def test_text_traceback_lines_are_marked_as_continuations() -> None:
    from jobq.core.logsetup import TextFormatter

    record = make_record("failed: %s", EVIL, exc=raised(EVIL), jobId="j-1", attempt=2)
    first, *rest = TextFormatter().format(record).split("\n")
    assert first.endswith(" jobId=j-1 attempt=2") and "\\n" + FORGED in first
    assert len(rest) > 6 and all(line.startswith("  | ") for line in rest)
    assert any(line == "  | " + FORGED + "\\r\\x1b[2J\\u202etxt.exe\\x9b31m\\u2028 key=jq_[REDACTED] "
               "cookie=jobq_session=[REDACTED]" for line in rest)  # RuntimeError's message, its second line
    assert "The above exception was the direct cause" in "\n".join(rest)


def test_text_extras_are_quoted_when_they_would_read_as_more_pairs() -> None:
    from jobq.core.logsetup import TextFormatter

    record = make_record("x", jobId="a b", tenantId='q"=1', attempt=3, type="")
    assert TextFormatter().format(record).endswith(' jobId="a b" tenantId="q\\"=1" attempt=3 type=""')


def test_json_keeps_exact_text_as_printable_ascii_escapes() -> None:
    from jobq.core.logsetup import JsonFormatter

    text = "a\nb\x1b\x85\u202e\U000e0041\ud800 é " + FAKE_KEY
    line = JsonFormatter().format(make_record("%s", text, exc=raised("boom\x1b"), jobId=text, attempt=2))
    assert "\n" not in line and line.isprintable() and "\u202e" not in line and "\x85" not in line
    doc = orjson.loads(line)
    expected = text.replace("\ud800", "\\ud800").replace(FAKE_KEY, "jq_[REDACTED]")
    assert doc["msg"] == doc["jobId"] == expected
    assert doc["attempt"] == 2 and doc["level"] == "WARNING" and doc["logger"] == "jobq.handler.x"
    assert doc["exc"].startswith("Traceback") and doc["exc"].endswith("RuntimeError: boom\x1b")
    assert RFC3339_UTC.match(doc["ts"])


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_warnings_and_a_crash_go_through_the_formatter(log_format: str) -> None:
    script = (
        "import warnings\nfrom jobq.core import logsetup\n"
        f"logsetup.configure('INFO', {log_format!r})\n"
        f"warnings.warn({EVIL!r})\n"
        f"raise RuntimeError({EVIL!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=30)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert_no_secret(err)
    for char in RAW_CONTROLS:
        assert char not in err
    if log_format == "json":
        warned, crashed = (orjson.loads(line) for line in err.splitlines())
        assert warned["logger"] == "py.warnings" and FORGED in warned["msg"]
        assert crashed["level"] == "CRITICAL" and crashed["msg"] == "action=crashed"
        assert crashed["exc"].startswith("Traceback") and FORGED in crashed["exc"]
    else:
        assert not any(line.startswith(FORGED) for line in err.splitlines())
        assert " CRITICAL jobq action=crashed\n  | Traceback" in err
