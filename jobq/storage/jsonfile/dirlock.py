"""One jobq process per data directory: an `flock` on the directory itself
(no file in it that someone could delete, and so let a second process in,
is part of the lock), and the holder's pid beside it for the refusal's message."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from jobq.core.errors import StoreLocked
from jobq.core.fsio import PRIVATE_FILE
from jobq.storage.jsonfile.files import PID_NAME


def lock(directory: Path) -> int:
    """Take the directory's lock; its file descriptor, held until the process ends
    or closes it. Raises `StoreLocked` naming the holder."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        try:
            holder = (directory / PID_NAME).read_text(errors="replace").strip()[:20]
        except OSError:
            holder = ""
        raise StoreLocked(
            f"{directory} is in use by process {holder or '(unknown)'}; only one jobq process may use a data directory"
        ) from None
    return fd


def held_by_other_process(directory: Path) -> bool:
    """Is the directory locked by a running jobq? Takes no lock."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def write_pid(directory: Path) -> None:
    """Who holds the directory, for a second process's message only."""
    fd = os.open(directory / PID_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    try:
        os.write(fd, str(os.getpid()).encode())
    finally:
        os.close(fd)
