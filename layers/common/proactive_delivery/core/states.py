"""The delivery states of a message."""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class State(StrEnum):
    """A message's delivery state (delivery.message_state.state; its CHECK lists the same)."""

    PENDING = "pending"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    SKIPPED = "skipped"
    FAILED = "failed"


# The reasons a message is recorded `failed` with (delivery.message_state.reason), the one
# list of them: `resend --reason` accepts these and no other. tests/unit/test_states.py
# reads the runtime for the reasons it records with State.FAILED and compares.
FAILED_REASONS: Final = frozenset(
    {
        # deliver: the retry window's last attempt failed too
        "attempts_exhausted",
        # a channel: the provider refused the message for good (4xx, SES rejection)
        "rejected",
        # Twilio: not a number it can send to (21211, 21614)
        "invalid_number",
        # the verdict: the platform's row is gone
        "source_row_missing",
        # the verdict: our preference row holds a value the policy cannot use
        "unknown_channel",
        "invalid_timezone",
        "invalid_preference",
    }
)
