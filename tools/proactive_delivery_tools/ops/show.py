"""`proactive-delivery show SOURCE:ID`: one message's state, attempt history, delivery receipt
and the inbound events linked to it (replies, receipts)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from proactive_delivery.core.models import MessageKey
from proactive_delivery_tools.ops.errors import OperationsError
from proactive_delivery_tools.ops.store import OperationsStore


def parse_message_ref(text: str, sources: Sequence[str]) -> MessageKey:
    """`proactive:42` (also `proactive-42`, the webhook-id form the logs carry)."""
    source, sep, number = text.strip().replace("-", ":", 1).partition(":")
    if not sep or source not in sources or not number.isdigit() or int(number) <= 0:
        raise OperationsError(
            f"{text!r} is not a message: use SOURCE:ID, SOURCE one of {', '.join(sources)} (proactive:42)"
        )
    return MessageKey(source, int(number))


def _when(value: Any) -> str | None:
    return value.isoformat(timespec="milliseconds") if isinstance(value, datetime) else None


def _clean(value: Any) -> Any:
    """Errors are provider text: mask anything that looks like a phone or an email."""
    from proactive_delivery.adapters.redact import redact_value

    return redact_value(value) if isinstance(value, str) else value


# Where the text of a reply is: the platform's own column, filled with the first reply's text
# (where still NULL, with PLATFORM_WRITE_RESPONSES on). We keep no text.
REPLY_TEXT_COLUMN = {
    "proactive": ("ai_proactive_messages", "contractor_response"),
    "followup": ("contractor_followup_schedules", "response_text"),
}


def message_report(store: OperationsStore, key: MessageKey) -> dict[str, Any]:
    """One message's delivery state, its attempt history, its delivery receipt and the
    inbound events linked to it, for `show`. Never the text (of the message or of a reply)
    nor the contractor's contact details."""
    state = store.message_detail(key)
    platform = store.platform_row(key)
    if state is None and platform is None:
        raise OperationsError(
            f"no message {key.source}:{key.source_id}: not in the platform's table nor in the delivery state"
        )
    report: dict[str, Any] = {
        "message_id": key.idempotency_key,
        "source": key.source,
        "source_id": key.source_id,
        "platform": None
        if platform is None
        else {
            "contractor_id": platform["contractor_id"],
            "due_at": _when(platform["due_at"]),
            "sent_at": _when(platform["sent_at"]),
            "status": platform["platform_status"],
        },
        "state": None,
        "attempts": [],
        # The latest receipt's status (delivered, undelivered, failed, read; None: no receipt
        # yet), its error code and time; None without a row of ours.
        "delivery_status": None,
        # Replies linked to this message, and the receipts recorded for it (oldest first).
        "replies": [],
        "receipts": [],
        "reply_text_column": store.reply_text_column(*REPLY_TEXT_COLUMN[key.source])
        if key.source in REPLY_TEXT_COLUMN
        else None,
    }
    if state is not None:
        report["state"] = {
            "state": state["state"],
            "reason": _clean(state["reason"]),
            "attempts": int(state["attempts"]),
            "channel": state["channel"],
            "provider_ref": state["provider_ref"],
            "last_error": _clean(state["last_error"]),
            "queued_at": _when(state["queued_at"]),
            "sent_at": _when(state["sent_at"]),
            "next_attempt_at": _when(state["next_attempt_at"]),
            "lease_expires_at": _when(state["lease_expires_at"]),
            "updated_at": _when(state["updated_at"]),
        }
        report["attempts"] = [
            {
                "attempt": int(a["attempt"]),
                "channel": a["channel"],
                "outcome": a["outcome"],
                "http_status": a["http_status"],
                "latency_ms": a["latency_ms"],
                "error": _clean(a["error"]),
                "started_at": _when(a["started_at"]),
                "finished_at": _when(a["finished_at"]),
            }
            for a in store.attempt_history(int(state["delivery_id"]))
        ]
        report["delivery_status"] = {
            "status": state["delivery_status"],
            "error_code": _clean(state["delivery_error_code"]),
            "at": _when(state["delivery_status_at"]),
        }
        for event in store.inbound_events(int(state["delivery_id"])):
            item = {
                "event": _clean(event["identity"]),
                "kind": event["kind"],
                "provider": event["provider"],
                "action": event["action"],
                "outcome": event["outcome"],
                "occurred_at": _when(event["occurred_at"]),
                "received_at": _when(event["received_at"]),
                "applied_at": _when(event["applied_at"]),
            }
            if event["action"] == "receipt":
                item |= {"status": event["status"], "error_code": _clean(event["error_code"])}
                report["receipts"].append(item)
            else:
                item["keyword"] = event["keyword"]
                report["replies"].append(item)
    return report
