"""Failure classification and retry timing."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from proactive_delivery.adapters.channels.http import (
    classify_response,
    classify_transport_error,
    parse_retry_after,
)
from proactive_delivery.core.errors import PermanentSendError, TransientSendError
from proactive_delivery.core.retry import (
    MAX_VISIBILITY_SECONDS,
    RECEIVE_HEADROOM,
    RetryPolicy,
    parse_schedule,
)

NOW = datetime(2025, 3, 4, 12, 0, 0, tzinfo=UTC)


def response(status: int, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        status, headers=headers, request=httpx.Request("POST", "https://n8n.example.com/hook")
    )


# --- the retry window ----------------------------------------------------------------------
DAY = RetryPolicy(timedelta(hours=24))


def test_the_schedule_widens_like_svix_seconds_then_minutes_then_hours() -> None:
    assert [DAY.delay_after(a) for a in range(1, 9)] == [5, 300, 1800, 7200, 18000, 36000, 36000, 36000]


def test_the_plan_fills_the_window_exactly_and_ends_at_its_end() -> None:
    # GIVEN a 24-hour window WHEN every attempt fails
    plan = DAY.plan()
    # THEN the waits follow the schedule, the last one cut so the final attempt falls at 24 h
    assert plan == (5, 300, 1800, 7200, 18000, 36000, 23095)
    assert sum(plan) == 24 * 3600
    assert DAY.attempts == 8


@pytest.mark.parametrize("hours", [1, 2, 4, 6, 8, 12, 24, 48, 72])
def test_no_wait_exceeds_the_sqs_visibility_limit(hours: int) -> None:
    plan = RetryPolicy(timedelta(hours=hours)).plan()
    assert max(plan) <= MAX_VISIBILITY_SECONDS
    assert sum(plan) == hours * 3600


def test_the_queues_max_receive_count_leaves_room_above_the_attempts() -> None:
    # Receives that are not attempts (short deferrals, busy claims, releases) must not
    # dead-letter a message whose window is not spent.
    assert DAY.max_receive_count == DAY.attempts + RECEIVE_HEADROOM


def test_each_failure_waits_its_planned_step_with_a_little_jitter() -> None:
    for attempt, planned in enumerate(DAY.plan(), start=1):
        delays = {DAY.next_delay(attempt, rng=random.Random(seed)) for seed in range(30)}
        assert all(d is not None and planned <= d <= planned * 1.1 + 1 for d in delays), attempt
        assert len(delays) > 1 or planned < 10, attempt


def test_the_last_attempt_of_the_window_ends_the_retries() -> None:
    # GIVEN the 8 attempts of a 24-hour window
    # THEN after the 7th failure the wait ends the window; after the 8th there is none
    assert DAY.next_delay(7, rng=random.Random(1)) is not None
    assert DAY.next_delay(8) is None
    assert DAY.next_delay(12) is None


def test_retry_after_wins_when_it_asks_for_more_patience() -> None:
    assert DAY.next_delay(1, retry_after=120.2, rng=random.Random(1)) == 121


def test_retry_after_never_goes_beyond_the_visibility_limit() -> None:
    assert DAY.next_delay(1, retry_after=86_400.0) == MAX_VISIBILITY_SECONDS


def test_a_delay_is_never_zero() -> None:
    tiny = RetryPolicy(timedelta(seconds=3), schedule=(1,))
    assert tiny.next_delay(1, rng=random.Random(0)) == 1
    assert tiny.attempts == 4


def test_a_custom_schedule_repeats_its_last_step() -> None:
    policy = RetryPolicy(timedelta(seconds=10), schedule=(1, 2))
    assert policy.plan() == (1, 2, 2, 2, 2, 1)


@pytest.mark.parametrize("text", ["", "0", "5,-1", "5,x", "43201"])
def test_a_bad_schedule_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(text)


def test_policy_refuses_an_empty_window() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(timedelta(0))


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
