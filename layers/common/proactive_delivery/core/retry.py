"""Failure classification and retry timing.

A transient failure is retried on a widening schedule, Svix's: seconds, then minutes, then
hours (5 s, 5 min, 30 min, 2 h, 5 h, 10 h, then every 10 h), each step capped by the SQS
visibility limit of 12 hours, for as many attempts as fit in a time window
(RETRY_WINDOW_HOURS, default 24): an outage of the provider of most of a day is survived
without an operator. The last wait is cut so the final attempt falls at the window's end;
when it fails too the message is `failed`. The same numbers give the queue's
maxReceiveCount (the attempts plus room for receives that are not attempts), so the queue
and the function cannot disagree about the budget.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

# SQS refuses a visibility timeout above 12 hours.
MAX_VISIBILITY_SECONDS: Final = 43200
# Svix's schedule after the first attempt; the last step repeats.
SVIX_SCHEDULE: Final = (5, 300, 1800, 7200, 18000, 36000)
# Receives that are not attempts: short deferrals (quiet hours opening within 15 minutes),
# records held by a concurrent claim, sends released before a deadline, redeliveries after
# a crash. The queue's maxReceiveCount leaves this much room above the attempt budget.
RECEIVE_HEADROOM: Final = 10
# Up to this share is added to a delay, so retries of one outage spread out.
JITTER: Final = 0.1


@dataclass(frozen=True)
class RetryPolicy:
    window: timedelta
    schedule: tuple[int, ...] = SVIX_SCHEDULE

    def __post_init__(self) -> None:
        if self.window <= timedelta(0):
            raise ValueError("the retry window must be positive")
        if not self.schedule or any(s < 1 for s in self.schedule):
            raise ValueError("the retry schedule needs at least one delay of >= 1 s")

    def delay_after(self, attempt: int) -> int:
        """The planned wait after failed attempt `attempt` (1-based), before the window cut."""
        if attempt < 1:
            raise ValueError("attempt starts at 1")
        step = self.schedule[min(attempt, len(self.schedule)) - 1]
        return min(step, MAX_VISIBILITY_SECONDS)

    def plan(self) -> tuple[int, ...]:
        """Every wait of a message that fails each attempt: the schedule, the last step cut so
        the final attempt falls at the end of the window."""
        waits: list[int] = []
        left = round(self.window.total_seconds())
        while left > 0:
            wait = min(self.delay_after(len(waits) + 1), left)
            waits.append(wait)
            left -= wait
        return tuple(waits)

    @property
    def attempts(self) -> int:
        """Attempts a message gets within the window (the first one plus one per wait)."""
        return len(self.plan()) + 1

    @property
    def max_receive_count(self) -> int:
        """The queue's maxReceiveCount for this policy: the attempts plus room for receives
        that are not attempts (RECEIVE_HEADROOM)."""
        return self.attempts + RECEIVE_HEADROOM

    def next_delay(
        self, attempt: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> int | None:
        """Seconds until the next attempt after failed attempt `attempt`, or None when it was
        the last attempt of the window (the message is then `failed`). The budget is counted
        in attempts, so time a message spends deferred (quiet hours, the daily cap) or waiting
        on a provider's Retry-After never uses it up. Retry-After wins when it asks for more
        patience, up to the visibility limit."""
        plan = self.plan()
        if attempt < 1:
            raise ValueError("attempt starts at 1")
        if attempt > len(plan):
            return None
        rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography  # nosec B311
        wait = max(1, round(plan[attempt - 1] * (1 + rng.uniform(0, JITTER))))
        if retry_after is not None:
            wait = max(wait, math.ceil(retry_after))
        return min(wait, MAX_VISIBILITY_SECONDS)


def parse_schedule(text: str) -> tuple[int, ...]:
    """`5,300,1800` -> (5, 300, 1800). Raises ValueError."""
    values = tuple(int(part) for part in text.split(",") if part.strip())
    if not values or any(v < 1 or v > MAX_VISIBILITY_SECONDS for v in values):
        raise ValueError(f"delays must be 1-{MAX_VISIBILITY_SECONDS} seconds")
    return values
