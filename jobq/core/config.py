"""Settings: one frozen object read from the environment once, in the entry point.

No other module reads `os.environ`. Every setting is documented in README.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class ConfigError(Exception):
    """A setting has a value jobq cannot use; the message names it."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not value >= minimum or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number of at least {minimum}, got {raw}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


# The default data directory: the repository root, the directory holding
# app.py (and this package), wherever the process was started from, so
# `make run`, `python app.py` and every admin command share one directory
# whatever their working directory. `JOBQ_DATA_DIR` overrides it.
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPOSITORY_ROOT

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")


def _module_names(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """A comma-separated list of importable module names (dotted identifiers)."""
    names = tuple(part.strip() for part in (env.get(name) or "").split(",") if part.strip())
    for module in names:
        if not all(piece.isidentifier() for piece in module.split(".")):
            raise ConfigError(f"{name} must list module names separated by commas; {module!r} is not one")
    return names


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...], upper: bool = False) -> str:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    value = raw.upper() if upper else raw.lower()
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {raw!r}")
    return value


@dataclass(frozen=True, slots=True, repr=False)
class Secret:
    """A secret setting. `repr()` and `str()` are masked so it never reaches a
    log line or a traceback by accident; `reveal()` is the one way to read it."""

    _value: str

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__


def _secret(env: Mapping[str, str], name: str, min_length: int) -> Secret | None:
    raw = env.get(name) or ""
    if not raw:
        return None
    if len(raw) < min_length:
        # The value itself is never part of the message.
        raise ConfigError(f"{name} must be at least {min_length} characters long, got {len(raw)}")
    return Secret(raw)


DEFAULT_WEBHOOK_RETRY_SCHEDULE = (5.0, 30.0, 120.0, 600.0, 1800.0, 7200.0, 21600.0, 43200.0)


def _schedule(env: Mapping[str, str], name: str, default: tuple[float, ...]) -> tuple[float, ...]:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        values = tuple(float(part) for part in raw.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated seconds, e.g. 5,30,120; got {raw!r}") from None
    if not all(0 <= value < float("inf") for value in values):
        raise ConfigError(f"{name} must hold finite seconds of at least 0, got {raw!r}")
    return values


def _alert_url(env: Mapping[str, str]) -> str | None:
    raw = (env.get("JOBQ_ALERT_URL") or "").strip()
    if raw and not raw.lower().startswith(("http://", "https://")):
        raise ConfigError(f"JOBQ_ALERT_URL must be an http or https URL, got {raw!r}")
    return raw or None


def _alert_secret(env: Mapping[str, str]) -> Secret | None:
    secret = _secret(env, "JOBQ_ALERT_SECRET", min_length=12)
    if secret is not None and not secret.reveal().startswith("whsec_"):
        raise ConfigError("JOBQ_ALERT_SECRET must be a whsec_<base64> secret, like a tenant's webhook secret")
    if env.get("JOBQ_ALERT_URL") and secret is None:
        raise ConfigError(
            "JOBQ_ALERT_URL needs JOBQ_ALERT_SECRET, the whsec_<base64> secret alerts are signed with "
            "(python app.py new-secret prints a fresh one)"
        )
    return secret


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = DEFAULT_DATA_DIR
    store_url: str = "json"
    tenants_file: Path = DEFAULT_DATA_DIR / "tenants.json"
    worker_concurrency: int = 5
    lease_seconds: float = 30.0
    retry_base_seconds: float = 30.0
    retry_max_seconds: float = 3600.0
    max_attempts: int = 4
    default_timeout_seconds: float = 300.0
    retention_days: float = 7.0
    max_payload_bytes: int = 64 * 1024
    max_body_bytes: int = 1024 * 1024
    aging_seconds: float = 300.0
    max_snoozes: int = 50
    shutdown_grace_seconds: float = 25.0
    auth_failures_per_minute: int = 20
    allow_private_urls: bool = False
    journal_compact_bytes: int = 64 * 1024 * 1024
    # HMAC key of the dashboard's session cookie; None: `session.key` in data_dir.
    session_secret: Secret | None = None
    session_hours: float = 12.0
    webhook_rotation_hours: float = 24.0
    # Seconds before each webhook retry (±20 % jitter); after the last one the delivery is failed.
    webhook_retry_schedule: tuple[float, ...] = DEFAULT_WEBHOOK_RETRY_SCHEDULE
    webhook_timeout_seconds: float = 15.0
    # Webhook (and alert) requests in flight at once, and of those at most this many for one tenant.
    webhook_concurrency: int = 32
    webhook_tenant_concurrency: int = 8
    alert_url: str | None = None
    alert_secret: Secret | None = None
    dlq_alert_seconds: float = 300.0
    # Connections (issue 8): open sockets at once; seconds a client may take to
    # send a request's headers (from connecting, or from its first byte after
    # an idle keep-alive); idle seconds between requests on one connection.
    max_connections: int = 1024
    header_timeout_seconds: float = 10.0
    keepalive_timeout_seconds: float = 75.0
    # A request body must be complete within this many seconds and, after its
    # first second, arrive at no less than this average rate.
    body_timeout_seconds: float = 30.0
    body_min_bytes_per_second: int = 1024
    # Request body bytes one tenant may send per second (a token bucket with a
    # burst of four seconds' worth): parsing costs CPU by the byte, and one
    # process has one interpreter lock to share among all tenants.
    tenant_body_kib_per_second: int = 1024
    # Records at this level and above go to stderr, as text lines or JSON objects (logsetup.py).
    log_level: str = "INFO"
    log_format: str = "text"
    # The operator's handler modules (JOBQ_HANDLERS), imported at start.
    handler_modules: tuple[str, ...] = ()
    # Live-update sockets (issue 8): open at once per tenant (its keys and
    # sessions) and overall (admins included); bytes waiting for one socket
    # (its queue and its transport's buffer) before its stream is dropped for
    # a later snapshot; how long it may stay that far behind before it is closed.
    ws_max_per_tenant: int = 50
    ws_max_total: int = 1000
    ws_max_pending_bytes: int = 1024 * 1024
    ws_stuck_seconds: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read every `JOBQ_*` setting; raises `ConfigError` naming a bad one."""
        data_dir = Path(env.get("JOBQ_DATA_DIR") or DEFAULT_DATA_DIR)
        tenants = env.get("JOBQ_TENANTS_FILE")
        return cls(
            host=env.get("JOBQ_HOST") or "127.0.0.1",
            port=_int(env, "JOBQ_PORT", 8080),
            data_dir=data_dir,
            store_url=env.get("JOBQ_STORE") or "json",
            tenants_file=Path(tenants) if tenants else data_dir / "tenants.json",
            worker_concurrency=_int(env, "JOBQ_WORKER_CONCURRENCY", 5),
            lease_seconds=_float(env, "JOBQ_LEASE_SECONDS", 30.0, minimum=0.01),
            retry_base_seconds=_float(env, "JOBQ_RETRY_BASE_SECONDS", 30.0),
            retry_max_seconds=_float(env, "JOBQ_RETRY_MAX_SECONDS", 3600.0),
            max_attempts=_int(env, "JOBQ_MAX_ATTEMPTS", 4, minimum=1),
            default_timeout_seconds=_float(env, "JOBQ_TIMEOUT_SECONDS", 300.0, minimum=0.001),
            retention_days=_float(env, "JOBQ_RETENTION_DAYS", 7.0),
            max_payload_bytes=_int(env, "JOBQ_MAX_PAYLOAD_BYTES", 64 * 1024, minimum=2),
            aging_seconds=_float(env, "JOBQ_AGING_SECONDS", 300.0, minimum=0.001),
            max_snoozes=_int(env, "JOBQ_MAX_SNOOZES", 50),
            shutdown_grace_seconds=_float(env, "JOBQ_SHUTDOWN_GRACE_SECONDS", 25.0),
            auth_failures_per_minute=_int(env, "JOBQ_AUTH_FAILURES_PER_MINUTE", 20),
            allow_private_urls=_bool(env, "JOBQ_ALLOW_PRIVATE_URLS", False),
            journal_compact_bytes=_int(env, "JOBQ_JOURNAL_COMPACT_BYTES", 64 * 1024 * 1024, minimum=1024),
            session_secret=_secret(env, "JOBQ_SESSION_SECRET", min_length=32),
            session_hours=_float(env, "JOBQ_SESSION_HOURS", 12.0, minimum=0.01),
            webhook_rotation_hours=_float(env, "JOBQ_WEBHOOK_ROTATION_HOURS", 24.0),
            webhook_retry_schedule=_schedule(env, "JOBQ_WEBHOOK_RETRY_SCHEDULE", DEFAULT_WEBHOOK_RETRY_SCHEDULE),
            webhook_timeout_seconds=_float(env, "JOBQ_WEBHOOK_TIMEOUT_SECONDS", 15.0, minimum=0.001),
            webhook_concurrency=_int(env, "JOBQ_WEBHOOK_CONCURRENCY", 32),
            webhook_tenant_concurrency=_int(env, "JOBQ_WEBHOOK_TENANT_CONCURRENCY", 8, minimum=1),
            alert_url=_alert_url(env),
            alert_secret=_alert_secret(env),
            dlq_alert_seconds=_float(env, "JOBQ_DLQ_ALERT_SECONDS", 300.0),
            max_connections=_int(env, "JOBQ_MAX_CONNECTIONS", 1024, minimum=1),
            header_timeout_seconds=_float(env, "JOBQ_HEADER_TIMEOUT_SECONDS", 10.0, minimum=0.01),
            keepalive_timeout_seconds=_float(env, "JOBQ_KEEPALIVE_TIMEOUT_SECONDS", 75.0, minimum=0.01),
            body_timeout_seconds=_float(env, "JOBQ_BODY_TIMEOUT_SECONDS", 30.0, minimum=0.01),
            body_min_bytes_per_second=_int(env, "JOBQ_BODY_MIN_BYTES_PER_SECOND", 1024),
            tenant_body_kib_per_second=_int(env, "JOBQ_TENANT_BODY_KIB_PER_SECOND", 1024, minimum=64),
            log_level=_choice(env, "JOBQ_LOG_LEVEL", "INFO", LOG_LEVELS, upper=True),
            log_format=_choice(env, "JOBQ_LOG_FORMAT", "text", LOG_FORMATS),
            handler_modules=_module_names(env, "JOBQ_HANDLERS"),
            ws_max_per_tenant=_int(env, "JOBQ_WS_MAX_PER_TENANT", 50, minimum=1),
            ws_max_total=_int(env, "JOBQ_WS_MAX_TOTAL", 1000, minimum=1),
            ws_max_pending_bytes=_int(env, "JOBQ_WS_MAX_PENDING_BYTES", 1024 * 1024, minimum=16 * 1024),
            ws_stuck_seconds=_float(env, "JOBQ_WS_STUCK_SECONDS", 30.0, minimum=1.0),
        )
