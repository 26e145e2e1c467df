"""An outage of the provider longer than a count-based budget of minutes, survived without
an operator: the real Deliverer and PostgresStore on a real PostgreSQL, a queue that keeps
SQS's visibility and receive counts on an injected clock (hours pass in milliseconds), and
an n8n stand-in that answers 503 until the outage ends."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from proactive_delivery.adapters.channels.webhook import GhlSmsPayload, SignedWebhookChannel
from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.adapters.postgres.store import PostgresStore
from proactive_delivery.adapters.sqs_batch import SqsBatch
from proactive_delivery.app.deliver import DeliverConfig, Deliverer
from proactive_delivery.core.models import MessageKey
from proactive_delivery.core.pace import CircuitPolicy, PacePolicy
from proactive_delivery.core.retry import RetryPolicy
from tests.pipeline import make_evaluator
from tests.support.db import state_row
from tests.support.policy import SENDABLE_ANY_TIME, SIGNING_SECRET, configured

VISIBILITY_TIMEOUT = timedelta(seconds=360)
UNPACED = PacePolicy(limits={}, circuit=CircuitPolicy(enabled=False))


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@dataclass
class _Message:
    body: str
    visible_at: datetime
    receives: int = 0


@dataclass
class SimulatedQueue:
    """SQS's redrive semantics on an injected clock: a received message is hidden for the
    visibility timeout unless ChangeMessageVisibility says otherwise, deleted when its record
    succeeds, dead-lettered on the receive after maxReceiveCount."""

    clock: Clock
    max_receive_count: int
    messages: dict[str, _Message] = field(default_factory=dict)
    dead_letters: list[str] = field(default_factory=list)
    _handles: dict[str, str] = field(default_factory=dict)

    # SendMessageBatch for evaluate; dead letters and visibility for the deliver edge
    def send_keys(self, keys: Sequence[MessageKey], *, delay_seconds: int = 0) -> list[MessageKey]:
        for key in keys:
            at = self.clock.now + timedelta(seconds=delay_seconds)
            self.messages[f"m-{len(self.messages) + len(self.dead_letters)}"] = _Message(key.to_body(), at)
        return []

    def dead_letter(self, letters: Sequence[tuple[str, str]]) -> list[int]:
        self.dead_letters.extend(body for body, _ in letters)
        return []

    def requeue(self, messages: Sequence[tuple[str, int]]) -> list[int]:
        for body, delay_seconds in messages:
            at = self.clock.now + timedelta(seconds=delay_seconds)
            self.messages[f"m-{len(self.messages) + len(self.dead_letters)}-again"] = _Message(body, at)
        return []

    def change_visibility(self, receipts: Sequence[tuple[str, int]]) -> list[str]:
        for handle, seconds in receipts:
            self.messages[self._handles[handle]].visible_at = self.clock.now + timedelta(seconds=seconds)
        return []

    # the event source mapping
    def next_visible(self) -> datetime | None:
        return min((m.visible_at for m in self.messages.values()), default=None)

    def receive(self, n: int = 10) -> list[dict[str, Any]]:
        records = []
        for message_id, message in sorted(self.messages.items(), key=lambda kv: kv[1].visible_at):
            if message.visible_at > self.clock.now or len(records) == n:
                continue
            if message.receives >= self.max_receive_count:
                self.dead_letters.append(message.body)
                del self.messages[message_id]
                continue
            message.receives += 1
            message.visible_at = self.clock.now + VISIBILITY_TIMEOUT
            handle = f"{message_id}/{message.receives}"
            self._handles[handle] = message_id
            records.append(
                {
                    "messageId": message_id,
                    "receiptHandle": handle,
                    "body": message.body,
                    "attributes": {"ApproximateReceiveCount": str(message.receives)},
                }
            )
        return records

    def settle(self, records: Sequence[dict[str, Any]], failed: set[str]) -> None:
        for record in records:
            if record["messageId"] not in failed:
                self.messages.pop(record["messageId"], None)


class Provider:
    """n8n as it answers during an outage: 503 until `down_until` on the clock, then 200."""

    def __init__(self, clock: Clock, down_until: datetime) -> None:
        self.clock = clock
        self.down_until = down_until
        self.accepted: Counter[str] = Counter()
        self.refused = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.clock.now < self.down_until:
            self.refused += 1
            return httpx.Response(503)
        self.accepted[request.headers["webhook-id"]] += 1
        return httpx.Response(200)


@dataclass
class Simulation:
    """The deliver function on the simulated queue: its SQS edge, the real Deliverer and
    PostgresStore, and the provider behind a signed webhook channel, all on one clock."""

    clock: Clock
    retry: RetryPolicy
    queue: SimulatedQueue
    provider: Provider
    store: PostgresStore
    edge: SqsBatch
    deliverer: Deliverer

    def evaluate(self, executor: ThreadPoolExecutor) -> None:
        make_evaluator(self.store, self.queue, executor).run(["proactive"], lambda: 300_000)

    def run_until_drained(self, limit: timedelta) -> int:
        """Deliver batches at each moment a message becomes visible, until the queue is empty."""
        end = self.clock.now + limit
        invocations = 0
        while (at := self.queue.next_visible()) is not None and at <= end:
            self.clock.now = max(self.clock.now, at)
            records = self.queue.receive()
            if not records:
                continue
            response, _ = self.edge.handle(
                {"Records": records}, lambda receives: self.deliverer.deliver(receives, lambda: 60_000)
            )
            self.queue.settle(records, {f["itemIdentifier"] for f in response["batchItemFailures"]})
            invocations += 1
        return invocations


@pytest.fixture
def simulation(database_url: str) -> Iterator[Callable[..., Simulation]]:
    """simulation(window=, outage=): a retry window in hours and a provider down this long."""
    with ThreadPoolExecutor(max_workers=4) as executor:
        databases: list[Database] = []

        def make(*, window: timedelta, outage: timedelta) -> Simulation:
            clock = Clock(datetime.now(UTC))
            retry = RetryPolicy(window)
            queue = SimulatedQueue(clock, max_receive_count=retry.max_receive_count)
            provider = Provider(clock, down_until=clock.now + outage)
            channel = SignedWebhookChannel(
                name="sms",
                provider="n8n",
                url="https://n8n.example.com/webhook/backend-to-ghl",
                client=httpx.Client(transport=httpx.MockTransport(provider)),
                signing_secret=SIGNING_SECRET,
                payload=GhlSmsPayload(from_name="Power100 Concierge"),
                clock=clock,
            )
            db = Database(lambda: database_url)
            databases.append(db)
            # The retry schedule alone, on the injected clock: the pace and the circuit breaker
            # keep their state in PostgreSQL's own time (tests/integration/test_pace.py and
            # the fault tests cover them), so they are off here.
            store = PostgresStore(db, pace=UNPACED)
            config = DeliverConfig(
                lease_seconds=120,
                retry=retry,
                max_receive_count=retry.max_receive_count,
                send_budget_ms=13_000,
                pace=UNPACED,
            )
            deliverer = Deliverer(
                store,
                [channel],
                executor,
                config,
                policy=SENDABLE_ANY_TIME,
                catalog=configured("sms"),
                clock=clock,
            )
            return Simulation(clock, retry, queue, provider, store, SqsBatch(queue), deliverer)

        yield make
        for db in databases:
            db.close()


def test_an_outage_of_six_hours_is_survived_and_each_message_delivered_once(
    make_messages: Callable[[int], list[int]],
    make_message: Any,
    simulation: Callable[..., Simulation],
) -> None:
    # GIVEN 25 due messages, one of them created 70 hours ago (MESSAGE_MAX_AGE_HOURS is 72),
    # a 24-hour retry window and an n8n down for six hours
    ids = make_messages(24)
    old = make_message(created_offset_seconds=-70 * 3600)
    sim = simulation(window=timedelta(hours=24), outage=timedelta(hours=6))
    with ThreadPoolExecutor(1) as pool:
        sim.evaluate(pool)

    # WHEN n8n answers 503 for six hours (a count-based budget of 5 receives 30 s apart gave
    # up after minutes) and then recovers, and the queue is worked as SQS would
    started = sim.clock.now
    sim.run_until_drained(limit=timedelta(hours=30))

    # THEN every message still due was delivered exactly once after the recovery, none
    # failed, nothing reached the DLQ, nothing is left on the queue
    provider, conn = sim.provider, sim.store.db.connection()
    assert provider.refused > 0
    assert sim.clock.now - started >= timedelta(hours=6)
    assert provider.accepted == Counter({f"proactive-{i}": 1 for i in ids})
    assert sim.queue.dead_letters == [] and sim.queue.messages == {}
    for i in ids:
        row = state_row(conn, i)
        assert row["state"] == "sent", i
        assert row["sent_at"] >= provider.down_until
        assert 2 <= row["attempts"] <= sim.retry.attempts
    # AND the one that passed its maximum age during the outage was not sent late
    stale = state_row(conn, old)
    assert (stale["state"], stale["reason"]) == ("skipped", "expired")
    assert provider.accepted[f"proactive-{old}"] == 0


def test_an_outage_longer_than_the_window_fails_and_dead_letters_each_message_once(
    make_messages: Callable[[int], list[int]], simulation: Callable[..., Simulation]
) -> None:
    # GIVEN a 4-hour retry window and an n8n that stays down for a day
    ids = make_messages(3)
    sim = simulation(window=timedelta(hours=4), outage=timedelta(days=1))
    with ThreadPoolExecutor(1) as pool:
        sim.evaluate(pool)
    # WHEN the queue is worked for two days of simulated time
    sim.run_until_drained(limit=timedelta(days=2))
    # THEN each message got the window's attempts, spread over the window, then failed with
    # its last error and went to the DLQ
    conn = sim.store.db.connection()
    for i in ids:
        row = state_row(conn, i)
        assert (row["state"], row["reason"], row["attempts"]) == (
            "failed",
            "attempts_exhausted",
            sim.retry.attempts,
        )
        assert row["updated_at"] is not None
    assert sorted(json.loads(b)["id"] for b in sim.queue.dead_letters) == ids
