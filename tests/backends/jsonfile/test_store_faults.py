"""The JSON store under a failing disk, through real HTTP (SPEC §4 errors, §10).

A write that cannot be made durable is answered 503 and leaves nothing behind:
no job in memory, none after a restart, no remembered Idempotency-Key. A failed
snapshot never harms `jobs.json`. A damaged data directory stops the start and
is left byte for byte as it was.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from jobq.core.errors import CorruptStore, StoreLocked
from jobq.rules.transitions import RetryPolicy
from jobq.storage.jsonfile.files import FORMAT, VERSION, encode_entry, encode_line
from jobq.storage.jsonfile.store import JsonStore
from tests.backends.jsonfile.support import json_store
from tests.conftest import ROOT, Harness, HarnessFactory
from tests.support.faults import JOURNAL, SNAPSHOT_TMP, FaultyFS, Op

NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
ERRNOS = [errno.ENOSPC, errno.EIO, errno.EROFS]


# ---- helpers ----------------------------------------------------------------


async def post_job(h: Harness, body: dict[str, Any] | None = None, key: str | None = None) -> tuple[int, Any, Any]:
    headers = h.headers(**({"Idempotency-Key": key} if key else {}))
    response = await asyncio.wait_for(
        h.client.post("/jobs", json=body or {"type": "echo", "payload": {}}, headers=headers), 10
    )
    return response.status, response.headers, await response.json(content_type=None)


async def submit_ok(h: Harness, n: int = 1) -> list[str]:
    ids = []
    for i in range(n):
        status, _, body = await post_job(h, {"type": "echo", "payload": {"i": i}})
        assert status == 201, body
        ids.append(body["jobId"])
    return ids


async def listed(h: Harness) -> set[str]:
    response = await h.client.get("/jobs?limit=500", headers=h.headers())
    assert response.status == 200
    body = await response.json()
    assert body["nextCursor"] is None
    return {job["jobId"] for job in body["jobs"]}


def assert_unavailable(status: int, headers: Any, body: Any) -> None:
    assert status == 503, body
    assert headers["Content-Type"] == "application/problem+json"
    assert int(headers["Retry-After"]) > 0
    assert body["status"] == 503 and body["type"].endswith("/store-unavailable")


async def restart(h: Harness, make_harness: HarnessFactory, **overrides: Any) -> Harness:
    """Stop `h` (server, then store) and start jobq again on the same data directory."""
    await h.client.close()
    return await make_harness(**overrides)


async def compaction_settled(h: Harness) -> None:
    future = json_store(h).log._compacting
    if future is not None:
        await asyncio.wait([future], timeout=10)
    assert json_store(h).log._compacting is None


async def submit_until(h: Harness, reached: Callable[[], bool], limit: int = 20) -> list[str]:
    """Submit one job at a time until `reached()`; the acknowledged ids."""
    ids: list[str] = []
    while not reached():
        assert len(ids) < limit, "never reached"
        ids += await submit_ok(h)
        await compaction_settled(h)
    return ids


def snapshot_ids(data_dir: Path) -> set[str]:
    doc = orjson.loads((data_dir / "jobs.json").read_bytes())
    assert doc["format"] == FORMAT and doc["version"] == VERSION
    return {key[4:] for key, _ in doc["records"] if key.startswith("job:")}


def temp_files(data_dir: Path) -> list[str]:
    return sorted(name for name in os.listdir(data_dir) if ".tmp-" in name)


def journals(data_dir: Path) -> list[str]:
    return sorted(name for name in os.listdir(data_dir) if name.startswith("jobs.journal."))


def new_store(data_dir: Path) -> JsonStore:
    return JsonStore(data_dir, retry=RetryPolicy())


async def refused(data_dir: Path) -> str:
    """Opening the store fails with CorruptStore; its message."""
    store = new_store(data_dir)
    with pytest.raises(CorruptStore) as info:
        await store.open(NOW)
    await store.close()
    return str(info.value)


def file_bytes(data_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(data_dir.iterdir())}


# ---- the journal write fails -----------------------------------------------


@pytest.mark.parametrize("op", ["write", "fsync"])
@pytest.mark.parametrize("error", ERRNOS, ids=errno.errorcode.get)
async def test_failing_disk_answers_503_leaves_nothing_and_recovers(
    make_harness: HarnessFactory, op: Op, error: int
) -> None:
    fs = FaultyFS()
    h = await make_harness(fs=fs)
    acked = await submit_ok(h, 2)
    fault = fs.fail(op, error, times=None)  # the whole disk, until freed

    for _ in range(2):
        assert_unavailable(*await post_job(h, {"type": "echo", "payload": {"lost": True}}))
    assert fault.fired >= 2
    assert await listed(h) == set(acked)
    ready = await h.client.get("/readyz")
    assert ready.status == 503 and int(ready.headers["Retry-After"]) > 0

    fs.clear()
    assert (await h.client.get("/readyz")).status == 200
    acked += await submit_ok(h)
    assert await listed(h) == set(acked)

    h = await restart(h, make_harness)
    assert await listed(h) == set(acked)
    assert snapshot_ids(h.settings.data_dir) == set(acked)


@pytest.mark.parametrize("op", ["write", "fsync"])
async def test_failed_commit_is_cut_from_the_journal_at_once(
    make_harness: HarnessFactory, tmp_path: Path, op: Op
) -> None:
    """A crash right after a 503 must not bring the refused job back: the
    journal's failed bytes are truncated before the 503 is sent."""
    fs = FaultyFS()
    h = await make_harness(fs=fs)
    acked = await submit_ok(h)
    fault = fs.fail(op, errno.EIO, path=JOURNAL, torn=True)
    assert_unavailable(*await post_job(h))
    assert fault.fired == 1

    crashed = tmp_path / "crashed"  # the disk as a crash at this moment would leave it
    shutil.copytree(h.settings.data_dir, crashed)
    store = new_store(crashed)
    await store.open(NOW)
    try:
        assert set(store.index.jobs) == set(acked)
    finally:
        await store.close()


async def test_journal_that_cannot_be_cut_back_is_cut_at_close(make_harness: HarnessFactory) -> None:
    fs = FaultyFS()
    h = await make_harness(fs=fs)
    acked = await submit_ok(h)
    fs.fail("fsync", errno.EIO, path=JOURNAL, times=None)
    fs.fail("truncate", errno.EIO, times=None)
    assert_unavailable(*await post_job(h))
    fs.clear()
    h = await restart(h, make_harness)
    assert await listed(h) == set(acked)


async def test_group_commit_failure_fails_exactly_the_unacknowledged(make_harness: HarnessFactory) -> None:
    fs = FaultyFS()
    h = await make_harness(fs=fs)
    fault = fs.fail("fsync", errno.EIO, path=JOURNAL)
    answers = await asyncio.gather(*(post_job(h, {"type": "echo", "payload": {"n": n}}) for n in range(8)))
    assert fault.fired == 1
    acked = {body["jobId"] for status, _, body in answers if status == 201}
    failed = [(status, headers, body) for status, headers, body in answers if status != 201]
    assert failed
    for answer in failed:
        assert_unavailable(*answer)
    acked |= set(await submit_ok(h, 2))
    assert await listed(h) == acked
    h = await restart(h, make_harness)
    assert await listed(h) == acked


async def test_idempotency_key_of_a_failed_request_is_not_remembered(make_harness: HarnessFactory) -> None:
    fs = FaultyFS()
    h = await make_harness(fs=fs)
    fs.fail("write", errno.ENOSPC, path=JOURNAL)
    assert_unavailable(*await post_job(h, {"type": "echo", "payload": {"v": 1}}, key="order-7"))

    status, _, first = await post_job(h, {"type": "echo", "payload": {"v": 2}}, key="order-7")
    assert status == 201, first
    assert first["payload"] == {"v": 2}
    status, headers, replay = await post_job(h, {"type": "echo", "payload": {"v": 2}}, key='"order-7"')
    assert status == 201 and headers["Idempotent-Replayed"] == "true"
    assert replay["jobId"] == first["jobId"]

    h = await restart(h, make_harness)
    assert await listed(h) == {first["jobId"]}
    status, _, mismatch = await post_job(h, {"type": "echo", "payload": {"v": 1}}, key="order-7")
    assert status == 422 and mismatch["type"].endswith("/idempotency-key-mismatch")


async def test_failed_finish_leaves_no_phantom_success(make_harness: HarnessFactory) -> None:
    """A worker's write that fails leaves the job running under its lease, in
    memory and on disk: it is run again, never marked done without being durable."""
    fs = FaultyFS()
    h = await make_harness(fs=fs)
    [job_id] = await submit_ok(h)
    fault = fs.fail("fsync", errno.EIO, path=JOURNAL, nth=2)  # the claim succeeds, the finish does not
    await asyncio.wait_for(h.worker.run_until_idle(), 10)
    assert fault.fired == 1
    assert (await h.get(job_id))["status"] == "running"
    h = await restart(h, make_harness)
    job = await h.get(job_id)
    assert job["status"] == "retry"
    assert "interrupted" in job["attemptHistory"][0]["error"]


# ---- snapshot (compaction) faults --------------------------------------------

SNAPSHOT_FAULTS: list[tuple[Op, int]] = [
    ("open_new", 1),
    ("write", 1),
    ("fsync", 1),
    ("close", 1),
    ("replace", 1),
    ("fsync_dir", 2),  # the 1st is the new journal's, the 2nd the snapshot's, after its rename
]


@pytest.mark.parametrize(("op", "nth"), SNAPSHOT_FAULTS, ids=[op for op, _ in SNAPSHOT_FAULTS])
@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EIO], ids=errno.errorcode.get)
async def test_failed_snapshot_keeps_jobs_json_and_every_job(
    make_harness: HarnessFactory, op: Op, nth: int, error: int
) -> None:
    fs = FaultyFS()
    h = await make_harness(fs=fs, journal_compact_bytes=1024)
    data_dir = h.settings.data_dir
    before = (data_dir / "jobs.json").read_bytes()
    path = None if op == "fsync_dir" else SNAPSHOT_TMP
    fault = fs.fail(op, error, nth=nth, path=path)

    acked = await submit_until(h, lambda: fault.fired > 0)
    assert temp_files(data_dir) == []
    if op == "fsync_dir":  # the rename had happened: the new snapshot is complete
        assert snapshot_ids(data_dir) == set(acked)
    else:
        assert (data_dir / "jobs.json").read_bytes() == before
        assert snapshot_ids(data_dir) == set()
    assert await listed(h) == set(acked)

    # Later compactions succeed and fold every acknowledged job in.
    replaced = fs.calls["replace"]
    acked += await submit_until(h, lambda: fs.calls["replace"] > replaced)
    assert snapshot_ids(data_dir) == set(acked)
    assert len(journals(data_dir)) == 1
    acked += await submit_ok(h)

    h = await restart(h, make_harness)
    assert await listed(h) == set(acked)
    assert snapshot_ids(data_dir) == set(acked)


@pytest.mark.parametrize(("op", "path"), [("open_append", JOURNAL), ("fsync_dir", None), ("close", JOURNAL)])
async def test_failed_journal_rotation_keeps_commits_flowing(
    make_harness: HarnessFactory, op: Op, path: str | None
) -> None:
    fs = FaultyFS()
    h = await make_harness(fs=fs, journal_compact_bytes=1024)
    fault = fs.fail(op, errno.EIO, path=path)
    acked = await submit_until(h, lambda: fault.fired > 0)
    replaced = fs.calls["replace"]
    acked += await submit_until(h, lambda: fs.calls["replace"] > replaced)
    acked += await submit_ok(h, 2)
    assert await listed(h) == set(acked)
    h = await restart(h, make_harness)
    assert await listed(h) == set(acked)


async def test_failed_rotation_then_failed_snapshot_then_failed_write_loses_nothing(
    make_harness: HarnessFactory,
) -> None:
    """Three faults in a row must not make jobq cut acknowledged commits off a journal."""
    fs = FaultyFS()
    h = await make_harness(fs=fs, journal_compact_bytes=1024)
    rotation = fs.fail("fsync_dir", errno.EIO)
    acked = await submit_until(h, lambda: rotation.fired > 0)
    snapshot = fs.fail("open_new", errno.ENOSPC, path=SNAPSHOT_TMP, times=None)
    acked += await submit_until(h, lambda: snapshot.fired > 0)
    fs.fail("write", errno.EIO, path=JOURNAL)
    assert_unavailable(*await post_job(h))
    acked += await submit_ok(h, 2)
    assert await listed(h) == set(acked)
    h = await restart(h, make_harness)
    assert await listed(h) == set(acked)


# ---- start-up refusals -------------------------------------------------------


def _with_version(raw: bytes) -> bytes:
    doc = orjson.loads(raw)
    doc["version"] = 99
    return orjson.dumps(doc)


CORRUPTIONS: dict[str, Callable[[bytes], bytes]] = {
    "garbage": lambda raw: b"\x00\xff\xfe garbage \x00" * 10,
    "empty": lambda raw: b"",
    "truncated": lambda raw: raw[: len(raw) // 2],
    "other-format": lambda raw: b'{"jobs": [], "version": 1}',
    "json-list": lambda raw: b"[1, 2, 3]",
    "version-99": _with_version,
    "bad-record": lambda raw: raw.replace(b'"records":[\n', b'"records":[\n["job:x",{"nope":1}],\n', 1),
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS.values()), ids=list(CORRUPTIONS))
async def test_corrupt_snapshot_is_refused_and_left_untouched(
    make_harness: HarnessFactory, corrupt: Callable[[bytes], bytes]
) -> None:
    h = await make_harness()
    await submit_ok(h, 2)
    h = await restart(h, make_harness)  # folds the journal into jobs.json
    await h.client.close()
    data_dir = h.settings.data_dir
    snapshot = data_dir / "jobs.json"
    snapshot.write_bytes(corrupt(snapshot.read_bytes()))
    (data_dir / "jobs.journal.00000099").write_bytes(b"")
    before = file_bytes(data_dir)

    message = await refused(data_dir)
    assert str(snapshot) in message
    assert file_bytes(data_dir) == before


async def test_unreadable_record_in_a_journal_is_refused_before_anything_is_rewritten(
    make_harness: HarnessFactory,
) -> None:
    h = await make_harness()
    await submit_ok(h)
    await h.client.close()
    data_dir = h.settings.data_dir
    [journal] = journals(data_dir)
    path = data_dir / journal
    path.write_bytes(path.read_bytes() + encode_line([encode_entry("job:bad", {"status": "nope"})]))
    before = file_bytes(data_dir)
    message = await refused(data_dir)
    assert str(data_dir) in message
    assert file_bytes(data_dir) == before


async def journal_with_three_jobs(make_harness: HarnessFactory) -> tuple[Path, list[str], list[bytes]]:
    h = await make_harness()
    ids = await submit_ok(h, 3)
    await h.client.close()
    data_dir = h.settings.data_dir
    [journal] = journals(data_dir)
    lines = (data_dir / journal).read_bytes().splitlines(keepends=True)
    assert len(lines) == 3
    return data_dir / journal, ids, lines


async def test_damaged_line_inside_the_journal_is_refused(make_harness: HarnessFactory) -> None:
    journal, _, lines = await journal_with_three_jobs(make_harness)
    damaged = bytearray(lines[1])
    damaged[40] ^= 0x01  # a flipped bit: the CRC no longer matches
    journal.write_bytes(lines[0] + bytes(damaged) + lines[2])
    before = file_bytes(journal.parent)
    message = await refused(journal.parent)
    assert str(journal) in message and "line 2" in message
    assert file_bytes(journal.parent) == before


async def test_torn_last_line_is_ignored(make_harness: HarnessFactory) -> None:
    journal, ids, lines = await journal_with_three_jobs(make_harness)
    journal.write_bytes(lines[0] + lines[1] + lines[2][: len(lines[2]) // 2])
    h = await make_harness()
    assert await listed(h) == set(ids[:2])
    h = await restart(h, make_harness)  # the torn bytes are gone for good
    assert await listed(h) == set(ids[:2])


async def test_second_store_on_the_same_directory_is_locked_out(data_dir: Path) -> None:
    first = new_store(data_dir)
    await first.open(NOW)
    second = new_store(data_dir)
    try:
        with pytest.raises(StoreLocked, match=f"in use by process {os.getpid()}"):
            await second.open(NOW)
    finally:
        await second.close()
        await first.close()
    third = new_store(data_dir)
    await third.open(NOW)
    await third.close()


async def test_leftover_temp_files_are_removed_at_start(data_dir: Path) -> None:
    for name in (".jobs.json.tmp-4242-0", ".jobs.json.tmp-probe", ".jobs.json.tmp-1-17"):
        (data_dir / name).write_bytes(b'{"half a snap')
    (data_dir / "notes.tmp-keep").write_bytes(b"not ours")
    store = new_store(data_dir)
    await store.open(NOW)
    await store.close()
    assert temp_files(data_dir) == ["notes.tmp-keep"]


# ---- the real entry point ------------------------------------------------------


def run_app(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "JOBQ_DATA_DIR": str(data_dir),
        "JOBQ_TENANTS_FILE": str(data_dir / "tenants.json"),
        "JOBQ_PORT": "1",  # never reached: the start is refused before listening
        "JOBQ_LOG_LEVEL": "WARNING",
    }
    return subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.usefixtures("keys")  # a tenants file, so the start creates no demo tenant
def test_app_refuses_a_corrupt_data_dir(data_dir: Path) -> None:
    snapshot = data_dir / "jobs.json"
    snapshot.write_bytes(b'{"format":"jobq-store","version":1,"generation":3,"records":[["job:')
    before = file_bytes(data_dir)
    result = run_app(data_dir)
    assert result.returncode != 0
    assert str(snapshot) in result.stderr
    assert "Traceback" not in result.stderr
    assert file_bytes(data_dir) == before


@pytest.mark.usefixtures("keys")
async def test_app_refuses_a_locked_data_dir(data_dir: Path) -> None:
    holder = new_store(data_dir)
    await holder.open(NOW)
    try:
        result = await asyncio.to_thread(run_app, data_dir)
    finally:
        await holder.close()
    assert result.returncode != 0
    assert f"in use by process {os.getpid()}" in result.stderr
    assert "only one jobq process" in result.stderr
    assert "Traceback" not in result.stderr
