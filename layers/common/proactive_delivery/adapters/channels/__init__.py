"""Delivery channels: each one sends an OutboundMessage and raises a SendError subclass
(TransientSendError / PermanentSendError) when it cannot."""

from proactive_delivery.adapters.channels.ses import SesEmailChannel
from proactive_delivery.adapters.channels.twilio import TwilioSmsChannel
from proactive_delivery.adapters.channels.webhook import SignedWebhookChannel, web_chat_payload

__all__ = ["SesEmailChannel", "SignedWebhookChannel", "TwilioSmsChannel", "web_chat_payload"]
