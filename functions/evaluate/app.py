"""Evaluate Lambda: scheduled by EventBridge; queues due messages for delivery."""

from proactive_delivery.handlers import LambdaFunction, evaluate

lambda_handler = LambdaFunction(evaluate)
