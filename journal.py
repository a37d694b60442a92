"""Durable key-value records for the JSON store: `jobs.json` plus a journal.

`jobs.json` is the snapshot, always replaced atomically (fsio.atomic_write).
Between snapshots every commit is appended to a journal file
(`jobs.journal.<generation>`) and fsynced; concurrent commits are grouped into
one write and one fsync (group commit). When a journal grows past a threshold
it is folded into a fresh `jobs.json` in the background and deleted.

A journal line is `<crc32 hex> <json>\n`, the json a list of `[key, value]`
pairs (`value` null deletes the key). One line holds one whole operation, so an
operation is on disk entirely or not at all. A torn last line (a crash during
the append) is ignored: it was never acknowledged. Any other unreadable line or
snapshot stops the start with `CorruptStore` naming the file; nothing is
rewritten until everything has been read.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from errors import StoreLocked, StoreUnavailable
from fsio import FileSystem, atomic_write, is_temp_file
from storefiles import (
    JOURNAL_PREFIX,
    LOCK_NAME,
    SNAPSHOT_NAME,
    encode_entry,
    encode_line,
    journal_generations,
    read_snapshot,
    replay,
    snapshot_chunks,
)

logger = logging.getLogger(__name__)


Changes = dict[str, Any]  # key -> JSON value, or None to delete
Undo = Callable[[], None]


@dataclass
class _Pending:
    entries: list[tuple[str, bytes, bool]]  # key, encoded [key, value], is a deletion
    undo: Undo
    future: asyncio.Future[None]


class DurableLog:
    """Owns the data directory's files. `load()` first, then `start()`, then
    `commit()` from the event loop, `close()` at the end."""

    def __init__(self, directory: Path, fs: FileSystem | None = None, compact_bytes: int = 64 << 20):
        self.directory = directory
        self.fs = fs or FileSystem()
        self.compact_bytes = compact_bytes
        self._lock_fd: int | None = None
        self._committed: dict[str, bytes] = {}
        self._generation = 0
        self._journal_fd: int | None = None
        self._journal_size = 0
        self._dirty = False  # the journal may hold bytes of a failed commit
        self._pending: list[_Pending] = []
        self._writing: asyncio.Future[None] | None = None  # the write in the journal thread
        self._idle: asyncio.Future[None] | None = None  # close() waits on it
        self._compacting: asyncio.Future[None] | None = None
        self._io = ThreadPoolExecutor(1, thread_name_prefix="jobq-journal")
        self._bg = ThreadPoolExecutor(1, thread_name_prefix="jobq-snapshot")
        self._closing = False
        self.healthy = True
        self.commits = 0
        self.fsyncs = 0

    @property
    def snapshot_path(self) -> Path:
        return self.directory / SNAPSHOT_NAME

    def _journal_path(self, generation: int) -> Path:
        return self.directory / f"{JOURNAL_PREFIX}{generation:08d}"

    # ---- start-up -------------------------------------------------------

    def load(self, check: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Lock the directory, read snapshot and journals, return every record.

        Raises `StoreLocked` if another process holds the directory and
        `CorruptStore` if a file cannot be read, or from `check(records)`.
        Writes nothing before all files have been read and checked; then folds
        the journals into a fresh snapshot."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._remove_temp_files()
        records, snapshot_generation, journals = self.read_all()
        if check is not None:
            check(records)
        self._committed = {k: encode_entry(k, v) for k, v in records.items()}
        self._generation = max([snapshot_generation, *journals]) + 1
        atomic_write(self.fs, self.snapshot_path, snapshot_chunks(self._generation - 1, list(self._committed.values())))
        for generation in journals:
            self.fs.unlink(self._journal_path(generation))
        self._open_journal()
        return records

    def read_all(self) -> tuple[dict[str, Any], int, list[int]]:
        """Every record on disk, the snapshot's generation and the journal
        generations found; reads only. Raises `CorruptStore`."""
        records, snapshot_generation = read_snapshot(self.fs, self.snapshot_path)
        journals = journal_generations(self.directory)
        for generation in journals:
            if generation > snapshot_generation:
                replay(self.fs, self._journal_path(generation), records)
        return records, snapshot_generation, journals

    def held_by_other_process(self) -> bool:
        """Is the directory locked by a running jobq? (For `doctor`; takes no lock.)"""
        path = self.directory / LOCK_NAME
        if not path.exists():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def _lock(self) -> None:
        fd = os.open(self.directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StoreLocked(
                f"{self.directory} is in use by process {holder}; only one jobq process may use a data directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _remove_temp_files(self) -> None:
        for entry in os.scandir(self.directory):
            if is_temp_file(entry.name) and entry.name.startswith(f".{SNAPSHOT_NAME}"):
                logger.info("action=remove_temp_file path=%s", entry.path)
                os.unlink(entry.path)

    def _open_journal(self) -> None:
        path = self._journal_path(self._generation)
        fd = self.fs.open_append(path)
        try:
            size = os.fstat(fd).st_size
            self.fs.fsync_dir(self.directory)
        except OSError:
            self.fs.close(fd)  # keep appending to the current journal
            raise
        self._journal_fd, self._journal_size = fd, size

    # ---- commits --------------------------------------------------------

    def commit(self, changes: Changes, undo: Undo) -> asyncio.Future[None]:
        """Queue one atomic change; the future resolves once it is on disk.

        If the write fails, `undo` of this and of every later queued change is
        called (newest first, synchronously, before any other code runs) and
        their futures fail with `StoreUnavailable`."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._closing:
            undo()
            raise StoreUnavailable("the store is closing", retry_after=5)
        entries = [(k, encode_entry(k, v), v is None) for k, v in changes.items()]
        self._pending.append(_Pending(entries, undo, future))
        if self._writing is None:
            self._write_pending()
        return future

    def _write_pending(self) -> None:
        """Hand every queued change to the journal thread as one write and one
        fsync; changes queued meanwhile wait for the next (group commit)."""
        batch, self._pending = self._pending, []
        data = b"".join(encode_line([entry for _, entry, _ in p.entries]) for p in batch)
        self._writing = asyncio.get_running_loop().run_in_executor(self._io, self._append, data)
        self._writing.add_done_callback(lambda written: self._written(written, batch))

    def _written(self, written: asyncio.Future[None], batch: list[_Pending]) -> None:
        self._writing = None
        error = written.exception()
        if isinstance(error, OSError):
            self._fail([*batch, *self._pending], error)
            self._pending = []
        elif error is not None:
            raise error
        else:
            for pending in batch:
                for key, entry, deleted in pending.entries:
                    if deleted:
                        self._committed.pop(key, None)
                    else:
                        self._committed[key] = entry
                if not pending.future.done():
                    pending.future.set_result(None)
            self.commits += len(batch)
            if self._journal_size >= self.compact_bytes and self._compacting is None:
                self._start_compaction()
        if self._pending:
            self._write_pending()
        elif self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    def _append(self, data: bytes) -> None:
        """Runs in the journal thread: make `data` durable at the journal's end."""
        assert self._journal_fd is not None
        if self._dirty:
            self._truncate_back()
        self._dirty = True
        try:
            self.fs.write(self._journal_fd, data)
            self.fs.fsync(self._journal_fd)
        except OSError:
            # Cut the failed bytes off now: a complete line of a refused commit
            # must not be replayed after a crash or a restart.
            try:
                self._truncate_back()
            except OSError:
                pass  # still dirty: tried again before the next append and at close
            raise
        self.fsyncs += 1
        self._dirty = False
        self._journal_size += len(data)
        self.healthy = True

    def _truncate_back(self) -> None:
        """Remove whatever a failed append left after the last durable commit."""
        assert self._journal_fd is not None
        self.fs.truncate(self._journal_fd, self._journal_size)
        self.fs.fsync(self._journal_fd)
        self._dirty = False

    def _fail(self, failed: list[_Pending], exc: OSError) -> None:
        self.healthy = False
        logger.error("action=commit_failed changes=%d error=%s", len(failed), exc)
        for pending in reversed(failed):
            pending.undo()
        for pending in failed:
            if not pending.future.done():
                error = StoreUnavailable(f"could not write the journal: {os.strerror(exc.errno or 5)}", retry_after=5)
                error.__cause__ = exc
                pending.future.set_exception(error)

    async def probe_writable(self) -> bool:
        """Can a file be created, written and fsynced in the data directory now?"""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._bg, self._probe)
        except OSError as exc:
            logger.warning("action=probe_failed error=%s", exc)
            return False
        self.healthy = True
        return True

    def _probe(self) -> None:
        path = self.directory / ".jobs.json.tmp-probe"
        fd = self.fs.open_new(path)
        try:
            self.fs.write(fd, b"probe")
            self.fs.fsync(fd)
        finally:
            self.fs.close(fd)
            self.fs.unlink(path)

    # ---- snapshots ------------------------------------------------------

    def _start_compaction(self) -> None:
        """Fold everything committed so far into a new snapshot, in the background.
        New commits go to a fresh journal meanwhile."""
        entries = list(self._committed.values())
        covered = self._generation
        old_fd = self._journal_fd
        self._generation += 1
        try:
            self._open_journal()
        except OSError as exc:
            logger.error("action=journal_rotate_failed error=%s", exc)
            self._generation -= 1
            return
        if old_fd is not None:
            try:
                self.fs.close(old_fd)
            except OSError as exc:  # its commits were fsynced; the writer must go on
                logger.warning("action=journal_close_failed error=%s", exc)
        loop = asyncio.get_running_loop()
        self._compacting = loop.run_in_executor(self._bg, self._write_snapshot, covered, entries)
        self._compacting.add_done_callback(self._compaction_done)

    def _write_snapshot(self, covered: int, entries: list[bytes]) -> None:
        atomic_write(self.fs, self.snapshot_path, snapshot_chunks(covered, entries))
        for generation in journal_generations(self.directory):
            if generation <= covered:
                self.fs.unlink(self._journal_path(generation))

    def _compaction_done(self, future: asyncio.Future[None]) -> None:
        self._compacting = None
        if future.exception() is not None:
            logger.error("action=snapshot_failed error=%s", future.exception())

    async def close(self) -> None:
        """Write what is queued, wait for a running snapshot, release the lock."""
        self._closing = True
        if self._writing is not None:
            self._idle = asyncio.get_running_loop().create_future()
            await self._idle
        if self._compacting is not None:
            try:
                await self._compacting
            except OSError:
                pass
        try:
            if self._journal_fd is not None:
                if self._dirty:
                    try:
                        self._truncate_back()
                    except OSError as exc:
                        logger.error("action=journal_truncate_failed error=%s", exc)
                fd, self._journal_fd = self._journal_fd, None
                self.fs.close(fd)
        finally:
            self._io.shutdown(wait=True)
            self._bg.shutdown(wait=True)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
