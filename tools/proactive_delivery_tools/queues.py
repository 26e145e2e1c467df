"""How deep an SQS queue is: one call, read the same way by the operator's commands, the local
runtime and the tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEPTH_ATTRIBUTES = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


@dataclass(frozen=True)
class QueueDepth:
    visible: int
    in_flight: int
    delayed: int

    @property
    def pair(self) -> tuple[int, int]:
        """(visible, in flight): what the event source mapping sees."""
        return self.visible, self.in_flight


def queue_depth(sqs: Any, url: str) -> QueueDepth:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(DEPTH_ATTRIBUTES))["Attributes"]
    return QueueDepth(*(int(attrs.get(name, 0)) for name in DEPTH_ATTRIBUTES))
