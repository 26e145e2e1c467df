"""Deliver: claim a batch of queued messages, send them concurrently on the contractor's
channel, and record every outcome, so that each message is sent once.

The batch is worked as a whole (one claim statement, concurrent sends, one outcome
statement); the batch processor (adapters/batch.py) calls `process` once and reports each
record's stored failure as a batchItemFailure.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aws_lambda_powertools import Logger

from proactive_delivery import SERVICE
from proactive_delivery.app.ports import Channel, DeliverStore, DeliveryQueue
from proactive_delivery.app.verdict import Verdict, judge
from proactive_delivery.core.errors import (
    MalformedRecordError,
    PermanentSendError,
    RetryLaterError,
    SendError,
    TransientSendError,
)
from proactive_delivery.core.models import (
    FINAL_STATES,
    AttemptOutcome,
    ClaimedRow,
    MessageKey,
    OutboundMessage,
    Outcome,
    SendResult,
)
from proactive_delivery.core.policy import PolicyDefaults
from proactive_delivery.core.retry import RetryPolicy
from proactive_delivery.core.states import State

logger = Logger(service=SERVICE, child=True)

# A queued message locked by a concurrent claim that has not committed yet: look again soon.
BUSY_RETRY_SECONDS = 5


# The attempt_log outcome of a message settled without a send.
_SETTLED: dict[State, AttemptOutcome] = {
    State.SKIPPED: "skipped",
    State.FAILED: "failed",
    State.DEFERRED: "deferred",
}


class AttemptsExhaustedError(RetryLaterError):
    """The last attempt of the retry window failed: the message is `failed` in the database.
    It is put on the dead-letter queue at once; where that is not possible it is reported
    failed so the queue's redrive moves it."""


@dataclass(frozen=True)
class DeliverConfig:
    """The deliverer's knobs, built from the settings (settings.py holds the defaults)."""

    lease_seconds: int
    retry: RetryPolicy
    # The queue's maxReceiveCount: on the last receive a failure is final (SQS moves it next).
    max_receive_count: int
    send_budget_ms: int
    safety_margin_ms: int = 2_000


@dataclass
class BatchResult:
    """What happened to each record of a batch, keyed by SQS messageId."""

    failures: dict[str, Exception] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    outcomes: list[tuple[MessageKey, Outcome]] = field(default_factory=list)
    # When each sent message was due (for the DeliveryLatency metric).
    due_at: dict[MessageKey, datetime] = field(default_factory=dict)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def raise_for(self, message_id: str) -> None:
        failure = self.failures.get(message_id)
        if failure is not None:
            raise failure


@dataclass
class _Send:
    key: MessageKey
    row: ClaimedRow
    record: Mapping[str, Any]
    channel: Channel
    message: OutboundMessage
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: SendResult | None = None
    error: SendError | None = None
    released: bool = False
    latency_ms: int | None = None


def _receive_count(record: Mapping[str, Any]) -> int:
    try:
        return int(record.get("attributes", {}).get("ApproximateReceiveCount", "1"))
    except (TypeError, ValueError):
        return 1


class Deliverer:
    def __init__(
        self,
        store: DeliverStore,
        queue: DeliveryQueue,
        channels: Sequence[Channel],
        executor: Executor,
        config: DeliverConfig,
        *,
        policy: PolicyDefaults,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._queue = queue
        self._channels = list(channels)
        self._policy = policy
        self._by_name = {c.name: c for c in self._channels}
        self._executor = executor
        self._config = config
        self._clock = clock

    # ------------------------------------------------------------------------------------
    def process(self, records: Sequence[Mapping[str, Any]], remaining_ms: Callable[[], int]) -> BatchResult:
        result = BatchResult()
        primary: dict[MessageKey, Mapping[str, Any]] = {}
        for record in records:
            message_id = str(record.get("messageId", ""))
            try:
                key = MessageKey.from_body(record.get("body"))
            except MalformedRecordError as exc:
                logger.error(
                    "malformed queue record", sqs_message_id=message_id, reason=exc.reason, error=str(exc)
                )
                result.failures[message_id] = exc
                result.count("malformed")
                continue
            if key in primary:
                # The same message twice in one batch: the first record carries it.
                logger.info("duplicate record in batch acknowledged", message_id=key.idempotency_key)
                result.count("duplicate")
                continue
            primary[key] = record
        if not primary:
            return result

        claim_token = uuid.uuid4()
        rows = self._store.claim_batch(
            list(primary), claim_token=claim_token, lease_seconds=self._config.lease_seconds
        )
        sends: list[_Send] = []
        started: list[Future[None]] = []
        outcomes: list[Outcome] = []
        # Sends decided earlier in this batch count toward each contractor's daily cap.
        planned: dict[int, int] = {}
        retries: list[tuple[str, int]] = []
        for row in rows:
            record = primary[row.key]
            send = self._triage(row, record, result, outcomes, retries, planned=planned)
            if send is not None:
                # Off at once: the next rows are judged while this one is on the wire.
                sends.append(send)
                started.append(self._executor.submit(self._send_one, send, remaining_ms))
        for future in started:
            future.result()
        exhausted: list[_Send] = []
        for send in sends:
            outcomes.append(self._outcome_of(send, result, retries, exhausted))

        # The outcome lines are written by a worker while the outcome statement is on its
        # way to PostgreSQL (they say what happened to each message, recorded or not).
        logged = self._executor.submit(self._log_outcomes, list(result.outcomes))
        try:
            recorded = self._record(outcomes, claim_token, result)
        finally:
            logged.result()
        self._dead_letter([s for s in exhausted if s.row.delivery_id in recorded], result, retries)
        if retries:
            refused = self._queue.change_visibility(retries)
            if refused:
                # The message comes back after the queue's own visibility timeout instead (its
                # state and next attempt are recorded): later than planned, not lost.
                logger.warning(
                    "ChangeMessageVisibility refused; those records return later", refused=len(refused)
                )
                result.count("visibility_failed", len(refused))
        return result

    def _record(self, outcomes: Sequence[Outcome], claim_token: uuid.UUID, result: BatchResult) -> set[int]:
        if not outcomes:
            return set()
        recorded = self._store.record_outcomes(outcomes, claim_token=claim_token)
        if len(recorded) < len(outcomes):
            # Our lease ran out and another deliverer took some messages over: their
            # outcome is now theirs to record. Worth knowing: leases are too short.
            logger.warning(
                "lease lost before outcomes were recorded", recorded=len(recorded), expected=len(outcomes)
            )
            result.count("lease_lost", len(outcomes) - len(recorded))
        return recorded

    # ------------------------------------------------------------------------------------
    def _triage(
        self,
        row: ClaimedRow,
        record: Mapping[str, Any],
        result: BatchResult,
        outcomes: list[Outcome],
        retries: list[tuple[str, int]],
        *,
        planned: dict[int, int] | None = None,
    ) -> _Send | None:
        """The send a claimed row needs, or None when it is settled, held or not ours."""
        if row.delivery_id is None or not row.claimed:
            self._not_claimed(row, record, result, retries)
            return None
        assert row.facts is not None
        planned = {} if planned is None else planned
        contractor = row.facts.contractor_id
        # The verdict again, just before the send: the platform's row, preferences,
        # opt-outs and the day's count may have changed since the message was queued.
        now = self._clock()
        verdict = judge(
            row.facts,
            now=now,
            defaults=self._policy,
            available=self._by_name,
            planned=planned.get(contractor, 0) if contractor is not None else 0,
        )
        decision = verdict.decision
        if decision.action != "send":
            self._hold(row, record, verdict, now=now, result=result, outcomes=outcomes, retries=retries)
            return None
        assert decision.channel is not None and verdict.message is not None and contractor is not None
        planned[contractor] = planned.get(contractor, 0) + 1
        return _Send(
            key=row.key,
            row=row,
            record=record,
            channel=self._by_name[decision.channel],
            message=verdict.message,
        )

    def _not_claimed(
        self,
        row: ClaimedRow,
        record: Mapping[str, Any],
        result: BatchResult,
        retries: list[tuple[str, int]],
    ) -> None:
        """A record whose message is unknown, already done, owned elsewhere or locked."""
        message_id = str(record.get("messageId", ""))
        key = row.key
        if row.delivery_id is None:
            logger.error(
                "queue record names an unknown message",
                sqs_message_id=message_id,
                message_id=key.idempotency_key,
            )
            result.failures[message_id] = MalformedRecordError("unknown_message", key.idempotency_key)
            result.count("malformed")
        elif row.previous_state in FINAL_STATES or row.previous_state in (State.SENDING, State.DEFERRED):
            # Already done, or owned by a live lease elsewhere (whose holder records it, and
            # whose crash the reconciliation sweep repairs): acknowledge without a send.
            logger.info(
                "message not claimable; acknowledged",
                message_id=key.idempotency_key,
                state=row.previous_state,
            )
            result.count("duplicate")
        else:
            # queued but locked by a concurrent claim that has not committed: look again soon.
            result.failures[message_id] = RetryLaterError("claimed_concurrently", BUSY_RETRY_SECONDS)
            retries.append((str(record.get("receiptHandle", "")), BUSY_RETRY_SECONDS))
            result.count("busy")

    def _hold(
        self,
        row: ClaimedRow,
        record: Mapping[str, Any],
        verdict: Verdict,
        *,
        now: datetime,
        result: BatchResult,
        outcomes: list[Outcome],
        retries: list[tuple[str, int]],
    ) -> None:
        """A claimed message the verdict does not send: skipped, failed or deferred."""
        assert row.delivery_id is not None
        decision = verdict.decision
        if decision.action in ("skip", "fail"):
            state = State.SKIPPED if decision.action == "skip" else State.FAILED
            self._settle(row, state, decision.reason, result, outcomes, error=verdict.error)
            return
        delay = decision.queue_delay(now)
        result.count("deferred")
        if delay is None:
            # Too long for SQS to hold: stored as deferred, the next evaluate run re-queues it.
            self._settle(
                row, State.DEFERRED, decision.reason, result, outcomes, next_attempt_at=decision.not_before
            )
            return
        # Short enough for the queue: stays queued and comes back when the window opens.
        # Not an attempt (nothing is logged) and not a failure (no backoff, no budget).
        outcomes.append(
            Outcome(
                row.delivery_id,
                State.QUEUED,
                "deferred",
                attempted=False,
                reason=decision.reason,
                next_attempt_at=decision.not_before,
            )
        )
        result.outcomes.append((row.key, outcomes[-1]))
        result.failures[str(record.get("messageId", ""))] = RetryLaterError(
            decision.reason or "deferred", delay
        )
        retries.append((str(record.get("receiptHandle", "")), delay))

    def _settle(
        self,
        row: ClaimedRow,
        state: State,
        reason: str | None,
        result: BatchResult,
        outcomes: list[Outcome],
        *,
        error: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        """Record a decision that needs no send (skipped, failed, deferred)."""
        assert row.delivery_id is not None
        outcomes.append(
            Outcome(
                row.delivery_id,
                state,
                _SETTLED[state],
                attempted=False,
                reason=reason,
                error=error,
                next_attempt_at=next_attempt_at,
            )
        )
        result.outcomes.append((row.key, outcomes[-1]))
        if state != State.DEFERRED:
            result.count(state)

    def _send_one(self, send: _Send, remaining_ms: Callable[[], int]) -> None:
        # Checked when the send actually starts (it may have waited for a free worker):
        # never start a send that the Lambda deadline could cut in half.
        if remaining_ms() < self._config.send_budget_ms + self._config.safety_margin_ms:
            send.released = True
            return
        send.started_at = self._clock()
        started = time.perf_counter()
        try:
            send.result = send.channel.send(send.message)
        except SendError as exc:
            send.error = exc
        finally:
            send.latency_ms = round((time.perf_counter() - started) * 1000)
            send.finished_at = self._clock()

    def _dead_letter(
        self, sends: Sequence[_Send], result: BatchResult, retries: list[tuple[str, int]]
    ) -> None:
        """Messages whose retry window is spent (and recorded `failed`) go to the dead-letter
        queue now, with the reason, and their record is acknowledged. The queue's redrive
        leaves room for receives that are not attempts, so it would take its time; what the
        dead-letter queue refuses is left to it."""
        if not sends:
            return
        refused = self._queue.dead_letter(
            [(str(s.record.get("body", "")), "attempts_exhausted") for s in sends]
        )
        for index in refused:
            send = sends[index]
            result.failures[str(send.record.get("messageId", ""))] = AttemptsExhaustedError(
                "attempts_exhausted", 0
            )
            retries.append((str(send.record.get("receiptHandle", "")), 0))
        result.count("dead_lettered", len(sends) - len(refused))

    def _outcome_of(
        self, send: _Send, result: BatchResult, retries: list[tuple[str, int]], exhausted: list[_Send]
    ) -> Outcome:
        delivery_id = send.row.delivery_id
        assert delivery_id is not None
        message_id = str(send.record.get("messageId", ""))
        receipt = str(send.record.get("receiptHandle", ""))
        common: dict[str, Any] = {
            "channel": send.channel.name,
            "started_at": send.started_at,
            "finished_at": send.finished_at,
            "latency_ms": send.latency_ms,
        }
        if send.released:
            result.failures[message_id] = RetryLaterError("deadline", 0)
            retries.append((receipt, 0))
            result.count("released")
            outcome = Outcome(delivery_id, State.QUEUED, "released", attempted=False, reason="deadline")
        elif send.error is None:
            assert send.result is not None
            result.count("delivered")
            outcome = Outcome(
                delivery_id,
                State.SENT,
                "delivered",
                attempted=True,
                provider_ref=send.result.provider_ref,
                http_status=send.result.http_status,
                **common,
            )
        elif isinstance(send.error, PermanentSendError):
            result.count(send.error.final_state)
            opted_out = send.error.reason == "opted_out"
            outcome = Outcome(
                delivery_id,
                send.error.final_state,
                "rejected",
                attempted=True,
                reason=send.error.reason,
                error=str(send.error),
                http_status=send.error.http_status,
                opt_out_contractor_id=send.message.contractor_id if opted_out else None,
                opt_out_channel=send.channel.name if opted_out else None,
                **common,
            )
        else:
            attempt = send.row.attempts + 1
            error = send.error
            retry_after = error.retry_after if isinstance(error, TransientSendError) else None
            delay = self._config.retry.next_delay(attempt, retry_after=retry_after)
            last_receive = _receive_count(send.record) >= self._config.max_receive_count
            if delay is None or last_receive:
                result.count("failed")
                exhausted.append(send)
                outcome = Outcome(
                    delivery_id,
                    State.FAILED,
                    "failed",
                    attempted=True,
                    reason="attempts_exhausted",
                    error=str(error),
                    http_status=error.http_status,
                    **common,
                )
            else:
                result.count("retried")
                result.failures[message_id] = RetryLaterError(error.reason, delay)
                retries.append((receipt, delay))
                outcome = Outcome(
                    delivery_id,
                    State.QUEUED,
                    "retry",
                    attempted=True,
                    reason=error.reason,
                    error=str(error),
                    http_status=error.http_status,
                    next_attempt_at=self._clock() + timedelta(seconds=delay),
                    **common,
                )
        result.outcomes.append((send.key, outcome))
        if send.row.facts is not None and send.row.facts.due_at is not None:
            result.due_at[send.key] = send.row.facts.due_at
        return outcome

    def _log_outcomes(self, outcomes: Sequence[tuple[MessageKey, Outcome]]) -> None:
        for key, outcome in outcomes:
            logger.info(
                "delivery outcome",
                message_id=key.idempotency_key,
                state=outcome.state,
                outcome=outcome.outcome,
                reason=outcome.reason,
                channel=outcome.channel,
                http_status=outcome.http_status,
                latency_ms=outcome.latency_ms,
            )
