"""SignedWebhookChannel: Standard Webhooks signing, payload, and failure classes, over an
httpx.MockTransport (no network)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from proactive_delivery.adapters.channels.webhook import (
    GhlSmsPayload,
    N8nEmailPayload,
    Payload,
    SignedWebhookChannel,
    flat_sms_payload,
)
from proactive_delivery.core.errors import PermanentSendError, TransientSendError
from proactive_delivery.core.models import MessageKey, OutboundMessage

SECRET = "whsec_" + base64.b64encode(b"unit-test-signing-secret-32bytes").decode()
URL = "https://n8n.example.com/webhook/proactive"


def message(source_id: int = 42, *, phone: str | None = "+13125550142") -> OutboundMessage:
    return OutboundMessage(
        key=MessageKey("proactive", source_id),
        contractor_id=7,
        message_type="check_in",
        text="Hi Ana, how did this week's bids go? \N{WAVING HAND SIGN}",
        first_name="Ana",
        phone=phone,
        email="ana@example.com",
    )


class Recorder:
    """An httpx MockTransport handler that records every request and answers with a plan."""

    def __init__(self, reply: Callable[[httpx.Request], httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self._reply = reply or (lambda _request: httpx.Response(200, headers={"x-request-id": "req-1"}))

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self._reply(request)


def channel(
    handler: Callable[[httpx.Request], httpx.Response],
    clock: Callable[[], datetime] | None = None,
    payload: Payload = flat_sms_payload,
) -> SignedWebhookChannel:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    kwargs = {"clock": clock} if clock is not None else {}
    return SignedWebhookChannel(
        name="sms", provider="n8n", url=URL, client=client, signing_secret=SECRET, payload=payload, **kwargs
    )


def signed_headers(request: httpx.Request) -> dict[str, str]:
    return {k: request.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}


# --- signing ---------------------------------------------------------------------------------


def test_request_is_signed_per_standard_webhooks() -> None:
    # GIVEN a channel talking to a recording endpoint
    recorder = Recorder()
    webhook = channel(recorder)

    # WHEN one message is sent
    result = webhook.send(message(42))

    # THEN one POST carries the three Standard Webhooks headers, and the signature verifies
    assert result.http_status == 200
    assert result.provider_ref == "req-1"
    [request] = recorder.requests
    assert request.method == "POST"
    assert str(request.url) == URL
    assert request.headers["content-type"] == "application/json"
    assert request.headers["webhook-id"] == "proactive-42"
    assert request.headers["webhook-timestamp"].isdigit()
    version, _, signature = request.headers["webhook-signature"].partition(",")
    assert version == "v1"
    assert len(base64.b64decode(signature, validate=True)) == 32  # HMAC-SHA256
    payload = Webhook(SECRET).verify(request.content, dict(request.headers))
    assert payload == json.loads(request.content)


def test_timestamp_header_is_the_channel_clock() -> None:
    # GIVEN a channel whose clock reads a fixed instant
    at = datetime.now(UTC).replace(microsecond=654321)
    recorder = Recorder()

    # WHEN a message is sent
    channel(recorder, clock=lambda: at).send(message())

    # THEN webhook-timestamp is that instant in whole epoch seconds
    assert recorder.requests[0].headers["webhook-timestamp"] == str(int(at.timestamp()))


def test_webhook_id_is_the_stable_idempotency_key_across_sends() -> None:
    # GIVEN the same message sent twice, a few seconds apart (a retry)
    instants = iter([datetime.now(UTC) - timedelta(seconds=5), datetime.now(UTC)])
    recorder = Recorder()
    webhook = channel(recorder, clock=lambda: next(instants))

    # WHEN it is sent twice
    webhook.send(message(42))
    webhook.send(message(42))

    # THEN both requests carry the same webhook-id and idempotency-key, each validly signed
    first, second = recorder.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == "proactive-42"
    assert first.headers["idempotency-key"] == second.headers["idempotency-key"] == "proactive-42"
    assert first.headers["webhook-timestamp"] != second.headers["webhook-timestamp"]
    for request in (first, second):
        Webhook(SECRET).verify(request.content, signed_headers(request))


def test_different_messages_get_different_webhook_ids() -> None:
    recorder = Recorder()
    webhook = channel(recorder)

    webhook.send(message(1))
    webhook.send(message(2))

    assert [r.headers["webhook-id"] for r in recorder.requests] == ["proactive-1", "proactive-2"]


def test_ghl_payload_is_the_body_the_platforms_live_workflow_reads() -> None:
    # GIVEN the default format (N8N_PAYLOAD_FORMAT=ghl) and a clock at 21:00 UTC
    recorder = Recorder()
    at = datetime(2026, 12, 1, 21, 0, 0, 123456, tzinfo=UTC)
    webhook = channel(recorder, clock=lambda: at, payload=GhlSmsPayload(from_name="Power100 Concierge"))

    # WHEN a message is sent
    webhook.send(message(123))

    # THEN the body is backend-to-ghl's: send_via_ghl {phone, message, from_name, timestamp}
    # (JavaScript's toISOString format) and metadata naming the platform's row
    payload = json.loads(recorder.requests[0].content)
    assert payload == {
        "send_via_ghl": {
            "phone": "+13125550142",
            "message": "Hi Ana, how did this week's bids go? \N{WAVING HAND SIGN}",
            "from_name": "Power100 Concierge",
            "timestamp": "2026-12-01T21:00:00.123Z",
        },
        "metadata": {
            "contractor_id": 7,
            "message_type": "check_in",
            "message_id": 123,
            "source": "proactive",
            "idempotency_key": "proactive-123",
        },
    }
    # AND the Standard Webhooks signature and stable id are there as with the flat body
    assert recorder.requests[0].headers["webhook-id"] == "proactive-123"
    assert recorder.requests[0].headers["webhook-signature"].startswith("v1,")


def test_ghl_payload_carries_tags_only_when_configured() -> None:
    recorder = Recorder()
    channel(recorder, payload=GhlSmsPayload(from_name="Coach", tags=("tpe", "proactive"))).send(message(1))
    channel(recorder, payload=GhlSmsPayload(from_name="Coach")).send(message(2))
    tagged, plain = (json.loads(r.content)["send_via_ghl"] for r in recorder.requests)
    assert tagged["tags"] == ["tpe", "proactive"]
    assert "tags" not in plain


def test_n8n_email_payload_is_the_email_outbound_body() -> None:
    # GIVEN the platform's email-outbound workflow as the e-mail channel
    recorder = Recorder()
    at = datetime(2026, 12, 1, 21, 0, 0, tzinfo=UTC)
    client = httpx.Client(transport=httpx.MockTransport(recorder))
    email = SignedWebhookChannel(
        name="email",
        provider="n8n",
        url=URL,
        client=client,
        signing_secret=SECRET,
        payload=N8nEmailPayload(from_email="coach@example.com", from_name="Power100 Concierge"),
        clock=lambda: at,
    )
    # WHEN a message is sent
    email.send(replace(message(9), display_name="Ana Silva"))
    # THEN the flat body the workflow reads, signed, with the stable id
    payload = json.loads(recorder.requests[0].content)
    assert payload == {
        "to_email": "ana@example.com",
        "to_name": "Ana Silva",
        "from_email": "coach@example.com",
        "from_name": "Power100 Concierge",
        "subject": "Check in",
        "body": "Hi Ana, how did this week's bids go? \N{WAVING HAND SIGN}",
        "contractor_id": 7,
        "email_type": "check_in",
        "timestamp": "2026-12-01T21:00:00.000Z",
        "message_id": "proactive-9",
    }
    assert recorder.requests[0].headers["webhook-signature"].startswith("v1,")


def test_flat_payload_carries_what_the_seed_describes_and_the_message_identity() -> None:
    # GIVEN a recording endpoint and N8N_PAYLOAD_FORMAT=flat
    recorder = Recorder()

    # WHEN a message is sent
    channel(recorder).send(message(42))

    # THEN the JSON body has the old sender's fields plus message_id
    payload = json.loads(recorder.requests[0].content)
    assert payload["phone"] == "+13125550142"
    assert payload["message"] == "Hi Ana, how did this week's bids go? \N{WAVING HAND SIGN}"
    assert payload["contractor_id"] == 7
    assert payload["message_type"] == "check_in"
    assert payload["message_id"] == "proactive-42"
    assert (payload["source"], payload["source_id"]) == ("proactive", 42)


def test_tampered_body_fails_verification() -> None:
    # GIVEN a signed request
    recorder = Recorder()
    channel(recorder).send(message(42))
    request = recorder.requests[0]
    tampered = request.content.replace(b"+13125550142", b"+15550199999")
    assert tampered != request.content

    # WHEN / THEN the altered body does not verify
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(tampered, signed_headers(request))


def test_wrong_secret_fails_verification() -> None:
    recorder = Recorder()
    channel(recorder).send(message(42))
    request = recorder.requests[0]
    other = "whsec_" + base64.b64encode(b"another-secret-entirely-32-bytes").decode()

    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(request.content, signed_headers(request))


def test_stale_timestamp_fails_verification() -> None:
    # GIVEN a channel whose clock is six minutes behind (outside the 5-minute tolerance)
    recorder = Recorder()
    channel(recorder, clock=lambda: datetime.now(UTC) - timedelta(minutes=6)).send(message(42))
    request = recorder.requests[0]

    # WHEN / THEN the receiver refuses it as too old
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(request.content, signed_headers(request))


def test_clock_in_another_time_zone_still_verifies() -> None:
    # GIVEN a clock returning an aware datetime that is not in UTC
    recorder = Recorder()
    channel(recorder, clock=lambda: datetime.now(timezone(timedelta(hours=2)))).send(message(42))
    request = recorder.requests[0]

    # WHEN / THEN the signature still verifies
    Webhook(SECRET).verify(request.content, signed_headers(request))


# --- reach --------------------------------------------------------------------------------------


def test_503_is_transient() -> None:
    # GIVEN an endpoint answering 503 with Retry-After
    webhook = channel(Recorder(lambda _r: httpx.Response(503, headers={"Retry-After": "20"})))

    # WHEN / THEN the send raises a transient error with the status and wait
    with pytest.raises(TransientSendError) as excinfo:
        webhook.send(message())
    assert excinfo.value.http_status == 503
    assert excinfo.value.retry_after == 20.0


def test_400_is_permanent() -> None:
    # GIVEN an endpoint refusing the request
    webhook = channel(Recorder(lambda _r: httpx.Response(400, json={"error": "bad phone"})))

    # WHEN / THEN the send raises a permanent error with the status
    with pytest.raises(PermanentSendError) as excinfo:
        webhook.send(message())
    assert excinfo.value.http_status == 400


def test_redirect_is_not_followed_and_is_permanent() -> None:
    # GIVEN an endpoint that redirects
    recorder = Recorder(
        lambda _r: httpx.Response(302, headers={"Location": "https://elsewhere.example.com/"})
    )

    # WHEN / THEN the send fails permanently after exactly one request
    with pytest.raises(PermanentSendError):
        channel(recorder).send(message())
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("exc_type", "reason"),
    [
        (httpx.ConnectError, "connection_error"),
        (httpx.ReadTimeout, "timeout"),
        (httpx.ConnectTimeout, "timeout"),
    ],
)
def test_transport_errors_are_transient(exc_type: type[httpx.TransportError], reason: str) -> None:
    # GIVEN a transport that fails before any answer
    def fail(request: httpx.Request) -> httpx.Response:
        raise exc_type("no answer", request=request)

    # WHEN / THEN the send raises a transient error without an HTTP status, chained to the cause
    with pytest.raises(TransientSendError) as excinfo:
        channel(fail).send(message())
    assert excinfo.value.reason == reason
    assert excinfo.value.http_status is None
    assert isinstance(excinfo.value.__cause__, exc_type)
