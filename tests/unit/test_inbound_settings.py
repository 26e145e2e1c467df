"""InboundSettings: the inbound edge's own settings, read once from the environment. It
starts without the database, the delivery queue or n8n's URL, and refuses what would make
it verify nothing or verify against the wrong URL."""

from __future__ import annotations

import pytest

from proactive_delivery.core.errors import ConfigError
from proactive_delivery.settings import InboundSettings, Settings

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/stack-InboundQueue"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:inbound-AbCdEf"


def test_the_edge_starts_without_the_delivery_sides_settings() -> None:
    # GIVEN only what the edge needs (none of DATABASE_URL, DELIVERY_QUEUE_URL, N8N_...)
    env = {"STAGE": "prod", "INBOUND_QUEUE_URL": QUEUE, "INBOUND_SIGNING_SECRET_ARN": ARN}
    # WHEN the inbound settings are read
    settings = InboundSettings.from_env(env)
    # THEN they are valid, with the defaults in effect
    assert settings.inbound_queue_url == QUEUE
    assert settings.inbound_max_body_bytes == 65_536
    assert settings.secret_max_age_seconds == 300
    assert (settings.events_enabled, settings.twilio_enabled) == (True, False)
    # AND the delivery side's settings would refuse the same environment
    with pytest.raises(ConfigError, match="DELIVERY_QUEUE_URL"):
        Settings.from_env(env)


def test_the_twilio_routes_use_the_twilio_channels_token() -> None:
    by_secret = InboundSettings.from_env({"INBOUND_QUEUE_URL": QUEUE, "TWILIO_SECRET_ARN": ARN})
    by_value = InboundSettings.from_env({"INBOUND_QUEUE_URL": QUEUE, "TWILIO_AUTH_TOKEN": "f00d"})
    assert by_secret.twilio_enabled and by_value.twilio_enabled
    assert not by_secret.events_enabled
    # The token is never shown
    assert "f00d" not in repr(by_value)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INBOUND_SIGNING_SECRET": SECRET}, "INBOUND_QUEUE_URL is required"),
        ({"INBOUND_QUEUE_URL": "sqs://queue", "INBOUND_SIGNING_SECRET": SECRET}, "INBOUND_QUEUE_URL must be"),
        ({"INBOUND_QUEUE_URL": QUEUE}, "verifies nothing"),
        (
            {"INBOUND_QUEUE_URL": QUEUE, "INBOUND_SIGNING_SECRET": "not-whsec"},
            "INBOUND_SIGNING_SECRET must be",
        ),
        (
            {"INBOUND_QUEUE_URL": QUEUE, "INBOUND_SIGNING_SECRET": SECRET, "INBOUND_MAX_BODY_BYTES": "512"},
            "INBOUND_MAX_BODY_BYTES must be >= 1024",
        ),
        (
            {
                "INBOUND_QUEUE_URL": QUEUE,
                "INBOUND_SIGNING_SECRET": SECRET,
                "INBOUND_MAX_BODY_BYTES": "300000",
            },
            "INBOUND_MAX_BODY_BYTES must be <= 262144",
        ),
        (
            {
                "STAGE": "prod",
                "INBOUND_QUEUE_URL": QUEUE,
                "INBOUND_SIGNING_SECRET": SECRET,
                "INBOUND_PUBLIC_URL": "http://hooks.example.com",
            },
            "INBOUND_PUBLIC_URL must use https",
        ),
        (
            {
                "INBOUND_QUEUE_URL": QUEUE,
                "INBOUND_SIGNING_SECRET": SECRET,
                "INBOUND_PUBLIC_URL": "https://hooks.example.com/?k=1",
            },
            "without a query",
        ),
    ],
)
def test_invalid_settings_stop_the_edge_with_one_line_naming_them(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        InboundSettings.from_env(env)


def test_public_url_and_body_limit_are_read() -> None:
    settings = InboundSettings.from_env(
        {
            "STAGE": "prod",
            "INBOUND_QUEUE_URL": QUEUE,
            "INBOUND_SIGNING_SECRET": SECRET,
            "INBOUND_PUBLIC_URL": "https://hooks.example.com/sms",
            "INBOUND_MAX_BODY_BYTES": "131072",
        }
    )
    assert settings.inbound_public_url == "https://hooks.example.com/sms"
    assert settings.inbound_max_body_bytes == 131_072
