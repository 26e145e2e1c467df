"""Inbound processor Lambda: consumes the inbound queue and applies each reply, opt-out,
opt-in and delivery receipt to PostgreSQL once (docs/inbound.md)."""

from proactive_delivery.handlers import LambdaFunction, inbound_processor

lambda_handler = LambdaFunction(inbound_processor)
