"""Deliver Lambda: consumes the delivery queue and sends each message once."""

from proactive_delivery.handlers import LambdaFunction, deliver

lambda_handler = LambdaFunction(deliver)
