"""Table-driven tests of the pure rules (CONVENTIONS rule 4)."""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobq.core.models import TERMINAL, IllegalTransition, Status, check_transition
from jobq.rules.jobs import backoff_seconds, claim_key, find_cycle, payload_hash
from jobq.rules.ratelimit import FailureWindow, TokenBucket

ROOT = Path(__file__).resolve().parents[2]  # the repository root


@pytest.mark.parametrize(
    ("failures", "base", "cap", "expected"),
    [
        (1, 30, 3600, 30),
        (2, 30, 3600, 60),
        (3, 30, 3600, 120),
        (4, 30, 3600, 240),
        (10, 30, 3600, 3600),
        (1, 0.5, 10, 0.5),
    ],
)
def test_backoff_doubles_is_capped_and_jittered_ten_percent(
    failures: int, base: float, cap: float, expected: float
) -> None:
    rng = random.Random(7)
    delays = [backoff_seconds(failures, base, cap, rng) for _ in range(200)]
    assert all(expected * 0.9 <= d <= expected * 1.1 for d in delays)
    assert max(delays) - min(delays) > expected * 0.1  # really jittered


ALLOWED = {
    (None, Status.QUEUED),
    (None, Status.WAITING),
    (Status.WAITING, Status.QUEUED),
    (Status.WAITING, Status.CANCELLED),
    (Status.QUEUED, Status.RUNNING),
    (Status.RETRY, Status.RUNNING),
    (Status.RUNNING, Status.SUCCEEDED),
    (Status.RUNNING, Status.RETRY),
    (Status.RUNNING, Status.FATAL),
    (Status.RUNNING, Status.CANCELLED),
    (Status.RUNNING, Status.QUEUED),
    (Status.QUEUED, Status.CANCELLED),
    (Status.RETRY, Status.CANCELLED),
    (Status.FATAL, Status.QUEUED),
}


@pytest.mark.parametrize("old", [None, *Status])
@pytest.mark.parametrize("new", list(Status))
def test_transition_table(old: Status | None, new: Status) -> None:
    if (old, new) in ALLOWED:
        check_transition(old, new)
    else:
        with pytest.raises(IllegalTransition):
            check_transition(old, new)


def test_terminal_states_only_leave_by_dlq_retry() -> None:
    for old, new in ALLOWED:
        if old in TERMINAL:
            assert (old, new) == (Status.FATAL, Status.QUEUED)


@pytest.mark.parametrize(
    ("edges", "cycle"),
    [
        ({"a": [], "b": ["a"]}, None),
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
        ({"x": ["a"], "a": ["b"], "b": ["a"]}, ["a", "b", "a"]),
        ({"a": ["outside"], "b": ["a"]}, None),
        ({"a": ["b", "c"], "b": ["d"], "c": ["d"], "d": []}, None),
    ],
)
def test_find_cycle(edges: dict[str, list[str]], cycle: list[str] | None) -> None:
    assert find_cycle(edges) == cycle


def test_claim_key_orders_by_priority_then_age_with_aging() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    later = datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
    much_later = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
    assert claim_key(3, later, 300) < claim_key(1, t0, 300)  # priority first
    assert claim_key(1, t0, 300) < claim_key(1, later, 300)  # then older
    assert claim_key(0, t0, 300) < claim_key(1, much_later, 300)  # aging: a long wait overtakes


def test_payload_hash_is_canonical() -> None:
    a = payload_hash("echo", {"b": 1, "a": [1, 2]})
    assert a == payload_hash("echo", {"a": [1, 2], "b": 1})
    assert a != payload_hash("echo", {"a": [2, 1], "b": 1})
    assert a.startswith("sha256:") and len(a) == 7 + 64


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = TokenBucket.full(per_minute=60, burst=2, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0)
    assert not bucket.take(0.0)
    assert bucket.seconds_until() == 1
    assert bucket.take(1.0)
    assert not bucket.take(1.5)
    assert bucket.take(10.0, 2)  # refilled to capacity, not beyond
    assert not bucket.take(10.0)


def test_failure_window_blocks_after_limit_until_the_minute_ends() -> None:
    window = FailureWindow(limit=3)
    for t in range(3):
        assert window.blocked_for("1.2.3.4", float(t)) == 0
        window.record("1.2.3.4", float(t))
    assert window.blocked_for("1.2.3.4", 10.0) == 50
    assert window.blocked_for("5.6.7.8", 10.0) == 0
    assert window.blocked_for("1.2.3.4", 60.0) == 0


def test_no_module_shadows_the_standard_library() -> None:
    ours = {p.stem for p in ROOT.glob("*.py")}
    assert not ours & set(sys.stdlib_module_names)


def test_new_ids_are_random_version_4_uuids() -> None:
    import uuid

    from jobq.core.ids import new_id

    ids = [new_id() for _ in range(600)]  # more than one pool of randomness
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == value
