"""Tenants, API keys and limits, kept in the tenants file (SPEC §11).

Keys are stored only as `sha256:<hex>` hashes and shown once, when created.
The running service notices when the file changes (a `keys add` from another
shell) and reloads it, at most once a second.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import secrets as pysecrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from fsio import FileSystem, atomic_write
from models import format_ts, parse_ts

logger = logging.getLogger(__name__)

TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
KEY_PREFIX = "jq_"


class TenantsFileError(Exception):
    """The tenants file cannot be read or a command cannot be applied to it."""


@dataclass(frozen=True, slots=True)
class Limits:
    max_running: int = 4  # the default pool has 5 slots: no tenant holds them all by default
    submit_per_minute: int = 600
    submit_burst: int = 60
    max_queued: int = 10000
    max_stored_bytes: int = 256 << 20

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Limits:
        def positive(name: str, default: int) -> int:
            value = raw.get(name, default)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TenantsFileError(f"limits.{name} must be a positive integer, got {value!r}")
            return value

        defaults = DEFAULT_LIMITS
        return cls(
            max_running=positive("maxRunning", defaults.max_running),
            submit_per_minute=positive("submitPerMinute", defaults.submit_per_minute),
            submit_burst=positive("submitBurst", defaults.submit_burst),
            max_queued=positive("maxQueued", defaults.max_queued),
            max_stored_bytes=positive("maxStoredBytes", defaults.max_stored_bytes),
        )


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


@dataclass
class TenantsDoc:
    """The tenants file as data; `to_json` writes it back in the documented shape."""

    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)
    admins: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> TenantsDoc:
        if not path.exists():
            return cls()
        try:
            raw = orjson.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise TenantsFileError(f"{path} cannot be read: {exc}") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("tenants", {}), dict):
            raise TenantsFileError(f"{path} must hold an object with a 'tenants' object")
        return cls(tenants=raw.get("tenants", {}), admins=raw.get("admins", []))

    def write(self, path: Path) -> None:
        data = orjson.dumps({"tenants": self.tenants, "admins": self.admins}, option=orjson.OPT_INDENT_2)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(FileSystem(), path, [data, b"\n"])
        os.chmod(path, 0o600)

    def add_tenant(self, name: str) -> str:
        """Create tenant `name` with a write key; returns the key (shown once)."""
        if not TENANT_NAME.match(name):
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
        self.doc = TenantsDoc()
        self._load()

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def _load(self) -> None:
        doc = TenantsDoc.read(self.path)
        keys: dict[str, Principal] = {}
        limits: dict[str, Limits] = {}
        for name, tenant in doc.tenants.items():
            limits[name] = Limits.from_json(tenant.get("limits") or {})
            for key in tenant.get("keys", []):
                keys[key["hash"]] = Principal(
                    name, "read" if key.get("role") == "read" else "write", key.get("label", "")
                )
        for admin in doc.admins:
            keys[admin["hash"]] = Principal(None, "admin", admin.get("label", "admin"))
        self.doc, self._keys, self._limits = doc, keys, limits
        self._stamp = self._file_stamp()

    def refresh(self) -> None:
        """Reload the file if it changed; a broken edit keeps the last good version."""
        now = self._monotonic()
        if now - self._checked < 1.0:
            return
        self._checked = now
        if self._file_stamp() != self._stamp:
            try:
                self._load()
                logger.info("action=tenants_reloaded path=%s", self.path)
            except (TenantsFileError, KeyError, TypeError) as exc:
                logger.error("action=tenants_reload_failed path=%s error=%s", self.path, exc)
                self._stamp = self._file_stamp()

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
