"""The delivery states of a message."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """A message's delivery state (delivery.message_state.state; its CHECK lists the same)."""

    PENDING = "pending"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DEFERRED = "deferred"
    SKIPPED = "skipped"
    FAILED = "failed"
