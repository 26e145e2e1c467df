"""Deliver Lambda: consumes the delivery queue and sends each message once; only an attempt
whose outcome is unknown (a read timeout, a crash before the commit) is sent again, with the
same webhook-id for the receiver to drop."""

from proactive_delivery.handlers import LambdaFunction, deliver

lambda_handler = LambdaFunction(deliver)
