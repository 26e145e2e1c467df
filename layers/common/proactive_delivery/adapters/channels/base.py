"""What every channel adapter shares: its send is traced (an X-Ray subsegment named after
the channel, annotated with the message identity, never with contact details)."""

from __future__ import annotations

from proactive_delivery.adapters.tracing import subsegment
from proactive_delivery.core.models import OutboundMessage, SendResult


class TracedChannel:
    # The channel it sends (sms, email, ...: channels.py) and the provider behind it.
    name: str
    provider: str

    def send(self, message: OutboundMessage) -> SendResult:
        with subsegment(f"channel.{self.name}", message_id=message.idempotency_key):
            return self._deliver(message)

    def _deliver(self, message: OutboundMessage) -> SendResult:
        raise NotImplementedError
