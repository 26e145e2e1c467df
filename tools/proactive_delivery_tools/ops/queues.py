"""The delivery queue and its DLQ as the stack made them: URLs, ARNs, depth."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from proactive_delivery_tools.ops.errors import OperationsError, call_aws
from proactive_delivery_tools.queues import queue_depth as queues_depth


@dataclass(frozen=True)
class Queues:
    queue_url: str | None
    queue_arn: str | None
    dlq_url: str
    dlq_arn: str


def _arn_of(sqs: Any, url: str, what: str) -> str:
    attrs = call_aws(what, sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


def find_queues(sqs: Any, queue_url: str | None, dlq_url: str | None) -> Queues:
    """The DLQ is the delivery queue's redrive target unless --dlq-url names one. A
    delivery queue always has a redrive policy: a queue without one (the DLQ's URL given as
    DELIVERY_QUEUE_URL, by a slip of the copy and paste) is refused, so that a replay never
    moves the DLQ into itself."""
    queue_arn = _arn_of(sqs, queue_url, f"delivery queue {queue_url}") if queue_url else None
    if queue_url is not None and dlq_url is not None:
        _redrive_target(sqs, queue_url)
    if dlq_url is None:
        if queue_url is None:
            raise OperationsError("DELIVERY_QUEUE_URL is not set and no --dlq-url was given")
        target = _redrive_target(sqs, queue_url)
        _, _, _, _, account, name = target.split(":", 5)
        dlq_url = str(
            call_aws(
                f"dead-letter queue {name}",
                sqs.get_queue_url,
                QueueName=name,
                QueueOwnerAWSAccountId=account,
            )["QueueUrl"]
        )
    dlq_arn = _arn_of(sqs, dlq_url, f"dead-letter queue {dlq_url}")
    if dlq_arn == queue_arn:
        raise OperationsError(f"the dead-letter queue {dlq_url} is the delivery queue itself")
    return Queues(queue_url, queue_arn, dlq_url, dlq_arn)


def _redrive_target(sqs: Any, queue_url: str) -> str:
    """The ARN of the queue's dead-letter queue."""
    response = call_aws(
        f"delivery queue {queue_url}",
        sqs.get_queue_attributes,
        QueueUrl=queue_url,
        AttributeNames=["RedrivePolicy"],
    )
    # SQS leaves "Attributes" out altogether when none of the names asked for is set.
    policy = response.get("Attributes", {}).get("RedrivePolicy")
    if not policy:
        raise OperationsError(
            f"DELIVERY_QUEUE_URL {queue_url} is not a delivery queue: it has no redrive policy "
            "(is it the dead-letter queue's URL?)"
        )
    try:
        return str(json.loads(policy)["deadLetterTargetArn"])
    except (ValueError, KeyError, TypeError):
        raise OperationsError(f"delivery queue {queue_url} has a redrive policy without a target") from None


def queue_depth(sqs: Any, url: str, what: str) -> dict[str, int]:
    depth = call_aws(what, lambda: queues_depth(sqs, url))
    return {"visible": depth.visible, "in_flight": depth.in_flight, "delayed": depth.delayed}
