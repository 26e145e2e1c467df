"""Deliver: claim a batch of queued messages, send them concurrently on the contractor's
channel, and record every outcome, so that each message is sent once by us.

The use case knows nothing of SQS: it takes the messages received (their keys and how often
each was received) and returns one Disposition per key, which the queue's edge
(adapters/sqs_batch.py) turns into acknowledgements, visibility changes and dead letters.
A batch is worked as a whole: one claim statement, the verdicts, concurrent sends, one
outcome statement. The verdict on each message and the disposition of each outcome are pure
functions of their inputs (`_hold`, `_unclaimed`, `_outcome_of`).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from aws_lambda_powertools import Logger

from proactive_delivery import SERVICE
from proactive_delivery.app.ports import Channel, DeliverStore
from proactive_delivery.app.verdict import Verdict, judge
from proactive_delivery.core.errors import PermanentSendError, SendError, TransientSendError
from proactive_delivery.core.models import (
    FINAL_STATES,
    ClaimedRow,
    MessageKey,
    OutboundMessage,
    Outcome,
    SendResult,
    Slot,
    SlotRequest,
)
from proactive_delivery.core.pace import CircuitPolicy, PacePolicy
from proactive_delivery.core.policy import ChannelCatalog, PolicyDefaults
from proactive_delivery.core.retry import RetryPolicy
from proactive_delivery.core.states import State

logger = Logger(service=SERVICE, child=True)

# A queued message locked by a concurrent claim that has not committed yet: look again soon.
BUSY_RETRY_SECONDS = 5
# A message back this close to its reserved slot goes now (the provider's burst covers it).
SLOT_TOLERANCE = timedelta(milliseconds=250)

DispositionKind = Literal["sent", "done", "hold", "retry", "dead_letter", "failed"]


@dataclass(frozen=True, slots=True)
class Disposition:
    """What becomes of one received message.

    sent         delivered: acknowledge it.
    done         nothing more to do (skipped, failed for good, deferred past what the queue
                 can hold, already sent, owned by another deliverer): acknowledge it.
    hold         not now, and not an attempt (quiet hours, the daily cap, the provider's
                 pace): back after `delay_seconds`.
    retry        an attempt failed for now (or the message was busy, or the deadline near):
                 back after `delay_seconds`.
    dead_letter  the retry window is spent (recorded `failed`): to the dead-letter queue.
    failed       the message can never be worked (an unknown id): reported failed, so the
                 queue's redrive takes it to the dead-letter queue.
    """

    kind: DispositionKind
    reason: str | None = None
    delay_seconds: int = 0
    # The state recorded for the message by this batch, when one was.
    state: State | None = None
    # A hold that must not use up a receive (waiting at a provider's pace is not an attempt,
    # and a backlog may wait many times): the queue carries it again as a new message.
    requeue: bool = False


@dataclass(frozen=True, slots=True)
class Receive:
    """One received message, as the use case needs it: which message, and how many times
    the queue has handed it out (the last receive before its redrive is final)."""

    key: MessageKey
    receive_count: int = 1


@dataclass(frozen=True)
class DeliverResult:
    """One disposition per received key, and what was recorded for each message."""

    dispositions: Mapping[MessageKey, Disposition]
    outcomes: Sequence[tuple[MessageKey, Outcome]]
    # When each sent message was due (for the DeliveryLatency metric).
    due_at: Mapping[MessageKey, datetime]


@dataclass(frozen=True)
class DeliverConfig:
    """The deliverer's knobs, built from the settings (settings.py holds the defaults)."""

    lease_seconds: int
    retry: RetryPolicy
    # The queue's maxReceiveCount: on the last receive a failure is final (SQS moves it next).
    max_receive_count: int
    send_budget_ms: int
    safety_margin_ms: int = 2_000
    # What a message costs at its provider's pace (rate limits, segments), and the circuit
    # breaker's settings; the shared state is the store's (take_slots, record_outcomes).
    pace: PacePolicy = field(default_factory=lambda: PacePolicy(limits={}, circuit=CircuitPolicy()))


@dataclass(frozen=True, slots=True)
class _Send:
    row: ClaimedRow
    channel: Channel
    message: OutboundMessage
    receive_count: int


@dataclass(frozen=True, slots=True)
class _Attempt:
    """What happened on the wire (or that the send was not started: `released`)."""

    released: bool = False
    result: SendResult | None = None
    error: SendError | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    latency_ms: int | None = None


_RELEASED = _Attempt(released=True)


class Deliverer:
    def __init__(
        self,
        store: DeliverStore,
        channels: Sequence[Channel],
        executor: Executor,
        config: DeliverConfig,
        *,
        policy: PolicyDefaults,
        catalog: ChannelCatalog,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        phone_hash: Callable[[str], str] | None = None,
    ) -> None:
        # Hashes an E.164 number (core/phone_hash.py): the number an SMS goes to is recorded as
        # its hash, for replies and keyword opt-outs to find the contractor (the way back).
        self._phone_hash = phone_hash
        self._store = store
        self._by_name = {c.name: c for c in channels}
        # The verdict may only choose a channel that has an adapter here.
        self._catalog = replace(catalog, configured=catalog.configured & frozenset(self._by_name))
        self._policy = policy
        self._executor = executor
        self._config = config
        self._clock = clock

    def deliver(self, receives: Sequence[Receive], remaining_ms: Callable[[], int]) -> DeliverResult:
        if not receives:
            return DeliverResult({}, (), {})
        receive_counts = {r.key: r.receive_count for r in receives}
        claim_token = uuid.uuid4()
        rows = self._store.claim_batch(
            list(receive_counts), claim_token=claim_token, lease_seconds=self._config.lease_seconds
        )
        dispositions: dict[MessageKey, Disposition] = {}
        settled: list[tuple[MessageKey, Outcome, Disposition]] = []
        to_send: list[_Send] = []
        now = self._clock()
        # Sends decided earlier in this batch count toward each contractor's daily cap.
        planned: dict[int, int] = {}
        for row in rows:
            if row.delivery_id is None or not row.claimed:
                dispositions[row.key] = _unclaimed(row)
                continue
            verdict = self._verdict(row, now, planned)
            decision = verdict.decision
            if decision.action != "send":
                settled.append((row.key, *_hold(row, verdict, now)))
                continue
            assert decision.channel is not None and verdict.message is not None
            planned[verdict.message.contractor_id] = planned.get(verdict.message.contractor_id, 0) + 1
            to_send.append(
                _Send(row, self._by_name[decision.channel], verdict.message, receive_counts[row.key])
            )
        paced, go = self._at_providers_pace(to_send, now)
        settled.extend(paced)
        sends = [(send, self._executor.submit(self._send_one, send, remaining_ms)) for send in go]

        due_at: dict[MessageKey, datetime] = {}
        for send, future in sends:
            settled.append((send.row.key, *_outcome_of(send, future.result(), self._config, self._clock())))
            facts = send.row.facts
            if facts is not None and facts.due_at is not None:
                due_at[send.row.key] = facts.due_at

        outcomes = [(key, outcome) for key, outcome, _ in settled]
        # The outcome lines are written by a worker while the outcome statement is on its way
        # to PostgreSQL (they say what happened to each message, recorded or not).
        logged = self._executor.submit(_log_outcomes, outcomes)
        try:
            recorded = self._record([o for _, o in outcomes], claim_token)
        finally:
            logged.result()
        for key, outcome, disposition in settled:
            # Unless our lease ran out and another deliverer took the message over: its
            # outcome is theirs to record, and the queue message theirs to settle.
            recorded_here = outcome.delivery_id in recorded
            dispositions[key] = disposition if recorded_here else Disposition("done", "lease_lost")
        return DeliverResult(dispositions, outcomes, due_at)

    def _at_providers_pace(
        self, sends: Sequence[_Send], now: datetime
    ) -> tuple[list[tuple[MessageKey, Outcome, Disposition]], list[_Send]]:
        """The holds of the messages that may not go yet, and the sends that may. One
        statement takes the batch's slots at each provider's shared pace; a message that holds
        a slot already (it was held before) takes no new slot, only its send tokens, and one
        that came back before its slot is held again until then without asking."""
        held: list[tuple[MessageKey, Outcome, Disposition]] = []
        asking: list[_Send] = []
        for send in sends:
            slot_at = send.row.paced_until
            if slot_at is not None and slot_at > now + SLOT_TOLERANCE:
                held.append(
                    (send.row.key, *_paced(send, Slot("reserve", (slot_at - now).total_seconds()), now))
                )
            else:
                asking.append(send)
        if not asking:
            return held, []
        pace = self._config.pace
        requests = [
            SlotRequest(
                send.channel.provider,
                pace.cost(send.channel.provider, send.message.segments),
                reserved=send.row.paced_until is not None,
            )
            for send in asking
        ]
        go: list[_Send] = []
        for send, slot in zip(asking, self._store.take_slots(requests), strict=True):
            if slot.action in ("send", "probe"):
                go.append(send)
            else:
                held.append((send.row.key, *_paced(send, slot, now)))
        return held, go

    def _verdict(self, row: ClaimedRow, now: datetime, planned: Mapping[int, int]) -> Verdict:
        # The verdict again, just before the send: the platform's row, preferences, opt-outs
        # and the day's count may have changed since the message was queued.
        assert row.facts is not None
        contractor = row.facts.contractor_id
        return judge(
            row.facts,
            now=now,
            defaults=self._policy,
            channels=self._catalog,
            planned=planned.get(contractor, 0) if contractor is not None else 0,
            phone_hash=self._phone_hash,
            hash_recipient=True,
        )

    def _record(self, outcomes: Sequence[Outcome], claim_token: uuid.UUID) -> set[int]:
        if not outcomes:
            return set()
        recorded = self._store.record_outcomes(outcomes, claim_token=claim_token)
        if len(recorded) < len(outcomes):
            # Worth knowing: the leases are too short for the sends.
            logger.warning(
                "lease lost before outcomes were recorded", recorded=len(recorded), expected=len(outcomes)
            )
        return recorded

    def _send_one(self, send: _Send, remaining_ms: Callable[[], int]) -> _Attempt:
        # Checked when the send actually starts (it may have waited for a free worker):
        # never start a send that the Lambda deadline could cut in half.
        if remaining_ms() < self._config.send_budget_ms + self._config.safety_margin_ms:
            return _RELEASED
        started_at = self._clock()
        started = time.perf_counter()
        result: SendResult | None = None
        error: SendError | None = None
        try:
            result = send.channel.send(send.message)
        except SendError as exc:
            error = exc
        latency_ms = round((time.perf_counter() - started) * 1000)
        return _Attempt(False, result, error, started_at, self._clock(), latency_ms)


# --- the disposition of each message: pure functions --------------------------------------
def _unclaimed(row: ClaimedRow) -> Disposition:
    """A received message the claim did not take: unknown, already done, owned elsewhere, or
    locked by a concurrent claim."""
    if row.delivery_id is None:
        logger.error("queue record names an unknown message", message_id=row.key.idempotency_key)
        return Disposition("failed", "unknown_message")
    if row.previous_state in FINAL_STATES or row.previous_state in (State.SENDING, State.DEFERRED):
        # Already done, or owned by a live lease elsewhere (whose holder records it, and whose
        # crash the reconciliation sweep repairs): acknowledged without a send.
        logger.debug("message not claimable; acknowledged", message_id=row.key.idempotency_key)
        return Disposition("done", "duplicate")
    # Queued but locked by a concurrent claim that has not committed: look again soon.
    return Disposition("retry", "claimed_concurrently", BUSY_RETRY_SECONDS)


def _hold(row: ClaimedRow, verdict: Verdict, now: datetime) -> tuple[Outcome, Disposition]:
    """A claimed message the verdict does not send: skipped, failed or deferred."""
    assert row.delivery_id is not None
    decision = verdict.decision
    if decision.action in ("skip", "fail"):
        state = State.SKIPPED if decision.action == "skip" else State.FAILED
        outcome = Outcome(
            row.delivery_id,
            state,
            "skipped" if state == State.SKIPPED else "failed",
            attempted=False,
            reason=decision.reason,
            error=verdict.error,
        )
        return outcome, Disposition("done", decision.reason, state=state)
    delay = decision.queue_delay(now)
    # Too long for the queue to hold: stored as deferred, the next evaluate run re-queues it.
    # Short enough: stays queued and comes back when the window opens. Neither is an attempt
    # (nothing is logged) nor a failure (no backoff, no budget).
    state = State.DEFERRED if delay is None else State.QUEUED
    outcome = Outcome(
        row.delivery_id,
        state,
        "deferred",
        attempted=False,
        reason=decision.reason,
        next_attempt_at=decision.not_before,
    )
    if delay is None:
        return outcome, Disposition("done", decision.reason, state=state)
    return outcome, Disposition("hold", decision.reason or "deferred", delay, state)


def _outcome_of(
    send: _Send, attempt: _Attempt, config: DeliverConfig, now: datetime
) -> tuple[Outcome, Disposition]:
    """What a send attempt (or a send not started) means for the message and its receive."""
    delivery_id = send.row.delivery_id
    assert delivery_id is not None
    if attempt.released:
        outcome = Outcome(delivery_id, State.QUEUED, "released", attempted=False, reason="deadline")
        return outcome, Disposition("retry", "deadline", 0, State.QUEUED)
    wire: dict[str, Any] = {
        "channel": send.channel.name,
        "provider": send.channel.provider,
        "started_at": attempt.started_at,
        "finished_at": attempt.finished_at,
        "latency_ms": attempt.latency_ms,
        # The way back: the number an SMS went to, as its keyed hash (None otherwise).
        "phone_hash": send.message.phone_hash,
    }
    error = attempt.error
    if error is None:
        assert attempt.result is not None
        outcome = Outcome(
            delivery_id,
            State.SENT,
            "delivered",
            attempted=True,
            provider_ref=attempt.result.provider_ref,
            http_status=attempt.result.http_status,
            segments=send.message.segments,
            ucs2=send.message.ucs2,
            **wire,
        )
        return outcome, Disposition("sent", state=State.SENT)
    if isinstance(error, PermanentSendError):
        opted_out = error.reason == "opted_out"
        outcome = Outcome(
            delivery_id,
            error.final_state,
            "rejected",
            attempted=True,
            reason=error.reason,
            error=str(error),
            http_status=error.http_status,
            opt_out_contractor_id=send.message.contractor_id if opted_out else None,
            opt_out_channel=send.channel.name if opted_out else None,
            **wire,
        )
        return outcome, Disposition("done", error.reason, state=error.final_state)
    retry_after = error.retry_after if isinstance(error, TransientSendError) else None
    # A transient failure counts against the provider's circuit; a 429's Retry-After holds
    # the provider for every deliverer.
    wire.update(transient=True, retry_after=retry_after if error.http_status == 429 else None)
    delay = config.retry.next_delay(send.row.attempts + 1, retry_after=retry_after)
    if delay is None or send.receive_count >= config.max_receive_count:
        outcome = Outcome(
            delivery_id,
            State.FAILED,
            "failed",
            attempted=True,
            reason="attempts_exhausted",
            error=str(error),
            http_status=error.http_status,
            **wire,
        )
        return outcome, Disposition("dead_letter", "attempts_exhausted", state=State.FAILED)
    outcome = Outcome(
        delivery_id,
        State.QUEUED,
        "retry",
        attempted=True,
        reason=error.reason,
        error=str(error),
        http_status=error.http_status,
        next_attempt_at=now + timedelta(seconds=delay),
        **wire,
    )
    return outcome, Disposition("retry", error.reason, delay, State.QUEUED)


def _paced(send: _Send, slot: Slot, now: datetime) -> tuple[Outcome, Disposition]:
    """A message held at its provider's pace: still queued, not an attempt, back when its
    slot comes (a reserved slot is kept with the message, and a slot it held already is kept
    while it waits) or when the provider may take it."""
    assert send.row.delivery_id is not None
    until = now + timedelta(seconds=slot.wait_seconds)
    reserved = slot.action == "reserve"
    outcome = Outcome(
        send.row.delivery_id,
        State.QUEUED,
        "paced",
        attempted=False,
        reason=slot.reason or "rate_limited",
        channel=send.channel.name,
        provider=send.channel.provider,
        next_attempt_at=until,
        paced_until=until if reserved else send.row.paced_until,
    )
    delay = max(1, math.ceil(slot.wait_seconds))
    return outcome, Disposition("hold", outcome.reason, delay, State.QUEUED, requeue=True)


def _log_outcomes(outcomes: Sequence[tuple[MessageKey, Outcome]]) -> None:
    """One line per message outcome, what on-call searches by message id, written in one
    call (adapters/redact.py DeliveryLogFormatter: MESSAGE_LINES)."""
    if not outcomes:
        return
    logger.info(
        "delivery outcome",
        message_lines=[
            {
                "message_id": key.idempotency_key,
                "state": outcome.state,
                "outcome": outcome.outcome,
                "reason": outcome.reason,
                "channel": outcome.channel,
                "http_status": outcome.http_status,
                "latency_ms": outcome.latency_ms,
            }
            for key, outcome in outcomes
        ],
    )
