"""Delivery receipts: the rank of each status and what a provider's error code means for the
contractor's next message. Pure data and functions.

A message's delivery status only moves up the ranks (sent < undelivered, failed < delivered
< read): receipts arrive out of order, and a late `sent` must never overwrite `delivered`
(the SQL function delivery.receipt_rank holds the same ranks; a unit test compares them).

A permanent failure suppresses that channel for that contractor, with the reason, so their
next message goes on the next channel of their order (or is skipped with the reason); an
opt-out at the provider records an opt-out. A transient failure (an unreachable handset, a
queue overflow, an unknown error, a soft bounce) changes nothing: the next message tries
again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

RANKS: Final = {"sent": 1, "undelivered": 2, "failed": 2, "delivered": 3, "read": 4}

Effect = Literal["opt_out", "suppress"]


@dataclass(frozen=True)
class ReceiptEffect:
    """What a receipt changes for the contractor: an opt-out (with its source) or a
    suppression (with its reason)."""

    effect: Effect
    reason: str


# Twilio's error codes on an undelivered or failed message (docs/inbound.md#receipts).
TWILIO_OPTED_OUT: Final = "21610"
TWILIO_PERMANENT: Final = {
    "21211": "invalid_number",
    "21614": "invalid_number",
    "30005": "unknown_handset",
    "30006": "landline_or_unreachable_carrier",
}
# 30001 queue overflow, 30003 unreachable handset, 30008 unknown error: worth another try.
TWILIO_TRANSIENT: Final = frozenset({"30001", "30003", "30008"})

# The opt-out source a provider's opt-out is recorded with (START lifts it).
PROVIDER_OPT_OUT_SOURCE: Final = "twilio"
# An SES complaint: the recipient marked the e-mail as spam, an e-mail opt-out.
COMPLAINT_SOURCE: Final = "complaint"
BOUNCED: Final = "bounced"


def rank(status: str | None) -> int:
    return RANKS.get(status or "", 0)


def carrier_effect(status: str, error_code: str | None) -> ReceiptEffect | None:
    """What an undelivered or failed SMS receipt with this error code (in Twilio's numbering,
    whoever forwarded it) changes, if anything."""
    if status not in ("undelivered", "failed") or not error_code:
        return None
    if error_code == TWILIO_OPTED_OUT:
        return ReceiptEffect("opt_out", PROVIDER_OPT_OUT_SOURCE)
    reason = TWILIO_PERMANENT.get(error_code)
    return ReceiptEffect("suppress", reason) if reason else None
