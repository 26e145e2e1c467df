"""Every delivery channel, declared once.

A declaration says what the channel is called (the name in preferences, DEFAULT_CHANNELS
and the records), the contact detail it needs, which settings switch it on, the adapter
that sends it, and whether the provider in use can report delivery receipts. Everything
else reads it: the policy (through `ChannelCatalog`: which channels exist, which are
configured, what each needs to reach a contractor), the settings (DEFAULT_CHANNELS must
name declared channels), bootstrap (the adapters of the configured channels), the local
runtime and the docs (tests/unit/test_channel_registry.py holds the docs' table to this).

Adding a channel is one declaration here (plus, for a new provider, its adapter in
adapters/channels/). A test can pass its own registry to `bootstrap.build(..., channels=)`:
`CHANNELS.with_channel(ChannelDeclaration(...))`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from proactive_delivery.core.policy import ChannelCatalog, ContactField

if TYPE_CHECKING:
    import httpx

    from proactive_delivery.adapters.channels.webhook import Payload
    from proactive_delivery.app.ports import Channel


class Settings(Protocol):
    """The settings a channel's declaration reads (settings.Settings has them all; it
    imports this module to check DEFAULT_CHANNELS, so this one does not import it)."""

    @property
    def sms_provider(self) -> str: ...
    @property
    def n8n_outbound_webhook_url(self) -> str: ...
    @property
    def n8n_payload_format(self) -> str: ...
    @property
    def sms_from_name(self) -> str: ...
    @property
    def sms_tags(self) -> tuple[str, ...]: ...
    @property
    def twilio_api_base_url(self) -> str: ...
    @property
    def twilio_from_number(self) -> str | None: ...
    @property
    def twilio_messaging_service_sid(self) -> str | None: ...
    @property
    def email_provider(self) -> str: ...
    @property
    def email_from_address(self) -> str | None: ...
    @property
    def email_from_name(self) -> str: ...
    @property
    def n8n_email_webhook_url(self) -> str | None: ...
    @property
    def web_chat_webhook_url(self) -> str | None: ...
    @property
    def ses_configuration_set(self) -> str | None: ...
    @property
    def twilio_status_callback_url(self) -> str | None: ...


class ChannelWiring(Protocol):
    """What a channel's adapter is built from (bootstrap.Services provides it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def http(self) -> httpx.Client: ...

    def signing_secret(self) -> str: ...

    def twilio_credentials(self) -> tuple[str, str]: ...

    def aws_client(self, service: str) -> Any: ...


@dataclass(frozen=True)
class ChannelDeclaration:
    name: str
    # The contact detail the channel needs: the contractor's phone (E.164), e-mail, or id.
    contact: ContactField
    # The settings that switch the channel on and choose its provider (for the docs).
    enabled_by: str
    enabled: Callable[[Settings], bool]
    # The provider the settings choose (n8n, twilio, ses, web_chat): rate limits and
    # circuit breakers are kept per provider.
    provider: Callable[[Settings], str]
    build: Callable[[ChannelWiring], Channel]
    # Whether the provider in use reports what reached the contractor (delivery receipts).
    receipts: Callable[[Settings], bool]
    # contractors.sms_opt_in = false (the platform's own consent flag) blocks this channel.
    sms_consent: bool = False
    # Its texts go out as SMS: counted in segments (GSM-7 or UCS-2) when judged.
    sms: bool = False


class ChannelRegistry:
    def __init__(self, declarations: Iterable[ChannelDeclaration]) -> None:
        self._by_name: dict[str, ChannelDeclaration] = {}
        for declaration in declarations:
            if declaration.name in self._by_name:
                raise ValueError(f"channel {declaration.name!r} is declared twice")
            self._by_name[declaration.name] = declaration

    def __iter__(self) -> Iterator[ChannelDeclaration]:
        return iter(self._by_name.values())

    def __getitem__(self, name: str) -> ChannelDeclaration:
        return self._by_name[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._by_name)

    def with_channel(self, declaration: ChannelDeclaration) -> ChannelRegistry:
        """This registry plus one more channel (a test's stand-in, a deployment's own)."""
        return ChannelRegistry([*self, declaration])

    def configured(self, settings: Settings) -> tuple[ChannelDeclaration, ...]:
        return tuple(d for d in self if d.enabled(settings))

    def catalog(self, settings: Settings) -> ChannelCatalog:
        """What the policy needs to know: the declared channels, the configured ones."""
        return ChannelCatalog(
            contacts={d.name: d.contact for d in self},
            configured=frozenset(d.name for d in self.configured(settings)),
            sms_consent=frozenset(d.name for d in self if d.sms_consent),
            segmented=frozenset(d.name for d in self if d.sms),
        )

    def build(self, wiring: ChannelWiring) -> list[Channel]:
        """One adapter per configured channel; a channel without its settings is not built."""
        return [d.build(wiring) for d in self.configured(wiring.settings)]


# --- the channels --------------------------------------------------------------------------
def _sms_provider(settings: Settings) -> str:
    return settings.sms_provider


def _build_sms(wiring: ChannelWiring) -> Channel:
    s = wiring.settings
    if s.sms_provider == "twilio":
        from proactive_delivery.adapters.channels.twilio import TwilioSmsChannel

        return TwilioSmsChannel(
            name="sms",
            base_url=s.twilio_api_base_url,
            # Per send: the token comes from a cached secret that may be rotated.
            credentials=wiring.twilio_credentials,
            client=wiring.http,
            from_number=s.twilio_from_number,
            messaging_service_sid=s.twilio_messaging_service_sid,
            status_callback=s.twilio_status_callback_url,
        )
    from proactive_delivery.adapters.channels.webhook import GhlSmsPayload, flat_sms_payload

    payload: Payload = (
        GhlSmsPayload(from_name=s.sms_from_name, tags=s.sms_tags)
        if s.n8n_payload_format == "ghl"
        else flat_sms_payload
    )
    return _webhook(wiring, "sms", "n8n", s.n8n_outbound_webhook_url, payload)


def _email_provider(settings: Settings) -> str:
    return settings.email_provider


def _build_email(wiring: ChannelWiring) -> Channel:
    s = wiring.settings
    assert s.email_from_address is not None  # enabled() requires it
    if s.email_provider == "n8n":
        from proactive_delivery.adapters.channels.webhook import N8nEmailPayload

        assert s.n8n_email_webhook_url is not None  # Settings.validate requires it
        payload = N8nEmailPayload(from_email=s.email_from_address, from_name=s.email_from_name)
        return _webhook(wiring, "email", "n8n", s.n8n_email_webhook_url, payload)
    from proactive_delivery.adapters.channels.ses import SesEmailChannel

    return SesEmailChannel(
        name="email",
        client=wiring.aws_client("sesv2"),
        from_address=s.email_from_address,
        from_name=s.email_from_name,
        configuration_set=s.ses_configuration_set,
    )


def _build_web_chat(wiring: ChannelWiring) -> Channel:
    from proactive_delivery.adapters.channels.webhook import web_chat_payload

    url = wiring.settings.web_chat_webhook_url
    assert url is not None  # enabled() requires it
    return _webhook(wiring, "web_chat", "web_chat", url, web_chat_payload)


def _webhook(wiring: ChannelWiring, name: str, provider: str, url: str, payload: Payload) -> Channel:
    from proactive_delivery.adapters.channels.webhook import SignedWebhookChannel

    return SignedWebhookChannel(
        name=name,
        provider=provider,
        url=url,
        client=wiring.http,
        signing_secret=wiring.signing_secret(),
        payload=payload,
    )


CHANNELS = ChannelRegistry(
    [
        ChannelDeclaration(
            name="sms",
            contact="phone",
            enabled_by="always; SMS_PROVIDER=n8n (N8N_OUTBOUND_WEBHOOK_URL) or twilio (TWILIO_*)",
            enabled=lambda s: True,
            provider=_sms_provider,
            build=_build_sms,
            receipts=lambda s: s.sms_provider == "twilio",
            sms_consent=True,
            sms=True,
        ),
        ChannelDeclaration(
            name="email",
            contact="email",
            enabled_by="EMAIL_FROM_ADDRESS; EMAIL_PROVIDER=ses or n8n (N8N_EMAIL_WEBHOOK_URL)",
            enabled=lambda s: bool(s.email_from_address),
            provider=_email_provider,
            build=_build_email,
            receipts=lambda s: s.email_provider == "ses",
        ),
        ChannelDeclaration(
            name="web_chat",
            contact="contractor_id",
            enabled_by="WEB_CHAT_WEBHOOK_URL",
            enabled=lambda s: bool(s.web_chat_webhook_url),
            provider=lambda s: "web_chat",
            build=_build_web_chat,
            receipts=lambda s: False,
        ),
    ]
)
