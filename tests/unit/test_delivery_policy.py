"""`delivery_policy.decide`: what one webhook attempt's answer means, as a table."""

from __future__ import annotations

import random

import pytest

from jobq.rules.delivery_policy import RetrySchedule, decide
from jobq.rules.outbox import DELIVERED, FAILED, PENDING, STOPPED

SCHEDULE = RetrySchedule((5.0, 30.0, 120.0), rng=random.Random(7))


@pytest.mark.parametrize(
    ("attempt", "code", "extra", "status", "delay"),
    [
        (1, 200, {}, DELIVERED, None),
        (1, 204, {}, DELIVERED, None),
        (4, 299, {}, DELIVERED, None),  # even past the schedule, a 2xx is delivered
        (1, 410, {}, STOPPED, None),
        (1, 500, {}, PENDING, 5.0),
        (2, 500, {}, PENDING, 30.0),
        (3, None, {}, PENDING, 120.0),  # no answer at all
        (4, 500, {}, FAILED, None),  # the schedule is used up
        (1, 302, {}, PENDING, 5.0),  # redirects are not followed
        (1, 404, {}, PENDING, 5.0),
        (1, 429, {}, PENDING, 5.0),  # no Retry-After: the schedule
        (1, 429, {"retry_after": 600.0}, PENDING, 600.0),
        (1, 503, {"retry_after": 0.0}, PENDING, 0.0),
        (1, 503, {"retry_after": 10.0**9}, PENDING, 86400.0),  # capped
        (1, 500, {"retry_after": 600.0}, PENDING, 5.0),  # only 429 and 503 are read for it
        (4, 429, {"retry_after": 60.0}, FAILED, None),  # it still counts as an attempt
        (1, None, {"refused": True}, FAILED, None),
        (1, 500, {"redelivery": True}, FAILED, None),
        (1, 410, {"redelivery": True}, STOPPED, None),
        (1, 200, {"redelivery": True}, DELIVERED, None),
    ],
)
def test_decide(attempt: int, code: int | None, extra: dict[str, object], status: str, delay: float | None) -> None:
    decision = decide(SCHEDULE, attempt, code, **extra)  # type: ignore[arg-type]
    assert decision.status == status
    if delay is None:
        assert decision.delay_seconds is None
    elif "retry_after" in extra and code in (429, 503):
        assert decision.delay_seconds == delay
    else:
        assert decision.delay_seconds is not None
        assert delay * 0.8 <= decision.delay_seconds <= delay * 1.2


def test_the_jitter_spreads_retries_within_20_percent() -> None:
    delays = [SCHEDULE.delay(2) for _ in range(2000)]
    assert 24.0 <= min(delays) < 25.0 and 35.0 < max(delays) <= 36.0
    assert len({round(d, 3) for d in delays}) > 1000


def test_an_empty_schedule_fails_after_the_first_try() -> None:
    assert decide(RetrySchedule(()), 1, 500).status == FAILED


# ---- the settings behind it -----------------------------------------------------


def test_the_schedule_and_alert_settings_are_read_from_the_environment() -> None:
    from jobq.core.config import DEFAULT_WEBHOOK_RETRY_SCHEDULE, Settings

    assert Settings.from_env({}).webhook_retry_schedule == DEFAULT_WEBHOOK_RETRY_SCHEDULE
    assert 20 * 3600 <= sum(DEFAULT_WEBHOOK_RETRY_SCHEDULE) <= 26 * 3600  # "spread over about a day"
    settings = Settings.from_env(
        {
            "JOBQ_WEBHOOK_RETRY_SCHEDULE": "1, 2.5,60",
            "JOBQ_ALERT_URL": "https://ops.example.com/alerts",
            "JOBQ_ALERT_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "JOBQ_DLQ_ALERT_SECONDS": "60",
        }
    )
    assert settings.webhook_retry_schedule == (1.0, 2.5, 60.0)
    assert settings.alert_url == "https://ops.example.com/alerts" and settings.dlq_alert_seconds == 60.0
    assert "MfKQ" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"JOBQ_WEBHOOK_RETRY_SCHEDULE": "5,soon"}, "JOBQ_WEBHOOK_RETRY_SCHEDULE"),
        ({"JOBQ_WEBHOOK_RETRY_SCHEDULE": "5,-1"}, "JOBQ_WEBHOOK_RETRY_SCHEDULE"),
        ({"JOBQ_WEBHOOK_RETRY_SCHEDULE": "5,inf"}, "JOBQ_WEBHOOK_RETRY_SCHEDULE"),
        ({"JOBQ_ALERT_URL": "https://ops.example.com/"}, "JOBQ_ALERT_SECRET"),
        ({"JOBQ_ALERT_URL": "ftp://ops.example.com/", "JOBQ_ALERT_SECRET": "whsec_abcdefghijkl"}, "JOBQ_ALERT_URL"),
        ({"JOBQ_ALERT_SECRET": "not-a-whsec-secret"}, "JOBQ_ALERT_SECRET"),
        ({"JOBQ_WEBHOOK_TIMEOUT_SECONDS": "0"}, "JOBQ_WEBHOOK_TIMEOUT_SECONDS"),
    ],
)
def test_bad_webhook_settings_are_refused_by_name(env: dict[str, str], named: str) -> None:
    from jobq.core.config import ConfigError, Settings

    with pytest.raises(ConfigError, match=named) as refused:
        Settings.from_env(env)
    assert "abcdefghijkl" not in str(refused.value) and "not-a-whsec" not in str(refused.value)


def test_the_sender_takes_lanes_in_turn() -> None:
    from datetime import UTC, datetime

    from jobq.rules.outbox import new_delivery
    from jobq.rules.outbox import round_robin as _round_robin

    now = datetime(2026, 11, 24, tzinfo=UTC)
    due = [new_delivery("j", tenant, "job.succeeded", "https://h/", {}, now) for tenant in "aaaabbc"]
    due.append(new_delivery(None, "a", "alert.raised", "https://ops/", {}, now))  # the operator's lane
    lanes = ["operator" if d.lane is None else d.lane for d in _round_robin(due)]
    assert lanes == ["a", "b", "c", "operator", "a", "b", "a", "a"]
