"""The file-system operations the JSON store uses, behind one small class.

Every step of a durable write goes through a `FileSystem` method, so tests can
substitute a subclass that fails (ENOSPC, EIO) or crashes the process at any
chosen step. Production uses `FileSystem` itself: thin calls into `os`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from pathlib import Path

_tmp_counter = itertools.count()


class FileSystem:
    def open_append(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def open_new(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    def write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def truncate(self, fd: int, size: int) -> None:
        os.ftruncate(fd, size)

    def close(self, fd: int) -> None:
        os.close(fd)

    def replace(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def read_bytes(self, path: Path) -> bytes:
        return path.read_bytes()


def temp_path_for(path: Path) -> Path:
    """A fresh temp name beside `path`, recognisable by `is_temp_file` at start-up."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{next(_tmp_counter)}")


def is_temp_file(name: str) -> bool:
    return name.startswith(".") and ".tmp-" in name


def atomic_write(fs: FileSystem, path: Path, chunks: Iterable[bytes]) -> None:
    """Replace `path` with `chunks`, all or nothing, durable when this returns.

    Temp file in the same directory, write, fsync, rename over `path`, fsync the
    directory. On any failure the old file is intact and the temp file removed;
    the OSError is raised.
    """
    tmp = temp_path_for(path)
    fd = fs.open_new(tmp)
    try:
        try:
            for chunk in chunks:
                fs.write(fd, chunk)
            fs.fsync(fd)
        finally:
            fs.close(fd)
        fs.replace(tmp, path)
    except BaseException:
        try:
            fs.unlink(tmp)
        except OSError:
            pass
        raise
    fs.fsync_dir(path.parent)
