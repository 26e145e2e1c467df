"""Delivery channels: each one sends an OutboundMessage and raises a SendError subclass
(TransientSendError / PermanentSendError) when it cannot."""

from proactive_delivery.channels.base import Channel
from proactive_delivery.channels.email import SesEmailChannel
from proactive_delivery.channels.twilio import TwilioSmsChannel
from proactive_delivery.channels.webhook import SignedWebhookChannel, web_chat_payload

__all__ = ["Channel", "SesEmailChannel", "SignedWebhookChannel", "TwilioSmsChannel", "web_chat_payload"]
