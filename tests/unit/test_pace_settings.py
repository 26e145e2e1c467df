"""PROVIDER_RATE_LIMITS and the circuit breaker's settings: parsed, checked, named when wrong."""

from __future__ import annotations

import pytest

from proactive_delivery.core.errors import ConfigError
from proactive_delivery.core.pace import DEFAULT_RATE_LIMITS, PacePolicy, RateLimit, parse_rate_limits
from proactive_delivery.settings import Settings
from tests.unit.test_settings import local_env


def test_the_defaults_are_the_providers_published_limits() -> None:
    settings = Settings.from_env(local_env())
    limits = settings.provider_rate_limits
    assert {p: limit.per_second for p, limit in limits.items()} == {
        "n8n": 10.0,
        "twilio": 1.0,
        "ses": 14.0,
        "web_chat": 20.0,
    }
    assert parse_rate_limits(DEFAULT_RATE_LIMITS) == dict(limits)
    assert (settings.circuit.enabled, settings.circuit.window, settings.circuit.cool_off_seconds) == (
        True,
        20,
        30,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n8n=10/s", {"n8n": 10.0}),
        ("twilio=60/min, ses=14/s", {"twilio": 1.0, "ses": 14.0}),
        ("web_chat=0.5/s", {"web_chat": 0.5}),
        ("none", {}),
        ("OFF", {}),
    ],
)
def test_limits_per_second_or_per_minute(text: str, expected: dict[str, float]) -> None:
    assert {p: limit.per_second for p, limit in parse_rate_limits(text).items()} == expected


def test_the_burst_is_a_seconds_worth_and_at_least_one() -> None:
    assert RateLimit.of(10).burst == 10
    assert RateLimit.of(1 / 60).burst == 1


@pytest.mark.parametrize("text", ["n8n", "n8n=fast", "n8n=10/h", "n8n=0/s", "n8n=1/s,n8n=2/s", "=1/s"])
def test_a_bad_limit_names_the_setting(text: str) -> None:
    with pytest.raises(ConfigError, match="PROVIDER_RATE_LIMITS"):
        Settings.from_env(local_env(PROVIDER_RATE_LIMITS=text))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CIRCUIT_BREAKER", "maybe"),
        ("CIRCUIT_COOL_OFF_SECONDS", "901"),
        ("CIRCUIT_FAILURE_SHARE", "1.5"),
        ("CIRCUIT_MIN_ATTEMPTS", "0"),
    ],
)
def test_a_bad_circuit_setting_names_itself(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(local_env(**{name: value}))


def test_more_attempts_needed_than_the_window_holds_is_refused() -> None:
    with pytest.raises(ConfigError, match="CIRCUIT_"):
        Settings.from_env(local_env(CIRCUIT_WINDOW="4", CIRCUIT_MIN_ATTEMPTS="5"))


def test_twilio_counts_segments_and_every_other_provider_requests() -> None:
    pace = PacePolicy(limits={}, circuit=Settings.from_env(local_env()).circuit)
    assert pace.cost("twilio", 3) == 3.0
    assert pace.cost("twilio", 0) == 1.0
    assert pace.cost("n8n", 3) == 1.0
