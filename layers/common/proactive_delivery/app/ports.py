"""Every interface the use cases depend on. The adapters (adapters/) implement them; unit
tests pass fakes. Nothing here imports an adapter, a driver or an SDK."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Protocol

from proactive_delivery.core.inbound import InboundEvent
from proactive_delivery.core.models import (
    ClaimedRow,
    EnqueuePage,
    EvaluateRun,
    MessageFacts,
    MessageKey,
    OutboundMessage,
    Outcome,
    PhonePair,
    PhonesRegistered,
    PurgeCursor,
    PurgePage,
    QueueDecision,
    SendResult,
    Slot,
    SlotRequest,
    UnsentBacklog,
)

# SendMessageBatch (and SQS's other batch calls) take at most 10 entries.
QUEUE_BATCH_LIMIT: Final = 10
# The largest message body a queue takes (SQS's MaximumMessageSize, as the template sets it
# on the inbound queue).
QUEUE_MESSAGE_LIMIT_BYTES: Final = 262_144


class EvaluateStore(Protocol):
    """What evaluate needs of the database: pages of due rows recorded as queued, the
    reconciliation sweep, and the two answers of the queue."""

    def sources(self) -> tuple[str, ...]:
        """The sources whose platform table exists in this database."""
        ...

    def enqueue_new(self, source: str, run: EvaluateRun, *, after_id: int, page_size: int) -> EnqueuePage: ...

    def requeue_stranded(
        self, source: str, run: EvaluateRun, *, after_id: int, page_size: int, reconcile_after_seconds: int
    ) -> list[tuple[int, int]]: ...

    def return_to_pending(self, source: str, source_ids: Sequence[int]) -> int: ...

    def mark_enqueued(self, source: str, source_ids: Sequence[int]) -> int: ...

    def start_evaluate_run(self, sources: Sequence[str], *, lease_seconds: int) -> EvaluateRun:
        """Record a run as started; its id marks the rows it queues."""
        ...

    def finish_evaluate_run(
        self, run_id: int, *, enqueued: int, stopped_early: bool, report: dict[str, Any]
    ) -> None: ...

    def unsent_backlog(self, source: str) -> UnsentBacklog: ...


class GateStore(Protocol):
    """The queue-time verdict's inputs and outputs."""

    def policy_inputs(self, source: str, source_ids: Sequence[int]) -> list[MessageFacts]: ...

    def apply_queue_decisions(self, source: str, decisions: Sequence[QueueDecision]) -> int: ...


class PhoneDirectory(Protocol):
    """The contractor <-> number directory (delivery.contractor_phone) the inbound processor
    finds a sender in."""

    def register_phones(
        self, pairs: Sequence[PhonePair] | None, *, source: str, write_sms_opt_in: bool
    ) -> PhonesRegistered:
        """One statement: the pairs not in the directory added (with `source`), and the
        keyword and DND opt-outs recorded `unmatched` from the numbers added applied (from
        every number of the directory when `pairs` is None)."""
        ...


class DeliverStore(Protocol):
    """One claim statement and one outcome statement per batch."""

    def claim_batch(
        self, keys: Sequence[MessageKey], *, claim_token: uuid.UUID, lease_seconds: int
    ) -> list[ClaimedRow]: ...

    def record_outcomes(self, outcomes: Sequence[Outcome], *, claim_token: uuid.UUID) -> set[int]:
        """The delivery ids whose outcome was recorded (all, unless the lease was lost)."""
        ...

    def take_slots(self, requests: Sequence[SlotRequest]) -> list[Slot]:
        """One Slot per request, in order, at each provider's pace shared by every deliverer
        (one statement for the batch)."""
        ...


class DeliveryQueue(Protocol):
    """Where evaluate puts message keys for the deliverer."""

    def send_keys(self, keys: Sequence[MessageKey], *, delay_seconds: int = 0) -> list[MessageKey]:
        """Send up to 10 message keys in one call; return the keys whose entries failed."""
        ...


class Channel(Protocol):
    """A way to reach a contractor, named after its declaration in channels.py (sms, email,
    web_chat), sending through a provider (n8n, twilio, ses, web_chat). Implementations are
    thread-safe: the deliverer calls send() from several threads."""

    name: str
    provider: str

    def send(self, message: OutboundMessage) -> SendResult:
        """Deliver one message; raise TransientSendError / PermanentSendError when it cannot."""
        ...


class RetentionStore(Protocol):
    """The retention purge's batches: one statement each (adapters/postgres/sql/retention.sql)."""

    # A dry run's statements are rolled back: they report what they would delete.
    dry_run: bool

    def purge_page(
        self, statement: str, *, horizon: datetime, after: PurgeCursor, batch_size: int
    ) -> PurgePage:
        """Run the named purge statement on the page after `after`; rows older than `horizon`."""


class InboundQueue(Protocol):
    """Where the inbound edge stores a verified event before it answers (the inbound SQS
    queue). The edge answers 2xx only after put() returned."""

    def put(self, event: InboundEvent) -> None:
        """Store one event; raise QueueError when the queue did not take it."""
        ...
