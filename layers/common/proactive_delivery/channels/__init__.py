"""Delivery channels: each one sends an OutboundMessage and raises a SendError subclass
(TransientSendError / PermanentSendError) when it cannot."""

from proactive_delivery.channels.base import Channel
from proactive_delivery.channels.webhook import SignedWebhookChannel

__all__ = ["Channel", "SignedWebhookChannel"]
