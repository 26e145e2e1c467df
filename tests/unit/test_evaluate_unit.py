"""Evaluator with an in-memory store and InMemoryQueue: paging, chunking, refused entries,
and stopping cleanly when the invocation's time runs out."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest

from proactive_delivery.app.evaluate import Enqueuer, Evaluator, sources_from_event
from proactive_delivery.app.gate import QueueGate
from proactive_delivery.core.errors import MalformedRecordError, QueueError
from proactive_delivery.core.models import (
    SOURCES,
    EnqueuePage,
    EvaluateRun,
    MessageFacts,
    MessageKey,
    QueueDecision,
    UnsentBacklog,
)
from proactive_delivery_tools.fakes import InMemoryQueue
from tests.support.policy import SENDABLE_ANY_TIME, configured

PLENTY_MS = 600_000
MARGIN_MS = 10_000


@dataclass
class FakeEvaluateStore:
    """The EvaluateStore protocol over dictionaries, mirroring the SQL's contracts: keyset
    pages over the platform's unsent ids, a state per recorded message, return_to_pending
    only touching queued rows."""

    unsent_ids: list[int] = field(default_factory=list)
    state: dict[int, str] = field(default_factory=dict)  # source_id -> state
    delivery_id: dict[int, int] = field(default_factory=dict)  # source_id -> delivery id
    enqueue_calls: list[tuple[str, int, int]] = field(default_factory=list)
    requeue_calls: list[tuple[str, int, int]] = field(default_factory=list)
    returned: list[list[int]] = field(default_factory=list)
    enqueued: list[int] = field(default_factory=list)
    decisions: list[QueueDecision] = field(default_factory=list)

    def record(self, source_id: int, state: str) -> None:
        self.delivery_id.setdefault(source_id, len(self.delivery_id) + 1)
        self.state[source_id] = state

    runs: dict[int, dict[str, object]] = field(default_factory=dict)

    def start_evaluate_run(self, sources: Sequence[str], *, lease_seconds: int) -> EvaluateRun:
        run_id = len(self.runs) + 1
        self.runs[run_id] = {"sources": list(sources), "lease_seconds": lease_seconds, "finished": False}
        return EvaluateRun(run_id, lease_seconds)

    def finish_evaluate_run(
        self, run_id: int, *, enqueued: int, stopped_early: bool, report: dict[str, object]
    ) -> None:
        self.runs[run_id].update(finished=True, enqueued=enqueued, stopped_early=stopped_early, report=report)

    def unsent_backlog(self, source: str) -> UnsentBacklog:
        waiting = [i for i in self.unsent_ids if self.state.get(i) not in ("sent", "skipped", "failed")]
        return UnsentBacklog(count=len(waiting), oldest_age_seconds=0.0)

    def enqueue_new(self, source: str, run: EvaluateRun, *, after_id: int, page_size: int) -> EnqueuePage:
        assert self.runs[run.run_id]["finished"] is False
        self.enqueue_calls.append((source, after_id, page_size))
        assert len(self.enqueue_calls) < 100, "enqueue_new called in a loop: the cursor is not advancing"
        page = sorted(i for i in self.unsent_ids if i > after_id)[:page_size]
        fresh = [i for i in page if i not in self.state]
        for i in fresh:
            self.record(i, "queued")
        return EnqueuePage(last_id=max(page) if page else None, scanned=len(page), queued_ids=fresh)

    def requeue_stranded(
        self,
        source: str,
        run: EvaluateRun,
        *,
        after_id: int,
        page_size: int,
        reconcile_after_seconds: int,
    ) -> list[tuple[int, int]]:
        self.requeue_calls.append((source, after_id, page_size))
        assert len(self.requeue_calls) < 100, "requeue_stranded called in a loop: the cursor is not advancing"
        stranded = sorted(
            (did, sid)
            for sid, did in self.delivery_id.items()
            if did > after_id and self.state[sid] == "pending"
        )[:page_size]
        for _, sid in stranded:
            self.state[sid] = "queued"
        return stranded

    def sources(self) -> tuple[str, ...]:
        return SOURCES

    # the queue-time verdict's store (GateStore): every message is an ordinary, sendable one
    def policy_inputs(self, source: str, source_ids: Sequence[int]) -> list[MessageFacts]:
        return [
            MessageFacts(
                key=MessageKey(source, i),
                contractor_id=i,
                message_type="check_in",
                body="Hi Ana",
                platform_status="scheduled" if source == "followup" else None,
                phone="+13125550101",
            )
            for i in source_ids
        ]

    def apply_queue_decisions(self, source: str, decisions: Sequence[QueueDecision]) -> int:
        self.decisions.extend(decisions)
        return len(decisions)

    def mark_enqueued(self, source: str, source_ids: Sequence[int]) -> int:
        self.enqueued.extend(source_ids)
        return len(source_ids)

    def return_to_pending(self, source: str, source_ids: Sequence[int]) -> int:
        self.returned.append(list(source_ids))
        changed = [i for i in source_ids if self.state.get(i) == "queued"]
        for i in changed:
            self.state[i] = "pending"
        return len(changed)


class BatchRecordingQueue(InMemoryQueue):
    """InMemoryQueue that also remembers the size of every SendMessageBatch call."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[MessageKey]] = []

    def send_keys(self, keys: Sequence[MessageKey], *, delay_seconds: int = 0) -> list[MessageKey]:
        self.batches.append(list(keys))
        return super().send_keys(keys, delay_seconds=delay_seconds)


def keys(*ids: int) -> list[MessageKey]:
    return [MessageKey("proactive", i) for i in ids]


def plenty() -> int:
    return PLENTY_MS


# Every message is sendable at any hour: these tests are about paging and the queue (the
# queue-time verdict itself is tested in test_policy.py and test_verdict.py).
POLICY = SENDABLE_ANY_TIME


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="enqueue") as pool:
        yield pool


@pytest.fixture
def evaluator(executor: ThreadPoolExecutor) -> Callable[..., Evaluator]:
    def make(store: FakeEvaluateStore, queue: InMemoryQueue, page_size: int = 500) -> Evaluator:
        return Evaluator(
            store,
            QueueGate(store, POLICY, configured("sms")),
            Enqueuer(queue, concurrency=1, executor=executor),
            page_size=page_size,
            reconcile_after_seconds=1800,
            safety_margin_ms=MARGIN_MS,
        )

    return make


# --- paging -------------------------------------------------------------------------------------


def test_pages_are_followed_with_the_keyset_cursor(evaluator: Callable[..., Evaluator]) -> None:
    # GIVEN 25 unsent messages with gaps in their ids, and pages of 10
    ids = [i * 3 for i in range(1, 26)]
    store = FakeEvaluateStore(unsent_ids=ids)
    queue = BatchRecordingQueue()

    # WHEN evaluate runs
    report = evaluator(store, queue, page_size=10).run(["proactive"], plenty)

    # THEN each page starts after the last id of the previous one, and every id is sent once
    assert [after for _, after, _ in store.enqueue_calls] == [0, 30, 60]
    assert queue.sent == keys(*ids)
    assert report.sources["proactive"].scanned == 25
    assert report.sources["proactive"].queued_new == 25
    assert report.enqueued == 25
    assert not report.stopped_early
    assert all(store.state[i] == "queued" for i in ids)


def test_a_full_last_page_is_followed_by_one_empty_page(evaluator: Callable[..., Evaluator]) -> None:
    # GIVEN exactly two full pages
    store = FakeEvaluateStore(unsent_ids=list(range(1, 21)))
    queue = InMemoryQueue()

    # WHEN evaluate runs
    evaluator(store, queue, page_size=10).run(["proactive"], plenty)

    # THEN it asks once more after the second page, sees nothing, and stops
    assert [after for _, after, _ in store.enqueue_calls] == [0, 10, 20]
    assert queue.count == 20


def test_cursor_advances_past_already_recorded_messages(evaluator: Callable[..., Evaluator]) -> None:
    # GIVEN a first page entirely recorded by an earlier run, and new messages after it
    store = FakeEvaluateStore(unsent_ids=list(range(1, 16)))
    for i in range(1, 11):
        store.record(i, "sent")
    queue = InMemoryQueue()

    # WHEN evaluate runs with pages of 10
    report = evaluator(store, queue, page_size=10).run(["proactive"], plenty)

    # THEN the scan moves on past the page that queued nothing and sends only the new ones
    assert [after for _, after, _ in store.enqueue_calls] == [0, 10]
    assert queue.sent == keys(*range(11, 16))
    assert report.sources["proactive"].scanned == 15
    assert report.sources["proactive"].queued_new == 5


def test_ids_are_sent_in_chunks_of_at_most_ten(evaluator: Callable[..., Evaluator]) -> None:
    # GIVEN one page of 25 messages
    store = FakeEvaluateStore(unsent_ids=list(range(1, 26)))
    queue = BatchRecordingQueue()

    # WHEN evaluate runs
    evaluator(store, queue, page_size=100).run(["proactive"], plenty)

    # THEN SendMessageBatch is called with 10, 10 and 5 entries, in id order
    assert [len(b) for b in queue.batches] == [10, 10, 5]
    assert [k for b in queue.batches for k in b] == keys(*range(1, 26))


def test_stranded_messages_are_requeued_first_with_their_own_cursor(
    evaluator: Callable[..., Evaluator],
) -> None:
    # GIVEN 12 recorded messages left pending by an earlier run, and 3 brand-new ones
    store = FakeEvaluateStore(unsent_ids=list(range(1, 16)))
    for i in range(1, 13):
        store.record(i, "pending")
    queue = BatchRecordingQueue()

    # WHEN evaluate runs with pages of 5
    report = evaluator(store, queue, page_size=5).run(["proactive"], plenty)

    # THEN the sweep pages by delivery id, runs before new work, and everything is queued once
    assert [after for _, after, _ in store.requeue_calls] == [0, 5, 10]
    assert queue.sent == keys(*range(1, 16))
    assert report.sources["proactive"].requeued == 12
    assert report.sources["proactive"].queued_new == 3
    assert report.enqueued == 15
    assert set(store.state.values()) == {"queued"}


# --- refused entries ----------------------------------------------------------------------------


def test_entries_refused_by_the_queue_go_back_to_pending_and_are_counted(
    evaluator: Callable[..., Evaluator],
) -> None:
    # GIVEN a queue that refuses two entries of the batch
    store = FakeEvaluateStore(unsent_ids=list(range(1, 11)))
    queue = InMemoryQueue(fail_ids=set(keys(3, 7)))

    # WHEN evaluate runs
    report = evaluator(store, queue).run(["proactive"], plenty)

    # THEN those two are pending again (the next run's sweep takes them), the rest are queued
    assert store.returned == [[3, 7]]
    assert {i for i, s in store.state.items() if s == "pending"} == {3, 7}
    assert queue.sent == keys(1, 2, 4, 5, 6, 8, 9, 10)
    assert report.sources["proactive"].send_failed == 2
    assert report.enqueued == 8
    assert not report.stopped_early


def test_refused_entries_are_picked_up_by_the_next_run(evaluator: Callable[..., Evaluator]) -> None:
    # GIVEN a first run where the queue refused one entry
    store = FakeEvaluateStore(unsent_ids=[1, 2, 3])
    evaluator(store, InMemoryQueue(fail_ids=set(keys(2)))).run(["proactive"], plenty)

    # WHEN the next run has a healthy queue
    queue = InMemoryQueue()
    report = evaluator(store, queue).run(["proactive"], plenty)

    # THEN only the refused message is sent again, by the reconciliation sweep
    assert queue.sent == keys(2)
    assert report.sources["proactive"].requeued == 1
    assert report.sources["proactive"].queued_new == 0


def test_a_whole_failed_call_returns_the_rest_to_pending_and_raises(
    evaluator: Callable[..., Evaluator],
) -> None:
    # GIVEN a queue whose second SendMessageBatch call fails outright
    class FailingSecondCall(BatchRecordingQueue):
        def send_keys(self, keys: Sequence[MessageKey], *, delay_seconds: int = 0) -> list[MessageKey]:
            if len(self.batches) == 1:
                raise QueueError("SendMessageBatch failed: ServiceUnavailable")
            return super().send_keys(keys, delay_seconds=delay_seconds)

    store = FakeEvaluateStore(unsent_ids=list(range(1, 26)))
    queue = FailingSecondCall()

    # WHEN evaluate runs
    with pytest.raises(QueueError):
        evaluator(store, queue).run(["proactive"], plenty)

    # THEN the first ten stay queued and everything not sent is pending again
    assert store.returned == [list(range(11, 26))]
    assert all(store.state[i] == "queued" for i in range(1, 11))
    assert all(store.state[i] == "pending" for i in range(11, 26))


# --- time budget --------------------------------------------------------------------------------


def test_low_remaining_time_stops_before_any_work(evaluator: Callable[..., Evaluator]) -> None:
    # GIVEN less time left than the safety margin
    store = FakeEvaluateStore(unsent_ids=[1, 2, 3])
    queue = InMemoryQueue()

    # WHEN evaluate runs
    report = evaluator(store, queue).run(["proactive"], lambda: MARGIN_MS - 1)

    # THEN it touches nothing and reports that it stopped early
    assert report.stopped_early
    assert store.enqueue_calls == [] and store.requeue_calls == []
    assert queue.sent == []
    assert store.state == {}


def test_running_out_of_time_mid_page_returns_the_unsent_tail_to_pending(
    evaluator: Callable[..., Evaluator],
) -> None:
    # GIVEN one page of 25 and time that runs out after two SendMessageBatch calls
    store = FakeEvaluateStore(unsent_ids=list(range(1, 26)))
    queue = BatchRecordingQueue()

    def remaining_ms() -> int:
        return PLENTY_MS if len(queue.batches) < 2 else MARGIN_MS - 1

    # WHEN evaluate runs
    report = evaluator(store, queue, page_size=100).run(["proactive"], remaining_ms)

    # THEN the 20 sent stay queued, the unsent 5 are pending again, and no further page is read
    assert report.stopped_early
    assert queue.sent == keys(*range(1, 21))
    assert store.returned == [list(range(21, 26))]
    assert all(store.state[i] == "queued" for i in range(1, 21))
    assert all(store.state[i] == "pending" for i in range(21, 26))
    assert report.sources["proactive"].returned_to_pending == 5
    assert report.enqueued == 20
    assert len(store.enqueue_calls) == 1


def test_running_out_of_time_between_pages_stops_without_reading_another(
    evaluator: Callable[..., Evaluator],
) -> None:
    # GIVEN pages of 10 and time that runs out once the first page is sent
    store = FakeEvaluateStore(unsent_ids=list(range(1, 31)))
    queue = BatchRecordingQueue()

    def remaining_ms() -> int:
        return PLENTY_MS if len(queue.batches) < 1 else 0

    # WHEN evaluate runs
    report = evaluator(store, queue, page_size=10).run(["proactive"], remaining_ms)

    # THEN only the first page was recorded; the rest is untouched for the next run
    assert report.stopped_early
    assert len(store.enqueue_calls) == 1
    assert queue.sent == keys(*range(1, 11))
    assert set(store.state) == set(range(1, 11))
    assert store.returned == []


def test_report_as_dict_is_json_friendly(evaluator: Callable[..., Evaluator]) -> None:
    store = FakeEvaluateStore(unsent_ids=[1, 2])
    report = evaluator(store, InMemoryQueue()).run(["proactive"], plenty)
    assert report.as_dict() == {
        "enqueued": 2,
        "stopped_early": False,
        "sources": {
            "proactive": {
                "scanned": 2,
                "queued_new": 2,
                "requeued": 0,
                "send_failed": 0,
                "returned_to_pending": 0,
                "deferred": 0,
                "held": 0,
                "held_reasons": {},
                "enqueued": 2,
            }
        },
        "backlog": {"proactive": {"count": 2, "oldest_age_seconds": 0.0}},
    }


def test_a_run_is_recorded_when_it_starts_and_completed_with_its_report_and_backlog(
    evaluator: Callable[..., Evaluator],
) -> None:
    # GIVEN two unsent messages
    store = FakeEvaluateStore(unsent_ids=[1, 2])

    # WHEN a run with five minutes left passes over them
    report = evaluator(store, InMemoryQueue()).run(["proactive"], lambda: 300_000)

    # THEN the run was recorded with its lease before any page, and completed by the use
    # case itself with the figure it reports (computed once) and the backlog it measured
    [(run_id, run)] = store.runs.items()
    assert report.run_id == run_id
    assert run["lease_seconds"] == 300
    assert run["finished"] is True
    assert run["enqueued"] == report.enqueued == report.sources["proactive"].enqueued == 2
    assert run["report"] == report.as_dict()
    assert report.backlog["proactive"].count == 2


# --- sources_from_event -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event",
    [{}, {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}],
)
def test_no_selector_means_every_source(event: dict[str, object]) -> None:
    # GIVEN / WHEN an event without `sources` (empty, or EventBridge's own) / THEN every source
    assert sources_from_event(event) == list(SOURCES)


def test_selector_picks_the_named_source() -> None:
    assert sources_from_event({"sources": ["proactive"]}) == ["proactive"]


def test_selector_keeps_order_and_drops_duplicates() -> None:
    known = ("proactive", "followup")
    assert sources_from_event({"sources": ["followup", "proactive", "followup"]}, known=known) == [
        "followup",
        "proactive",
    ]


@pytest.mark.parametrize("event", [{"sources": ["proactive", "sms_blast"]}, {"sources": ["sms_blast"]}])
def test_unknown_source_is_malformed(event: dict[str, object]) -> None:
    # GIVEN / WHEN an event naming a source that does not exist
    with pytest.raises(MalformedRecordError) as excinfo:
        sources_from_event(event)

    # THEN the error says so, and names the source
    assert excinfo.value.reason == "unknown_source"
    assert "sms_blast" in str(excinfo.value)


@pytest.mark.parametrize("event", [None, "proactive", ["proactive"], 3])
def test_non_dict_event_is_malformed(event: object) -> None:
    with pytest.raises(MalformedRecordError) as excinfo:
        sources_from_event(event)
    assert excinfo.value.reason == "invalid_event"


@pytest.mark.parametrize(
    "event",
    [
        {"sources": []},
        {"sources": {"proactive": True}},
        {"sources": 5},
        {"sources": None},
        # A string is not a list: one rule, no second spelling.
        {"sources": "proactive"},
        {"sources": ["proactive", 7]},
        # The singular key is a misspelt selector, not "every source".
        {"source": "proactive"},
    ],
)
def test_a_selector_of_any_other_shape_is_an_invalid_event(event: dict[str, object]) -> None:
    with pytest.raises(MalformedRecordError) as excinfo:
        sources_from_event(event)
    assert excinfo.value.reason == "invalid_event"


def test_remaining_time_is_consulted_for_each_chunk(evaluator: Callable[..., Evaluator]) -> None:
    # GIVEN a clock counting how often it is asked
    calls: list[int] = []

    def counting() -> int:
        calls.append(1)
        return PLENTY_MS

    store = FakeEvaluateStore(unsent_ids=list(range(1, 31)))

    # WHEN 30 ids (3 chunks) are evaluated in one page
    evaluator(store, InMemoryQueue(), page_size=100).run(["proactive"], counting)

    # THEN time was checked at least once per chunk plus once per page read
    assert len(calls) >= 3 + 2
