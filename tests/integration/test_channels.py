"""Each channel adapter against the real thing's stand-in: Twilio against a local HTTP server
speaking the Messages API, email against moto's SES v2, web chat against the signature-
verifying webhook receiver. Success, transient and permanent paths (docs/faults.md row 16)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import httpx
import pytest
from botocore.stub import ANY
from moto import mock_aws

from proactive_delivery.adapters.channels import (
    SesEmailChannel,
    SignedWebhookChannel,
    TwilioSmsChannel,
    web_chat_payload,
)
from proactive_delivery.core.errors import PermanentSendError, TransientSendError
from proactive_delivery.core.models import MessageKey, OutboundMessage
from proactive_delivery_tools.local.receiver import Reply, WebhookReceiver
from proactive_delivery_tools.local.twilio import FakeTwilio, TwilioReply

SID, TOKEN = "AC" + "0" * 32, "test-token"


def message(phone: str | None = "+13125550101", email: str | None = "ana@example.com") -> OutboundMessage:
    return OutboundMessage(
        key=MessageKey("followup", 5),
        contractor_id=7,
        message_type="check_in",
        text="Hi Ana",
        first_name="Ana",
        phone=phone,
        email=email,
    )


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as client:
        yield client


def twilio(fake: FakeTwilio, http: httpx.Client) -> TwilioSmsChannel:
    return TwilioSmsChannel(
        name="sms",
        base_url=fake.base_url,
        credentials=lambda: (SID, TOKEN),
        client=http,
        from_number="+13125550199",
    )


# --- Twilio ------------------------------------------------------------------------------
def test_twilio_success_stores_the_message_sid(http: httpx.Client) -> None:
    with FakeTwilio(SID, TOKEN) as fake:
        # WHEN a message is sent
        result = twilio(fake, http).send(message())
        # THEN one authenticated form POST with To/From/Body, and the SID is the provider ref
        [request] = fake.delivered()
        assert request.form == {"To": "+13125550101", "From": "+13125550199", "Body": "Hi Ana"}
        assert result.http_status == 201
        assert result.provider_ref == request.sid
        assert fake.unauthorized == 0


def test_twilio_requests_carry_the_message_identity_on_every_send(http: httpx.Client) -> None:
    with FakeTwilio(SID, TOKEN) as fake:
        # WHEN the same message is sent twice (a retry after a read timeout)
        channel = twilio(fake, http)
        channel.send(message())
        channel.send(message())
        # THEN both requests carry its identity as the idempotency-key header
        assert [r.idempotency_key for r in fake.delivered()] == ["followup-5", "followup-5"]


def test_twilio_messaging_service_is_the_sender_when_given(http: httpx.Client) -> None:
    with FakeTwilio(SID, TOKEN) as fake:
        channel = TwilioSmsChannel(
            name="sms",
            base_url=fake.base_url,
            credentials=lambda: (SID, TOKEN),
            client=http,
            messaging_service_sid="MG1",
        )
        channel.send(message())
        assert fake.delivered()[0].form["MessagingServiceSid"] == "MG1"
        assert "From" not in fake.delivered()[0].form


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (TwilioReply(429, 20429, (("Retry-After", "7"),)), "rate_limited"),
        (TwilioReply(429, None), "rate_limited"),
        (TwilioReply(503, None), "server_error"),
    ],
)
def test_twilio_transient_errors(http: httpx.Client, reply: TwilioReply, reason: str) -> None:
    with FakeTwilio(SID, TOKEN, plan=lambda _to, _n: reply) as fake:
        with pytest.raises(TransientSendError) as info:
            twilio(fake, http).send(message())
        assert info.value.reason == reason


def test_twilio_20429_honours_retry_after(http: httpx.Client) -> None:
    reply = TwilioReply(429, 20429, (("Retry-After", "7"),))
    with FakeTwilio(SID, TOKEN, plan=lambda _to, _n: reply) as fake:
        with pytest.raises(TransientSendError) as info:
            twilio(fake, http).send(message())
        assert info.value.retry_after == 7


@pytest.mark.parametrize(
    ("code", "reason", "final_state"),
    [
        (21610, "opted_out", "skipped"),
        (21211, "invalid_number", "failed"),
        (21614, "invalid_number", "failed"),
    ],
)
def test_fault16_twilio_permanent_errors(
    http: httpx.Client, code: int, reason: str, final_state: str
) -> None:
    # GIVEN Twilio answers 400 with an error code
    with FakeTwilio(SID, TOKEN, plan=lambda _to, _n: TwilioReply(400, code)) as fake:
        # WHEN a message is sent THEN a permanent error with the reason and final state
        with pytest.raises(PermanentSendError) as info:
            twilio(fake, http).send(message())
        assert (info.value.reason, info.value.final_state, info.value.http_status) == (
            reason,
            final_state,
            400,
        )


def test_fault16_twilio_bad_credentials_are_permanent(http: httpx.Client) -> None:
    with FakeTwilio(SID, "other-token") as fake:
        with pytest.raises(PermanentSendError) as info:
            twilio(fake, http).send(message())
        assert info.value.http_status == 401
        assert fake.unauthorized == 1


def test_twilio_connection_refused_is_transient(http: httpx.Client) -> None:
    with FakeTwilio(SID, TOKEN) as fake:
        url = fake.base_url
    channel = TwilioSmsChannel(
        name="sms", base_url=url, credentials=lambda: (SID, TOKEN), client=http, from_number="+13125550199"
    )
    with pytest.raises(TransientSendError):
        channel.send(message())


# --- SES v2 ------------------------------------------------------------------------------
@pytest.fixture
def sesv2(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    for key, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        yield boto3.client("sesv2", region_name="us-east-1")


def test_email_success_returns_the_ses_message_id(sesv2: object) -> None:
    # GIVEN a verified sender
    sesv2.create_email_identity(EmailIdentity="coach@example.com")  # type: ignore[attr-defined]
    channel = SesEmailChannel(name="email", client=sesv2, from_address="coach@example.com")
    # WHEN a message is sent
    result = channel.send(message())
    # THEN SES accepted it and its id is the provider reference
    assert result.provider_ref
    assert result.http_status == 200


def test_email_carries_the_message_identity_as_a_tag(sesv2: object) -> None:
    # GIVEN a verified sender, and the SendEmail parameters recorded as the client sends them
    sesv2.create_email_identity(EmailIdentity="coach@example.com")  # type: ignore[attr-defined]
    sent: list[dict[str, object]] = []
    sesv2.meta.events.register(  # type: ignore[attr-defined]
        "provide-client-params.sesv2.SendEmail", lambda params, **_: sent.append(dict(params))
    )
    channel = SesEmailChannel(name="email", client=sesv2, from_address="coach@example.com")
    # WHEN the same message is sent twice THEN both emails carry its identity as a tag
    channel.send(message())
    channel.send(message())
    assert [e["EmailTags"] for e in sent] == [[{"Name": "message_id", "Value": "followup-5"}]] * 2


def test_fault16_email_unverified_sender_is_permanent(sesv2: object) -> None:
    # GIVEN a sender SES does not know WHEN a message is sent THEN a permanent rejection
    channel = SesEmailChannel(name="email", client=sesv2, from_address="nobody@example.com")
    with pytest.raises(PermanentSendError) as info:
        channel.send(message())
    assert info.value.reason == "rejected"
    assert "MessageRejected" in str(info.value)


def test_email_throttling_is_transient() -> None:
    # GIVEN an SES client that is throttled (botocore Stubber: moto does not throttle)
    from botocore.stub import Stubber

    client = boto3.client("sesv2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_client_error(
            "send_email", service_error_code="TooManyRequestsException", http_status_code=429
        )
        # WHEN a message is sent THEN a transient error
        with pytest.raises(TransientSendError) as info:
            SesEmailChannel(name="email", client=client, from_address="coach@example.com").send(message())
    assert info.value.reason == "ses_unavailable"


def test_email_names_the_configuration_set_whose_events_come_back() -> None:
    # GIVEN the channel with the stack's configuration set (botocore Stubber checks the request)
    from botocore.stub import Stubber

    client = boto3.client("sesv2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    channel = SesEmailChannel(
        name="email", client=client, from_address="coach@example.com", configuration_set="stack-events"
    )
    with Stubber(client) as stub:
        stub.add_response(
            "send_email",
            {"MessageId": "ses-1"},
            {
                "FromEmailAddress": "coach@example.com",
                "Destination": {"ToAddresses": [message().email]},
                "Content": ANY,
                # THEN the send names it, and tags the message with its identity: the SES
                # event the set publishes carries both (mail.tags)
                "EmailTags": [{"Name": "message_id", "Value": message().idempotency_key}],
                "ConfigurationSetName": "stack-events",
            },
        )
        # WHEN a message is sent
        result = channel.send(message())
    assert result.provider_ref == "ses-1"


def test_email_subject_comes_from_the_message_type() -> None:
    from proactive_delivery.adapters.channels.webhook import subject_for

    assert subject_for("win_celebration") == "Win celebration"
    assert subject_for("") == "A message from your coach"


# --- web chat ----------------------------------------------------------------------------
def web_chat(receiver: WebhookReceiver, http: httpx.Client, secret: str) -> SignedWebhookChannel:
    return SignedWebhookChannel(
        name="web_chat",
        provider="web_chat",
        url=receiver.url.replace("/webhook", "/chat"),
        client=http,
        signing_secret=secret,
        payload=web_chat_payload,
    )


def test_web_chat_success_posts_a_signed_chat_payload(http: httpx.Client, signing_secret: str) -> None:
    with WebhookReceiver(signing_secret) as receiver:
        web_chat(receiver, http, signing_secret).send(message(phone=None, email=None))
        [request] = receiver.accepted()
        # THEN signed, on the chat path, with no phone or email in the payload
        assert request.path == "/chat"
        assert request.payload["channel"] == "web_chat"
        assert request.payload["contractor_id"] == 7
        assert "phone" not in request.payload and "email" not in request.payload
        assert receiver.rejected_signatures == 0


def test_web_chat_transient_and_permanent(http: httpx.Client, signing_secret: str) -> None:
    with WebhookReceiver(signing_secret, plan=lambda _id, n: Reply(503 if n == 1 else 422)) as receiver:
        channel = web_chat(receiver, http, signing_secret)
        with pytest.raises(TransientSendError):
            channel.send(message())
        with pytest.raises(PermanentSendError) as info:
            channel.send(message())
        assert info.value.http_status == 422
