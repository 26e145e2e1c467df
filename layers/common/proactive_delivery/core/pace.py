"""The pace each provider accepts: rate limits shared by every deliver invocation, and the
circuit breaker that stops sending to a provider that keeps failing. Pure values and
parsing; the shared state lives in PostgreSQL (delivery.provider_pace, migration 0006).

Defaults, from what the providers publish (docs/channels-and-preferences.md, "Pace"):
- n8n 10/s: n8n forwards each POST to GoHighLevel one for one, whose API takes 100 requests
  per 10 s (and 200,000 a day) per location.
- twilio 1/s, counted in SMS segments: a US 10DLC long code sends about one segment a second
  (Twilio queues the rest up to 10 hours, then drops them with error 30001).
- ses 14/s: SES's default sending rate once out of the sandbox.
- web_chat 20/s: the platform's own chat endpoint, on the platform's own server.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

DEFAULT_RATE_LIMITS: Final = "n8n=10/s,twilio=1/s,ses=14/s,web_chat=20/s"
# Providers whose limit counts SMS segments rather than requests.
SEGMENT_COUNTED: Final = frozenset({"twilio"})
# How far ahead a message may hold a slot: a held message rides on SQS DelaySeconds, whose
# maximum is 15 minutes.
MAX_RESERVATION_SECONDS: Final = 900

_LIMIT = re.compile(r"^([a-z][a-z0-9_-]*)=(\d+(?:\.\d+)?)/(s|min)$")


@dataclass(frozen=True)
class RateLimit:
    per_second: float
    # Tokens that may be spent at once: one second's worth (at least one). A held message
    # comes back on the whole second (SQS DelaySeconds), so the slots of one second arrive
    # together: a provider that takes R a second with a burst of R (GoHighLevel takes 100
    # per 10 s) sees no more than it allows.
    burst: float

    @classmethod
    def of(cls, per_second: float) -> RateLimit:
        return cls(per_second, max(1.0, per_second))


def parse_rate_limits(text: str) -> dict[str, RateLimit]:
    """`n8n=10/s,twilio=60/min` -> {provider: RateLimit}; `none` means no limit at all.
    Raises ValueError naming the entry that is wrong."""
    value = text.strip().lower()
    if value in ("none", "off"):
        return {}
    limits: dict[str, RateLimit] = {}
    for entry in (e.strip() for e in value.split(",") if e.strip()):
        match = _LIMIT.match(entry.replace(" ", ""))
        if not match:
            raise ValueError(f"{entry!r} is not provider=N/s or provider=N/min")
        provider, amount, unit = match.groups()
        per_second = float(amount) / (60 if unit == "min" else 1)
        if per_second <= 0:
            raise ValueError(f"{entry!r}: the rate must be above 0")
        if provider in limits:
            raise ValueError(f"{provider} is given twice")
        limits[provider] = RateLimit.of(per_second)
    return limits


def format_rate_limits(limits: Mapping[str, RateLimit]) -> str:
    return ",".join(f"{p}={_number(limit.per_second)}/s" for p, limit in limits.items()) or "none"


def _number(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class CircuitPolicy:
    """A provider's circuit opens when, of its last `window` attempts (at least
    `min_attempts` of them), a share of `failure_share` or more failed transiently (5xx,
    timeout, connection refused, 429). Open, its messages wait without being attempted; after
    `cool_off_seconds` one probe goes out, and one per cool-off while it fails (the cool-off
    doubling up to `max_cool_off_seconds`); a probe that succeeds closes it."""

    # Off: attempts are still limited by the rate, but a failing provider is only retried on
    # the retry schedule (what every message does without a breaker).
    enabled: bool = True
    window: int = 20
    min_attempts: int = 5
    failure_share: float = 0.5
    cool_off_seconds: int = 30
    max_cool_off_seconds: int = MAX_RESERVATION_SECONDS

    def __post_init__(self) -> None:
        if not 1 <= self.min_attempts <= self.window:
            raise ValueError("min_attempts must be between 1 and the window")
        if not 0 < self.failure_share <= 1:
            raise ValueError("failure_share must be in (0, 1]")
        if not 1 <= self.cool_off_seconds <= self.max_cool_off_seconds <= MAX_RESERVATION_SECONDS:
            raise ValueError(f"cool-offs must be 1-{MAX_RESERVATION_SECONDS} seconds")


@dataclass(frozen=True)
class PacePolicy:
    limits: Mapping[str, RateLimit]
    circuit: CircuitPolicy

    def cost(self, provider: str, segments: int) -> float:
        """What one message takes from its provider's bucket."""
        return float(max(1, segments)) if provider in SEGMENT_COUNTED else 1.0
