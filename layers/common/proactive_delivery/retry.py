"""Failure classification and retry timing."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from proactive_delivery.errors import PermanentSendError, TransientSendError

# SQS refuses a visibility timeout above 12 hours.
MAX_VISIBILITY_SECONDS = 43200


def backoff_seconds(attempt: int, *, base: int, cap: int, rng: random.Random | None = None) -> int:
    """Exponential backoff with "equal jitter": half the exponential delay is kept, the other
    half is random, so retries spread out without ever collapsing to an immediate retry.

    attempt 1 -> [base/2, base], attempt 2 -> [base, 2*base], ... capped at `cap`.
    """
    if attempt < 1:
        raise ValueError("attempt starts at 1")
    rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography  # nosec B311
    ceiling = min(cap, base * 2 ** min(attempt - 1, 32))
    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
    return int(max(1, min(MAX_VISIBILITY_SECONDS, round(delay))))


def retry_delay(
    attempt: int, *, base: int, cap: int, retry_after: float | None, rng: random.Random | None = None
) -> int:
    """The provider's Retry-After wins when it asks for more patience than our backoff."""
    delay = backoff_seconds(attempt, base=base, cap=cap, rng=rng)
    if retry_after is not None:
        delay = max(delay, int(retry_after + 0.999))
    return min(MAX_VISIBILITY_SECONDS, delay)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Retry-After is either delay-seconds or an HTTP-date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds)


def classify_response(response: httpx.Response) -> None:
    """Raise the right SendError for a non-2xx answer; return quietly for a 2xx."""
    status = response.status_code
    if 200 <= status < 300:
        return
    if status == 429:
        raise TransientSendError(
            "rate_limited",
            http_status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    if status == 408 or status >= 500:
        raise TransientSendError(
            "server_error" if status >= 500 else "request_timeout",
            http_status=status,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    # 3xx is not followed (a webhook that redirects is misconfigured); 4xx means this
    # request will never be accepted as it is.
    raise PermanentSendError("rejected", http_status=status, detail=f"HTTP {status}")


def classify_transport_error(exc: httpx.HTTPError) -> TransientSendError:
    if isinstance(exc, httpx.TimeoutException):
        return TransientSendError("timeout", detail=type(exc).__name__)
    return TransientSendError("connection_error", detail=type(exc).__name__)
