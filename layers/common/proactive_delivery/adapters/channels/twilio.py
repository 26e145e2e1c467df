"""SMS through the Twilio Messages API, with httpx (no SDK): one form-encoded POST per
message, Basic auth with the account SID and auth token.

Twilio reports failures as JSON {"code": ..., "message": ..., "status": ...}. The codes that
matter here: 21610 the recipient replied STOP (never text them again), 21211 / 21614 the
number is invalid or cannot receive SMS (retrying cannot help), 20429 too many requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import httpx

from proactive_delivery.adapters.channels.base import TracedChannel
from proactive_delivery.adapters.channels.http import (
    classify_response,
    classify_transport_error,
    parse_retry_after,
)
from proactive_delivery.core.errors import PermanentSendError, TransientSendError
from proactive_delivery.core.models import OutboundMessage, SendResult
from proactive_delivery.core.states import State

OPTED_OUT: Final = 21610
INVALID_NUMBER: Final = frozenset({21211, 21614})
TOO_MANY_REQUESTS: Final = 20429


class TwilioSmsChannel(TracedChannel):
    provider = "twilio"

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        credentials: Callable[[], tuple[str, str]],
        client: httpx.Client,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
    ) -> None:
        if not (from_number or messaging_service_sid):
            raise ValueError("a sender is required: from_number or messaging_service_sid")
        self.name = name
        self._base_url = base_url.rstrip("/")
        # Called per send: the token comes from a cached secret that may be rotated.
        self._credentials = credentials
        self._client = client
        self._from_number = from_number
        self._messaging_service_sid = messaging_service_sid
        # The inbound edge's /twilio/status (TWILIO_STATUS_CALLBACK_URL): Twilio posts each
        # status change of the message there, so receipts reach the inbound processor
        # whether or not the sender is a Messaging Service with its own callback.
        self._status_callback = status_callback

    def _deliver(self, message: OutboundMessage) -> SendResult:
        account_sid, auth_token = self._credentials()
        form = {"To": message.phone or "", "Body": message.text}
        if self._messaging_service_sid:
            form["MessagingServiceSid"] = self._messaging_service_sid
        else:
            form["From"] = self._from_number or ""
        if self._status_callback:
            form["StatusCallback"] = self._status_callback
        url = f"{self._base_url}/2010-04-01/Accounts/{account_sid}/Messages.json"
        try:
            response = self._client.post(
                url,
                data=form,
                auth=(account_sid, auth_token),
                headers={"idempotency-key": message.idempotency_key},
            )
        except httpx.HTTPError as exc:
            raise classify_transport_error(exc) from exc
        if 200 <= response.status_code < 300:
            sid = _json(response).get("sid")
            return SendResult(http_status=response.status_code, provider_ref=str(sid) if sid else None)
        _raise_for_twilio_error(response)
        raise AssertionError("unreachable")  # pragma: no cover


def _json(response: httpx.Response) -> dict[str, object]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _raise_for_twilio_error(response: httpx.Response) -> None:
    status = response.status_code
    code = _json(response).get("code")
    if code == OPTED_OUT:
        raise PermanentSendError(
            "opted_out", http_status=status, detail="twilio 21610", final_state=State.SKIPPED
        )
    if code in INVALID_NUMBER:
        raise PermanentSendError("invalid_number", http_status=status, detail=f"twilio {code}")
    if code == TOO_MANY_REQUESTS:
        raise TransientSendError(
            "rate_limited",
            http_status=status,
            detail="twilio 20429",
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )
    # 429, 5xx, other 4xx: the generic classification, with Twilio's code for the record.
    try:
        classify_response(response)
    except (PermanentSendError, TransientSendError) as exc:
        if code is not None:
            exc.args = (f"{exc.args[0]} (twilio {code})",)
        raise
