"""Webhook signatures (SPEC §9): the Standard Webhooks known-answer vector, and a
receiver that verifies with the `standardwebhooks` package from PyPI, not our code."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import traceback
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from jobq.outbound.signing import WebhookSecretError, secret_bytes, sign
from jobq.tenancy.tenants import new_webhook_secret

# The published Standard Webhooks test vector.
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# HMAC-SHA256 of VECTOR_BODY keyed with the vector's decoded secret, computed with
# `openssl dgst -sha256 -mac HMAC -macopt hexkey:31f290f6…` independently of Python.
VECTOR_X_SIGNATURE = "sha256=e2cb4f5251572539d458bfb8a7adb533b08801e6a794467e06f771debbb0818b"

BODY = b'{"type":"job.succeeded","timestamp":"2026-01-01T00:00:00Z","data":{"id":"job_1","state":"succeeded"}}'


def now() -> int:
    # The package checks `webhook-timestamp` against the wall clock (5 minutes either
    # way), so the round trips sign with the real time rather than a fake clock.
    return int(time.time())


def verify(secret: str, body: bytes, headers: dict[str, str]) -> None:
    Webhook(secret).verify(body, headers, json_parse=False)


def test_known_answer_vector() -> None:
    headers = sign(VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, [VECTOR_SECRET])
    assert headers == {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": "1614265330",
        "webhook-signature": VECTOR_SIGNATURE,
        "X-Signature": VECTOR_X_SIGNATURE,
    }


def test_known_answer_vector_agrees_with_the_package() -> None:
    # The vector is not merely copied from a document: the package computes it too.
    when = datetime.fromtimestamp(VECTOR_TIMESTAMP, tz=UTC)
    assert Webhook(VECTOR_SECRET).sign(VECTOR_ID, when, VECTOR_BODY.decode()) == VECTOR_SIGNATURE


def test_secret_bytes_decodes_after_the_prefix() -> None:
    assert secret_bytes(VECTOR_SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    fresh = new_webhook_secret()
    assert len(secret_bytes(fresh)) == 32
    # Unpadded base64 is accepted, as the reference libraries accept it.
    assert secret_bytes(fresh.rstrip("=")) == secret_bytes(fresh)


def test_round_trip_verified_by_the_package() -> None:
    secret = new_webhook_secret()
    headers = sign("msg_round_trip", now(), BODY, [secret])
    assert headers["webhook-signature"].startswith("v1,")
    assert " " not in headers["webhook-signature"]
    verify(secret, BODY, headers)


def test_rotation_signs_with_both_secrets_and_each_verifies() -> None:
    current, previous = new_webhook_secret(), new_webhook_secret()
    headers = sign("msg_rotation", now(), BODY, [current, previous])
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    assert all(s.startswith("v1,") for s in signatures)
    # A receiver still on the old secret and one already on the new one both accept.
    verify(current, BODY, headers)
    verify(previous, BODY, headers)
    # A secret the tenant never had does not.
    with pytest.raises(WebhookVerificationError):
        verify(new_webhook_secret(), BODY, headers)


@pytest.mark.parametrize("secrets_count", [1, 2])
@pytest.mark.parametrize("tamper", ["body", "id", "timestamp", "signature"])
def test_tampering_is_rejected_by_the_package(tamper: str, secrets_count: int) -> None:
    secrets = [new_webhook_secret() for _ in range(secrets_count)]
    ts = now()
    headers = sign("msg_tamper", ts, BODY, secrets)
    body = BODY
    if tamper == "body":
        body = BODY.replace(b"succeeded", b"cancelled", 1)
    elif tamper == "id":
        headers["webhook-id"] = "msg_tampeR"
    elif tamper == "timestamp":
        # Still inside the package's tolerance: only the signature can reject it.
        headers["webhook-timestamp"] = str(ts - 1)
    else:
        headers["webhook-signature"] = sign("msg_tamper", ts, body, [new_webhook_secret()])["webhook-signature"]
    for secret in secrets:
        with pytest.raises(WebhookVerificationError):
            verify(secret, body, headers)


def test_webhook_id_stays_and_timestamp_changes_per_attempt() -> None:
    secret = new_webhook_secret()
    ts = now()
    first = sign("msg_retry", ts - 60, BODY, [secret])
    second = sign("msg_retry", ts, BODY, [secret])
    assert first["webhook-id"] == second["webhook-id"] == "msg_retry"
    assert first["webhook-signature"] != second["webhook-signature"]
    # The body-only X-Signature does not depend on the attempt.
    assert first["X-Signature"] == second["X-Signature"]
    verify(secret, BODY, second)


def test_x_signature_is_hex_hmac_of_the_body_keyed_with_the_first_secret() -> None:
    current, previous = new_webhook_secret(), new_webhook_secret()
    headers = sign("msg_x", now(), BODY, [current, previous])
    key = base64.b64decode(current.removeprefix("whsec_"))
    expected = "sha256=" + hmac.new(key, BODY, hashlib.sha256).hexdigest()
    assert headers["X-Signature"] == expected
    old_key = base64.b64decode(previous.removeprefix("whsec_"))
    assert headers["X-Signature"] != "sha256=" + hmac.new(old_key, BODY, hashlib.sha256).hexdigest()


MALFORMED = [
    "",
    "whsec_",
    "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no prefix
    "WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_not*base64!",
    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwA",  # 33 characters: no base64 has that length
    "whsec_MfKQ9r8G KYqrTwjUPD8ILPZIo2LaLaSw",
    "whsec_====",
]


@pytest.mark.parametrize("secret", MALFORMED)
def test_malformed_secret_raises_a_clear_error(secret: str) -> None:
    with pytest.raises(WebhookSecretError, match="webhook secret"):
        secret_bytes(secret)
    with pytest.raises(WebhookSecretError, match="webhook secret"):
        sign("msg_bad", VECTOR_TIMESTAMP, BODY, [new_webhook_secret(), secret])


def test_malformed_secret_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="whsec_"):
        secret_bytes("whsec_not*base64!")


def test_no_secret_is_an_error() -> None:
    with pytest.raises(WebhookSecretError, match="at least one"):
        sign("msg_none", VECTOR_TIMESTAMP, BODY, [])


@pytest.mark.parametrize("timestamp", [1614265330.0, -1, True])
def test_timestamp_must_be_integer_seconds(timestamp: object) -> None:
    with pytest.raises(ValueError, match="integer"):
        sign(VECTOR_ID, timestamp, VECTOR_BODY, [VECTOR_SECRET])  # type: ignore[arg-type]


def test_empty_id_is_an_error() -> None:
    with pytest.raises(ValueError, match="id"):
        sign("", VECTOR_TIMESTAMP, VECTOR_BODY, [VECTOR_SECRET])


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_" + "A" * 40 + "*",  # malformed but otherwise long and recognisable
        "sk_live_" + "Q" * 40,  # not a webhook secret at all: no prefix
    ],
)
def test_secret_values_never_appear_in_errors(secret: str) -> None:
    value = secret.removeprefix("whsec_")
    with pytest.raises(WebhookSecretError) as info:
        sign("msg_leak", VECTOR_TIMESTAMP, BODY, [secret])
    exc = info.value
    rendered = [str(exc), repr(exc), *traceback.format_exception(exc)]
    for text in rendered:
        assert value not in text
        assert value[:12] not in text
    # No chained decoder error carries part of the input either.
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__


def test_headers_hold_no_secret_material() -> None:
    secret = new_webhook_secret()
    headers = sign("msg_headers", now(), BODY, [secret])
    text = repr(headers)
    assert secret not in text
    assert secret.removeprefix("whsec_") not in text
    assert secret_bytes(secret).hex() not in text
