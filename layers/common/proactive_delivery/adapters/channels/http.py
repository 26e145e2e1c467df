"""How an HTTP provider's answer is read: which failures are worth retrying
(TransientSendError, with the provider's Retry-After) and which never will be
(PermanentSendError)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from proactive_delivery.core.errors import PermanentSendError, TransientSendError


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
