"""The provider reference the webhook channel records (what receipts find a message by): the
`x-request-id` header, else the `messageId` of a JSON answer, as docs/n8n's backend-to-ghl
answers with GHL's message id. Real httpx responses through a mock transport."""

from __future__ import annotations

import json

import httpx
import pytest

from proactive_delivery.adapters.channels.webhook import SignedWebhookChannel, flat_sms_payload
from proactive_delivery.core.models import MessageKey, OutboundMessage
from tests.support.policy import SIGNING_SECRET

MESSAGE = OutboundMessage(MessageKey("proactive", 7), 3, "check_in", "Hi", "Ana", "+13125550142", None)


def answered(response: httpx.Response) -> str | None:
    client = httpx.Client(transport=httpx.MockTransport(lambda _request: response))
    channel = SignedWebhookChannel(
        name="sms",
        provider="n8n",
        url="https://n8n.example.com/webhook/backend-to-ghl",
        client=client,
        signing_secret=SIGNING_SECRET,
        payload=flat_sms_payload,
    )
    return channel.send(MESSAGE).provider_ref


@pytest.mark.parametrize(
    ("response", "reference"),
    [
        # backend-to-ghl: both the header and the body carry GHL's id; the header wins
        (httpx.Response(200, headers={"x-request-id": "hdr-1"}, json={"messageId": "body-1"}), "hdr-1"),
        # a workflow that only answers the body
        (httpx.Response(200, json={"messageId": "mG7hR2pZ", "conversationId": "c1"}), "mG7hR2pZ"),
        # a duplicate's answer names no message id; nor does the platform's own workflow
        (httpx.Response(200, json={"duplicate": True, "webhookId": "proactive-7"}), None),
        (httpx.Response(200, json={"message": "Workflow was started"}), None),
        (httpx.Response(200, text="OK"), None),
        (httpx.Response(200, json={"messageId": 42}), None),
        (httpx.Response(200, json={"messageId": "x" * 257}), None),
        (httpx.Response(200, content=b"{not json", headers={"content-type": "application/json"}), None),
        (httpx.Response(200, json=["messageId"]), None),
    ],
)
def test_the_reference_comes_from_the_header_or_the_json_answer(
    response: httpx.Response, reference: str | None
) -> None:
    assert answered(response) == reference


def test_a_large_answer_is_not_read_for_a_reference() -> None:
    body = json.dumps({"messageId": "m1", "padding": "x" * 5000}).encode()
    assert answered(httpx.Response(200, content=body, headers={"content-type": "application/json"})) is None
