from __future__ import annotations

from typing import Protocol

from proactive_delivery.models import OutboundMessage, SendResult


class Channel(Protocol):
    """A way to reach a contractor. Implementations are thread-safe: the deliverer calls
    send() from several threads at once."""

    name: str

    def can_reach(self, message: OutboundMessage) -> bool:
        """Whether the contractor has the contact details this channel needs."""
        ...

    def send(self, message: OutboundMessage) -> SendResult: ...
