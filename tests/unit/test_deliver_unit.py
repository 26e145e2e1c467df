"""Deliverer with a fake store, a fake channel, InMemoryQueue and a real thread pool: each
SQS record ends acknowledged, retried later, or failed toward the DLQ, for the right reason."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from proactive_delivery.app.deliver import AttemptsExhaustedError, BatchResult, DeliverConfig, Deliverer
from proactive_delivery.core.content import Names
from proactive_delivery.core.errors import (
    MalformedRecordError,
    PermanentSendError,
    RetryLaterError,
    SendError,
    StoreUnavailableError,
    TransientSendError,
)
from proactive_delivery.core.models import (
    ClaimedRow,
    MessageFacts,
    MessageKey,
    OutboundMessage,
    Outcome,
    SendResult,
)
from proactive_delivery.core.retry import RetryPolicy
from proactive_delivery_tools.fakes import InMemoryQueue
from tests.pipeline import SENDABLE_ANY_TIME

NOW = datetime(2025, 3, 4, 12, 0, 0, tzinfo=UTC)
CONFIG = DeliverConfig(
    lease_seconds=120,
    retry=RetryPolicy(timedelta(hours=24)),
    max_receive_count=18,
    send_budget_ms=13_000,
    safety_margin_ms=2_000,
)
PLENTY_MS = 300_000


# --- fakes --------------------------------------------------------------------------------------


# The delivery mechanics must not depend on the hour the tests run at: no quiet hours and no
# practical cap (tests/unit/test_policy.py covers those through the same verdict).
POLICY = SENDABLE_ANY_TIME
_ROW_FIELDS = {"delivery_id", "previous_state", "claimed", "attempts"}


def claimed_row(source_id: int, **overrides: Any) -> ClaimedRow:
    """A row the claim statement took: claimable, with facts (content, a phone). Overrides
    name a ClaimedRow field or a MessageFacts field; an unclaimed row has no facts."""
    key = MessageKey("proactive", source_id)
    facts = MessageFacts(
        key=key,
        contractor_id=70 + source_id,
        message_type="check_in",
        body=f"Hi Ana, message {source_id}",
        due_at=NOW - timedelta(minutes=5),
        platform_sent_at=None,
        names=Names(first_name="Ana"),
        phone=f"+1312555{100 + source_id % 100:04d}",
        email=f"ana{source_id}@example.com",
    )
    facts = replace(facts, **{k: v for k, v in overrides.items() if k not in _ROW_FIELDS})
    row = ClaimedRow(key=key, delivery_id=1000 + source_id, previous_state="queued", claimed=True, attempts=0)
    row = replace(row, **{k: v for k, v in overrides.items() if k in _ROW_FIELDS})
    return replace(row, facts=facts if row.claimed else None)


@dataclass
class FakeDeliverStore:
    """claim_batch answers one row per requested key (as the SQL does), from `rows`; a key
    with no row is reported unknown (delivery_id None)."""

    rows: dict[MessageKey, ClaimedRow] = field(default_factory=dict)
    claims: list[tuple[list[MessageKey], uuid.UUID, int]] = field(default_factory=list)
    recorded: list[tuple[list[Outcome], uuid.UUID]] = field(default_factory=list)

    def add(self, *rows: ClaimedRow) -> None:
        for row in rows:
            self.rows[row.key] = row

    def claim_batch(
        self, keys: Sequence[MessageKey], *, claim_token: uuid.UUID, lease_seconds: int
    ) -> list[ClaimedRow]:
        self.claims.append((list(keys), claim_token, lease_seconds))
        return [
            self.rows.get(
                k, ClaimedRow(key=k, delivery_id=None, previous_state=None, claimed=False, attempts=0)
            )
            for k in keys
        ]

    def record_outcomes(self, outcomes: Sequence[Outcome], *, claim_token: uuid.UUID) -> set[int]:
        self.recorded.append((list(outcomes), claim_token))
        return {o.delivery_id for o in outcomes}

    def outcome_for(self, source_id: int) -> Outcome:
        [(outcomes, _)] = self.recorded
        [outcome] = [o for o in outcomes if o.delivery_id == 1000 + source_id]
        return outcome


class FakeChannel:
    """Records every send; `errors` makes the send for a message id raise."""

    name = "sms"

    def __init__(self, errors: dict[int, SendError] | None = None) -> None:
        self.errors = errors or {}
        self.sent: list[OutboundMessage] = []
        self._lock = threading.Lock()

    def can_reach(self, message: OutboundMessage) -> bool:
        return bool(message.phone)

    def send(self, message: OutboundMessage) -> SendResult:
        with self._lock:
            self.sent.append(message)
        error = self.errors.get(message.key.source_id)
        if error is not None:
            raise error
        return SendResult(http_status=200, provider_ref=f"ref-{message.key.source_id}")

    @property
    def sent_ids(self) -> list[int]:
        return sorted(m.key.source_id for m in self.sent)


def record(
    source_id: int | None, *, message_id: str | None = None, body: str | None = None, receives: int = 1
) -> dict[str, Any]:
    key_body = MessageKey("proactive", source_id).to_body() if source_id is not None else None
    mid = message_id or f"m-{source_id}"
    return {
        "messageId": mid,
        "receiptHandle": f"rh-{mid}",
        "body": body if body is not None else key_body,
        "attributes": {"ApproximateReceiveCount": str(receives)},
        "eventSource": "aws:sqs",
    }


@dataclass
class Harness:
    store: FakeDeliverStore
    channel: FakeChannel
    queue: InMemoryQueue
    deliverer: Deliverer

    def process(
        self, records: Sequence[dict[str, Any]], remaining_ms: Callable[[], int] = lambda: PLENTY_MS
    ) -> BatchResult:
        return self.deliverer.process(records, remaining_ms)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


@pytest.fixture
def make_harness(executor: ThreadPoolExecutor) -> Callable[..., Harness]:
    def make(
        *rows: ClaimedRow, errors: dict[int, SendError] | None = None, config: DeliverConfig = CONFIG
    ) -> Harness:
        store = FakeDeliverStore()
        store.add(*rows)
        channel = FakeChannel(errors)
        queue = InMemoryQueue()
        deliverer = Deliverer(store, queue, [channel], executor, config, policy=POLICY, clock=lambda: NOW)
        return Harness(store, channel, queue, deliverer)

    return make


# --- the happy path -----------------------------------------------------------------------------


def test_claimed_messages_are_sent_and_recorded_as_sent(make_harness: Callable[..., Harness]) -> None:
    # GIVEN three claimable messages
    h = make_harness(claimed_row(1), claimed_row(2), claimed_row(3))

    # WHEN their records are processed
    result = h.process([record(1), record(2), record(3)])

    # THEN each is sent once, recorded sent with the provider's reference, and acknowledged
    assert h.channel.sent_ids == [1, 2, 3]
    assert result.failures == {}
    assert result.counts == {"delivered": 3}
    outcome = h.store.outcome_for(2)
    assert (outcome.state, outcome.outcome, outcome.attempted) == ("sent", "delivered", True)
    assert (outcome.http_status, outcome.provider_ref, outcome.channel) == (200, "ref-2", "sms")
    assert outcome.started_at == NOW and outcome.finished_at == NOW
    assert outcome.latency_ms is not None and outcome.latency_ms >= 0
    assert h.queue.visibility == []


def test_the_rendered_message_carries_the_row_content(make_harness: Callable[..., Harness]) -> None:
    # GIVEN one claimable message
    h = make_harness(claimed_row(5))

    # WHEN it is processed
    h.process([record(5)])

    # THEN the channel got the row's content and contact details
    [message] = h.channel.sent
    assert message.key == MessageKey("proactive", 5)
    assert message.idempotency_key == "proactive-5"
    assert (message.contractor_id, message.message_type, message.text) == (
        75,
        "check_in",
        "Hi Ana, message 5",
    )
    assert (message.first_name, message.phone) == ("Ana", "+13125550105")


def test_claim_and_record_use_one_token_and_the_lease(make_harness: Callable[..., Harness]) -> None:
    # GIVEN two claimable messages
    h = make_harness(claimed_row(1), claimed_row(2))

    # WHEN their records are processed
    h.process([record(1), record(2)])

    # THEN one claim statement covered both, with the configured lease, and its token is the
    # one the outcomes are recorded under
    [(claimed_keys, token, lease)] = h.store.claims
    assert claimed_keys == [MessageKey("proactive", 1), MessageKey("proactive", 2)]
    assert lease == CONFIG.lease_seconds
    [(_, recorded_token)] = h.store.recorded
    assert recorded_token == token


def test_record_outcomes_is_called_exactly_once_for_a_mixed_batch(
    make_harness: Callable[..., Harness],
) -> None:
    # GIVEN one batch mixing a success, a transient and a permanent failure, a skip, an
    # already-sent message and a malformed record
    h = make_harness(
        claimed_row(1),
        claimed_row(2),
        claimed_row(3),
        claimed_row(4, phone=None),
        claimed_row(5, claimed=False, previous_state="sent"),
        errors={
            2: TransientSendError("server_error", http_status=503),
            3: PermanentSendError("rejected", http_status=400),
        },
    )

    # WHEN the batch is processed
    result = h.process(
        [record(1), record(2), record(3), record(4), record(5), record(None, message_id="bad", body="{")]
    )

    # THEN every outcome of the batch is written in a single call, one per claimed row
    assert len(h.store.recorded) == 1
    [(outcomes, _)] = h.store.recorded
    assert sorted((o.delivery_id, o.state) for o in outcomes) == [
        (1001, "sent"),
        (1002, "queued"),
        (1003, "failed"),
        (1004, "skipped"),
    ]
    assert set(result.failures) == {"m-2", "bad"}


# --- records that are not sent ------------------------------------------------------------------


def test_malformed_body_fails_only_its_own_record(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a batch with one good record and one whose body is not JSON
    h = make_harness(claimed_row(1))

    # WHEN it is processed
    result = h.process([record(1), record(None, message_id="m-bad", body="not json")])

    # THEN only the bad record is reported failed, with the reason; the good one is sent
    assert set(result.failures) == {"m-bad"}
    failure = result.failures["m-bad"]
    assert isinstance(failure, MalformedRecordError)
    assert failure.reason == "invalid_json"
    assert h.channel.sent_ids == [1]
    [(claimed_keys, _, _)] = h.store.claims
    assert claimed_keys == [MessageKey("proactive", 1)]
    with pytest.raises(MalformedRecordError):
        result.raise_for("m-bad")
    result.raise_for("m-1")  # acknowledged: does not raise


def test_a_batch_of_only_malformed_records_touches_nothing(make_harness: Callable[..., Harness]) -> None:
    # GIVEN records that all fail to parse
    h = make_harness()

    # WHEN they are processed
    result = h.process([record(None, message_id="a", body="[]"), record(None, message_id="b", body="")])

    # THEN each fails with its reason and neither the store nor the channel is used
    assert {k: getattr(v, "reason", None) for k, v in result.failures.items()} == {
        "a": "not_an_object",
        "b": "empty_body",
    }
    assert h.store.claims == [] and h.store.recorded == []
    assert h.channel.sent == []


def test_duplicate_key_in_one_batch_is_sent_once(make_harness: Callable[..., Harness]) -> None:
    # GIVEN the same message twice in one batch (SQS at-least-once delivery)
    h = make_harness(claimed_row(1))

    # WHEN the batch is processed
    result = h.process([record(1, message_id="first"), record(1, message_id="second")])

    # THEN it is claimed and sent once, and both records are acknowledged
    assert h.channel.sent_ids == [1]
    [(claimed_keys, _, _)] = h.store.claims
    assert claimed_keys == [MessageKey("proactive", 1)]
    assert result.failures == {}
    assert result.counts["duplicate"] == 1


@pytest.mark.parametrize("previous_state", ["sent", "skipped", "failed", "sending", "deferred"])
def test_unclaimed_settled_or_leased_row_is_acknowledged_without_a_send(
    make_harness: Callable[..., Harness], previous_state: str
) -> None:
    # GIVEN a message that is already settled, or held under a live lease elsewhere
    h = make_harness(claimed_row(1, claimed=False, previous_state=previous_state))

    # WHEN its record is processed (a redelivery or a DLQ replay)
    result = h.process([record(1)])

    # THEN nothing is sent, nothing is recorded, and the record is acknowledged
    assert h.channel.sent == []
    assert h.store.recorded == []
    assert result.failures == {}
    assert result.counts == {"duplicate": 1}


def test_unclaimed_queued_row_is_retried_soon(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a queued message locked by a concurrent claim that has not committed
    h = make_harness(claimed_row(1, claimed=False, previous_state="queued"))

    # WHEN its record is processed
    result = h.process([record(1)])

    # THEN it is not sent, and the record fails so it comes back
    assert h.channel.sent == []
    failure = result.failures["m-1"]
    assert isinstance(failure, RetryLaterError)
    assert failure.reason == "claimed_concurrently"


def test_unknown_message_is_a_malformed_record(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a record naming a message the database has no state for
    h = make_harness()

    # WHEN it is processed
    result = h.process([record(999)])

    # THEN it fails as malformed (it goes to the DLQ with a reason), without a send
    failure = result.failures["m-999"]
    assert isinstance(failure, MalformedRecordError)
    assert failure.reason == "unknown_message"
    assert h.channel.sent == []
    assert h.store.recorded == []


def test_no_phone_is_skipped_without_a_send(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a claimed message whose contractor has no phone
    h = make_harness(claimed_row(1, phone=None))

    # WHEN it is processed
    result = h.process([record(1)])

    # THEN it is skipped for no_contact, not attempted, and the record is acknowledged
    assert h.channel.sent == []
    outcome = h.store.outcome_for(1)
    assert (outcome.state, outcome.reason, outcome.attempted) == ("skipped", "no_contact", False)
    assert result.failures == {}


def test_missing_source_row_fails_without_a_send(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a claimed message whose platform row has gone
    h = make_harness(claimed_row(1, body=None, contractor_id=None))

    # WHEN it is processed
    h.process([record(1)])

    # THEN it is failed with the reason, not attempted
    outcome = h.store.outcome_for(1)
    assert (outcome.state, outcome.reason, outcome.attempted) == ("failed", "source_row_missing", False)
    assert h.channel.sent == []


def test_message_sent_by_the_platform_meanwhile_is_skipped(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a claimed message the platform has marked sent itself
    h = make_harness(claimed_row(1, platform_sent_at=NOW - timedelta(minutes=1)))

    # WHEN it is processed
    h.process([record(1)])

    # THEN it is skipped as sent elsewhere, without a second send
    outcome = h.store.outcome_for(1)
    assert (outcome.state, outcome.reason) == ("skipped", "sent_elsewhere")
    assert h.channel.sent == []


# --- send failures ------------------------------------------------------------------------------


def test_transient_failure_is_retried_later_with_backoff(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a first attempt that fails with a 503
    h = make_harness(claimed_row(1), errors={1: TransientSendError("server_error", http_status=503)})

    # WHEN it is processed
    result = h.process([record(1)])

    # THEN the record fails with the first step of the schedule (5 s, plus at most 10 %
    # jitter), the message's visibility is set to that delay, and the row is back in queued
    # with its next attempt time
    failure = result.failures["m-1"]
    assert type(failure) is RetryLaterError
    assert 5 <= failure.delay_seconds <= 6
    assert h.queue.visibility == [("rh-m-1", failure.delay_seconds)]
    outcome = h.store.outcome_for(1)
    assert (outcome.state, outcome.outcome, outcome.attempted) == ("queued", "retry", True)
    assert (outcome.reason, outcome.http_status) == ("server_error", 503)
    assert outcome.next_attempt_at == NOW + timedelta(seconds=failure.delay_seconds)


def test_transient_failure_honours_retry_after(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a 429 asking for ten minutes
    h = make_harness(
        claimed_row(1), errors={1: TransientSendError("rate_limited", http_status=429, retry_after=600)}
    )

    # WHEN it is processed
    result = h.process([record(1)])

    # THEN the retry waits the full ten minutes
    failure = result.failures["m-1"]
    assert isinstance(failure, RetryLaterError)
    assert failure.delay_seconds == 600
    assert h.queue.visibility == [("rh-m-1", 600)]
    assert h.store.outcome_for(1).next_attempt_at == NOW + timedelta(seconds=600)


def test_later_attempts_back_off_further(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a message that already failed three times
    h = make_harness(claimed_row(1, attempts=3), errors={1: TransientSendError("timeout")})

    # WHEN the fourth attempt fails too (receive count still below the limit)
    result = h.process([record(1, receives=4)])

    # THEN the delay is the fourth step of the schedule: two hours (plus jitter)
    failure = result.failures["m-1"]
    assert isinstance(failure, RetryLaterError)
    assert 7200 <= failure.delay_seconds <= 7920


def test_transient_failure_on_the_last_receive_exhausts_attempts(
    make_harness: Callable[..., Harness],
) -> None:
    # GIVEN a message on its last allowed receive
    h = make_harness(claimed_row(1), errors={1: TransientSendError("server_error", http_status=502)})

    # WHEN that attempt fails transiently
    result = h.process([record(1, receives=CONFIG.max_receive_count)])

    # THEN the row is failed for attempts_exhausted, its message is put on the DLQ with the
    # reason, and the record is acknowledged (the DLQ has its copy)
    outcome = h.store.outcome_for(1)
    assert (outcome.state, outcome.reason, outcome.attempted) == ("failed", "attempts_exhausted", True)
    assert outcome.http_status == 502
    assert outcome.next_attempt_at is None
    assert h.queue.dead_letters == [(record(1)["body"], "attempts_exhausted")]
    assert result.failures == {}
    assert h.queue.visibility == []


def test_an_exhausted_message_the_dlq_refuses_is_left_to_the_redrive(
    make_harness: Callable[..., Harness],
) -> None:
    # GIVEN a dead-letter queue that refuses the message
    h = make_harness(claimed_row(1), errors={1: TransientSendError("timeout")})
    h.queue.dead_letter = lambda letters: list(range(len(letters)))  # type: ignore[method-assign]
    # WHEN its last attempt fails
    result = h.process([record(1, receives=CONFIG.max_receive_count)])
    # THEN the record fails at once (visibility 0) so the queue's redrive moves it
    assert isinstance(result.failures["m-1"], AttemptsExhaustedError)
    assert h.queue.visibility == [("rh-m-1", 0)]
    assert h.store.outcome_for(1).state == "failed"


def test_the_last_attempt_of_the_window_fails_whatever_the_receive_count(
    make_harness: Callable[..., Harness],
) -> None:
    # GIVEN a message on the last attempt its 24-hour window allows (SQS may count fewer
    # receives, for example after a DLQ replay reset the receive count)
    h = make_harness(
        claimed_row(1, attempts=CONFIG.retry.attempts - 1), errors={1: TransientSendError("timeout")}
    )

    # WHEN the attempt fails transiently
    result = h.process([record(1, receives=1)])

    # THEN it is failed rather than retried forever, and dead-lettered
    assert h.store.outcome_for(1).reason == "attempts_exhausted"
    assert [reason for _, reason in h.queue.dead_letters] == ["attempts_exhausted"]
    assert "m-1" not in result.failures


def test_receives_that_were_not_attempts_do_not_use_the_window(
    make_harness: Callable[..., Harness],
) -> None:
    # GIVEN a message received 9 times (deferred for quiet hours, held by concurrent claims)
    # but attempted only twice
    h = make_harness(
        claimed_row(1, attempts=2), errors={1: TransientSendError("server_error", http_status=503)}
    )
    # WHEN its third attempt fails THEN it is retried: only attempts (or the last receive) end it
    result = h.process([record(1, receives=9)])
    assert isinstance(result.failures["m-1"], RetryLaterError)
    assert not isinstance(result.failures["m-1"], AttemptsExhaustedError)
    assert h.store.outcome_for(1).state == "queued"


def test_permanent_failure_is_failed_and_acknowledged(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a provider that refuses the message for good
    h = make_harness(
        claimed_row(1), errors={1: PermanentSendError("rejected", http_status=400, detail="HTTP 400")}
    )

    # WHEN it is processed
    result = h.process([record(1)])

    # THEN the row is failed with the reason and status, and the record is acknowledged (no retry)
    outcome = h.store.outcome_for(1)
    assert (outcome.state, outcome.outcome, outcome.attempted) == ("failed", "rejected", True)
    assert (outcome.reason, outcome.http_status) == ("rejected", 400)
    assert outcome.error == "rejected: HTTP 400"
    assert result.failures == {}
    assert h.queue.visibility == []
    assert len(h.channel.sent) == 1


def test_permanent_refusal_of_the_recipient_is_skipped(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a provider saying the recipient must not be messaged (opted out at the provider)
    error = PermanentSendError("opted_out", http_status=403, final_state="skipped")
    h = make_harness(claimed_row(1), errors={1: error})

    # WHEN it is processed
    result = h.process([record(1)])

    # THEN the row is skipped, and the record acknowledged
    assert h.store.outcome_for(1).state == "skipped"
    assert result.failures == {}


# --- the deadline -------------------------------------------------------------------------------


def test_too_little_time_left_releases_the_message(make_harness: Callable[..., Harness]) -> None:
    # GIVEN less time left than one send's budget plus the safety margin
    h = make_harness(claimed_row(1), claimed_row(2))
    too_little = CONFIG.send_budget_ms + CONFIG.safety_margin_ms - 1

    # WHEN the batch is processed
    result = h.process([record(1), record(2)], remaining_ms=lambda: too_little)

    # THEN nothing is sent; both rows go back to queued without an attempt, and both records
    # fail with visibility 0 so another invocation takes them at once
    assert h.channel.sent == []
    for source_id in (1, 2):
        outcome = h.store.outcome_for(source_id)
        assert (outcome.state, outcome.outcome, outcome.attempted) == ("queued", "released", False)
        failure = result.failures[f"m-{source_id}"]
        assert isinstance(failure, RetryLaterError)
        assert failure.delay_seconds == 0
    assert sorted(h.queue.visibility) == [("rh-m-1", 0), ("rh-m-2", 0)]
    assert result.counts == {"released": 2}


def test_time_running_out_mid_batch_releases_only_the_unstarted() -> None:
    # GIVEN a single worker, and time that runs out after the first send has started
    store = FakeDeliverStore()
    store.add(claimed_row(1), claimed_row(2), claimed_row(3))
    channel = FakeChannel()
    with ThreadPoolExecutor(max_workers=1) as one_worker:
        deliverer = Deliverer(
            store, InMemoryQueue(), [channel], one_worker, CONFIG, policy=POLICY, clock=lambda: NOW
        )

        def remaining_ms() -> int:
            return PLENTY_MS if not channel.sent else 0

        # WHEN the batch is processed
        result = deliverer.process([record(1), record(2), record(3)], remaining_ms)

    # THEN exactly one message was sent and the other two were released for later
    assert len(channel.sent) == 1
    assert result.counts == {"delivered": 1, "released": 2}
    assert len(result.failures) == 2


def test_a_refused_visibility_change_is_logged_and_counted(
    make_harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a queue that refuses ChangeMessageVisibility, and a send that fails transiently
    h = make_harness(claimed_row(1), errors={1: TransientSendError("server_error", http_status=503)})
    h.queue.change_visibility = lambda receipts: [handle for handle, _ in receipts]  # type: ignore[method-assign]
    # WHEN the batch is processed
    result = h.process([record(1)])
    # THEN the record is still reported for a retry, and the refusal is counted and logged
    assert isinstance(result.failures["m-1"], RetryLaterError)
    assert result.counts["visibility_failed"] == 1
    assert any("ChangeMessageVisibility refused" in r.getMessage() for r in caplog.records)


def test_outcome_lines_are_written_while_the_outcomes_are_recorded_and_before_an_error(
    make_harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN two messages whose outcome statement fails (the database went away after the sends)
    h = make_harness(claimed_row(1), claimed_row(2))
    logged_during_record: list[int] = []

    def failing_record(outcomes: Sequence[Outcome], *, claim_token: uuid.UUID) -> set[int]:
        # The lines are written by a worker meanwhile: wait (bounded) until they are there.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = [r for r in caplog.records if r.getMessage() == "delivery outcome"]
            if len(lines) == 2:
                break
            time.sleep(0.005)
        logged_during_record.append(len(lines))
        raise StoreUnavailableError("connection lost")

    h.store.record_outcomes = failing_record  # type: ignore[method-assign]

    # WHEN the batch is processed
    with pytest.raises(StoreUnavailableError):
        h.process([record(1), record(2)])

    # THEN both outcome lines were written while the statement ran, and the error came after
    assert logged_during_record == [2]
    assert h.channel.sent_ids == [1, 2]
