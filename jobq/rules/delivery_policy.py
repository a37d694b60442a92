"""What one webhook attempt's answer means for its delivery (SPEC §9), as pure rules.

| answer                                   | delivery becomes                                  |
|------------------------------------------|---------------------------------------------------|
| 2xx                                      | `delivered`                                       |
| 410 Gone                                 | `stopped`: the receiver wants no more             |
| address refused when dialling            | `failed` at once: retrying cannot make it allowed |
| anything, on a redelivery                | `failed` (a redelivery is one attempt)            |
| anything else, schedule used up          | `failed`                                          |
| 429 or 503 with `Retry-After`            | `pending`, next attempt after Retry-After          |
| anything else (3xx, 4xx, 5xx, no answer) | `pending`, next attempt after the schedule's delay |

The n-th retry waits `schedule[n-1]` seconds ±`jitter` (20 %); Retry-After
replaces that delay (at most `max_retry_after`) but the attempt still counts,
so a receiver cannot keep a delivery alive for ever.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from jobq.core.config import DEFAULT_WEBHOOK_RETRY_SCHEDULE
from jobq.rules.outbox import DELIVERED, FAILED, PENDING, STOPPED


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    delays: tuple[float, ...] = DEFAULT_WEBHOOK_RETRY_SCHEDULE
    jitter: float = 0.2
    max_retry_after: float = 86400.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (1-based), jittered."""
        base = self.delays[retry - 1]
        return base * (1.0 + self.jitter * (2.0 * self.rng.random() - 1.0))


@dataclass(frozen=True, slots=True)
class Decision:
    status: str
    delay_seconds: float | None = None  # set when status is pending


def decide(
    schedule: RetrySchedule,
    attempt: int,
    status_code: int | None,
    *,
    retry_after: float | None = None,
    refused: bool = False,
    redelivery: bool = False,
) -> Decision:
    """The delivery's next state after attempt number `attempt` (1-based)
    was answered `status_code` (None: no answer: network error or timeout)."""
    if status_code is not None and 200 <= status_code < 300:
        return Decision(DELIVERED)
    if status_code == 410:
        return Decision(STOPPED)
    if refused or redelivery or attempt > len(schedule.delays):
        return Decision(FAILED)
    if status_code in (429, 503) and retry_after is not None:
        return Decision(PENDING, min(max(retry_after, 0.0), schedule.max_retry_after))
    return Decision(PENDING, schedule.delay(attempt))
