"""Logging for the entry points: one handler on stderr, text or JSON lines.

Every log line passes through one of the two formatters here, whoever logged
it (our modules, a tenant's job handler, aiohttp, asyncio), so no call site
can forget the two rules below.

- **Redaction**: anything shaped like an API key (`jq_` + url-safe characters,
  see `tenants.new_key`), a dashboard session token or `jobq_session=` cookie
  value (see `sessions.py`), or a webhook secret (`whsec_...`) is replaced by
  `[REDACTED]` in the message, the extras and the traceback. Defence in depth:
  aiohttp's parser, for one, quotes the offending request line in its error.
- **Escaping** (text format): every character `str.isprintable()` rejects
  (C0 and C1 controls, DEL, bidi overrides, zero-width and other format
  characters, line separators, lone surrogates, non-ASCII spaces) and the
  backslash itself are written as Python-style escapes (`\\n`, `\\x1b`,
  `\\u202e`, `\\\\`), so a record is one line and tenant text can neither forge
  a record nor drive the terminal. A traceback keeps its own line breaks, but
  every line of it starts with `  | `, so only a record's first line starts
  with a timestamp. The JSON format needs no escaping of its own beyond
  JSON's: strings keep their exact text, with the same characters written as
  `\\uXXXX` escapes.
"""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from types import TracebackType
from typing import TextIO

import orjson

# Fields a record may carry in `extra` (the worker's handler logger sets jobId
# and attempt), written after the message in text and as keys in JSON.
KNOWN_EXTRAS = ("jobId", "tenantId", "attempt", "type")
CONTINUATION = "  | "
REDACTED = "[REDACTED]"

_SECRET = re.compile(
    # API keys are jq_ + 43 characters; 20 is enough to catch a truncated copy.
    r"(?P<key>jq_)[A-Za-z0-9_-]{20,}"
    r"|(?P<token>v1\.)[0-9a-f]{64}\.[0-9]+\.[A-Za-z0-9_-]+"
    r"|(?P<cookie>jobq_session=)[^\s;,'\"\\]+"
    r"|(?P<webhook>whsec_)[A-Za-z0-9+/]{20,}={0,2}"
)
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def redact(text: str) -> str:
    """`text` with every secret-shaped substring replaced, its prefix kept."""
    if "jq_" not in text and "v1." not in text and "jobq_session=" not in text and "whsec_" not in text:
        return text
    return _SECRET.sub(lambda match: match.group(match.lastgroup or 0) + REDACTED, text)


def _escape_char(char: str) -> str:
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def escape(text: str) -> str:
    """`text` on one line with no control characters: see the module docstring."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(char if char.isprintable() and char != "\\" else _escape_char(char) for char in text)


def _json_escape_char(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def _utf8(text: str) -> str:
    """Lone surrogates (aiohttp decodes header bytes with surrogateescape) as
    escapes: orjson refuses them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _timestamp(record: logging.LogRecord) -> str:
    """RFC 3339, UTC, milliseconds: `2026-12-07T18:35:00.123Z`."""
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _exception_text(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """The traceback (and stack), raw; cached on the record as `Formatter` does."""
    if record.exc_info and not record.exc_text:
        record.exc_text = formatter.formatException(record.exc_info)
    parts = [part for part in (record.exc_text, record.stack_info) if part]
    return "\n".join(part.rstrip("\n") for part in parts)


class TextFormatter(logging.Formatter):
    """`<ts> <LEVEL> <logger> <message> key=value...`, one line a record (plus
    `  | ` lines for a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {escape(record.name)} {escape(redact(record.getMessage()))}"
        for key in KNOWN_EXTRAS:
            value = record.__dict__.get(key)
            if value is not None:
                line += f" {key}={_field(value)}"
        trace = _exception_text(self, record)
        if trace:
            line += "".join(f"\n{CONTINUATION}{escape(part)}" for part in redact(trace).split("\n"))
        return line


def _field(value: object) -> str:
    text = escape(redact(str(value)))
    if text and not any(char in text for char in ' "='):
        return text
    return '"' + text.replace('"', '\\"') + '"'


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, msg, the known extras, and
    exc (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": _utf8(record.name),
            "msg": _utf8(redact(record.getMessage())),
        }
        for key in KNOWN_EXTRAS:
            value = record.__dict__.get(key)
            if value is None:
                continue
            if not isinstance(value, bool | int | float):
                value = _utf8(redact(str(value)))
            doc[key] = value
        trace = _exception_text(self, record)
        if trace:
            doc["exc"] = _utf8(redact(trace))
        out = orjson.dumps(doc).decode("utf-8")
        if out.isprintable():
            return out
        # Outside strings a JSON text is printable ASCII, so every character
        # left here is inside a string, where \\u escapes mean the same.
        return "".join(char if char.isprintable() else _json_escape_char(char) for char in out)


def configure(level: str, log_format: str, stream: TextIO | None = None) -> None:
    """Send every logger's records to `stream` (stderr) at `level` and above,
    in `log_format` ("text" or "json", as checked by `config.Settings`).
    Warnings and an exception that ends the process are logged too, so they
    pass through the same formatter instead of reaching stderr raw."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught


def _log_uncaught(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, exc, tb)
        return
    logging.getLogger("jobq").critical("action=crashed", exc_info=(kind, exc, tb))
