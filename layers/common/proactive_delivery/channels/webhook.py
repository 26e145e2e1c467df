"""Signed JSON webhooks (n8n's inbound webhook, the platform's web chat).

Every request is signed per the Standard Webhooks specification: webhook-id is the
message's stable identity (the idempotency key, the same on every retry), webhook-timestamp
the send time, webhook-signature `v1,<base64 HMAC-SHA256>` over `id.timestamp.body`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

from proactive_delivery.models import OutboundMessage, SendResult
from proactive_delivery.retry import classify_response, classify_transport_error


def sign_headers(signer: Webhook, *, msg_id: str, body: str, now: datetime) -> dict[str, str]:
    # standardwebhooks signs now.replace(tzinfo=UTC): hand it UTC so header and signature agree.
    now = now.astimezone(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign(msg_id=msg_id, timestamp=now, data=body),
    }


def n8n_payload(message: OutboundMessage) -> dict[str, object]:
    """The payload the old sender posted ({phone, message, contractor_id, message_type}),
    plus the message's identity so the receiver can de-duplicate and correlate."""
    return {
        "phone": message.phone,
        "message": message.text,
        "contractor_id": message.contractor_id,
        "message_type": message.message_type,
        "message_id": message.idempotency_key,
        "source": message.key.source,
        "source_id": message.key.source_id,
        "first_name": message.first_name,
    }


def web_chat_payload(message: OutboundMessage) -> dict[str, object]:
    """The platform's in-app chat: who, what and the stable identity; no phone or email."""
    return {
        "channel": "web_chat",
        "contractor_id": message.contractor_id,
        "message": message.text,
        "message_type": message.message_type,
        "message_id": message.idempotency_key,
        "source": message.key.source,
        "source_id": message.key.source_id,
        "first_name": message.first_name,
    }


class SignedWebhookChannel:
    def __init__(
        self,
        *,
        name: str,
        url: str,
        client: httpx.Client,
        signing_secret: str,
        payload: Callable[[OutboundMessage], dict[str, object]] = n8n_payload,
        needs: str = "phone",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.name = name
        self._url = url
        self._client = client
        self._signer = Webhook(signing_secret)
        self._payload = payload
        self._needs = needs
        self._clock = clock

    def can_reach(self, message: OutboundMessage) -> bool:
        return bool(getattr(message, self._needs, None))

    @property
    def provider(self) -> str:
        return "n8n" if self.name == "sms" else "webhook"

    def send(self, message: OutboundMessage) -> SendResult:
        body = json.dumps(self._payload(message), separators=(",", ":"), ensure_ascii=False)
        headers = sign_headers(self._signer, msg_id=message.idempotency_key, body=body, now=self._clock())
        headers["content-type"] = "application/json"
        headers["idempotency-key"] = message.idempotency_key
        try:
            response = self._client.post(self._url, content=body.encode("utf-8"), headers=headers)
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc) from exc
        classify_response(response)
        return SendResult(http_status=response.status_code, provider_ref=response.headers.get("x-request-id"))
