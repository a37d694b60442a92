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
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobq.core.errors import StoreUnavailable
from jobq.core.fsio import PRIVATE_DIR, FileSystem, atomic_write, is_temp_file, tighten
from jobq.storage.jsonfile import dirlock
from jobq.storage.jsonfile.files import (
    SNAPSHOT_NAME,
    Records,
    check_folded,
    check_generations,
    encode_entry,
    encode_line,
    is_own_file,
    journal_generations,
    journal_name,
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
        self._writing = False  # a write is in the journal thread
        self._idle: asyncio.Future[None] | None = None  # close() waits on it
        self._compacting: asyncio.Future[None] | None = None
        # The journal thread, started with the first write: a queue and a
        # thread of its own rather than an executor (no executor future, no
        # chained asyncio future per write; the answer is one call_soon_threadsafe).
        self._writes: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, bytes] | None] = queue.SimpleQueue()
        self._in_flight: list[_Pending] = []  # the changes of the write in the journal thread
        self._writer: threading.Thread | None = None
        self._bg = ThreadPoolExecutor(1, thread_name_prefix="jobq-snapshot")
        self._closing = False
        self.healthy = True
        self.commits = 0
        self.fsyncs = 0

    @property
    def snapshot_path(self) -> Path:
        return self.directory / SNAPSHOT_NAME

    def _journal_path(self, generation: int) -> Path:
        return self.directory / journal_name(generation)

    # ---- start-up -------------------------------------------------------

    def load(self, check: Callable[[Records], None] | None = None) -> Records:
        """Lock the directory, read snapshot and journals, return every record.

        Raises `StoreLocked` if another process holds the directory and
        `CorruptStore` if a file cannot be read, the files do not add up
        (`storefiles.check_generations`), or from `check(records)`. Until all
        of that has passed nothing in the directory is touched; then modes are
        tightened to owner-only and the journals folded into a fresh snapshot."""
        self.directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        self._lock_fd = dirlock.lock(self.directory)
        records, snapshot_generation, journals = self.read_all()
        if check is not None:
            check(records)
        self._tighten_modes()
        dirlock.write_pid(self.directory)
        self._remove_temp_files()
        self._committed = dict(records.entries())  # the entries as read: nothing decoded or encoded again
        self._generation = max([snapshot_generation or 0, *journals]) + 1
        atomic_write(self.fs, self.snapshot_path, snapshot_chunks(self._generation - 1, list(self._committed.values())))
        for generation in journals:
            self.fs.unlink(self._journal_path(generation))
        self._open_journal()
        return records

    def read_all(self) -> tuple[Records, int | None, list[int]]:
        """Every record on disk, the snapshot's generation (None: no snapshot)
        and the journal generations found; reads only. Journals a crash left
        behind after they were folded are read and checked against the
        snapshot too. Raises `CorruptStore`."""
        records, snapshot_generation = read_snapshot(self.fs, self.snapshot_path)
        journals = journal_generations(self.directory)
        folded, live = check_generations(self.directory, snapshot_generation, journals)
        if folded:
            assert snapshot_generation is not None
            check_folded(self.fs, self.directory, snapshot_generation, folded, records)
        for generation in live:
            replay(self.fs, self._journal_path(generation), records)
        return records, snapshot_generation, journals

    def held_by_other_process(self) -> bool:
        """Is the directory locked by a running jobq? (For `doctor`; takes no lock.)"""
        return dirlock.held_by_other_process(self.directory)

    def _tighten_modes(self) -> None:
        tighten(self.directory)
        for entry in os.scandir(self.directory):
            if is_own_file(entry.name):
                tighten(Path(entry.path))

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
        except BaseException:
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
        if not self._writing:
            self._write_pending()
        return future

    def _write_pending(self) -> None:
        """Hand every queued change to the journal thread as one write and one
        fsync; changes queued meanwhile wait for the next (group commit)."""
        batch, self._pending = self._pending, []
        data = b"".join(encode_line([entry for _, entry, _ in p.entries]) for p in batch)
        self._writing = True
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_forever, name="jobq-journal", daemon=True)
            self._writer.start()
        self._in_flight = batch
        self._writes.put((asyncio.get_running_loop(), data))

    def _write_forever(self) -> None:
        """The journal thread: append and fsync each write handed to it, and
        answer on the event loop that handed it (`_written`). It never holds
        the batch (its transactions are freed as soon as the loop is done)."""
        while True:
            item = self._writes.get()
            if item is None:
                return
            loop, data = item
            error: BaseException | None = None
            try:
                self._append(data)
            except BaseException as exc:  # answered on the loop, like an OSError: nobody may wait for ever
                error = exc
            try:
                loop.call_soon_threadsafe(self._written, error)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                return

    def _written(self, error: BaseException | None) -> None:
        batch, self._in_flight = self._in_flight, []
        self._writing = False
        if error is not None:
            # An OSError is the disk's; anything else a bug in the writer. Either
            # way the batch (and all queued behind it) is undone and refused:
            # nobody may wait for ever, and the writer goes on with the next commit.
            self._fail([*batch, *self._pending], error)
            self._pending = []
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
        except Exception:
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

    def _fail(self, failed: list[_Pending], exc: BaseException) -> None:
        self.healthy = False
        if isinstance(exc, OSError):
            logger.error("action=commit_failed changes=%d error=%s", len(failed), exc)
            reason = os.strerror(exc.errno or 5)
        else:
            logger.error("action=commit_failed changes=%d error=%r", len(failed), exc, exc_info=exc)
            reason = "internal error in the journal writer"
        for pending in reversed(failed):
            try:
                pending.undo()
            except Exception:  # the others must still be undone and answered
                logger.exception("action=undo_failed")
        for pending in failed:
            if not pending.future.done():
                error = StoreUnavailable(f"could not write the journal: {reason}", retry_after=5)
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
        except Exception as exc:  # an OSError, or a bug: either way the writer must go on
            logger.error("action=journal_rotate_failed error=%r", exc)
            self._generation -= 1
            return
        if old_fd is not None:
            try:
                self.fs.close(old_fd)
            except Exception as exc:  # its commits were fsynced; the writer must go on
                logger.warning("action=journal_close_failed error=%s", exc)
        loop = asyncio.get_running_loop()
        self._compacting = loop.run_in_executor(self._bg, self._write_snapshot, covered, entries)
        self._compacting.add_done_callback(self._compaction_done)

    def _write_snapshot(self, covered: int, entries: list[bytes]) -> None:
        atomic_write(self.fs, self.snapshot_path, snapshot_chunks(covered, entries))
        for generation in journal_generations(self.directory, strict=False):
            if generation <= covered:
                self.fs.unlink(self._journal_path(generation))

    def _compaction_done(self, future: asyncio.Future[None]) -> None:
        self._compacting = None
        if future.exception() is not None:
            logger.error("action=snapshot_failed error=%s", future.exception())

    async def close(self) -> None:
        """Write what is queued, wait for a running snapshot, release the lock."""
        self._closing = True
        if self._writing:
            self._idle = asyncio.get_running_loop().create_future()
            await self._idle
        if self._compacting is not None:
            try:
                await self._compacting
            except Exception:  # logged by _compaction_done; the journals still hold every commit
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
            if self._writer is not None:
                self._writes.put(None)
                self._writer.join()
                self._writer = None
            self._bg.shutdown(wait=True)
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
