"""The JSON store's files on disk, and reading them (SPEC §10).

`jobs.json` is the snapshot: `{"format":"jobq-store","version":1,
"generation":G,"records":[[key, value], ...]}`, one record a line. A journal
`jobs.journal.<N>` holds what changed after the snapshot of generation N-1:
one line per operation, `<crc32 hex> <json>\n`, the json a list of
`[key, value]` pairs (`value` null deletes the key).
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from errors import CorruptStore
from fsio import FileSystem

logger = logging.getLogger(__name__)

SNAPSHOT_NAME = "jobs.json"
LOCK_NAME = "jobs.lock"
JOURNAL_PREFIX = "jobs.journal."
FORMAT = "jobq-store"
VERSION = 1


def encode_entry(key: str, value: Any) -> bytes:
    # orjson hands back bytes in a buffer of 4 KiB or more; entries are kept for
    # the next snapshot, so keep an exact-size copy (10x less memory per job).
    return bytes(memoryview(orjson.dumps([key, value])))


def encode_line(entries: list[bytes]) -> bytes:
    body = b"[" + b",".join(entries) + b"]"
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode_line(line: bytes) -> list[list[Any]] | None:
    """The pairs of one journal line, or None when the line is damaged."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        pairs = orjson.loads(body)
    except ValueError:
        return None
    return pairs if isinstance(pairs, list) else None


def snapshot_chunks(generation: int, entries: list[bytes]) -> Iterator[bytes]:
    """The bytes of a snapshot holding `entries` (encoded records), one a line."""
    yield b'{"format":"%s","version":%d,"generation":%d,"records":[\n' % (FORMAT.encode(), VERSION, generation)
    for start in range(0, len(entries), 2000):
        if start:
            yield b",\n"
        yield b",\n".join(entries[start : start + 2000])
    yield b"\n]}\n"


def read_snapshot(fs: FileSystem, path: Path) -> tuple[dict[str, Any], int]:
    """Every record of the snapshot at `path` and its generation ({}, 0 when
    there is none); `CorruptStore` naming the file when it cannot be read."""
    if not path.exists():
        return {}, 0
    try:
        doc = orjson.loads(fs.read_bytes(path))
    except (OSError, ValueError) as exc:
        raise CorruptStore(f"{path} cannot be read ({exc}); it was left untouched") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CorruptStore(f"{path} is not a jobq store file; it was left untouched")
    if doc.get("version") != VERSION:
        raise CorruptStore(
            f"{path} has version {doc.get('version')!r}, this jobq reads version {VERSION}; it was left untouched"
        )
    generation, pairs = doc.get("generation"), doc.get("records")
    if not isinstance(generation, int) or not isinstance(pairs, list):
        raise CorruptStore(f"{path} is damaged (no generation or records); it was left untouched")
    records: dict[str, Any] = {}
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            raise CorruptStore(f"{path} holds a damaged record; it was left untouched")
        records[pair[0]] = pair[1]
    return records, generation


def journal_generations(directory: Path) -> list[int]:
    """The generations of the journal files in `directory`, oldest first."""
    found = []
    for name in os.listdir(directory):
        if name.startswith(JOURNAL_PREFIX) and name[len(JOURNAL_PREFIX) :].isdigit():
            found.append(int(name[len(JOURNAL_PREFIX) :]))
    return sorted(found)


def replay(fs: FileSystem, path: Path, records: dict[str, Any]) -> None:
    """Apply the journal at `path` to `records`. A damaged last line is a torn
    write that was never acknowledged and is ignored; any other is `CorruptStore`."""
    lines = fs.read_bytes(path).split(b"\n")
    # split leaves a final element: b"" after a complete last line, or a torn tail.
    complete, tail = lines[:-1], lines[-1]
    if tail:
        logger.warning("action=ignore_torn_tail path=%s bytes=%d", path, len(tail))
    for number, line in enumerate(complete, start=1):
        pairs = decode_line(line)
        if pairs is None:
            if number == len(complete) and not tail:
                logger.warning("action=ignore_torn_tail path=%s line=%d", path, number)
                break
            raise CorruptStore(f"{path} line {number} is damaged; the files were left untouched")
        for key, value in pairs:
            if value is None:
                records.pop(key, None)
            else:
                records[key] = value
