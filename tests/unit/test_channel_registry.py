"""The channel registry is the one place channels are declared: the policy's catalog, the
settings, the adapters and the docs all follow it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from proactive_delivery.channels import CHANNELS, ChannelDeclaration, ChannelRegistry
from proactive_delivery.core.errors import ConfigError
from proactive_delivery.settings import Settings
from tests.unit.test_settings import local_env

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_table_lists_every_declared_channel_as_declared() -> None:
    text = (ROOT / "docs" / "channels-and-preferences.md").read_text(encoding="utf-8")
    table = text.split("<!-- channel registry -->")[1].split("<!-- /channel registry -->")[0]
    rows = [
        [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        for line in table.strip().splitlines()[2:]
    ]
    assert rows == [[d.name, d.contact, d.enabled_by] for d in CHANNELS]


def test_the_catalog_knows_every_channel_and_configures_those_switched_on() -> None:
    settings = Settings.from_env(local_env(WEB_CHAT_WEBHOOK_URL="http://127.0.0.1:9/chat"))
    catalog = CHANNELS.catalog(settings)
    assert catalog.names == ("sms", "email", "web_chat")
    assert dict(catalog.contacts) == {"sms": "phone", "email": "email", "web_chat": "contractor_id"}
    assert catalog.configured == {"sms", "web_chat"}
    assert catalog.sms_consent == {"sms"}


@pytest.mark.parametrize(
    ("env", "providers"),
    [
        ({}, {"sms": "n8n"}),
        (
            {
                "SMS_PROVIDER": "twilio",
                "TWILIO_ACCOUNT_SID": "AC1",
                "TWILIO_AUTH_TOKEN": "token",
                "TWILIO_FROM_NUMBER": "+13125550100",
                "EMAIL_FROM_ADDRESS": "coach@example.com",
            },
            {"sms": "twilio", "email": "ses"},
        ),
    ],
)
def test_each_configured_channel_names_the_provider_the_settings_choose(
    env: dict[str, str], providers: dict[str, str]
) -> None:
    settings = Settings.from_env(local_env(**env))
    assert {d.name: d.provider(settings) for d in CHANNELS.configured(settings)} == providers


def test_a_channel_is_declared_once() -> None:
    with pytest.raises(ValueError, match="declared twice"):
        CHANNELS.with_channel(CHANNELS["sms"])


def test_default_channels_may_only_name_declared_channels() -> None:
    with pytest.raises(ConfigError, match=re.escape("known: sms, email, web_chat")):
        Settings.from_env(local_env(DEFAULT_CHANNELS="sms,whatsapp"))


def test_a_registry_with_one_more_channel_leaves_the_default_one_alone() -> None:
    extra = ChannelDeclaration(
        name="whatsapp",
        contact="phone",
        enabled_by="always (a test's stand-in)",
        enabled=lambda s: True,
        provider=lambda s: "stand-in",
        build=lambda wiring: None,  # type: ignore[arg-type, return-value]
        receipts=lambda s: False,
    )
    registry: ChannelRegistry = CHANNELS.with_channel(extra)
    assert registry.names == ("sms", "email", "web_chat", "whatsapp")
    assert CHANNELS.names == ("sms", "email", "web_chat")
