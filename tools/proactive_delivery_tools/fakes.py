"""Stand-ins for tests and the benchmark: what the ports of app/ports.py promise, in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from proactive_delivery.app.ports import QUEUE_BATCH_LIMIT
from proactive_delivery.core.errors import QueueError
from proactive_delivery.core.inbound import InboundEvent
from proactive_delivery.core.models import MessageKey


@dataclass
class InMemoryQueue:
    """The delivery queue: records what was sent (the DeliveryQueue port)."""

    sent: list[MessageKey] = field(default_factory=list)
    visibility: list[tuple[str, int]] = field(default_factory=list)
    fail_ids: set[MessageKey] = field(default_factory=set)
    dead_letters: list[tuple[str, str]] = field(default_factory=list)
    requeued: list[tuple[str, int]] = field(default_factory=list)
    keep: bool = True
    count: int = 0

    def send_keys(self, keys: Sequence[MessageKey], *, delay_seconds: int = 0) -> list[MessageKey]:
        if len(keys) > QUEUE_BATCH_LIMIT:
            raise ValueError("SendMessageBatch takes at most 10 entries")
        failed = [k for k in keys if k in self.fail_ids]
        ok = [k for k in keys if k not in self.fail_ids]
        self.count += len(ok)
        if self.keep:
            self.sent.extend(ok)
        return failed

    def change_visibility(self, receipts: Sequence[tuple[str, int]]) -> list[str]:
        self.visibility.extend(receipts)
        return []

    def dead_letter(self, letters: Sequence[tuple[str, str]]) -> list[int]:
        self.dead_letters.extend(letters)
        return []

    def requeue(self, messages: Sequence[tuple[str, int]]) -> list[int]:
        self.requeued.extend(messages)
        return []


@dataclass
class InMemoryInboundQueue:
    """The inbound queue (the InboundQueue port): keeps each event's body as SQS would get
    it; `refuse` makes every put fail as an unavailable queue does."""

    bodies: list[str] = field(default_factory=list)
    refuse: bool = False
    keep: bool = True

    def put(self, event: InboundEvent) -> None:
        if self.refuse:
            raise QueueError("SendMessage failed: ServiceUnavailable")
        body = event.to_body()
        if self.keep:
            self.bodies.append(body)

    @property
    def events(self) -> list[InboundEvent]:
        return [InboundEvent.from_body(body) for body in self.bodies]
