"""Enqueuer: SendMessageBatch calls of 10 with a bounded number in flight. Whatever the
concurrency, every id ends in exactly one of accepted / refused / unsent, no call starts
after time is up or a call has failed, and calls already in flight keep their outcome."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from proactive_delivery.app.evaluate import Enqueuer, EnqueueResult
from proactive_delivery.bootstrap import build
from proactive_delivery.core.errors import QueueError
from proactive_delivery.core.models import MessageKey
from proactive_delivery.settings import Settings
from tests.unit.test_settings import local_env

WAIT = 10.0  # seconds a test waits for a condition before it fails


class GatedQueue:
    """A delivery queue whose calls block until the test opens the gate; it records how many
    calls were in flight at once and which ids it was sent, and refuses or fails on demand."""

    def __init__(
        self,
        *,
        refuse: set[int] | None = None,
        fail_call: int | None = None,
        error: Exception | None = None,
        hold: bool = True,
    ) -> None:
        self.refuse = refuse or set()
        self.fail_call = fail_call
        self.error = error or QueueError("SendMessageBatch failed: throttled")
        self.gate = threading.Event()
        if not hold:
            self.gate.set()
        self.lock = threading.Condition()
        self.in_flight = 0
        self.peak = 0
        self.calls = 0
        self.sent: list[int] = []

    def send_keys(self, keys: Sequence[MessageKey], *, delay_seconds: int = 0) -> list[MessageKey]:
        with self.lock:
            self.calls += 1
            number = self.calls
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            self.lock.notify_all()
        try:
            if number == self.fail_call:
                raise self.error  # at once, not held
            if not self.gate.wait(WAIT):
                raise AssertionError("the test never opened the gate")
            with self.lock:
                self.sent.extend(k.source_id for k in keys)
            return [k for k in keys if k.source_id in self.refuse]
        finally:
            with self.lock:
                self.in_flight -= 1
                self.lock.notify_all()

    def wait_for_in_flight(self, n: int) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: self.in_flight >= n, WAIT), f"{self.in_flight} in flight"


def run_in_thread(
    enqueuer: Enqueuer, ids: list[int], stop: object = None
) -> tuple[threading.Thread, list[EnqueueResult]]:
    results: list[EnqueueResult] = []

    def target() -> None:
        results.append(enqueuer.send("proactive", [(0, ids)], stop or (lambda: False)))  # type: ignore[arg-type]

    thread = threading.Thread(target=target)
    thread.start()
    return thread, results


_POOLS: list[ThreadPoolExecutor] = []


@pytest.fixture(autouse=True)
def _close_pools() -> Iterator[None]:
    yield
    while _POOLS:
        _POOLS.pop().shutdown(wait=True)


def enqueuer(queue: Any, concurrency: int) -> Enqueuer:
    """An Enqueuer with its own pool of `concurrency` workers, as bootstrap builds it."""
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="enqueue")
    _POOLS.append(pool)
    return Enqueuer(queue, concurrency=concurrency, executor=pool)


def partition(result: EnqueueResult) -> list[int]:
    return sorted([*result.accepted, *result.refused, *result.unsent])


def test_no_more_than_the_limit_is_in_flight_and_the_limit_is_reached() -> None:
    # GIVEN a queue that holds every call, and an enqueuer allowed 4 calls at a time
    queue = GatedQueue()
    ids = list(range(1, 101))  # 10 calls

    # WHEN 100 ids are sent
    thread, results = run_in_thread(enqueuer(queue, 4), ids)

    # THEN 4 calls are in flight together, and no fifth starts while they are held
    queue.wait_for_in_flight(4)
    assert queue.calls == 4
    queue.gate.set()
    thread.join(WAIT)
    assert not thread.is_alive()
    # AND every id was accepted once, in calls of at most 10
    assert queue.peak == 4
    assert sorted(queue.sent) == ids
    assert sorted(results[0].accepted) == ids
    assert not results[0].refused and not results[0].unsent


def test_refused_entries_are_reported_per_id_under_concurrency() -> None:
    # GIVEN SQS refusing every id divisible by 7, 8 calls in flight
    ids = list(range(1, 201))
    refused = {i for i in ids if i % 7 == 0}
    queue = GatedQueue(refuse=refused, hold=False)

    # WHEN the ids are sent
    result = enqueuer(queue, 8).send("proactive", [(0, ids)], lambda: False)

    # THEN exactly the refused ids are refused, the rest accepted, none twice
    assert set(result.refused) == refused
    assert set(result.accepted) == set(ids) - refused
    assert partition(result) == ids
    assert result.error is None and not result.out_of_time


def test_a_failed_call_stops_new_calls_and_keeps_the_outcome_of_those_in_flight() -> None:
    # GIVEN 3 calls at a time, the first failing as a whole at once, the other two held
    queue = GatedQueue(fail_call=1)
    ids = list(range(1, 101))
    thread, results = run_in_thread(enqueuer(queue, 3), ids)
    queue.wait_for_in_flight(2)

    # WHEN the two held calls answer
    queue.gate.set()
    thread.join(WAIT)
    result = results[0]

    # THEN no call started after the failure, the two in flight kept their outcome, and every
    # id is in exactly one bucket: the failed call's ten and the never-sent ones are unsent
    assert isinstance(result.error, QueueError)
    assert queue.calls == 3
    assert sorted(result.accepted) == sorted(queue.sent) == ids[10:30]
    assert sorted(result.unsent) == ids[:10] + ids[30:]
    assert partition(result) == ids


def test_an_unexpected_exception_is_raised_only_after_the_calls_in_flight_finish() -> None:
    # GIVEN 3 calls at a time, the first dying of something that is not an SQS answer
    queue = GatedQueue(fail_call=1, error=RuntimeError("killed part way"))
    ids = list(range(1, 101))
    errors: list[BaseException] = []

    def target() -> None:
        try:
            enqueuer(queue, 3).send("proactive", [(0, ids)], lambda: False)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    queue.wait_for_in_flight(2)

    # THEN while the other two calls are held, the exception has not escaped
    assert thread.is_alive()
    assert not errors

    # WHEN they answer
    queue.gate.set()
    thread.join(WAIT)

    # THEN it is raised, no call started after it, and nothing is still in flight
    assert [str(e) for e in errors] == ["killed part way"]
    assert queue.calls == 3
    assert queue.in_flight == 0
    assert sorted(queue.sent) == ids[10:30]


def test_time_running_out_with_calls_in_flight_returns_only_the_unsent_tail() -> None:
    # GIVEN time runs out once 2 calls are in flight
    queue = GatedQueue()
    ids = list(range(1, 61))
    out_of_time = threading.Event()
    thread, results = run_in_thread(enqueuer(queue, 2), ids, out_of_time.is_set)
    queue.wait_for_in_flight(2)
    out_of_time.set()

    # WHEN the two calls in flight answer
    queue.gate.set()
    thread.join(WAIT)
    result = results[0]

    # THEN their 20 ids are accepted, the other 40 were never sent and are unsent
    assert result.out_of_time
    assert sorted(result.accepted) == sorted(queue.sent) == ids[:20]
    assert sorted(result.unsent) == ids[20:]
    assert queue.calls == 2


def test_delayed_batches_keep_their_delay() -> None:
    # GIVEN ids deferred by 60 s next to ids due now
    delays: list[tuple[int, list[int]]] = []
    lock = threading.Lock()

    class Recording:
        def send_keys(self, keys: Sequence[MessageKey], *, delay_seconds: int = 0) -> list[MessageKey]:
            with lock:
                delays.append((delay_seconds, [k.source_id for k in keys]))
            return []

    # WHEN both are sent with 4 calls in flight
    enqueuer(Recording(), 4).send("proactive", [(60, [1, 2, 3]), (0, list(range(4, 30)))], lambda: False)  # type: ignore[arg-type]

    # THEN each call carries its ids' delay
    assert sorted(i for d, batch in delays if d == 60 for i in batch) == [1, 2, 3]
    assert sorted(i for d, batch in delays if d == 0 for i in batch) == list(range(4, 30))
    assert all(len(batch) <= 10 for _, batch in delays)


def test_concurrency_below_one_is_refused() -> None:
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="concurrency"):
        Enqueuer(GatedQueue(), concurrency=0, executor=pool)  # type: ignore[arg-type]


def test_the_enqueuers_pool_is_closed_with_the_services(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the services of an evaluate environment, its enqueuer built
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    services = build(Settings.from_env(local_env(ENQUEUE_CONCURRENCY="3")))
    assert services.evaluator is not None
    pool = services.enqueue_executor

    # WHEN the services are closed
    services.close()

    # THEN the pool the enqueuer sends with is shut down (no thread outlives the environment)
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(lambda: None)


@pytest.mark.parametrize(("concurrency", "pool"), [("4", 10), ("32", 32), ("64", 64)])
def test_the_sqs_client_keeps_a_connection_for_every_call_in_flight(
    concurrency: str, pool: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN evaluate configured for this many calls in flight (and a region for boto3)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings = Settings.from_env(local_env(ENQUEUE_CONCURRENCY=concurrency))

    # WHEN bootstrap builds the SQS client
    services = build(settings)
    try:
        config = services.sqs.meta.config
    finally:
        services.close()

    # THEN its connection pool is at least botocore's 10 and never smaller than the calls
    assert config.max_pool_connections == pool
    # AND the package's retry policy still applies
    assert config.retries["mode"] == "standard"
