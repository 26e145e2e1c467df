"""Inbound Lambda, behind a Function URL: verifies Twilio's and n8n's requests, stores each
event on the inbound queue, answers."""

from proactive_delivery.handlers import InboundFunction, inbound

lambda_handler = InboundFunction(inbound)
