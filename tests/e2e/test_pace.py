"""The providers' pace end to end: the real handlers, SQS (moto) with the template's redrive,
the emulated event source mapping with several invocations at once, PostgreSQL, and a
receiver that answers as a rate-limited or failing provider would."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from proactive_delivery_tools.local.receiver import Reply
from tests.pipeline import Pipeline, running_pipeline
from tests.support.db import states


class TokenBucket:
    """A provider that takes `rate` requests a second (a burst of `rate`) and answers 429
    with Retry-After: 1 above it, as GoHighLevel's API does."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.at = time.monotonic()
        self.lock = threading.Lock()
        self.refused = 0

    def __call__(self, _webhook_id: str, _n: int) -> Reply:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
            self.at = now
            if self.tokens >= 1:
                self.tokens -= 1
                return Reply(200)
            self.refused += 1
        return Reply(429, headers={"Retry-After": "1"})


@pytest.fixture
def strict_pipeline(
    monkeypatch: pytest.MonkeyPatch, database_url: str, signing_secret: str
) -> Iterator[Pipeline]:
    """The pipeline whose queue dead-letters a message on its second receive: waiting by a
    visibility change would lose every message that waits twice."""
    with running_pipeline(monkeypatch, database_url, signing_secret, max_receive_count=1) as p:
        yield p


def attempts_per_message(pipeline: Pipeline) -> dict[int, int]:
    rows = pipeline.conn.execute(
        "SELECT s.source_id, count(a.id) FROM delivery.message_state s"
        " LEFT JOIN delivery.attempt_log a ON a.delivery_id = s.id GROUP BY s.source_id"
    ).fetchall()
    return {int(r[0]): int(r[1]) for r in rows}


def drain(pipeline: Pipeline, n: int, timeout: float) -> None:
    """Five invocations at a time (the template's MaximumConcurrency) until all n are sent."""
    mapping = pipeline.mapping(maximum_concurrency=5)
    stop = threading.Event()
    threads = mapping.run(stop, idle_sleep=0.05)
    try:
        deadline = time.monotonic() + timeout
        while not all_sent(pipeline, n):
            assert time.monotonic() < deadline, f"not all sent within {timeout}s: {stuck(pipeline)}"
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


def stuck(pipeline: Pipeline) -> str:
    """What a drain that timed out left behind: the unsent rows, the pace rows, the queues."""
    unsent = pipeline.conn.execute(
        "SELECT source_id, state, attempts, next_attempt_at, paced_until, reason"
        " FROM delivery.message_state WHERE state <> 'sent' ORDER BY source_id"
    ).fetchall()
    pace = pipeline.conn.execute(
        "SELECT provider, circuit, open_until, probe_until, blocked_until, tokens, send_tokens, now()"
        " FROM delivery.provider_pace"
    ).fetchall()
    return f"unsent {unsent}; pace {pace}; queue (visible, in flight) {pipeline.queue_depth()}"


def all_sent(pipeline: Pipeline, n: int) -> bool:
    return list(states(pipeline.conn).values()).count("sent") == n


def most_in_one_second(times: list[float]) -> int:
    times = sorted(times)
    return max(sum(1 for t in times[i:] if t < start + 1.0) for i, start in enumerate(times))


def test_a_backlog_drained_at_2_per_second_never_dead_letters_a_message_for_waiting(
    strict_pipeline: Pipeline, make_messages: Any
) -> None:
    # GIVEN 16 due messages, a provider paced at 2 a second (a burst of one), and a queue
    # that dead-letters on the second receive (maxReceiveCount 1)
    pipeline = strict_pipeline
    ids = make_messages(16)
    pipeline.setenv(PROVIDER_RATE_LIMITS="n8n=2/s")

    # WHEN evaluate queues them and five invocations at a time drain the queue
    pipeline.evaluate()
    drain(pipeline, len(ids), timeout=90)

    # THEN every message was sent once, after waiting its turn, none was dead-lettered and
    # none spent more than its one attempt on waiting
    assert sorted(r.webhook_id for r in pipeline.receiver.accepted()) == sorted(f"proactive-{i}" for i in ids)
    assert pipeline.dlq_bodies() == []
    assert set(attempts_per_message(pipeline).values()) == {1}
    # AND the provider never saw more than a bucket of 2 a second with a burst of 2 takes
    arrivals = [r.at for r in pipeline.receiver.accepted()]
    assert most_in_one_second(arrivals) <= 4
    assert max(arrivals) - min(arrivals) >= (len(ids) - 1) / 2 - 1


def test_fault24_provider_rate_limit_the_shared_pace_keeps_every_invocation_under_it(
    pipeline: Pipeline, make_messages: Any
) -> None:
    # GIVEN a provider that takes 5 requests a second and answers 429 + Retry-After above it,
    # our pace set to its limit, and 30 messages worked by five invocations at a time
    ids = make_messages(30)
    bucket = TokenBucket(5)
    pipeline.receiver.plan = bucket
    pipeline.setenv(PROVIDER_RATE_LIMITS="n8n=5/s")

    # WHEN the queue is drained
    pipeline.evaluate()
    drain(pipeline, len(ids), timeout=90)

    # THEN all were delivered, nothing was dead-lettered or failed, waiting spent no attempt,
    # and the provider refused next to nothing
    assert set(states(pipeline.conn).values()) == {"sent"}
    assert pipeline.dlq_bodies() == []
    attempts = attempts_per_message(pipeline)
    assert sum(attempts.values()) <= len(ids) + 2
    assert bucket.refused <= 2


def test_fault24_a_429s_retry_after_holds_the_provider_for_every_invocation(
    pipeline: Pipeline, make_messages: Any
) -> None:
    # GIVEN no pace of ours at all (a deployment that did not set one), and a provider that
    # takes 5 requests a second and answers 429 with Retry-After: 3 above it
    ids = make_messages(12)
    bucket = TokenBucket(5)
    bucket_reply = bucket.__call__

    def slow_down(webhook_id: str, n: int) -> Reply:
        reply = bucket_reply(webhook_id, n)
        return Reply(429, headers={"Retry-After": "3"}) if reply.status == 429 else reply

    pipeline.receiver.plan = slow_down
    pipeline.setenv(PROVIDER_RATE_LIMITS="none", CIRCUIT_BREAKER="off")

    # WHEN the queue is drained by five invocations at a time
    pipeline.evaluate()
    drain(pipeline, len(ids), timeout=90)

    # THEN after the first 429 nobody sent to the provider until its Retry-After was over
    # (sends already on their way arrive within a second of it, even on a loaded machine),
    # not only the message that got the 429
    requests = sorted(pipeline.receiver.requests, key=lambda r: r.at)
    first_429 = next(r.at for r in requests if r.status == 429)
    assert [r.webhook_id for r in requests if first_429 + 1.0 < r.at < first_429 + 2.9] == []
    # AND every message was delivered, none dead-lettered
    assert set(states(pipeline.conn).values()) == {"sent"}
    assert pipeline.dlq_bodies() == []


def test_fault25_provider_down_the_circuit_opens_probes_only_and_all_are_delivered_after(
    pipeline: Pipeline, make_messages: Any
) -> None:
    # GIVEN 30 due messages, a one-second cool-off, a retry window of 5 attempts a second
    # apart (without the breaker each message would spend them all within the outage and be
    # dead-lettered), and a provider that answers 503 for 6 seconds from the first request
    ids = make_messages(30)
    pipeline.setenv(CIRCUIT_COOL_OFF_SECONDS="1")
    down: dict[str, float] = {}
    lock = threading.Lock()

    def outage(_webhook_id: str, _n: int) -> Reply:
        with lock:
            started = down.setdefault("at", time.monotonic())
        return Reply(503) if time.monotonic() - started < 6 else Reply(200)

    pipeline.receiver.plan = outage

    # WHEN the queue is drained
    pipeline.evaluate()
    drain(pipeline, len(ids), timeout=120)

    # THEN every message was delivered once after the provider came back, none failed or
    # reached the dead-letter queue
    assert set(states(pipeline.conn).values()) == {"sent"}
    assert pipeline.dlq_bodies() == []
    assert sorted(r.webhook_id for r in pipeline.receiver.accepted()) == sorted(f"proactive-{i}" for i in ids)
    # AND during the outage the provider saw the sends already on their way when the circuit
    # opened (five invocations took all 30 at once), then only probes: about one per second
    # of cool-off; without the breaker it would have seen each message's five attempts
    refused = [r for r in pipeline.receiver.requests if r.status == 503]
    assert len(refused) <= len(ids) + 6 / 1 + 2
    assert len(refused) < 5 * len(ids)
