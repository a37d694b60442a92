"""Fault injection for the JSON store: a `FileSystem` that fails or crashes on command.

    fs = FaultyFS()
    fault = fs.fail("fsync", errno.EIO, path=JOURNAL)         # the next journal fsync fails once
    fs.fail("write", errno.ENOSPC, times=None)                # disk full until `fs.clear()`
    fs.crash("replace", path=SNAPSHOT_TMP, nth=2)             # os._exit before the 2nd snapshot rename

A fault counts the calls of its operation (on a matching path) from the moment
it is added; calls `nth` .. `nth + times - 1` fail (or crash) *before* the
operation happens. `fault.fired` tells a test that the fault was reached.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from jobq.core.fsio import FileSystem

Op = Literal["open_append", "open_new", "write", "fsync", "truncate", "close", "replace", "fsync_dir", "unlink"]

CRASH_EXIT_CODE = 86

# File-name patterns (re.search on the file's name) for the store's files.
JOURNAL = r"^jobs\.journal\.\d+$"
SNAPSHOT_TMP = r"^\.jobs\.json\.tmp-\d+-\d+$"  # the snapshot's temp file, not the readiness probe's
PROBE = r"^\.jobs\.json\.tmp-probe$"


@dataclass
class Fault:
    op: Op
    error: int = errno.ENOSPC
    nth: int = 1
    times: int | None = 1  # None: every call from the nth on, until cleared
    path: str | None = None
    exit_code: int | None = None  # crash with os._exit(exit_code) instead of raising
    torn: bool = False  # a failing or crashing `write` first writes half of its bytes
    seen: int = 0
    fired: int = 0

    def applies(self, op: str, path: Path | None) -> bool:
        if op != self.op:
            return False
        return self.path is None or (path is not None and re.search(self.path, path.name) is not None)

    def trigger(self) -> bool:
        self.seen += 1
        if self.seen < self.nth or (self.times is not None and self.fired >= self.times):
            return False
        self.fired += 1
        return True


class FaultyFS(FileSystem):
    """`FileSystem` with faults on demand; safe to use from the store's threads."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()
        self._paths: dict[int, Path] = {}
        self._lock = threading.Lock()

    def fail(
        self,
        op: Op,
        error: int = errno.ENOSPC,
        *,
        nth: int = 1,
        times: int | None = 1,
        path: str | None = None,
        torn: bool = False,
    ) -> Fault:
        fault = Fault(op, error, nth, times, path, torn=torn)
        with self._lock:
            self.faults.append(fault)
        return fault

    def crash(
        self, op: Op, *, nth: int = 1, path: str | None = None, code: int = CRASH_EXIT_CODE, torn: bool = False
    ) -> Fault:
        fault = Fault(op, nth=nth, path=path, exit_code=code, torn=torn)
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        """The disk is healthy again."""
        with self._lock:
            self.faults.clear()

    def _check(self, op: Op, path: Path | None, fd: int | None = None, data: bytes = b"") -> None:
        with self._lock:
            self.calls[op] += 1
            hit = next((f for f in self.faults if f.applies(op, path) and f.trigger()), None)
        if hit is None:
            return
        if hit.torn and fd is not None and data:
            os.write(fd, data[: max(1, len(data) // 2)])
        if hit.exit_code is not None:
            sys.stdout.flush()
            os._exit(hit.exit_code)
        raise OSError(hit.error, os.strerror(hit.error), str(path) if path is not None else None)

    def _path_of(self, fd: int) -> Path | None:
        with self._lock:
            return self._paths.get(fd)

    def _opened(self, fd: int, path: Path) -> int:
        with self._lock:
            self._paths[fd] = path
        return fd

    def open_append(self, path: Path) -> int:
        self._check("open_append", path)
        return self._opened(super().open_append(path), path)

    def open_new(self, path: Path) -> int:
        self._check("open_new", path)
        return self._opened(super().open_new(path), path)

    def write(self, fd: int, data: bytes) -> None:
        self._check("write", self._path_of(fd), fd, data)
        super().write(fd, data)

    def fsync(self, fd: int) -> None:
        self._check("fsync", self._path_of(fd))
        super().fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        self._check("truncate", self._path_of(fd))
        super().truncate(fd, size)

    def close(self, fd: int) -> None:
        path = self._path_of(fd)
        with self._lock:
            self._paths.pop(fd, None)
        try:
            self._check("close", path)
        except OSError:
            super().close(fd)  # Linux releases the descriptor even when close() reports an error
            raise
        super().close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        self._check("replace", src)
        super().replace(src, dst)

    def fsync_dir(self, path: Path) -> None:
        self._check("fsync_dir", path)
        super().fsync_dir(path)

    def unlink(self, path: Path) -> None:
        self._check("unlink", path)
        super().unlink(path)


class GatedFS(FileSystem):
    """Holds every fsync until the test opens the gate (`gate.set()`), so a
    test can look at a change that is in memory but not yet on disk."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()

    def fsync(self, fd: int) -> None:
        self.gate.wait(timeout=10)
        super().fsync(fd)
