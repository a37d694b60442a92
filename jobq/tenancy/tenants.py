"""Tenants, API keys and limits, kept in the tenants file (SPEC §11).

Keys are stored only as `sha256:<hex>` hashes and shown once, when created.
The running service notices when the file changes (a `keys add` from another
shell) and reloads it, at most once a second.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import logging
import os
import re
import secrets as pysecrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from jobq.core import strict_json
from jobq.core.errors import BadRequest
from jobq.core.fsio import PRIVATE_DIR, PRIVATE_FILE, FileSystem, atomic_write
from jobq.core.timefmt import format_ts, parse_ts
from jobq.storage.protocol import RunningLimits

logger = logging.getLogger(__name__)

TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
KEY_PREFIX = "jq_"


class TenantsFileError(Exception):
    """The tenants file cannot be read or a command cannot be applied to it."""


@dataclass(frozen=True, slots=True)
class Limits:
    """A tenant's limits (SPEC §4, §11). `max_running` defaults below the
    worker's 5 slots, so by default no tenant can hold every one."""

    max_running: int = 4
    submit_per_minute: int = 600
    submit_burst: int = 60
    max_queued: int = 10000
    max_stored_bytes: int = 256 * 1024 * 1024

    @classmethod
    def from_json(cls, raw: dict[str, Any], where: str = "limits") -> Limits:
        """Omitted limits take the defaults; `TenantsFileError` naming
        `where.<name>` for one that is not a positive integer."""

        def positive(name: str, default: int) -> int:
            value = raw.get(name, default)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TenantsFileError(f"{where}.{name} must be a positive integer, got {_show(value)}")
            return value

        defaults = DEFAULT_LIMITS
        return cls(
            max_running=positive("maxRunning", defaults.max_running),
            submit_per_minute=positive("submitPerMinute", defaults.submit_per_minute),
            submit_burst=positive("submitBurst", defaults.submit_burst),
            max_queued=positive("maxQueued", defaults.max_queued),
            max_stored_bytes=positive("maxStoredBytes", defaults.max_stored_bytes),
        )


def _show(value: Any) -> str:
    """A value for a one-line message, cut short."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a tenant's key (role write or read) or an admin key."""

    tenant_id: str | None
    role: str  # "write" | "read" | "admin"
    label: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def can_write(self) -> bool:
        return self.role in ("write", "admin")

    @property
    def actor(self) -> str:
        owner = self.tenant_id if self.tenant_id is not None else "admin"
        return f"{owner}/{self.label}" if self.label else owner


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + pysecrets.token_urlsafe(32)


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(pysecrets.token_bytes(32)).decode()


_HASH = re.compile(r"sha256:[0-9a-f]{64}")
_LATEST_ROTATION = datetime(9000, 1, 1, tzinfo=UTC)  # later ones would overflow the rotation window


def check_document(raw: Any) -> None:
    """Check a parsed tenants file against the documented shape (SPEC §11),
    all of it; `TenantsFileError` naming the first bad entry by its path in
    the document. Unknown fields are allowed (a newer jobq may have written them)."""
    if not isinstance(raw, dict):
        raise TenantsFileError('the document must be an object with a "tenants" object')
    tenants = raw.get("tenants", {})
    if not isinstance(tenants, dict):
        raise TenantsFileError("tenants must be an object")
    hashes: dict[str, str] = {}  # hash -> where it was first seen
    for name, tenant in tenants.items():
        where = f"tenants.{name}" if TENANT_NAME.fullmatch(name) else f"tenants[{name[:40]!r}]"
        if not isinstance(tenant, dict):
            raise TenantsFileError(f"{where} must be an object")
        keys = tenant.get("keys", [])
        if not isinstance(keys, list):
            raise TenantsFileError(f"{where}.keys must be a list")
        for index, key in enumerate(keys):
            _check_key(f"{where}.keys[{index}]", key, hashes)
            if key.get("role", "write") not in ("write", "read"):
                raise TenantsFileError(f'{where}.keys[{index}].role must be "write" or "read"')
        secrets = tenant.get("webhookSecrets", [])
        if not isinstance(secrets, list) or not all(isinstance(s, str) and s for s in secrets):
            raise TenantsFileError(f"{where}.webhookSecrets must be a list of strings")
        _check_rotated_at(f"{where}.webhookSecretRotatedAt", tenant.get("webhookSecretRotatedAt"))
        limits = tenant.get("limits")
        if limits is not None and not isinstance(limits, dict):
            raise TenantsFileError(f"{where}.limits must be an object")
        Limits.from_json(limits or {}, where=f"{where}.limits")
    admins = raw.get("admins", [])
    if not isinstance(admins, list):
        raise TenantsFileError("admins must be a list")
    for index, admin in enumerate(admins):
        _check_key(f"admins[{index}]", admin, hashes)


def _check_key(where: str, key: Any, hashes: dict[str, str]) -> None:
    if not isinstance(key, dict) or not isinstance(key.get("hash"), str):
        raise TenantsFileError(f'{where} must be an object with a "hash" string')
    if not _HASH.fullmatch(key["hash"]):
        raise TenantsFileError(f"{where}.hash must be sha256:<64 lowercase hex digits>")
    if key["hash"] in hashes:
        raise TenantsFileError(f"{where}.hash is also the hash of {hashes[key['hash']]}")
    hashes[key["hash"]] = where
    if not isinstance(key.get("label", ""), str):
        raise TenantsFileError(f"{where}.label must be a string")


def _check_rotated_at(where: str, value: Any) -> None:
    if value is None:
        return
    try:
        parsed = parse_ts(value) if isinstance(value, str) else None
    except (ValueError, OverflowError):
        parsed = None
    if parsed is None or parsed >= _LATEST_ROTATION:
        raise TenantsFileError(f"{where} must be an RFC 3339 time, got {_show(value)}")


@dataclass
class TenantsDoc:
    """The tenants file as data; `to_json` writes it back in the documented shape."""

    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)
    admins: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> TenantsDoc:
        """The tenants file at `path` (empty when there is none), checked whole
        (`check_document`). `TenantsFileError` says in one line what is wrong,
        and where: `<path>: tenants.acme.keys[1] must be ...`."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            raise TenantsFileError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
        try:
            raw = strict_json.loads(data)
        except BadRequest as exc:
            raise TenantsFileError(f"{path}: cannot be read: {exc.detail}") from exc
        try:
            check_document(raw)
        except TenantsFileError as exc:
            raise TenantsFileError(f"{path}: {exc}") from None
        return cls(tenants=raw.get("tenants", {}), admins=raw.get("admins", []))

    def write(self, path: Path) -> None:
        """Replace the file atomically (owner-only from the first byte). A
        read-modify-write from several processes belongs in `updating(path)`."""
        data = orjson.dumps({"tenants": self.tenants, "admins": self.admins}, option=orjson.OPT_INDENT_2)
        path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        atomic_write(FileSystem(), path, [data, b"\n"])

    def add_tenant(self, name: str) -> str:
        """Create tenant `name` with a write key; returns the key (shown once)."""
        if not TENANT_NAME.fullmatch(name):
            raise TenantsFileError("a tenant name is 1-63 of a-z, 0-9, _ and -, starting with a letter or digit")
        if name in self.tenants:
            raise TenantsFileError(f"tenant {name!r} already exists")
        key = new_key()
        self.tenants[name] = {
            "keys": [{"hash": hash_key(key), "role": "write", "label": "first"}],
            "webhookSecrets": [new_webhook_secret()],
            "limits": {},
        }
        return key

    def add_key(self, name: str, *, read_only: bool, label: str = "") -> str:
        if name not in self.tenants:
            raise TenantsFileError(f"no tenant named {name!r}")
        key = new_key()
        role = "read" if read_only else "write"
        self.tenants[name].setdefault("keys", []).append({"hash": hash_key(key), "role": role, "label": label or role})
        return key

    def add_admin(self, label: str = "admin") -> str:
        key = new_key()
        self.admins.append({"hash": hash_key(key), "label": label})
        return key

    def rotate_webhook_secret(self, name: str, now: datetime) -> str:
        """A new signing secret for tenant `name`, returned (shown once). The
        previous one moves second and keeps signing until the rotation window
        (`JOBQ_WEBHOOK_ROTATION_HOURS`) after `now` has passed."""
        if name not in self.tenants:
            raise TenantsFileError(f"no tenant named {name!r}")
        tenant = self.tenants[name]
        secret = new_webhook_secret()
        tenant["webhookSecrets"] = [secret, *tenant.get("webhookSecrets", [])[:1]]
        tenant["webhookSecretRotatedAt"] = format_ts(now)
        return secret


@contextmanager
def updating(path: Path) -> Iterator[None]:
    """Hold the update lock of the tenants file at `path` (an flock on
    `<path>.lock` beside it): CLI commands read, change and write the file
    inside it, one process at a time, so none loses another's change. The
    running service only reads the file and never takes it."""
    lock_path = path.with_name(path.name + ".lock")
    path.parent.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Someone may have deleted the lock file while we waited: then the
            # lock we hold is on a file nobody else will lock. Take a fresh one.
            try:
                current = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
        except BaseException:
            os.close(fd)
            raise
        if current:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)


class TenantRegistry:
    """Answers "whose key is this" and "what are this tenant's limits", from
    the tenants file, reloading it when it changes."""

    def __init__(self, path: Path, monotonic: Callable[[], float]) -> None:
        self.path = path
        self._monotonic = monotonic
        self._checked = float("-inf")
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, Principal] = {}
        self._limits: dict[str, Limits] = {}
        self._running_limits: RunningLimits | None = None
        self._running_limits_of: dict[str, Limits] | None = None
        self.doc = TenantsDoc()
        self._load()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:  # gone, or not ours to look at: the read says which
            return None
        return stat.st_mtime_ns, stat.st_size

    def _load(self) -> None:
        """Read and check the whole file, then swap it in; `TenantsFileError`
        (and nothing else) if it is not usable, leaving the last one in place."""
        stamp = self._file_stamp()
        doc = TenantsDoc.read(self.path)  # checked whole: every lookup below is safe
        keys: dict[str, Principal] = {}
        limits: dict[str, Limits] = {}
        for name, tenant in doc.tenants.items():
            limits[name] = Limits.from_json(tenant.get("limits") or {})
            for key in tenant.get("keys", []):
                keys[key["hash"]] = Principal(name, key.get("role", "write"), key.get("label", ""))
        for admin in doc.admins:
            keys[admin["hash"]] = Principal(None, "admin", admin.get("label", "admin"))
        self.doc, self._keys, self._limits = doc, keys, limits
        self._stamp = stamp

    def reload(self) -> None:
        """Read the file now (after this process changed it); `TenantsFileError`."""
        self._load()

    def refresh(self) -> None:
        """Reload the file if it changed; a broken edit keeps the last good
        version (and is logged once, naming what is wrong)."""
        now = self._monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        stamp = self._file_stamp()
        if stamp != self._stamp:
            try:
                self._load()
                logger.info("action=tenants_reloaded path=%s", self.path)
            except TenantsFileError as exc:
                logger.error("action=tenants_reload_failed path=%s error=%s", self.path, exc)
                self._stamp = stamp

    def authenticate(self, key: str) -> Principal | None:
        self.refresh()
        # Looking up the SHA-256 of the key leaks nothing useful through timing.
        return self._keys.get(hash_key(key))

    def authenticate_hash(self, key_hash: str) -> Principal | None:
        """Whose key has this `sha256:<hex>` hash (a dashboard session carries
        it); None once the key has been removed from the tenants file."""
        self.refresh()
        return self._keys.get(key_hash)

    def limits(self, tenant_id: str) -> Limits:
        return self._limits.get(tenant_id, DEFAULT_LIMITS)

    def max_running(self, tenant_id: str) -> int:
        return self.limits(tenant_id).max_running

    def running_limits(self) -> RunningLimits:
        """Every tenant's `maxRunning`, as the store's claim takes it."""
        if self._running_limits is None or self._running_limits_of is not self._limits:
            per_tenant = {tenant: limits.max_running for tenant, limits in self._limits.items()}
            self._running_limits = RunningLimits(per_tenant, DEFAULT_LIMITS.max_running)
            self._running_limits_of = self._limits
        return self._running_limits

    def tenant_names(self) -> list[str]:
        return sorted(self._limits)

    def webhook_secrets(self, tenant_id: str, now: datetime, rotation_hours: float) -> list[str]:
        """The secrets that sign the tenant's webhooks now: the newest, and the
        one it replaced while the rotation window is open. Empty for an
        unknown tenant."""
        self.refresh()
        tenant = self.doc.tenants.get(tenant_id)
        if tenant is None:
            return []
        secrets = list(tenant.get("webhookSecrets", []))[:2]
        rotated = parse_ts(tenant.get("webhookSecretRotatedAt"))
        if rotated is None or now >= rotated + timedelta(hours=rotation_hours):
            secrets = secrets[:1]
        return secrets


def ensure_demo_tenant(tenants_file: Path) -> str | None:
    """On a first start (no tenants file), create tenant `demo`; returns its key.
    Under the tenants file's update lock, like every CLI write."""
    with updating(tenants_file):
        if tenants_file.exists():
            return None
        doc = TenantsDoc()
        key = doc.add_tenant("demo")
        doc.write(tenants_file)
    return key
