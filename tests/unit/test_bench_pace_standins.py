"""The pace benchmark's stand-ins hold what its figures rest on: the provider takes R
requests a second (a burst of R) and answers 429 with Retry-After above it, verifying
Standard Webhooks signatures; the queue behaves as SQS does for the deliver function
(delays, visibility, receipt handles, receive counts, the redrive, oldest first)."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from proactive_delivery.core.models import MessageKey

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def load(relative: str, name: str) -> ModuleType:
    # Both modules import nothing of the benchmark's, so they load alone (no sys.path change).
    spec = importlib.util.spec_from_file_location(name, ROOT / relative)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


provider = load("benchmarks/rate_limited_provider.py", "_bench_rate_limited_provider")
standin = load("benchmarks/pipeline_bench/sqs_standin.py", "_bench_sqs_standin")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------------------
# The provider
# --------------------------------------------------------------------------------------
def test_token_bucket_gives_a_burst_then_the_rate_and_says_how_long_to_wait() -> None:
    # GIVEN a bucket of 10 a second with a burst of 10 (it starts full)
    clock = Clock()
    bucket = provider.TokenBucket(10, 10, clock)
    # THEN 10 requests at once find a token, the 11th must wait a tenth of a second
    assert [bucket.take() for _ in range(10)] == [0.0] * 10
    assert bucket.take() == pytest.approx(0.1)
    # AND half a second later 5 more go through, not 6
    clock.now += 0.5
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
    assert bucket.take() > 0
    # AND a long quiet spell saves up no more than the burst
    clock.now += 3600
    assert sum(1 for _ in range(30) if bucket.take() == 0.0) == 10


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    assert [provider.retry_after(w) for w in (0.001, 0.99, 1.0, 1.01, 2.5)] == ["1", "1", "1", "2", "3"]


@pytest.fixture
def rate_limited() -> Iterator[str]:
    server = provider.make_server(0, SECRET, 5, 0.0, 5)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def signed(webhook_id: str, body: bytes) -> dict[str, str]:
    now = datetime.now(UTC)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(SECRET).sign(webhook_id, now, body.decode()),
        "content-type": "application/json",
    }


def test_provider_answers_429_with_retry_after_above_its_rate_and_counts_per_webhook_id(
    rate_limited: str,
) -> None:
    body = b'{"message":"hi"}'
    with httpx.Client(timeout=10) as client:
        # WHEN 7 signed requests arrive at once at a provider of 5 a second (burst 5)
        statuses = []
        for i in range(7):
            response = client.post(f"{rate_limited}/webhook", content=body, headers=signed(f"msg-{i}", body))
            statuses.append((response.status_code, response.headers.get("retry-after")))
        # AND one that is not signed
        unsigned = client.post(f"{rate_limited}/webhook", content=body, headers={"webhook-id": "x"})
        stats = client.get(f"{rate_limited}/stats").json()
    # THEN the first 5 are accepted, the next 2 answered 429 with Retry-After: 1
    assert statuses == [(200, None)] * 5 + [(429, "1")] * 2
    # AND the unsigned one is refused without taking a token
    assert unsigned.status_code == 401 and stats["bad_signatures"] == 1
    # AND each answer is reported under its webhook-id, with when it arrived
    assert {i: [s for s, _ in got] for i, got in stats["answers"].items()} == {
        **{f"msg-{i}": [200] for i in range(5)},
        "msg-5": [429],
        "msg-6": [429],
    }
    assert all(abs(t - time.time()) < 60 for got in stats["answers"].values() for _, t in got)


# --------------------------------------------------------------------------------------
# The queue
# --------------------------------------------------------------------------------------
def queue(clock: Clock, *, visibility: int = 30, max_receives: int = 3) -> Any:
    return standin.SqsStandIn(visibility_timeout=visibility, max_receive_count=max_receives, clock=clock)


def test_delayed_messages_become_visible_after_their_delay_oldest_first_ten_at_most() -> None:
    clock = Clock()
    q = queue(clock)
    # GIVEN 12 messages now and one with DelaySeconds 5
    assert q.send([(f"b{i}", 0) for i in range(12)]) == []
    q.send([("late", 5)])
    # THEN a receive hands out 10, oldest first, each received once; the next gets the other 2
    first = q.receive(10)
    assert [m["body"] for m in first] == [f"b{i}" for i in range(10)]
    assert {m["receive_count"] for m in first} == {1}
    assert [m["body"] for m in q.receive(10)] == ["b10", "b11"]
    # AND the delayed one comes only once its delay is over
    assert q.receive(10) == []
    clock.now += 5
    assert [m["body"] for m in q.receive(10)] == ["late"]
    assert q.depth() == {"visible": 0, "in_flight": 13, "delayed": 0}


def test_delays_outside_what_sqs_takes_are_refused() -> None:
    q = queue(Clock())
    assert q.send([("ok", 900), ("too long", 901), ("negative", -1)]) == [1, 2]
    assert q.size() == 1


def test_a_received_message_returns_after_its_visibility_with_a_new_receipt() -> None:
    clock = Clock()
    q = queue(clock, visibility=30)
    q.send([("body", 0)])
    [first] = q.receive(10)
    # WHEN its visibility timeout passes without a delete
    clock.now += 29.9
    assert q.receive(10) == []
    clock.now += 0.1
    [again] = q.receive(10)
    # THEN it is handed out again, counted, under a new receipt; the old receipt is refused
    assert again["message_id"] == first["message_id"] and again["receive_count"] == 2
    assert again["receipt"] != first["receipt"]
    assert q.delete([first["receipt"]]) == [first["receipt"]]
    assert q.change_visibility([(first["receipt"], 0)]) == [first["receipt"]]
    # AND the current receipt deletes it
    assert q.delete([again["receipt"]]) == []
    assert q.size() == 0


def test_change_visibility_sets_when_a_message_returns() -> None:
    clock = Clock()
    q = queue(clock, visibility=300)
    q.send([("retry me", 0)])
    [m] = q.receive(10)
    # WHEN the function reports it failed after setting its visibility to 2 s
    assert q.change_visibility([(m["receipt"], 2)]) == []
    # THEN it is back after 2 s, not after the queue's 300
    clock.now += 1.9
    assert q.receive(10) == []
    clock.now += 0.1
    assert [x["body"] for x in q.receive(10)] == ["retry me"]


def test_a_message_received_max_receive_count_times_goes_to_the_dead_letters() -> None:
    clock = Clock()
    q = queue(clock, visibility=1, max_receives=3)
    q.send([("poison", 0)])
    # GIVEN a message received 3 times (maxReceiveCount) and never deleted
    for count in (1, 2, 3):
        [m] = q.receive(10)
        assert m["receive_count"] == count
        clock.now += 1
    # THEN the next receive moves it to the dead letters instead of handing it out
    assert q.receive(10) == []
    assert q.dead_letters() == [("poison", "max_receive_count")]
    assert q.size() == 0 and q.counts()["redriven"] == 1


def test_the_deliver_edge_calls_reach_the_queue() -> None:
    clock = Clock()
    q = queue(clock)
    edge = standin.StandInQueue(q)
    keys = [MessageKey("proactive", i) for i in (1, 2)]
    # evaluate's SendMessageBatch, with a DelaySeconds
    assert edge.send_keys(keys, delay_seconds=3) == []
    # the deliver edge: a hold re-queued as a new message, a dead letter with its reason
    assert edge.requeue([(MessageKey("proactive", 3).to_body(), 0)]) == []
    assert edge.dead_letter([("body", "attempts_exhausted")]) == []
    [held] = q.receive(10)
    assert MessageKey.from_body(held["body"]) == MessageKey("proactive", 3)
    assert held["receive_count"] == 1
    clock.now += 3
    assert [MessageKey.from_body(m["body"]) for m in q.receive(10)] == keys
    counts = q.counts()
    assert (counts["sent"], counts["requeued"], counts["dead_lettered"]) == (2, 1, 1)
    assert q.dead_letters() == [("body", "attempts_exhausted")]
    with pytest.raises(ValueError, match="at most 10"):
        edge.send_keys([MessageKey("proactive", i) for i in range(11)])


def test_a_waiting_receive_returns_as_soon_as_a_message_is_sent_and_none_once_stopped() -> None:
    q = standin.SqsStandIn(visibility_timeout=30, max_receive_count=3)
    got: list[Any] = []
    receiver = threading.Thread(target=lambda: got.append(q.receive(10, wait_seconds=60)))
    receiver.start()
    # WHEN a message is sent while a receive waits up to a minute (long polling)
    q.send([(uuid.uuid4().hex, 0)])
    receiver.join(timeout=30)
    # THEN the receive hands it out without waiting out its minute
    assert not receiver.is_alive() and len(got[0]) == 1
    # AND once stopped, a receive says so (the workers' signal to end)
    q.stop()
    assert q.receive(10, wait_seconds=60) is None
