"""The deliver use case with a fake store, a fake channel and a real thread pool: each
received message gets one disposition (sent, done, hold, retry, dead-letter, failed) for the
right reason, and one outcome statement records the batch. What SQS makes of a disposition
is tests/unit/test_sqs_batch.py."""

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

from proactive_delivery.app.deliver import DeliverConfig, Deliverer, DeliverResult, Disposition, Receive
from proactive_delivery.core.content import Names
from proactive_delivery.core.errors import (
    PermanentSendError,
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
    Slot,
    SlotRequest,
)
from proactive_delivery.core.retry import RetryPolicy
from tests.support.policy import SENDABLE_ANY_TIME, configured

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
_ROW_FIELDS = {"delivery_id", "previous_state", "claimed", "attempts", "paced_until"}


def claimed_row(source_id: int, source: str = "proactive", **overrides: Any) -> ClaimedRow:
    """A row the claim statement took: claimable, with facts (content, a phone). Overrides
    name a ClaimedRow field or a MessageFacts field; an unclaimed row has no facts."""
    key = MessageKey(source, source_id)
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
    # take_slots answers these in order (then "send"), and remembers what it was asked.
    slots: list[Slot] = field(default_factory=list)
    slot_requests: list[list[SlotRequest]] = field(default_factory=list)

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

    def take_slots(self, requests: Sequence[SlotRequest]) -> list[Slot]:
        self.slot_requests.append(list(requests))
        answers = [self.slots.pop(0) if self.slots else Slot("send") for _ in requests]
        return answers

    def outcome_for(self, source_id: int) -> Outcome:
        [(outcomes, _)] = self.recorded
        [outcome] = [o for o in outcomes if o.delivery_id == 1000 + source_id]
        return outcome


class FakeChannel:
    """Records every send; `errors` makes the send for a message id raise."""

    name = "sms"
    provider = "fake"

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


def key(source_id: int) -> MessageKey:
    return MessageKey("proactive", source_id)


def receive(source_id: int, receives: int = 1) -> Receive:
    return Receive(key(source_id), receives)


@dataclass
class Harness:
    store: FakeDeliverStore
    channel: FakeChannel
    deliverer: Deliverer

    def deliver(
        self, *receives: Receive, remaining_ms: Callable[[], int] = lambda: PLENTY_MS
    ) -> DeliverResult:
        return self.deliverer.deliver(receives, remaining_ms)


def deliverer(store: FakeDeliverStore, channel: FakeChannel, executor: ThreadPoolExecutor) -> Deliverer:
    return Deliverer(
        store, [channel], executor, CONFIG, policy=POLICY, catalog=configured("sms"), clock=lambda: NOW
    )


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


@pytest.fixture
def make_harness(executor: ThreadPoolExecutor) -> Callable[..., Harness]:
    def make(*rows: ClaimedRow, errors: dict[int, SendError] | None = None) -> Harness:
        store = FakeDeliverStore()
        store.add(*rows)
        channel = FakeChannel(errors)
        return Harness(store, channel, deliverer(store, channel, executor))

    return make


# --- the happy path -----------------------------------------------------------------------------


def test_claimed_messages_are_sent_and_recorded_as_sent(make_harness: Callable[..., Harness]) -> None:
    # GIVEN three claimable messages
    h = make_harness(claimed_row(1), claimed_row(2), claimed_row(3))

    # WHEN they are delivered
    result = h.deliver(receive(1), receive(2), receive(3))

    # THEN each is sent once, recorded sent with the provider's reference, and disposed sent
    assert h.channel.sent_ids == [1, 2, 3]
    assert dict(result.dispositions) == {key(i): Disposition("sent", state="sent") for i in (1, 2, 3)}
    outcome = h.store.outcome_for(2)
    assert (outcome.state, outcome.outcome, outcome.attempted) == ("sent", "delivered", True)
    assert (outcome.http_status, outcome.provider_ref, outcome.channel) == (200, "ref-2", "sms")
    assert outcome.started_at == NOW and outcome.finished_at == NOW
    assert outcome.latency_ms is not None and outcome.latency_ms >= 0
    assert result.due_at[key(2)] == NOW - timedelta(minutes=5)
    assert [k for k, _ in result.outcomes] == [key(1), key(2), key(3)]


def test_the_rendered_message_carries_the_row_content(make_harness: Callable[..., Harness]) -> None:
    # GIVEN one claimable message
    h = make_harness(claimed_row(5))

    # WHEN it is delivered
    h.deliver(receive(5))

    # THEN the channel got the row's content and contact details
    [message] = h.channel.sent
    assert message.key == key(5)
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

    # WHEN they are delivered
    h.deliver(receive(1), receive(2))

    # THEN one claim statement covered both, with the configured lease, and its token is the
    # one the outcomes are recorded under
    [(claimed_keys, token, lease)] = h.store.claims
    assert claimed_keys == [key(1), key(2)]
    assert lease == CONFIG.lease_seconds
    [(_, recorded_token)] = h.store.recorded
    assert recorded_token == token


def test_record_outcomes_is_called_exactly_once_for_a_mixed_batch(
    make_harness: Callable[..., Harness],
) -> None:
    # GIVEN one batch mixing a success, a transient and a permanent failure, a skip and an
    # already-sent message
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

    # WHEN the batch is delivered
    result = h.deliver(*(receive(i) for i in range(1, 6)))

    # THEN every outcome of the batch is written in a single call, one per claimed row, and
    # each message has its disposition
    assert len(h.store.recorded) == 1
    [(outcomes, _)] = h.store.recorded
    assert sorted((o.delivery_id, o.state) for o in outcomes) == [
        (1001, "sent"),
        (1002, "queued"),
        (1003, "failed"),
        (1004, "skipped"),
    ]
    assert {k.source_id: d.kind for k, d in result.dispositions.items()} == {
        1: "sent",
        2: "retry",
        3: "done",
        4: "done",
        5: "done",
    }


def test_an_empty_batch_touches_nothing(make_harness: Callable[..., Harness]) -> None:
    h = make_harness()
    result = h.deliver()
    assert dict(result.dispositions) == {}
    assert h.store.claims == [] and h.store.recorded == []


# --- messages that are not sent -----------------------------------------------------------------


@pytest.mark.parametrize("previous_state", ["sent", "skipped", "failed", "sending", "deferred"])
def test_unclaimed_settled_or_leased_row_is_done_without_a_send(
    make_harness: Callable[..., Harness], previous_state: str
) -> None:
    # GIVEN a message that is already settled, or held under a live lease elsewhere
    h = make_harness(claimed_row(1, claimed=False, previous_state=previous_state))

    # WHEN it is received again (a redelivery or a DLQ replay)
    result = h.deliver(receive(1))

    # THEN nothing is sent, nothing is recorded, and it is done (a duplicate)
    assert h.channel.sent == []
    assert h.store.recorded == []
    assert result.dispositions[key(1)] == Disposition("done", "duplicate")


def test_unclaimed_queued_row_is_retried_soon(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a queued message locked by a concurrent claim that has not committed
    h = make_harness(claimed_row(1, claimed=False, previous_state="queued"))

    # WHEN it is received
    result = h.deliver(receive(1))

    # THEN it is not sent, and it comes back in a few seconds
    assert h.channel.sent == []
    assert result.dispositions[key(1)] == Disposition("retry", "claimed_concurrently", 5)


def test_unknown_message_fails(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a key naming a message the database has no state for
    h = make_harness()

    # WHEN it is received
    result = h.deliver(receive(999))

    # THEN it fails (the queue's redrive takes it to the DLQ), without a send or a record
    assert result.dispositions[key(999)] == Disposition("failed", "unknown_message")
    assert h.channel.sent == []
    assert h.store.recorded == []


def test_no_phone_is_skipped_without_a_send(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a claimed message whose contractor has no phone
    h = make_harness(claimed_row(1, phone=None))

    # WHEN it is delivered
    result = h.deliver(receive(1))

    # THEN it is skipped for no_contact, not attempted, and done
    assert h.channel.sent == []
    outcome = h.store.outcome_for(1)
    assert (outcome.state, outcome.reason, outcome.attempted) == ("skipped", "no_contact", False)
    assert result.dispositions[key(1)] == Disposition("done", "no_contact", state="skipped")


def test_missing_source_row_fails_without_a_send(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a claimed message whose platform row has gone
    h = make_harness(claimed_row(1, body=None, contractor_id=None))

    # WHEN it is delivered
    result = h.deliver(receive(1))

    # THEN it is failed with the reason, not attempted
    outcome = h.store.outcome_for(1)
    assert (outcome.state, outcome.reason, outcome.attempted) == ("failed", "source_row_missing", False)
    assert h.channel.sent == []
    assert result.dispositions[key(1)] == Disposition("done", "source_row_missing", state="failed")


def test_message_sent_by_the_platform_meanwhile_is_skipped(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a claimed message the platform has marked sent itself
    h = make_harness(claimed_row(1, platform_sent_at=NOW - timedelta(minutes=1)))

    # WHEN it is delivered
    h.deliver(receive(1))

    # THEN it is skipped as sent elsewhere, without a second send
    outcome = h.store.outcome_for(1)
    assert (outcome.state, outcome.reason) == ("skipped", "sent_elsewhere")
    assert h.channel.sent == []


def test_a_short_deferral_is_held_until_the_window_opens_without_an_attempt(
    make_harness: Callable[..., Harness],
) -> None:
    # GIVEN a follow-up rescheduled to ten minutes from now after it was queued
    h = make_harness(
        claimed_row(1, "followup", platform_status="scheduled", due_at=NOW + timedelta(minutes=10))
    )

    # WHEN it is received
    result = h.deliver(Receive(MessageKey("followup", 1)))

    # THEN it is held for exactly the ten minutes, still queued, and nothing was attempted
    assert result.dispositions[MessageKey("followup", 1)] == Disposition("hold", "not_due", 600, "queued")
    outcome = h.store.outcome_for(1)
    assert (outcome.state, outcome.outcome, outcome.attempted) == ("queued", "deferred", False)
    assert outcome.next_attempt_at == NOW + timedelta(minutes=10)
    assert h.channel.sent == []


# --- send failures ------------------------------------------------------------------------------


def test_transient_failure_is_retried_later_with_backoff(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a first attempt that fails with a 503
    h = make_harness(claimed_row(1), errors={1: TransientSendError("server_error", http_status=503)})

    # WHEN it is delivered
    result = h.deliver(receive(1))

    # THEN it is retried after the first step of the schedule (5 s, plus at most 10 %
    # jitter), and the row is back in queued with its next attempt time
    retry = result.dispositions[key(1)]
    assert (retry.kind, retry.reason, retry.state) == ("retry", "server_error", "queued")
    assert 5 <= retry.delay_seconds <= 6
    outcome = h.store.outcome_for(1)
    assert (outcome.state, outcome.outcome, outcome.attempted) == ("queued", "retry", True)
    assert (outcome.reason, outcome.http_status) == ("server_error", 503)
    assert outcome.next_attempt_at == NOW + timedelta(seconds=retry.delay_seconds)


def test_transient_failure_honours_retry_after(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a 429 asking for ten minutes
    h = make_harness(
        claimed_row(1), errors={1: TransientSendError("rate_limited", http_status=429, retry_after=600)}
    )

    # WHEN it is delivered
    result = h.deliver(receive(1))

    # THEN the retry waits the full ten minutes
    assert result.dispositions[key(1)].delay_seconds == 600
    assert h.store.outcome_for(1).next_attempt_at == NOW + timedelta(seconds=600)


def test_later_attempts_back_off_further(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a message that already failed three times
    h = make_harness(claimed_row(1, attempts=3), errors={1: TransientSendError("timeout")})

    # WHEN the fourth attempt fails too (receive count still below the limit)
    result = h.deliver(receive(1, receives=4))

    # THEN the delay is the fourth step of the schedule: two hours (plus jitter)
    assert 7200 <= result.dispositions[key(1)].delay_seconds <= 7920


def test_transient_failure_on_the_last_receive_exhausts_attempts(
    make_harness: Callable[..., Harness],
) -> None:
    # GIVEN a message on its last allowed receive
    h = make_harness(claimed_row(1), errors={1: TransientSendError("server_error", http_status=502)})

    # WHEN that attempt fails transiently
    result = h.deliver(receive(1, receives=CONFIG.max_receive_count))

    # THEN the row is failed for attempts_exhausted and the message goes to the dead letters
    outcome = h.store.outcome_for(1)
    assert (outcome.state, outcome.reason, outcome.attempted) == ("failed", "attempts_exhausted", True)
    assert outcome.http_status == 502
    assert outcome.next_attempt_at is None
    assert result.dispositions[key(1)] == Disposition("dead_letter", "attempts_exhausted", state="failed")


def test_the_last_attempt_of_the_window_fails_whatever_the_receive_count(
    make_harness: Callable[..., Harness],
) -> None:
    # GIVEN a message on the last attempt its 24-hour window allows (SQS may count fewer
    # receives, for example after a DLQ replay reset the receive count)
    h = make_harness(
        claimed_row(1, attempts=CONFIG.retry.attempts - 1), errors={1: TransientSendError("timeout")}
    )

    # WHEN the attempt fails transiently
    result = h.deliver(receive(1, receives=1))

    # THEN it is failed rather than retried forever, and dead-lettered
    assert h.store.outcome_for(1).reason == "attempts_exhausted"
    assert result.dispositions[key(1)].kind == "dead_letter"


def test_receives_that_were_not_attempts_do_not_use_the_window(
    make_harness: Callable[..., Harness],
) -> None:
    # GIVEN a message received 9 times (deferred for quiet hours, held by concurrent claims)
    # but attempted only twice
    h = make_harness(
        claimed_row(1, attempts=2), errors={1: TransientSendError("server_error", http_status=503)}
    )
    # WHEN its third attempt fails THEN it is retried: only attempts (or the last receive) end it
    result = h.deliver(receive(1, receives=9))
    assert result.dispositions[key(1)].kind == "retry"
    assert h.store.outcome_for(1).state == "queued"


def test_permanent_failure_is_failed_and_done(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a provider that refuses the message for good
    h = make_harness(
        claimed_row(1), errors={1: PermanentSendError("rejected", http_status=400, detail="HTTP 400")}
    )

    # WHEN it is delivered
    result = h.deliver(receive(1))

    # THEN the row is failed with the reason and status, and the message done (no retry)
    outcome = h.store.outcome_for(1)
    assert (outcome.state, outcome.outcome, outcome.attempted) == ("failed", "rejected", True)
    assert (outcome.reason, outcome.http_status) == ("rejected", 400)
    assert outcome.error == "rejected: HTTP 400"
    assert result.dispositions[key(1)] == Disposition("done", "rejected", state="failed")
    assert len(h.channel.sent) == 1


def test_permanent_refusal_of_the_recipient_is_skipped_and_remembered(
    make_harness: Callable[..., Harness],
) -> None:
    # GIVEN a provider saying the recipient must not be messaged (opted out at the provider)
    error = PermanentSendError("opted_out", http_status=403, final_state="skipped")
    h = make_harness(claimed_row(1), errors={1: error})

    # WHEN it is delivered
    result = h.deliver(receive(1))

    # THEN the row is skipped, the opt-out of that channel goes with the outcome, and done
    outcome = h.store.outcome_for(1)
    assert (outcome.state, outcome.opt_out_contractor_id, outcome.opt_out_channel) == ("skipped", 71, "sms")
    assert result.dispositions[key(1)] == Disposition("done", "opted_out", state="skipped")


def test_a_lost_lease_leaves_the_message_to_its_new_owner(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a store that records nothing: the lease ran out and another deliverer took over
    h = make_harness(claimed_row(1), errors={1: TransientSendError("timeout")})
    h.store.record_outcomes = lambda outcomes, *, claim_token: set()  # type: ignore[method-assign]

    # WHEN the batch is delivered
    result = h.deliver(receive(1))

    # THEN the retry is not ours to schedule: the message is done here
    assert result.dispositions[key(1)] == Disposition("done", "lease_lost")


# --- the deadline -------------------------------------------------------------------------------


def test_too_little_time_left_releases_the_message(make_harness: Callable[..., Harness]) -> None:
    # GIVEN less time left than one send's budget plus the safety margin
    h = make_harness(claimed_row(1), claimed_row(2))
    too_little = CONFIG.send_budget_ms + CONFIG.safety_margin_ms - 1

    # WHEN the batch is delivered
    result = h.deliver(receive(1), receive(2), remaining_ms=lambda: too_little)

    # THEN nothing is sent; both rows go back to queued without an attempt, to be retried at
    # once by another invocation
    assert h.channel.sent == []
    for source_id in (1, 2):
        outcome = h.store.outcome_for(source_id)
        assert (outcome.state, outcome.outcome, outcome.attempted) == ("queued", "released", False)
        assert result.dispositions[key(source_id)] == Disposition("retry", "deadline", 0, "queued")


def test_time_running_out_mid_batch_releases_only_the_unstarted() -> None:
    # GIVEN a single worker, and time that runs out after the first send has started
    store = FakeDeliverStore()
    store.add(claimed_row(1), claimed_row(2), claimed_row(3))
    channel = FakeChannel()
    with ThreadPoolExecutor(max_workers=1) as one_worker:

        def remaining_ms() -> int:
            return PLENTY_MS if not channel.sent else 0

        # WHEN the batch is delivered
        result = deliverer(store, channel, one_worker).deliver(
            [receive(1), receive(2), receive(3)], remaining_ms
        )

    # THEN exactly one message was sent and the other two were released for later
    assert len(channel.sent) == 1
    kinds = sorted((d.kind, d.reason) for d in result.dispositions.values())
    assert kinds == [("retry", "deadline"), ("retry", "deadline"), ("sent", None)]


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
            records = [r for r in caplog.records if r.getMessage() == "delivery outcome"]
            lines = [line for r in records for line in getattr(r, "message_lines", [])]
            if len(lines) == 2:
                break
            time.sleep(0.005)
        logged_during_record.append(len(lines))
        raise StoreUnavailableError("connection lost")

    h.store.record_outcomes = failing_record  # type: ignore[method-assign]

    # WHEN the batch is delivered
    with pytest.raises(StoreUnavailableError):
        h.deliver(receive(1), receive(2))

    # THEN both outcome lines were written while the statement ran, and the error came after
    assert logged_during_record == [2]
    assert h.channel.sent_ids == [1, 2]


# --- the providers' pace ------------------------------------------------------------------------


def test_a_message_without_a_free_slot_is_held_as_a_new_queue_message_not_an_attempt(
    make_harness: Callable[..., Harness],
) -> None:
    # GIVEN two messages, the second of which finds no token now: its slot is 2.4 s ahead
    h = make_harness(claimed_row(1), claimed_row(2))
    h.store.slots = [Slot("send"), Slot("reserve", 2.4, "rate_limited")]

    # WHEN they are delivered
    result = h.deliver(receive(1), receive(2, receives=7))

    # THEN one statement asked for both slots, at the channel's provider, one token each
    assert h.store.slot_requests == [[SlotRequest("fake", 1.0), SlotRequest("fake", 1.0)]]
    # AND the first is sent; the second is not attempted, keeps its slot, and is held until
    # then as a new queue message (no receive spent, whatever its receive count)
    assert h.channel.sent_ids == [1]
    assert result.dispositions[key(2)] == Disposition("hold", "rate_limited", 3, "queued", requeue=True)
    held = h.store.outcome_for(2)
    assert (held.state, held.outcome, held.attempted, held.provider) == ("queued", "paced", False, "fake")
    assert held.paced_until == held.next_attempt_at == NOW + timedelta(seconds=2.4)


def test_a_message_back_at_its_slot_takes_no_second_token(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a message that holds a slot that has come
    h = make_harness(claimed_row(1, paced_until=NOW - timedelta(milliseconds=10)))

    # WHEN it is delivered
    result = h.deliver(receive(1))

    # THEN it asks as the holder of a slot (for its send tokens and the circuit's say, no new
    # slot) and is sent; its slot is given up
    assert h.store.slot_requests == [[SlotRequest("fake", 1.0, reserved=True)]]
    assert result.dispositions[key(1)].kind == "sent"
    assert h.store.outcome_for(1).paced_until is None


def test_a_message_holding_a_slot_told_to_wait_keeps_its_slot(make_harness: Callable[..., Harness]) -> None:
    # GIVEN a message back at its slot while the send tokens are spent (others going now)
    slot_at = NOW - timedelta(seconds=3)
    h = make_harness(claimed_row(1, paced_until=slot_at))
    h.store.slots = [Slot("wait", 0.4, "rate_limited")]

    # WHEN it is delivered
    result = h.deliver(receive(1))

    # THEN it is not sent, comes back in a second, and still holds the slot it had
    assert h.channel.sent == []
    assert result.dispositions[key(1)] == Disposition("hold", "rate_limited", 1, "queued", requeue=True)
    held = h.store.outcome_for(1)
    assert held.paced_until == slot_at
    assert held.next_attempt_at == NOW + timedelta(seconds=0.4)


def test_a_message_back_before_its_slot_is_held_again_without_asking(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness(claimed_row(1, paced_until=NOW + timedelta(seconds=30)))
    result = h.deliver(receive(1))
    assert h.store.slot_requests == []
    assert h.channel.sent == []
    assert result.dispositions[key(1)] == Disposition("hold", "rate_limited", 30, "queued", requeue=True)
    assert h.store.outcome_for(1).paced_until == NOW + timedelta(seconds=30)


def test_an_open_circuit_holds_without_a_slot_and_lets_the_probe_through(
    make_harness: Callable[..., Harness],
) -> None:
    # GIVEN a provider whose circuit lets one probe through and holds the rest
    h = make_harness(claimed_row(1), claimed_row(2))
    h.store.slots = [Slot("probe"), Slot("wait", 30.0, "circuit_open")]

    # WHEN they are delivered
    result = h.deliver(receive(1), receive(2))

    # THEN the probe is sent; the other waits out the cool-off, holding no slot
    assert h.channel.sent_ids == [1]
    assert result.dispositions[key(2)] == Disposition("hold", "circuit_open", 30, "queued", requeue=True)
    assert h.store.outcome_for(2).paced_until is None


def test_a_transient_failure_is_reported_to_the_providers_circuit_and_a_429_holds_it(
    make_harness: Callable[..., Harness],
) -> None:
    h = make_harness(
        claimed_row(1),
        claimed_row(2),
        claimed_row(3),
        errors={
            1: TransientSendError("rate_limited", http_status=429, retry_after=7),
            2: TransientSendError("server_error", http_status=503, retry_after=9),
            3: PermanentSendError("rejected", http_status=400),
        },
    )
    h.deliver(receive(1), receive(2), receive(3))
    first, second, third = (h.store.outcome_for(i) for i in (1, 2, 3))
    assert (first.provider, first.transient, first.retry_after) == ("fake", True, 7)
    # a 503's Retry-After paces that message's retry, not the whole provider
    assert (second.transient, second.retry_after) == (True, None)
    # a refusal is an answer: the provider is up
    assert (third.transient, third.retry_after) == (False, None)


def test_an_sms_costs_its_segments_at_a_segment_counted_provider(executor: ThreadPoolExecutor) -> None:
    # GIVEN a Twilio-like channel and a 200-character text (two GSM-7 segments)
    store = FakeDeliverStore()
    store.add(claimed_row(1, body="a" * 200))
    channel = FakeChannel()
    channel.provider = "twilio"
    deliverer(store, channel, executor).deliver([receive(1)], lambda: PLENTY_MS)
    # THEN it takes two tokens, and the sent outcome says how many segments went out
    assert store.slot_requests == [[SlotRequest("twilio", 2.0)]]
    assert (store.outcome_for(1).segments, store.outcome_for(1).ucs2) == (2, False)
