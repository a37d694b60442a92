"""The file-system operations the JSON store uses, behind one small class.

Every step of a durable write goes through a `FileSystem` method, so tests can
substitute a subclass that fails (ENOSPC, EIO) or crashes the process at any
chosen step. Production uses `FileSystem` itself: thin calls into `os`.
"""

from __future__ import annotations

import itertools
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

_tmp_counter = itertools.count()

# Everything jobq writes is its owner's only: job payloads, results, key
# hashes and secrets are nobody else's business on a shared machine.
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


class FileSystem:
    def open_append(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE)

    def open_new(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)

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


def tighten(path: Path) -> None:
    """Take every group and other permission off the regular file `path`
    (0644 becomes 0600), with a warning; symlinks and other kinds of file are
    left alone.

    A directory is never changed: jobq creates the directories it makes
    owner-only (`PRIVATE_DIR`), but one that was already there (the default
    data directory is the repository root) is the operator's, and its mode
    is their choice. Its files are owner-only whatever it allows, so a
    directory others may list shows them file names, nothing more; one that
    others may write to (and so rename or delete jobq's files in) gets a
    warning."""
    info = os.lstat(path)
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISDIR(info.st_mode):
        if mode & 0o022:
            logger.warning("action=data_dir_writable_by_others path=%s mode=%04o", path, mode)
        return
    if not info.st_mode & 0o077 or not stat.S_ISREG(info.st_mode):
        return
    os.chmod(path, mode & 0o700)
    logger.warning("action=tightened_mode path=%s mode=%04o", path, mode)


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
