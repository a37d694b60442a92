"""The one error hierarchy. Views and stores raise these; one middleware renders
them as RFC 9457 `application/problem+json` (see `problems.py`)."""

from __future__ import annotations

from dataclasses import dataclass

PROBLEM_BASE = "https://jobq.dev/problems/"


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class JobqError(Exception):
    """Root of every error jobq turns into an HTTP answer."""

    status = 500
    type = "internal"
    title = "Internal error"
    close_connection = False  # close the connection after the answer (the rest of the body is not read)

    def __init__(
        self,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        retry_after: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors or []
        self.retry_after = retry_after
        self.headers = headers or {}


class BadRequest(JobqError):
    status, type, title = 400, "bad-request", "Bad request"


class Unauthorized(JobqError):
    status, type, title = 401, "unauthorized", "Missing or unknown API key"


class Forbidden(JobqError):
    status, type, title = 403, "forbidden", "Not allowed with this key"


class NotFound(JobqError):
    status, type, title = 404, "not-found", "Not found"


class Conflict(JobqError):
    status, type, title = 409, "conflict", "State conflict"


class IdempotencyInFlight(Conflict):
    type, title = "idempotency-key-in-flight", "A request with this Idempotency-Key is still in progress"


class PayloadTooLarge(JobqError):
    status, type, title = 413, "payload-too-large", "Request or payload too large"


class UnsupportedMediaType(JobqError):
    status, type, title = 415, "unsupported-media-type", "Body must be application/json"


class ValidationFailed(JobqError):
    status, type, title = 422, "validation", "The request is not valid"


class IdempotencyMismatch(ValidationFailed):
    type, title = "idempotency-key-mismatch", "Idempotency-Key reused with a different request"


class RateLimited(JobqError):
    status, type, title = 429, "rate-limited", "Too many requests"


class QueueFull(RateLimited):
    type, title = "queue-full", "Too many unfinished jobs for this tenant"


class StorageQuotaExceeded(RateLimited):
    """The tenant's retained jobs take `maxStoredBytes`; space comes back as
    jobs end and are purged."""

    type, title = "storage-quota-exceeded", "The tenant's stored jobs are at maxStoredBytes"


class AuthThrottled(RateLimited):
    type, title = "auth-throttled", "Too many failed authentications from this address"


class StoreUnavailable(JobqError):
    """The store cannot make a change durable (disk full, read-only, I/O error).
    Nothing of the failed change is kept."""

    status, type, title = 503, "store-unavailable", "Storage is not writable"


class ShuttingDown(JobqError):
    status, type, title = 503, "shutting-down", "The service is shutting down"


class BodyTimeout(JobqError):
    """The body did not arrive in time (or fast enough)."""

    status, type, title = 408, "request-timeout", "The request body arrived too slowly"
    close_connection = True


class BodyUndecodable(BadRequest):
    """The body is not what its Content-Encoding says; the rest of it is not read."""

    close_connection = True


class TooManySockets(RateLimited):
    type, title = "too-many-sockets", "Too many live-update sockets open for this tenant"


class SocketsFull(JobqError):
    status, type, title = 503, "sockets-full", "Too many live-update sockets open"


class NotReady(JobqError):
    """A background task (worker, webhook sender, alert monitor) died or stalled."""

    status, type, title = 503, "not-ready", "A background task is not running"


class StaleAttempt(Exception):
    """A completion, heartbeat or progress report from an attempt whose lease was
    taken over (or whose job is no longer running). Logged and dropped."""


class CorruptStore(Exception):
    """A data file cannot be read; jobq refuses to start rather than overwrite it."""


class StoreLocked(Exception):
    """Another process holds the data directory."""
