"""Receiver-side check of the signature on our outbound webhook calls.

This is the Python snippet the README gives to whoever receives the webhook (n8n, a
Flask view, a test receiver): it is here so the tests prove the documented code rejects
forged and stale requests, not a paraphrase of it.

    from proactive_delivery_tools.verify import verify_webhook, WebhookVerificationError

    payload = verify_webhook(request_body_bytes, request_headers, "whsec_...")

verify_webhook raises WebhookVerificationError when the signature does not match the
raw body (forged or altered), a header is missing, or webhook-timestamp is more than five
minutes away from now (a replayed, stale request).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["WebhookVerificationError", "verify_webhook"]


def verify_webhook(raw_body: bytes | str, headers: Mapping[str, str], secret: str) -> Any:
    """The parsed JSON payload of a genuine request; raises WebhookVerificationError otherwise.

    Verify the raw body exactly as received (before any JSON parsing), and pass the
    webhook-id, webhook-timestamp and webhook-signature headers (names in any case).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    return Webhook(secret).verify(raw_body, lowered)
