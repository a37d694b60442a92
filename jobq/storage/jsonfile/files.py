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
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import orjson

from jobq.core.errors import CorruptStore
from jobq.core.fsio import FileSystem, is_temp_file

logger = logging.getLogger(__name__)

SNAPSHOT_NAME = "jobs.json"
PID_NAME = "jobs.pid"  # who holds the directory, for the refusal's message; not the lock
JOURNAL_PREFIX = "jobs.journal."
UNTOUCHED = "the files were left untouched"
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


class Records(MutableMapping[str, Any]):
    """Records read from disk, each held as its encoded entry (`[key, value]`
    JSON, exactly as the next snapshot writes it) and decoded only when
    asked for. So a start never holds every record decoded at once: a store
    of payloads made of many small objects would need many times its size
    for that. `entry(key)` hands the encoded form on without decoding."""

    def __init__(self) -> None:
        self._entries: dict[str, bytes] = {}

    def __getitem__(self, key: str) -> Any:
        return orjson.loads(self._entries[key])[1]

    def __setitem__(self, key: str, value: Any) -> None:
        self._entries[key] = encode_entry(key, value)

    def __delitem__(self, key: str) -> None:
        del self._entries[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def set_entry(self, key: str, entry: bytes) -> None:
        self._entries[key] = entry

    def entries(self) -> dict[str, bytes]:
        return self._entries


def read_snapshot(fs: FileSystem, path: Path) -> tuple[Records, int | None]:
    """Every record of the snapshot at `path` and its generation (none, None
    when there is no snapshot); `CorruptStore` naming the file when it cannot
    be read. A snapshot as jobq writes it (one record a line) is decoded a
    line at a time; one reformatted by hand is read whole."""
    try:
        data = fs.read_bytes(path)
    except FileNotFoundError:
        return Records(), None
    except OSError as exc:
        raise CorruptStore(f"{path} cannot be read ({exc}); {UNTOUCHED}") from exc
    lines = data.split(b"\n")
    del data
    header = _snapshot_header(lines[0])
    if header is None or lines[-2:] != [b"]}", b""]:
        return _read_whole_snapshot(path, b"\n".join(lines))
    body = lines[1:-2]
    records = Records()
    for line in body if body != [b""] else []:
        entry = line[:-1] if line.endswith(b",") else line
        try:
            pair = orjson.loads(entry)
        except ValueError as exc:
            raise CorruptStore(f"{path} cannot be read ({exc}); {UNTOUCHED}") from exc
        _check_pair(path, pair)
        records.set_entry(pair[0], entry)
    return records, header


def _snapshot_header(line: bytes) -> int | None:
    """The generation of a snapshot's first line as jobq writes it, or None."""
    prefix = b'{"format":"%s","version":%d,"generation":' % (FORMAT.encode(), VERSION)
    suffix = b',"records":['
    if not (line.startswith(prefix) and line.endswith(suffix)):
        return None
    digits = line[len(prefix) : -len(suffix)]
    return int(digits) if digits.isdigit() and len(digits) < 19 else None


def _read_whole_snapshot(path: Path, data: bytes) -> tuple[Records, int | None]:
    try:
        doc = orjson.loads(data)
    except ValueError as exc:
        raise CorruptStore(f"{path} cannot be read ({exc}); {UNTOUCHED}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CorruptStore(f"{path} is not a jobq store file; {UNTOUCHED}")
    if doc.get("version") != VERSION:
        raise CorruptStore(f"{path} has version {doc.get('version')!r}, this jobq reads version {VERSION}; {UNTOUCHED}")
    generation, pairs = doc.get("generation"), doc.get("records")
    if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0 or not isinstance(pairs, list):
        raise CorruptStore(f"{path} is damaged (no generation or records); {UNTOUCHED}")
    records = Records()
    for pair in pairs:
        _check_pair(path, pair)
        records[pair[0]] = pair[1]
    return records, generation


def _check_pair(path: Path, pair: Any) -> None:
    if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
        raise CorruptStore(f"{path} holds a damaged record; {UNTOUCHED}")


def journal_generations(directory: Path, *, strict: bool = True) -> list[int]:
    """The generations of the journal files in `directory`, oldest first.
    Raises `CorruptStore` for a name jobq would not have written (`strict`),
    or leaves it out."""
    found = []
    for name in os.listdir(directory):
        if name.startswith(JOURNAL_PREFIX) and name[len(JOURNAL_PREFIX) :].isdigit():
            generation = int(name[len(JOURNAL_PREFIX) :])
            if name == journal_name(generation):
                found.append(generation)
            elif strict:
                raise CorruptStore(
                    f"{directory / name} is not a journal name jobq writes ({journal_name(generation)}); {UNTOUCHED}"
                )
    return sorted(found)


def journal_name(generation: int) -> str:
    return f"{JOURNAL_PREFIX}{generation:08d}"


# Files jobq itself writes in a data directory (the tenants file and the
# session key by default live there too): kept owner-only, see `is_own_file`.
OWN_NAMES = frozenset({SNAPSHOT_NAME, PID_NAME, "jobs.lock", "tenants.json", "tenants.json.lock", "session.key"})


def is_own_file(name: str) -> bool:
    """Is `name` a file jobq writes in a data directory (tightened at start)?"""
    if name in OWN_NAMES or is_temp_file(name):
        return True
    return name.startswith(JOURNAL_PREFIX) and name[len(JOURNAL_PREFIX) :].isdigit()


def check_generations(directory: Path, snapshot: int | None, journals: list[int]) -> tuple[list[int], list[int]]:
    """Split the journals into those already folded into the snapshot of
    generation `snapshot` (None: there is no jobs.json) and those to replay.

    What a crash can leave: the snapshot, then the journals it was not yet
    folded from, numbered on from it without a gap (`snapshot`+1, +2, ...;
    more than one after failed compactions); and, when it came between the
    rename of a snapshot (a compaction's or a start's) and its unlinks
    (oldest first), the last journals it was folded from, numbered on
    without a gap up to `snapshot` itself (`check_folded` reads them).
    Anything else is `CorruptStore`: a start on it would lose changes."""
    if snapshot is None:
        if journals:
            raise CorruptStore(
                f"{directory / journal_name(journals[0])} is there but {directory / SNAPSHOT_NAME} is missing; "
                f"a journal holds only the changes after a snapshot, so jobq will not start on part of the data; "
                f"{UNTOUCHED}"
            )
        return [], []
    folded = [g for g in journals if g <= snapshot]
    live = [g for g in journals if g > snapshot]
    expected = snapshot
    for generation in reversed(folded):
        if generation != expected:
            raise CorruptStore(
                f"{directory / journal_name(generation)} is older than {directory / SNAPSHOT_NAME} "
                f"(generation {snapshot}) but is not one of the journals it was just folded from "
                f"(those end at {journal_name(snapshot)}, without a gap); {UNTOUCHED}"
            )
        expected -= 1
    expected = snapshot + 1
    for generation in live:
        if generation != expected:
            raise CorruptStore(
                f"{directory / journal_name(generation)} does not follow {directory / SNAPSHOT_NAME} "
                f"(generation {snapshot}): {journal_name(expected)} is missing; {UNTOUCHED}"
            )
        expected += 1
    return folded, live


def read_journal(fs: FileSystem, path: Path) -> Iterator[list[list[Any]]]:
    """The operations of the journal at `path`, each a list of [key, value]
    pairs. A damaged last line is a torn write that was never acknowledged
    and is skipped; any other, or a file that cannot be read, is `CorruptStore`."""
    try:
        data = fs.read_bytes(path)
    except OSError as exc:
        raise CorruptStore(f"{path} cannot be read ({exc}); {UNTOUCHED}") from exc
    lines = data.split(b"\n")
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
            raise CorruptStore(f"{path} line {number} is damaged; {UNTOUCHED}")
        if not all(isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) for pair in pairs):
            raise CorruptStore(f"{path} line {number} holds a damaged record; {UNTOUCHED}")
        yield pairs


def replay(fs: FileSystem, path: Path, records: MutableMapping[str, Any]) -> None:
    """Apply the journal at `path` to `records` (see `read_journal`)."""
    for pairs in read_journal(fs, path):
        for key, value in pairs:
            if value is None:
                records.pop(key, None)
            else:
                records[key] = value


def check_folded(
    fs: FileSystem, directory: Path, snapshot: int, folded: list[int], records: MutableMapping[str, Any]
) -> None:
    """Read the journals a crash left after they were folded into the snapshot
    (`records`) and check that it holds the last change each made to a key:
    then they are merely leftovers and may be deleted. `CorruptStore` if not."""
    last: dict[str, tuple[Any, int]] = {}
    for generation in folded:
        for pairs in read_journal(fs, directory / journal_name(generation)):
            for key, value in pairs:
                last[key] = (value, generation)
    for key, (value, generation) in last.items():
        if records.get(key) != value:
            raise CorruptStore(
                f"{directory / journal_name(generation)} is older than {directory / SNAPSHOT_NAME} "
                f"(generation {snapshot}) but its change to {key[:80]!r} is not in it; {UNTOUCHED}"
            )
