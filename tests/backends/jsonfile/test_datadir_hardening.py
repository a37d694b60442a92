"""The data directory under hostile or broken conditions (issue 8).

- Start refuses, touching nothing, whenever snapshot and journals do not add up.
- The single-process guard is a lock on the directory itself, not on a file.
- Everything jobq writes there is owner-only; broader modes are tightened at start.
  A directory jobq creates is owner-only too; one that was already there (the
  default is the repository root) keeps its mode, with a warning if others may write to it.
- A bug (not an OSError) in the journal thread fails its batch like an I/O error.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from jobq.core.errors import CorruptStore, StoreLocked, StoreUnavailable
from jobq.core.fsio import FileSystem, atomic_write
from jobq.rules.transitions import RetryPolicy
from jobq.storage.jsonfile.files import encode_entry, encode_line, snapshot_chunks
from jobq.storage.jsonfile.journal import DurableLog
from jobq.storage.jsonfile.store import JsonStore
from tests.conftest import ROOT, HarnessFactory
from tests.support.faults import FaultyFS
from tests.support.server_process import Server

NOW = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_umask() -> Iterator[None]:
    """Modes must come from jobq, not from a friendly umask."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


# ---- building data directories by hand ---------------------------------------


def write_snapshot(directory: Path, generation: int, records: dict[str, Any]) -> None:
    entries = [encode_entry(k, v) for k, v in records.items()]
    (directory / "jobs.json").write_bytes(b"".join(snapshot_chunks(generation, entries)))


def write_journal(directory: Path, generation: int, changes: list[dict[str, Any]], name: str | None = None) -> None:
    data = b"".join(encode_line([encode_entry(k, v) for k, v in change.items()]) for change in changes)
    (directory / (name or f"jobs.journal.{generation:08d}")).write_bytes(data)


def state(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and mode, and the directory's own mode."""
    found = {p.name: (p.read_bytes(), stat.S_IMODE(p.stat().st_mode)) for p in sorted(directory.iterdir())}
    found["."] = (b"", stat.S_IMODE(directory.stat().st_mode))
    return found


def journal_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("jobs.journal."))


async def load(directory: Path, **kwargs: Any) -> dict[str, Any]:
    log = DurableLog(directory, **kwargs)
    try:
        return dict(log.load())
    finally:
        await log.close()


SNAP = {"k:a": 1, "k:b": {"n": 2}}
FOLDED: list[dict[str, Any]] = [
    {"k:a": 0},
    {"k:a": 1, "k:b": {"n": 2}},
    {"k:gone": 7},
    {"k:gone": None},
]  # its end state is in SNAP


@dataclass
class Layout:
    snapshot: int | None  # the snapshot's generation, None: no jobs.json
    journals: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    refused: list[str] | None = None  # words the refusal names; None: the start succeeds
    expect: dict[str, Any] | None = None  # the records after a successful load
    names: dict[int, str] = field(default_factory=dict)  # a journal under another file name


LAYOUTS: dict[str, Layout] = {
    "fresh": Layout(None, expect={}),
    "snapshot-only": Layout(3, expect=SNAP),
    "one-live-journal": Layout(3, {4: [{"k:c": 3}]}, expect={**SNAP, "k:c": 3}),
    "compaction-in-flight": Layout(3, {4: [{"k:c": 3}], 5: [{"k:c": None}]}, expect=SNAP),
    "after-failed-compactions": Layout(
        3, {4: [{"k:c": 3}], 5: [{"k:d": 4}], 6: [{"k:c": 5}]}, expect={**SNAP, "k:c": 5, "k:d": 4}
    ),
    "crash-before-unlink": Layout(4, {4: FOLDED, 5: [{"k:c": 3}]}, expect={**SNAP, "k:c": 3}),
    "crash-mid-unlink": Layout(5, {4: FOLDED, 5: [{"k:b": {"n": 2}}], 6: []}, expect=SNAP),
    "crash-in-start-fold": Layout(4, {4: FOLDED}, expect=SNAP),
    "journal-without-snapshot": Layout(None, {1: [{"k:a": 1}]}, refused=["jobs.journal.00000001", "jobs.json"]),
    "gap-after-snapshot": Layout(3, {5: [{"k:c": 3}]}, refused=["jobs.journal.00000005", "generation 3"]),
    "gap-between-journals": Layout(3, {4: [{"k:c": 3}], 6: [{"k:c": 4}]}, refused=["jobs.journal.00000006"]),
    "snapshot-ahead": Layout(6, {4: FOLDED, 5: [{"k:c": 3}]}, refused=["jobs.journal.00000005", "generation 6"]),
    "stray-old-journal": Layout(4, {2: FOLDED, 4: FOLDED, 5: []}, refused=["jobs.journal.00000002"]),
    "folded-journal-not-in-snapshot": Layout(
        4, {4: [*FOLDED, {"k:new": 1}], 5: []}, refused=["jobs.journal.00000004", "not"]
    ),
    "folded-journal-deletes-what-snapshot-has": Layout(
        4, {4: [{"k:a": None}], 5: []}, refused=["jobs.journal.00000004"]
    ),
    "odd-journal-name": Layout(3, {4: [{"k:c": 3}]}, names={4: "jobs.journal.4"}, refused=["jobs.journal.4"]),
}


def build(directory: Path, layout: Layout) -> None:
    if layout.snapshot is not None:
        write_snapshot(directory, layout.snapshot, SNAP)
    for generation, changes in layout.journals.items():
        write_journal(directory, generation, changes, layout.names.get(generation))


@pytest.mark.parametrize("layout", list(LAYOUTS.values()), ids=list(LAYOUTS))
async def test_start_accepts_exactly_the_layouts_a_crash_can_leave(tmp_path: Path, layout: Layout) -> None:
    directory = tmp_path / "data"
    directory.mkdir(mode=0o755)
    build(directory, layout)
    before = state(directory)
    if layout.refused is not None:
        with pytest.raises(CorruptStore) as info:
            await load(directory)
        message = str(info.value)
        for word in layout.refused:
            assert word in message
        assert "the files were left untouched" in message
        assert "\n" not in message
        assert state(directory) == before
        return
    assert await load(directory) == layout.expect
    # Everything was folded into one snapshot; one fresh, empty journal follows it.
    generation = orjson.loads((directory / "jobs.json").read_bytes())["generation"]
    assert journal_names(directory) == [f"jobs.journal.{generation + 1:08d}"]
    assert await load(directory) == layout.expect


async def test_a_damaged_already_folded_journal_is_refused_not_deleted(tmp_path: Path) -> None:
    write_snapshot(tmp_path, 4, SNAP)
    write_journal(tmp_path, 4, FOLDED)
    path = tmp_path / "jobs.journal.00000004"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(lines[0] + b"00000000 [garbage]\n" + b"".join(lines[1:]))
    write_journal(tmp_path, 5, [])
    before = state(tmp_path)
    with pytest.raises(CorruptStore, match=r"jobs\.journal\.00000004 line 2"):
        await load(tmp_path)
    assert state(tmp_path) == before


def test_doctor_reports_the_same_problems(tmp_path: Path) -> None:
    build(tmp_path, LAYOUTS["gap-after-snapshot"])
    before = state(tmp_path)
    result = run_app(tmp_path, "doctor")
    assert result.returncode == 1
    assert "FAIL" in result.stdout and "jobs.journal.00000005" in result.stdout
    assert f"warn {tmp_path / 'jobs.json'} has mode 0666" in result.stdout  # written under umask 0
    assert state(tmp_path) == before
    tmp_path.chmod(0o757)  # the directory's mode is the operator's: said, never promised to change
    widened = run_app(tmp_path, "doctor")
    assert f"warn {tmp_path} has mode 0757: others may rename or delete its files" in widened.stdout
    assert f"warn {tmp_path} has mode 0757; the next start" not in widened.stdout


def run_app(data_dir: Path, *args: str, tenants: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "JOBQ_DATA_DIR": str(data_dir),
        "JOBQ_TENANTS_FILE": str(tenants or data_dir.parent / "tenants.json"),
        "JOBQ_PORT": "1",  # never reached: the start is refused before listening
        "JOBQ_LOG_LEVEL": "WARNING",
    }
    return subprocess.run(
        [sys.executable, "app.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.slow
def test_app_refuses_a_journal_without_its_snapshot(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    build(data_dir, LAYOUTS["journal-without-snapshot"])
    (tmp_path / "tenants.json").write_bytes(b'{"tenants": {}}')
    before = state(data_dir)
    result = run_app(data_dir)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("jobq: ") and "jobs.journal.00000001" in line and "jobs.json" in line
    assert state(data_dir) == before


def test_a_refused_first_start_creates_no_demo_tenant(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    build(data_dir, LAYOUTS["journal-without-snapshot"])
    tenants = data_dir / "tenants.json"
    before = state(data_dir)
    result = run_app(data_dir, tenants=tenants)
    assert result.returncode == 2, result.stderr
    assert not tenants.exists()
    assert state(data_dir) == before


# ---- the single-process guard --------------------------------------------------


async def test_deleting_every_file_does_not_let_a_second_process_in(tmp_path: Path) -> None:
    first = DurableLog(tmp_path)
    first.load()
    try:
        for name in os.listdir(tmp_path):
            if not name.startswith("jobs.j"):  # the lock or pid file, whatever it is called
                os.unlink(tmp_path / name)
        assert first.held_by_other_process()
        second = DurableLog(tmp_path)
        with pytest.raises(StoreLocked, match="only one jobq process"):
            second.load()
        await second.close()
    finally:
        await first.close()
    assert not DurableLog(tmp_path).held_by_other_process()
    await load(tmp_path)


@pytest.mark.slow
async def test_a_running_process_keeps_the_directory_after_its_lock_file_is_deleted(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    data_dir = tmp_path / "data"
    tenants = tmp_path / "tenants.json"
    tenants.write_bytes(b'{"tenants": {}}')
    server = Server(tmp_path, data_dir, tenants)
    await server.start(session)
    try:
        for path in data_dir.iterdir():
            if not path.name.startswith("jobs.j") and path.name != "session.key":
                path.unlink()
        store = JsonStore(data_dir, retry=RetryPolicy())
        with pytest.raises(StoreLocked):
            await store.open(NOW)
        await store.close()
    finally:
        assert server.stop() == 0


# ---- owner-only files ------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class ModeSpy(FileSystem):
    """Records the mode every file jobq creates has right after it is opened."""

    def __init__(self) -> None:
        self.created: dict[str, int] = {}

    def _seen(self, fd: int, path: Path) -> int:
        self.created[path.name] = stat.S_IMODE(os.fstat(fd).st_mode)
        return fd

    def open_new(self, path: Path) -> int:
        return self._seen(super().open_new(path), path)

    def open_append(self, path: Path) -> int:
        return self._seen(super().open_append(path), path)


async def test_every_file_jobq_writes_is_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    spy = ModeSpy()
    log = DurableLog(directory, fs=spy, compact_bytes=200)
    log.load()
    try:
        assert mode(directory) == 0o700
        assert {p.name: mode(p) for p in directory.iterdir()} == dict.fromkeys(os.listdir(directory), 0o600)
        for n in range(5):  # past compact_bytes: a snapshot is written in the background
            await log.commit({f"k:{n}": "x" * 100}, lambda: None)
        if log._compacting is not None:
            await log._compacting
        assert orjson.loads((directory / "jobs.json").read_bytes())["generation"] >= 1
        assert {p.name: mode(p) for p in directory.iterdir()} == dict.fromkeys(os.listdir(directory), 0o600)
        assert await log.probe_writable()
    finally:
        await log.close()
    temps = {name: m for name, m in spy.created.items() if ".tmp-" in name}
    assert temps and set(temps.values()) == {0o600}, spy.created
    assert set(spy.created.values()) == {0o600}

    spy.created.clear()
    atomic_write(spy, tmp_path / "other.json", [b"{}"])
    assert set(spy.created.values()) == {0o600}
    assert mode(tmp_path / "other.json") == 0o600


async def test_broader_modes_are_tightened_at_start_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    write_snapshot(directory, 3, SNAP)
    write_journal(directory, 4, [{"k:c": 3}])
    (directory / "notes.txt").write_bytes(b"not ours")
    for path in directory.iterdir():
        path.chmod(0o644)
    directory.chmod(0o755)
    caplog.set_level(logging.WARNING)
    await load(directory)
    assert mode(directory) == 0o755  # not created by jobq: the operator's (e.g. the repository root)
    assert mode(directory / "jobs.json") == 0o600
    assert mode(directory / "notes.txt") == 0o644  # not jobq's: left alone
    messages = [r.getMessage() for r in caplog.records]
    lines = [line for line in messages if "action=tightened_mode" in line]
    assert not any(f"path={directory} " in line for line in lines), lines
    assert not any("action=data_dir_writable_by_others" in line for line in messages), messages  # 0755: listable only
    assert any(f"path={directory / 'jobs.json'} " in line and "mode=0644" in line for line in lines), lines
    assert any("jobs.journal.00000004" in line for line in lines), lines


@pytest.mark.parametrize("dir_mode", [0o775, 0o757, 0o1777])
async def test_an_existing_directory_others_may_write_to_is_kept_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, dir_mode: int
) -> None:
    directory = tmp_path / "data"
    directory.mkdir()
    directory.chmod(dir_mode)
    caplog.set_level(logging.WARNING)
    await load(directory)
    assert mode(directory) == dir_mode
    assert {p.name: mode(p) for p in directory.iterdir()} == dict.fromkeys(os.listdir(directory), 0o600)
    lines = [r.getMessage() for r in caplog.records if "action=data_dir_writable_by_others" in r.getMessage()]
    assert lines == [f"action=data_dir_writable_by_others path={directory} mode={dir_mode:04o}"], lines


async def test_a_directory_jobq_creates_is_owner_only_whatever_the_umask_allows(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "data"  # umask 0 here (no_umask): modes come from jobq alone
    await load(directory)
    assert mode(directory) == 0o700


# ---- a bug in the journal thread -------------------------------------------------


class BuggyFS(FaultyFS):
    """The next journal write raises a RuntimeError (a bug, not an I/O error)."""

    armed = False

    def write(self, fd: int, data: bytes) -> None:
        path = self._path_of(fd)
        if self.armed and path is not None and path.name.startswith("jobs.journal."):
            self.armed = False
            raise RuntimeError("a bug in the writer")
        super().write(fd, data)


async def test_a_bug_in_the_journal_thread_fails_the_batch_with_503_and_the_writer_goes_on(
    make_harness: HarnessFactory,
) -> None:
    fs = BuggyFS()
    h = await make_harness(fs=fs)
    fs.armed = True
    response = await asyncio.wait_for(
        h.client.post("/jobs", json={"type": "echo", "payload": {}}, headers=h.headers()), 5
    )
    body = await response.json(content_type=None)
    assert response.status == 503, body
    assert response.headers["Content-Type"] == "application/problem+json"
    assert body["type"].endswith("/store-unavailable")
    assert "Traceback" not in str(body)
    listed = await h.client.get("/jobs", headers=h.headers())
    assert (await listed.json())["jobs"] == []

    ok = await asyncio.wait_for(h.client.post("/jobs", json={"type": "echo", "payload": {}}, headers=h.headers()), 5)
    assert ok.status == 201
    job_id = (await ok.json())["jobId"]
    await h.client.close()
    h = await make_harness()
    listed = await h.client.get("/jobs", headers=h.headers())
    assert [job["jobId"] for job in (await listed.json())["jobs"]] == [job_id]


async def test_a_bug_fails_every_queued_commit_and_none_waits_for_ever(tmp_path: Path) -> None:
    fs = BuggyFS()
    log = DurableLog(tmp_path, fs=fs)
    log.load()
    undone: list[int] = []
    try:
        fs.armed = True
        futures = [log.commit({f"k:{n}": n}, functools.partial(undone.append, n)) for n in range(5)]
        results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 5)
        # The first batch held only the first commit; the rest were queued behind it and fail with it.
        assert all(isinstance(r, StoreUnavailable) and r.status == 503 for r in results), results
        assert sorted(undone) == list(range(5))
        await asyncio.wait_for(log.commit({"k:after": 1}, lambda: None), 5)
    finally:
        await log.close()
    assert await load(tmp_path) == {"k:after": 1}


class BuggyRotationFS(FileSystem):
    """The next journal opened (a rotation) raises a RuntimeError."""

    armed = False

    def open_append(self, path: Path) -> int:
        if self.armed:
            self.armed = False
            raise RuntimeError("a bug in the rotation")
        return super().open_append(path)


async def test_a_bug_in_a_journal_rotation_does_not_stop_the_writer(tmp_path: Path) -> None:
    fs = BuggyRotationFS()
    log = DurableLog(tmp_path, fs=fs, compact_bytes=100)
    log.load()
    try:
        fs.armed = True
        # The first commit passes the threshold and its rotation fails; those
        # queued behind it meanwhile must still be written, and later ones too.
        queued = [log.commit({f"k:{n}": "x" * 100}, lambda: None) for n in range(4)]
        await asyncio.wait_for(asyncio.gather(*queued), 5)
        for n in range(4, 6):
            await asyncio.wait_for(log.commit({f"k:{n}": "x" * 100}, lambda: None), 5)
        if log._compacting is not None:
            await log._compacting
    finally:
        await log.close()
    assert await load(tmp_path) == {f"k:{n}": "x" * 100 for n in range(6)}
