"""Signed session tokens for the dashboard's cookie (SPEC §4, §11).

A token is `v1.<hex SHA-256 of the API key>.<expiry, Unix seconds>.<signature>`,
the signature being HMAC-SHA256 under the server's session secret over
everything before it, in unpadded base64url. The key itself is never in it.

Tokens are stateless: one stops working when it expires, when the caller finds
its key hash gone from the tenants file (`TenantRegistry.authenticate_hash`,
on every request), or when the secret changes. Logging out clears the
browser's cookie and closes the live-update sockets opened with that token
(found by `session_id`); a copy taken before then stays valid until it expires.
An open socket is checked once a second and closed when its session expires.

The secret is `JOBQ_SESSION_SECRET` when set; otherwise 32 random bytes in
`session.key` in the data directory, created with mode 0600 on first use and
reused on every later start, so sessions survive a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets as pysecrets
from dataclasses import dataclass
from pathlib import Path

from jobq.core.clock import Clock
from jobq.core.config import Secret, Settings
from jobq.core.fsio import FileSystem, atomic_write

logger = logging.getLogger(__name__)

COOKIE_NAME = "jobq_session"
SECRET_FILE = "session.key"
SECRET_BYTES = 32
_VERSION = "v1"
_TOKEN = re.compile(r"v1\.([0-9a-f]{64})\.([0-9]{1,12})\.([A-Za-z0-9_-]{43})")


def session_id(token: str) -> str:
    """A name for one signed-in session that is not the bearer token itself:
    what the live-update hub keeps to find a session's sockets at logout."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Session:
    """A genuine, unexpired token's contents."""

    key_hash: str  # sha256:<hex>
    expires_at: int  # Unix seconds; the token is refused from this second on


class SessionSecretError(Exception):
    """`session.key` cannot be read, has the wrong size, or cannot be created."""


class _PrivateFiles(FileSystem):
    """Creates files readable by their owner only, from the first byte on
    (a chmod after the rename would leave the secret readable for a moment)."""

    def open_new(self, path: Path) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def load_secret(data_dir: Path, configured: Secret | None) -> bytes:
    """The HMAC key: `configured` (JOBQ_SESSION_SECRET) when given, else the
    contents of `data_dir/session.key`, created atomically (32 random bytes,
    mode 0600, durable when this returns) if it does not exist.

    Raises `SessionSecretError` when the file cannot be read or written or
    does not hold exactly 32 bytes: jobq refuses to start rather than replace
    it, because replacing it signs every user out."""
    if configured is not None:
        return configured.reveal().encode("utf-8")
    path = data_dir / SECRET_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        data = pysecrets.token_bytes(SECRET_BYTES)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(_PrivateFiles(), path, [data])
        except OSError as exc:
            raise SessionSecretError(f"cannot create {path}: {exc}") from exc
        logger.info("action=session_secret_created path=%s", path)
        return data
    except OSError as exc:
        raise SessionSecretError(f"cannot read {path}: {exc}") from exc
    if len(data) != SECRET_BYTES:
        raise SessionSecretError(
            f"{path} holds {len(data)} bytes, not {SECRET_BYTES}; delete it to make a new one "
            "(that signs every dashboard user out)"
        )
    if path.stat().st_mode & 0o077:
        logger.warning("action=session_secret_readable path=%s hint='chmod 600 it'", path)
    return data


class SessionCodec:
    """Issues and verifies session tokens; `lifetime_seconds` after issue
    (wall-clock time from the injected clock) a token is expired."""

    __slots__ = ("_clock", "_key", "lifetime_seconds")

    def __init__(self, key: bytes, lifetime_seconds: float, clock: Clock) -> None:
        if not key:
            raise ValueError("a session key must not be empty")
        self._key = key
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> SessionCodec:
        """Raises `SessionSecretError` (see `load_secret`)."""
        key = load_secret(settings.data_dir, settings.session_secret)
        return cls(key, settings.session_hours * 3600.0, clock)

    def __repr__(self) -> str:
        return f"SessionCodec(lifetime_seconds={self.lifetime_seconds:g}, key='**********')"

    def _sign(self, message: str) -> str:
        digest = hmac.new(self._key, message.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def issue(self, key_hash: str) -> str:
        """A token for the key whose `hash_key()` is `key_hash` (`sha256:<hex>`)."""
        algorithm, _, hex_digest = key_hash.partition(":")
        if algorithm != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hex_digest):
            raise ValueError("key_hash must be sha256:<64 lowercase hex digits>")
        expires = int(self._clock.now().timestamp() + self.lifetime_seconds)
        message = f"{_VERSION}.{hex_digest}.{expires}"
        return f"{message}.{self._sign(message)}"

    def verify(self, token: str) -> str | None:
        """The `sha256:<hex>` key hash of a genuine, unexpired token; None for
        anything else (malformed, another secret's, altered, expired). Whether
        the key still exists is the caller's question."""
        session = self.read(token)
        return session.key_hash if session is not None else None

    def read(self, token: str) -> Session | None:
        """Like `verify`, with the token's expiry."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        hex_digest, expires, signature = match.groups()
        expected = self._sign(f"{_VERSION}.{hex_digest}.{expires}")
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
            return None
        if self._clock.now().timestamp() >= int(expires):
            return None
        return Session("sha256:" + hex_digest, int(expires))
