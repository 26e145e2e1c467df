"""EventBridge schedule expressions, `rate(...)` and `cron(...)`, and a clock that can run
faster than real time (`--speed N`: one real second is N scheduled seconds).

Cron follows EventBridge's six fields (minutes hours day-of-month month day-of-week year),
in UTC, with `*`, `?`, lists, ranges, `/` steps and month/day names; day-of-week 1-7 is
SUN-SAT. The `L`, `W` and `#` forms are refused with a clear error rather than guessed.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from proactive_delivery.core.errors import ConfigError

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    )
}
_DAYS = {d: i + 1 for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}


def _field(text: str, low: int, high: int, names: dict[str, int], label: str) -> frozenset[int] | None:
    """The values a cron field allows; None means any (`*` or `?`)."""
    if text in ("*", "?"):
        return None
    if any(c in text for c in "LW#"):
        raise ConfigError(f"cron {label} {text!r}: L, W and # are not supported locally")
    values: set[int] = set()

    def number(token: str) -> int:
        token = token.upper()
        if token in names:
            return names[token]
        if not token.isdigit():
            raise ConfigError(f"cron {label}: {token!r} is not a number")
        return int(token)

    for part in text.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ConfigError(f"cron {label}: step must be >= 1")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, last = base.split("-", 1)
            start, end = number(first), number(last)
        else:
            start = number(base)
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high and start <= end):
            raise ConfigError(f"cron {label}: {part!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int] | None
    hours: frozenset[int] | None
    days: frozenset[int] | None
    months: frozenset[int] | None
    weekdays: frozenset[int] | None
    years: frozenset[int] | None

    def matches(self, at: datetime) -> bool:
        weekday = (at.isoweekday() % 7) + 1  # SUN=1 ... SAT=7
        checks = (
            (self.minutes, at.minute),
            (self.hours, at.hour),
            (self.days, at.day),
            (self.months, at.month),
            (self.weekdays, weekday),
            (self.years, at.year),
        )
        return all(allowed is None or value in allowed for allowed, value in checks)


@dataclass(frozen=True)
class ScheduleExpression:
    text: str
    period: timedelta | None = None
    cron: Cron | None = None

    @classmethod
    def parse(cls, text: str) -> ScheduleExpression:
        text = text.strip()
        rate = _RATE.match(text)
        if rate:
            amount, unit = int(rate.group(1)), rate.group(2).rstrip("s")
            if amount < 1:
                raise ConfigError(f"{text}: the rate must be at least 1")
            if (amount == 1) != (not rate.group(2).endswith("s")):
                raise ConfigError(f"{text}: EventBridge wants '1 {unit}' and 'N {unit}s'")
            return cls(text, period=timedelta(seconds=amount * _UNIT_SECONDS[unit]))
        cron = _CRON.match(text)
        if cron:
            fields = cron.group(1).split()
            if len(fields) != 6:
                raise ConfigError(f"{text}: cron needs six fields (min hour day month weekday year)")
            minute, hour, day, month, weekday, year = fields
            if (day == "?") == (weekday == "?"):
                raise ConfigError(f"{text}: exactly one of day-of-month and day-of-week must be '?'")
            return cls(
                text,
                cron=Cron(
                    _field(minute, 0, 59, {}, "minutes"),
                    _field(hour, 0, 23, {}, "hours"),
                    _field(day, 1, 31, {}, "day-of-month"),
                    _field(month, 1, 12, _MONTHS, "month"),
                    _field(weekday, 1, 7, _DAYS, "day-of-week"),
                    _field(year, 1970, 2199, {}, "year"),
                ),
            )
        raise ConfigError(f"{text!r} is not a rate(...) or cron(...) schedule expression")

    def next_after(self, after: datetime, *, anchor: datetime | None = None) -> datetime:
        """The first fire time strictly after `after`. A rate counts from `anchor` (when the
        schedule was created); a cron matches whole UTC minutes."""
        if self.period is not None:
            start = anchor or after
            elapsed = max(0.0, (after - start).total_seconds())
            periods = int(elapsed // self.period.total_seconds()) + 1
            return start + periods * self.period
        assert self.cron is not None
        at = after.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        # Minute by minute is simple and fast enough: a year is 525,600 checks at worst.
        for _ in range(366 * 24 * 60 * 5):
            if self.cron.matches(at):
                return at
            at += timedelta(minutes=1)
        raise ConfigError(f"{self.text} never fires in the next five years")


class ScheduleClock:
    """Scheduled time: starts at the real time and runs `speed` times faster."""

    def __init__(self, speed: float = 1.0, *, start: datetime | None = None) -> None:
        if speed <= 0:
            raise ConfigError("--speed must be > 0")
        self.speed = speed
        self.start = start or datetime.now(UTC)
        self._started = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self._started) * self.speed)

    def real_seconds_until(self, at: datetime) -> float:
        return max(0.0, (at - self.now()).total_seconds() / self.speed)


@dataclass
class ScheduledTarget:
    """One schedule of one function: when it fires next and how often it has fired."""

    function: str
    name: str
    expression: ScheduleExpression
    input: dict[str, object]
    created: datetime
    next_fire: datetime = field(init=False)
    fired: int = 0

    def __post_init__(self) -> None:
        self.next_fire = self.expression.next_after(self.created, anchor=self.created)


class Scheduler:
    """Which schedules are due at the clock's current time. Like EventBridge, a schedule
    that fell behind fires once, not once per missed period."""

    def __init__(self, targets: list[ScheduledTarget], clock: ScheduleClock) -> None:
        self.targets = targets
        self.clock = clock
        self._lock = threading.Lock()

    def due(self) -> list[ScheduledTarget]:
        now = self.clock.now()
        fired: list[ScheduledTarget] = []
        with self._lock:
            for target in self.targets:
                if target.next_fire <= now:
                    target.fired += 1
                    target.next_fire = target.expression.next_after(now, anchor=target.created)
                    fired.append(target)
        return fired

    def next_fire(self) -> datetime | None:
        with self._lock:
            return min((t.next_fire for t in self.targets), default=None)
