"""Webhook signatures per Standard Webhooks 1.0 (SPEC §9), as pure functions.

A tenant's `webhookSecrets` are `whsec_<base64>` strings; the first one signs, and
a rotated-out second one keeps signing while it overlaps, so `webhook-signature`
carries one `v1,<base64>` per secret, separated by spaces. `X-Signature` is the
hex HMAC-SHA256 of the body alone, keyed with the first secret. Both are keyed
with the base64-decoded bytes after `whsec_`, as the reference libraries are.

Time is the caller's: `timestamp` is integer Unix seconds, taken per attempt,
while `msg_id` stays the same on every retry of one event.

No secret value ever appears in an error message raised here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


class WebhookSecretError(ValueError):
    """A webhook secret is not `whsec_` followed by base64. The message never holds the value."""


def secret_bytes(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret: the decoded bytes after the prefix.

    Missing `=` padding is tolerated (as the reference libraries do); anything else
    that is not base64, an absent prefix or an empty key raises `WebhookSecretError`.
    """
    if not isinstance(secret, str) or not secret.startswith(SECRET_PREFIX):
        raise WebhookSecretError(f"a webhook secret must start with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        # `from None`: the decoder's own message is no business of a log line.
        raise WebhookSecretError(f"a webhook secret must be {SECRET_PREFIX!r} followed by base64") from None
    if not key:
        raise WebhookSecretError("a webhook secret must not be empty")
    return key


def _hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def sign(msg_id: str, timestamp: int, body: bytes, secrets: list[str]) -> dict[str, str]:
    """The signature headers for one delivery attempt of `body`.

    `secrets` is the tenant's `webhookSecrets`, the current one first; each adds a
    `v1,` signature of `"{msg_id}.{timestamp}.".encode() + body`.
    """
    if not secrets:
        raise WebhookSecretError("at least one webhook secret is needed to sign")
    if not msg_id:
        raise ValueError("a webhook id must not be empty")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool) or timestamp < 0:
        # A float would sign "1614265330.0", which no receiver reproduces.
        raise ValueError("a webhook timestamp is a non-negative integer number of seconds")
    keys = [secret_bytes(secret) for secret in secrets]
    signed = f"{msg_id}.{timestamp}.".encode() + body
    signatures = " ".join("v1," + base64.b64encode(_hmac_sha256(key, signed)).decode("ascii") for key in keys)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signatures,
        "X-Signature": "sha256=" + hmac.new(keys[0], body, hashlib.sha256).hexdigest(),
    }
