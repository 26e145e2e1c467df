"""Signed JSON webhooks (n8n's inbound webhook, the platform's web chat).

Every request is signed per the Standard Webhooks specification: webhook-id is the
message's stable identity (the idempotency key, the same on every retry), webhook-timestamp
the send time, webhook-signature `v1,<base64 HMAC-SHA256>` over `id.timestamp.body`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from standardwebhooks.webhooks import Webhook

from proactive_delivery.adapters.channels.base import TracedChannel
from proactive_delivery.adapters.channels.http import classify_response, classify_transport_error
from proactive_delivery.core.models import OutboundMessage, SendResult


def sign_headers(signer: Webhook, *, msg_id: str, body: str, now: datetime) -> dict[str, str]:
    # standardwebhooks signs now.replace(tzinfo=UTC): hand it UTC so header and signature agree.
    now = now.astimezone(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign(msg_id=msg_id, timestamp=now, data=body),
    }


Payload = Callable[[OutboundMessage, datetime], dict[str, object]]


def js_timestamp(now: datetime) -> str:
    """The platform's timestamp format (JavaScript's toISOString): 2026-12-01T21:00:00.000Z."""
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def flat_sms_payload(message: OutboundMessage, _now: datetime) -> dict[str, object]:
    """The seed document's body for n8n's sms-outbound path ({phone, message, contractor_id,
    message_type}), plus the message's identity so the receiver can de-duplicate."""
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


@dataclass(frozen=True)
class GhlSmsPayload:
    """The body the platform's live n8n workflow (backend-to-ghl) reads: what to send under
    send_via_ghl, and where it came from under metadata (docs/platform.md)."""

    from_name: str
    tags: tuple[str, ...] = ()

    def __call__(self, message: OutboundMessage, now: datetime) -> dict[str, object]:
        send: dict[str, object] = {
            "phone": message.phone,
            "message": message.text,
            "from_name": self.from_name,
            "timestamp": js_timestamp(now),
        }
        if self.tags:
            send["tags"] = list(self.tags)
        return {
            "send_via_ghl": send,
            "metadata": {
                "contractor_id": message.contractor_id,
                "message_type": message.message_type,
                "message_id": message.key.source_id,
                "source": message.key.source,
                "idempotency_key": message.idempotency_key,
            },
        }


@dataclass(frozen=True)
class N8nEmailPayload:
    """The flat body of the platform's n8n email-outbound workflow."""

    from_email: str
    from_name: str

    def __call__(self, message: OutboundMessage, now: datetime) -> dict[str, object]:
        return {
            "to_email": message.email,
            "to_name": message.display_name or message.first_name or "",
            "from_email": self.from_email,
            "from_name": self.from_name,
            "subject": subject_for(message.message_type),
            "body": message.text,
            "contractor_id": message.contractor_id,
            "email_type": message.message_type,
            "timestamp": js_timestamp(now),
            "message_id": message.idempotency_key,
        }


def web_chat_payload(message: OutboundMessage, _now: datetime) -> dict[str, object]:
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


def subject_for(message_type: str) -> str:
    """An e-mail subject from the message type (check_in -> "Check in")."""
    words = message_type.replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:] if words else "A message from your coach"


class SignedWebhookChannel(TracedChannel):
    def __init__(
        self,
        *,
        name: str,
        provider: str,
        url: str,
        client: httpx.Client,
        signing_secret: str,
        payload: Payload,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.name = name
        self.provider = provider
        self._url = url
        self._client = client
        self._signer = Webhook(signing_secret)
        self._payload = payload
        self._clock = clock

    def _deliver(self, message: OutboundMessage) -> SendResult:
        now = self._clock()
        body = json.dumps(self._payload(message, now), separators=(",", ":"), ensure_ascii=False)
        headers = sign_headers(self._signer, msg_id=message.idempotency_key, body=body, now=now)
        headers["content-type"] = "application/json"
        headers["idempotency-key"] = message.idempotency_key
        try:
            response = self._client.post(self._url, content=body.encode("utf-8"), headers=headers)
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc) from exc
        classify_response(response)
        return SendResult(http_status=response.status_code, provider_ref=provider_reference(response))


# A provider reference longer than this is not one (it is stored, and receipts look it up).
MAX_PROVIDER_REF = 256


def provider_reference(response: httpx.Response) -> str | None:
    """The provider's id of the message, which receipts name it by: the `x-request-id`
    header, else a `messageId` in a JSON answer (docs/n8n's backend-to-ghl answers both with
    GHL's message id)."""
    header: str | None = response.headers.get("x-request-id")
    if header and len(header) <= MAX_PROVIDER_REF:
        return header
    if "json" not in response.headers.get("content-type", "") or len(response.content) > 4096:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    found: object = body.get("messageId") if isinstance(body, dict) else None
    return found if isinstance(found, str) and 0 < len(found) <= MAX_PROVIDER_REF else None
