"""The autoscaling rule (`jobq.rules.autoscale`), table-tested."""

from __future__ import annotations

import pytest

from jobq.rules.autoscale import Observation, ScalePolicy, decide, parse_bounds, utilisation

POLICY = ScalePolicy(min_workers=1, max_workers=4, concurrency=5, cooldown_seconds=30.0, up_wait_seconds=2.0)


@pytest.mark.parametrize(
    ("seen", "target", "reason"),
    [
        # Outside the bounds: corrected at once, cooldown or not.
        (Observation(workers=0, backlog=0, running=0, since_change_seconds=1), 1, "below_min"),
        (Observation(workers=6, backlog=50, running=30, since_change_seconds=1), 4, "above_max"),
        # A backlog with busy slots: up by as many as the work fills, at most MAX.
        (Observation(workers=1, backlog=3, running=5), 2, "backlog"),
        (Observation(workers=1, backlog=100, running=5), 4, "backlog"),
        (Observation(workers=2, backlog=1, running=8), 3, "backlog"),  # 0.8 busy: at the threshold
        # ... but not within the cooldown, nor beyond MAX.
        (Observation(workers=1, backlog=100, running=5, since_change_seconds=29.9), 1, "cooldown"),
        (Observation(workers=1, backlog=100, running=5, since_change_seconds=30.0), 4, "backlog"),
        (Observation(workers=4, backlog=100, running=20), 4, "hold"),
        # A backlog with idle slots (limits or dependencies hold it): more workers would not help.
        (Observation(workers=2, backlog=40, running=3), 2, "hold"),
        # The oldest job, when known, must have waited.
        (Observation(workers=1, backlog=3, running=5, oldest_wait_seconds=0.5), 1, "hold"),
        (Observation(workers=1, backlog=3, running=5, oldest_wait_seconds=2.0), 2, "backlog"),
        # Idle: down by one, after the cooldown, never below MIN.
        (Observation(workers=3, backlog=0, running=0), 2, "idle"),
        (Observation(workers=3, backlog=0, running=4, since_change_seconds=60), 2, "idle"),  # 0.27 busy
        (Observation(workers=3, backlog=0, running=0, since_change_seconds=10), 3, "cooldown"),
        (Observation(workers=1, backlog=0, running=0), 1, "hold"),
        # Between the thresholds: hold (hysteresis).
        (Observation(workers=3, backlog=0, running=7), 3, "hold"),  # 0.47 busy
        (Observation(workers=2, backlog=0, running=4), 2, "hold"),  # 0.4 busy
        (Observation(workers=2, backlog=0, running=3), 1, "idle"),  # 0.3 now, 0.6 with one: below 0.8
        # Work waiting but little of it running: no step down while anything waits.
        (Observation(workers=3, backlog=1, running=0), 3, "hold"),
    ],
)
def test_decide(seen: Observation, target: int, reason: str) -> None:
    decision = decide(POLICY, seen)
    assert (decision.target, decision.reason) == (target, reason)
    assert decision.delta(seen.workers) == target - seen.workers


def test_a_step_down_never_sets_off_a_step_up() -> None:
    # Down allowed at 0.3 busy, but with one worker fewer 2 slots of 3 would be 0.8 busy: hold.
    policy = ScalePolicy(min_workers=1, max_workers=4, concurrency=1, down_utilisation=0.5, cooldown_seconds=0)
    assert decide(policy, Observation(workers=3, backlog=0, running=1)).target == 2  # 1 of 2 after: 0.5 < 0.8
    tight = ScalePolicy(min_workers=1, max_workers=8, concurrency=5, down_utilisation=0.7, cooldown_seconds=0)
    # 13 of 20 slots (0.65): idle enough; with 15 slots 0.87 >= 0.8 would scale back up.
    assert decide(tight, Observation(workers=4, backlog=0, running=13)).reason == "hold"
    # 11 of 20 (0.55); with 15 slots 0.73: down is safe.
    assert decide(tight, Observation(workers=4, backlog=0, running=11)).target == 3


def test_a_backlog_with_no_workers_scales_up() -> None:
    assert utilisation(0, 0, 5) == 1.0
    policy = ScalePolicy(min_workers=1, max_workers=3, concurrency=2, cooldown_seconds=0)
    assert decide(policy, Observation(workers=0, backlog=9, running=0)).target == 1  # MIN first


@pytest.mark.parametrize(("text", "bounds"), [("1..3", (1, 3)), ("2..2", (2, 2)), ("4", (4, 4)), (" 1..10", (1, 10))])
def test_parse_bounds(text: str, bounds: tuple[int, int]) -> None:
    assert parse_bounds(text) == bounds


@pytest.mark.parametrize("text", ["", "3..1", "0..2", "1..", "..3", "a..b", "1...3", "-1..2"])
def test_parse_bounds_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="--autoscale"):
        parse_bounds(text)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_workers": 0, "max_workers": 2, "concurrency": 1},
        {"min_workers": 3, "max_workers": 2, "concurrency": 1},
        {"min_workers": 1, "max_workers": 2, "concurrency": 0},
        {"min_workers": 1, "max_workers": 2, "concurrency": 1, "down_utilisation": 0.8, "up_utilisation": 0.8},
    ],
)
def test_policy_refuses_nonsense(kwargs: dict[str, int | float]) -> None:
    with pytest.raises(ValueError):
        ScalePolicy(**kwargs)  # type: ignore[arg-type]
