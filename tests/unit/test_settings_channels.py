"""Channel and policy settings: defaults, and a ConfigError naming the variable for each bad value."""

from __future__ import annotations

from datetime import time, timedelta

import pytest

from proactive_delivery.channels import CHANNELS
from proactive_delivery.core.errors import ConfigError
from proactive_delivery.settings import Settings, policy_defaults_from_env
from tests.unit.test_settings import deployed_env, local_env


def test_defaults_are_sms_through_n8n_with_the_tcpa_window() -> None:
    # GIVEN only the required settings WHEN they are read THEN the documented defaults apply
    settings = Settings.from_env(local_env())
    assert settings.sms_provider == "n8n"
    assert CHANNELS.catalog(settings).configured == {"sms"}
    assert settings.policy.channels == ("sms",)
    assert settings.policy.timezone == "America/New_York"
    assert (settings.policy.quiet_hours.start, settings.policy.quiet_hours.end) == (time(21), time(8))
    assert settings.policy.max_per_day == 3
    assert settings.policy.max_age == timedelta(hours=72)


def test_email_and_web_chat_are_available_only_when_configured() -> None:
    settings = Settings.from_env(
        local_env(EMAIL_FROM_ADDRESS="coach@example.com", WEB_CHAT_WEBHOOK_URL="http://127.0.0.1:9/chat")
    )
    assert CHANNELS.catalog(settings).configured == {"sms", "email", "web_chat"}


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"SMS_PROVIDER": "carrier-pigeon"}, "SMS_PROVIDER"),
        ({"SMS_PROVIDER": "twilio", "TWILIO_FROM_NUMBER": "+13125550100"}, "TWILIO_SECRET_ARN"),
        (
            {"SMS_PROVIDER": "twilio", "TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t"},
            "TWILIO_FROM_NUMBER",
        ),
        (
            {
                "SMS_PROVIDER": "twilio",
                "TWILIO_ACCOUNT_SID": "AC1",
                "TWILIO_AUTH_TOKEN": "t",
                "TWILIO_FROM_NUMBER": "555",
            },
            "TWILIO_FROM_NUMBER",
        ),
        ({"EMAIL_FROM_ADDRESS": "not-an-address"}, "EMAIL_FROM_ADDRESS"),
        ({"WEB_CHAT_WEBHOOK_URL": "ftp://chat"}, "WEB_CHAT_WEBHOOK_URL"),
        ({"DEFAULT_CHANNELS": "sms,fax"}, "DEFAULT_CHANNELS"),
        ({"DEFAULT_TIMEZONE": "Mars/Base"}, "DEFAULT_TIMEZONE"),
        ({"QUIET_HOURS": "9pm-8am"}, "QUIET_HOURS"),
        ({"MAX_MESSAGES_PER_DAY": "many"}, "MAX_MESSAGES_PER_DAY"),
        ({"MESSAGE_MAX_AGE_HOURS": "0"}, "MESSAGE_MAX_AGE_HOURS"),
    ],
)
def test_bad_channel_or_policy_setting_names_the_variable(overrides: dict[str, str], name: str) -> None:
    # GIVEN one bad value WHEN the settings are read THEN the error names that variable
    with pytest.raises(ConfigError, match=name):
        Settings.from_env(local_env(**overrides))


def test_the_policy_defaults_alone_are_read_as_the_functions_read_them() -> None:
    # GIVEN policy variables and none of the functions' other settings (an operator's shell)
    env = {
        "DEFAULT_CHANNELS": "email,sms",
        "DEFAULT_TIMEZONE": "Europe/London",
        "QUIET_HOURS": "22:00-07:00",
        "MAX_MESSAGES_PER_DAY": "5",
    }
    # WHEN only the policy defaults are read THEN they equal what Settings.from_env reads
    defaults = policy_defaults_from_env(env)
    assert defaults == Settings.from_env(local_env(**env)).policy
    assert (defaults.channels, defaults.timezone, defaults.max_per_day) == (
        ("email", "sms"),
        "Europe/London",
        5,
    )
    # AND with nothing set, the same defaults as the functions'
    assert policy_defaults_from_env({}) == Settings.from_env(local_env()).policy


@pytest.mark.parametrize(
    ("overrides", "name"),
    [({"DEFAULT_TIMEZONE": "Mars/Base"}, "DEFAULT_TIMEZONE"), ({"QUIET_HOURS": "9pm-8am"}, "QUIET_HOURS")],
)
def test_a_bad_policy_default_names_the_variable_when_read_alone(
    overrides: dict[str, str], name: str
) -> None:
    with pytest.raises(ConfigError, match=name):
        policy_defaults_from_env(overrides)


def test_deployed_web_chat_must_be_https() -> None:
    with pytest.raises(ConfigError, match="WEB_CHAT_WEBHOOK_URL"):
        Settings.from_env(deployed_env(WEB_CHAT_WEBHOOK_URL="http://chat.example.com/hook"))
