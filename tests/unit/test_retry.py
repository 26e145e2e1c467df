"""Failure classification and retry timing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from proactive_delivery.errors import PermanentSendError, TransientSendError
from proactive_delivery.retry import (
    MAX_VISIBILITY_SECONDS,
    backoff_seconds,
    classify_response,
    classify_transport_error,
    parse_retry_after,
    retry_delay,
)

NOW = datetime(2025, 3, 4, 12, 0, 0, tzinfo=UTC)


def response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, headers=headers, request=httpx.Request("POST", "https://n8n.example.com/hook")
    )


# --- backoff ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_backoff_stays_within_half_ceiling_and_ceiling(seed: int) -> None:
    # GIVEN a base of 30 s and a cap of one hour
    rng = random.Random(seed)

    for attempt in range(1, 12):
        # WHEN the delay for each attempt is computed
        delay = backoff_seconds(attempt, base=30, cap=3600, rng=rng)

        # THEN it lies in [ceiling/2, ceiling] with ceiling = min(cap, base * 2^(attempt-1))
        ceiling = min(3600, 30 * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling, (attempt, delay)


def test_backoff_grows_exponentially_until_the_cap() -> None:
    # GIVEN the jitter pinned to its extremes
    low = [backoff_seconds(a, base=10, cap=10_000, rng=_FixedUniform(0.0)) for a in range(1, 8)]
    high = [backoff_seconds(a, base=10, cap=10_000, rng=_FixedUniform(1.0)) for a in range(1, 8)]

    # THEN the minimum and maximum double with every attempt
    assert low == [5, 10, 20, 40, 80, 160, 320]
    assert high == [10, 20, 40, 80, 160, 320, 640]


def test_backoff_is_capped() -> None:
    # GIVEN an attempt far beyond where base * 2^n exceeds the cap
    delays = {backoff_seconds(40, base=30, cap=600, rng=random.Random(seed)) for seed in range(50)}

    # THEN every delay is within [cap/2, cap]
    assert min(delays) >= 300
    assert max(delays) <= 600


def test_backoff_never_exceeds_the_sqs_visibility_limit() -> None:
    # GIVEN a cap above SQS's 12-hour visibility limit
    delays = [backoff_seconds(a, base=3600, cap=10**6, rng=random.Random(a)) for a in range(1, 60)]

    # THEN no delay exceeds 43200 s
    assert MAX_VISIBILITY_SECONDS == 43200
    assert max(delays) == 43200


def test_backoff_is_never_zero() -> None:
    # GIVEN the smallest base and jitter pinned low (0.5 s would round to 0)
    delay = backoff_seconds(1, base=1, cap=1, rng=_FixedUniform(0.0))

    # THEN the delay is still at least one second
    assert delay == 1


def test_backoff_is_deterministic_with_a_seeded_rng() -> None:
    # GIVEN two generators with the same seed
    first = [backoff_seconds(a, base=30, cap=3600, rng=random.Random(7)) for a in range(1, 10)]
    second = [backoff_seconds(a, base=30, cap=3600, rng=random.Random(7)) for a in range(1, 10)]

    # THEN the delays are identical, and the jitter is not constant across seeds
    assert first == second
    other = [backoff_seconds(a, base=30, cap=3600, rng=random.Random(8)) for a in range(1, 10)]
    assert first != other


def test_backoff_rejects_attempt_zero() -> None:
    # GIVEN / WHEN attempt 0 (attempts are counted from 1) / THEN it is a programming error
    with pytest.raises(ValueError, match="attempt"):
        backoff_seconds(0, base=30, cap=3600)


# --- retry_delay --------------------------------------------------------------------------


def test_retry_after_wins_when_larger_than_backoff() -> None:
    # GIVEN a first attempt (backoff at most 30 s) and a provider asking for 120.2 s
    delay = retry_delay(1, base=30, cap=3600, retry_after=120.2, rng=random.Random(1))

    # THEN the provider's wait is honoured, rounded up to whole seconds
    assert delay == 121


def test_backoff_wins_when_larger_than_retry_after() -> None:
    # GIVEN a backoff of at least 15 s and a provider asking for 2 s
    rng_seed = 3
    expected = backoff_seconds(1, base=30, cap=3600, rng=random.Random(rng_seed))

    # WHEN the retry delay is computed with the same jitter
    delay = retry_delay(1, base=30, cap=3600, retry_after=2.0, rng=random.Random(rng_seed))

    # THEN it is the backoff delay
    assert delay == expected
    assert delay >= 15


def test_retry_after_is_capped_at_the_visibility_limit() -> None:
    # GIVEN a provider asking for a day
    delay = retry_delay(1, base=30, cap=3600, retry_after=86_400.0, rng=random.Random(1))

    # THEN the delay is the largest SQS accepts
    assert delay == MAX_VISIBILITY_SECONDS


def test_retry_delay_without_retry_after_is_the_backoff() -> None:
    # GIVEN no Retry-After
    delay = retry_delay(4, base=30, cap=3600, retry_after=None, rng=random.Random(5))

    # THEN the delay equals the plain backoff for that attempt
    assert delay == backoff_seconds(4, base=30, cap=3600, rng=random.Random(5))


# --- parse_retry_after ----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("120", 120.0), (" 5 ", 5.0), ("0", 0.0)])
def test_retry_after_in_seconds(value: str, expected: float) -> None:
    # GIVEN / WHEN a delay-seconds header / THEN its value in seconds
    assert parse_retry_after(value, now=NOW) == expected


def test_retry_after_as_http_date() -> None:
    # GIVEN an HTTP-date 90 s from now
    header = format_datetime(NOW + timedelta(seconds=90), usegmt=True)

    # WHEN it is parsed
    seconds = parse_retry_after(header, now=NOW)

    # THEN it is the distance from now
    assert seconds == pytest.approx(90.0)


def test_retry_after_date_in_the_past_is_zero() -> None:
    # GIVEN an HTTP-date already passed
    header = format_datetime(NOW - timedelta(minutes=5), usegmt=True)

    # WHEN / THEN no negative wait
    assert parse_retry_after(header, now=NOW) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "-5", "1.5", "Someday, 99 Foo 2025"])
def test_retry_after_garbage_is_ignored(value: str | None) -> None:
    # GIVEN / WHEN a missing or unparseable header / THEN no Retry-After
    assert parse_retry_after(value, now=NOW) is None


# --- classify_response ----------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_success(status: int) -> None:
    # GIVEN / WHEN a 2xx answer / THEN classification returns quietly
    assert classify_response(response(status)) is None


def test_429_is_transient_with_retry_after() -> None:
    # GIVEN a 429 with Retry-After: 60
    with pytest.raises(TransientSendError) as excinfo:
        classify_response(response(429, {"Retry-After": "60"}))

    # THEN it is transient, rate limited, and carries the provider's wait
    assert excinfo.value.reason == "rate_limited"
    assert excinfo.value.http_status == 429
    assert excinfo.value.retry_after == 60.0


def test_429_without_retry_after_is_still_transient() -> None:
    with pytest.raises(TransientSendError) as excinfo:
        classify_response(response(429))
    assert excinfo.value.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_and_request_timeout_are_transient(status: int) -> None:
    # GIVEN / WHEN a 5xx or 408 answer
    with pytest.raises(TransientSendError) as excinfo:
        classify_response(response(status))

    # THEN it is transient and keeps the status
    assert excinfo.value.http_status == status
    assert excinfo.value.reason == ("request_timeout" if status == 408 else "server_error")


def test_503_retry_after_is_carried() -> None:
    with pytest.raises(TransientSendError) as excinfo:
        classify_response(response(503, {"Retry-After": "30"}))
    assert excinfo.value.retry_after == 30.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_client_errors_are_permanent(status: int) -> None:
    # GIVEN / WHEN a 4xx answer other than 408/429
    with pytest.raises(PermanentSendError) as excinfo:
        classify_response(response(status))

    # THEN it is permanent, a plain failure, with the status
    assert excinfo.value.http_status == status
    assert excinfo.value.final_state == "failed"
    assert not isinstance(excinfo.value, TransientSendError)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_permanent(status: int) -> None:
    # GIVEN a webhook that redirects (misconfigured: redirects are not followed)
    with pytest.raises(PermanentSendError) as excinfo:
        classify_response(response(status, {"Location": "https://elsewhere.example.com"}))

    # THEN it is permanent
    assert excinfo.value.http_status == status


# --- classify_transport_error ---------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("slow"),
        httpx.ConnectTimeout("slow"),
        httpx.WriteTimeout("slow"),
        httpx.PoolTimeout("x"),
    ],
)
def test_timeouts_are_transient_timeouts(exc: httpx.HTTPError) -> None:
    # GIVEN / WHEN a timeout
    error = classify_transport_error(exc)

    # THEN it is transient, reason timeout, no HTTP status
    assert isinstance(error, TransientSendError)
    assert error.reason == "timeout"
    assert error.http_status is None


@pytest.mark.parametrize("exc", [httpx.ConnectError("refused"), httpx.RemoteProtocolError("eof")])
def test_connection_errors_are_transient_connection_errors(exc: httpx.HTTPError) -> None:
    # GIVEN / WHEN a connection failure
    error = classify_transport_error(exc)

    # THEN it is transient, reason connection_error
    assert isinstance(error, TransientSendError)
    assert error.reason == "connection_error"
    assert type(exc).__name__ in str(error)


class _FixedUniform(random.Random):
    """uniform(a, b) always returns the point `fraction` of the way from a to b."""

    def __init__(self, fraction: float) -> None:
        super().__init__(0)
        self._fraction = fraction

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self._fraction
