"""The deliver function's SQS edge: records in, one disposition per message from the use
case, and out the `batchItemFailures` response, the visibility changes and the dead letters
SQS needs. The use case here is a stand-in that answers the dispositions a test gives it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from proactive_delivery.adapters.sqs_batch import SqsBatch, count_of
from proactive_delivery.app.deliver import DeliverResult, Disposition, Receive
from proactive_delivery.core.models import MessageKey
from proactive_delivery.handlers import LambdaFunction, deliver
from proactive_delivery_tools.fakes import InMemoryQueue
from proactive_delivery_tools.local.esm import LambdaContext
from tests.support.telemetry import captured_log_lines


def key(source_id: int) -> MessageKey:
    return MessageKey("proactive", source_id)


def record(
    source_id: int | None, *, message_id: str | None = None, body: str | None = None, receives: int | None = 1
) -> dict[str, Any]:
    mid = message_id or f"m-{source_id}"
    raw: dict[str, Any] = {
        "messageId": mid,
        "receiptHandle": f"rh-{mid}",
        "body": body if body is not None else key(source_id or 0).to_body(),
        "eventSource": "aws:sqs",
    }
    if receives is not None:
        raw["attributes"] = {"ApproximateReceiveCount": str(receives)}
    return raw


@dataclass
class StandIn:
    """The use case: answers `dispositions` (sent by default) and remembers what it got."""

    dispositions: dict[MessageKey, Disposition] = field(default_factory=dict)
    calls: list[list[Receive]] = field(default_factory=list)

    def __call__(self, receives: Sequence[Receive]) -> DeliverResult:
        self.calls.append(list(receives))
        answer = {r.key: self.dispositions.get(r.key, Disposition("sent", state="sent")) for r in receives}
        return DeliverResult(answer, (), {})


def failures(response: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def test_sent_and_done_messages_are_acknowledged() -> None:
    # GIVEN a message sent and one with nothing more to do
    queue, use_case = InMemoryQueue(), StandIn({key(2): Disposition("done", "duplicate")})

    # WHEN their records are handled
    response, report = SqsBatch(queue).handle({"Records": [record(1), record(2)]}, use_case)

    # THEN both are acknowledged: left out of the response, no visibility change
    assert response == {"batchItemFailures": []}
    assert queue.visibility == [] and queue.dead_letters == []
    assert report.counts == {"delivered": 1, "duplicate": 1}


@pytest.mark.parametrize(
    ("disposition", "count"),
    [
        (Disposition("retry", "server_error", 300, "queued"), "retried"),
        (Disposition("hold", "quiet_hours", 120, "queued"), "deferred"),
        (Disposition("retry", "claimed_concurrently", 5), "busy"),
        (Disposition("retry", "deadline", 0, "queued"), "released"),
    ],
)
def test_held_and_retried_messages_come_back_after_their_delay(disposition: Disposition, count: str) -> None:
    # GIVEN a message the use case wants back later
    queue, use_case = InMemoryQueue(), StandIn({key(1): disposition})

    # WHEN its record is handled
    response, report = SqsBatch(queue).handle({"Records": [record(1)]}, use_case)

    # THEN its visibility is set to the delay and it is reported failed, so SQS hands it out
    # again when the delay is over
    assert queue.visibility == [("rh-m-1", disposition.delay_seconds)]
    assert failures(response) == ["m-1"]
    assert report.counts == {count: 1}


def test_a_dead_lettered_message_goes_to_the_dlq_with_its_reason_and_is_acknowledged() -> None:
    queue = InMemoryQueue()
    use_case = StandIn({key(1): Disposition("dead_letter", "attempts_exhausted", state="failed")})

    response, report = SqsBatch(queue).handle({"Records": [record(1)]}, use_case)

    assert queue.dead_letters == [(key(1).to_body(), "attempts_exhausted")]
    assert failures(response) == [] and queue.visibility == []
    assert report.counts == {"failed": 1, "dead_lettered": 1}


def test_a_dead_letter_the_dlq_refuses_is_left_to_the_redrive_at_once() -> None:
    # GIVEN a dead-letter queue that refuses the message
    queue = InMemoryQueue()
    queue.dead_letter = lambda letters: list(range(len(letters)))  # type: ignore[method-assign]
    use_case = StandIn({key(1): Disposition("dead_letter", "attempts_exhausted", state="failed")})

    # WHEN it is handled
    response, report = SqsBatch(queue).handle({"Records": [record(1)]}, use_case)

    # THEN it is reported failed with visibility 0, so the queue's redrive moves it now
    assert failures(response) == ["m-1"]
    assert queue.visibility == [("rh-m-1", 0)]
    assert "dead_lettered" not in report.counts


def test_a_message_that_can_never_be_worked_is_reported_without_a_visibility_change() -> None:
    queue, use_case = InMemoryQueue(), StandIn({key(9): Disposition("failed", "unknown_message")})

    response, report = SqsBatch(queue).handle({"Records": [record(9)]}, use_case)

    assert failures(response) == ["m-9"]
    assert queue.visibility == []
    assert report.counts == {"malformed": 1}


@pytest.mark.parametrize(
    ("body", "reason"),
    [("not json", "invalid_json"), ("[]", "not_an_object"), ('{"source": "fax", "id": 1}', "unknown_source")],
)
def test_a_malformed_body_fails_only_its_own_record_with_one_log_line(
    body: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a batch with one good record and one whose body is not a message key
    queue, use_case = InMemoryQueue(), StandIn()

    # WHEN it is handled
    response, report = SqsBatch(queue).handle(
        {"Records": [record(1), record(None, message_id="m-bad", body=body)]}, use_case
    )

    # THEN only the bad record is reported failed (the redrive takes it to the DLQ); the use
    # case saw only the good one; one line names the reason
    assert failures(response) == ["m-bad"]
    assert use_case.calls == [[Receive(key(1), 1)]]
    assert report.counts == {"delivered": 1, "malformed": 1}
    [line] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert (line.getMessage(), getattr(line, "reason", None)) == ("malformed queue record", reason)


def test_a_batch_of_only_malformed_records_never_reaches_the_use_case() -> None:
    use_case = StandIn()
    response, _ = SqsBatch(InMemoryQueue()).handle(
        {"Records": [record(None, message_id="a", body="[]"), record(None, message_id="b", body="")]},
        use_case,
    )
    assert failures(response) == ["a", "b"]
    assert use_case.calls == []


def test_the_same_message_twice_in_one_batch_reaches_the_use_case_once() -> None:
    use_case = StandIn()
    response, report = SqsBatch(InMemoryQueue()).handle(
        {"Records": [record(1, message_id="first"), record(1, message_id="second")]}, use_case
    )
    assert use_case.calls == [[Receive(key(1), 1)]]
    assert failures(response) == []
    assert report.counts == {"delivered": 1, "duplicate": 1}


def test_the_receive_count_reaches_the_use_case() -> None:
    use_case = StandIn()
    SqsBatch(InMemoryQueue()).handle({"Records": [record(1, receives=7), record(2, receives=None)]}, use_case)
    assert use_case.calls == [[Receive(key(1), 7), Receive(key(2), 1)]]


def test_a_refused_visibility_change_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    # GIVEN a queue that refuses ChangeMessageVisibility, and a message to retry
    queue = InMemoryQueue()
    queue.change_visibility = lambda receipts: [handle for handle, _ in receipts]  # type: ignore[method-assign]
    use_case = StandIn({key(1): Disposition("retry", "timeout", 5, "queued")})

    # WHEN it is handled
    response, report = SqsBatch(queue).handle({"Records": [record(1)]}, use_case)

    # THEN it is still reported for a retry, and the refusal is counted and logged
    assert failures(response) == ["m-1"]
    assert report.counts["visibility_failed"] == 1
    assert any("ChangeMessageVisibility refused" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("disposition", "count"),
    [
        (Disposition("done", "no_contact", state="skipped"), "skipped"),
        (Disposition("done", "rejected", state="failed"), "failed"),
        (Disposition("done", "quiet_hours", state="deferred"), "deferred"),
        (Disposition("done", "lease_lost"), "lease_lost"),
        (Disposition("done", "duplicate"), "duplicate"),
    ],
)
def test_each_disposition_counts_once_under_its_metric(disposition: Disposition, count: str) -> None:
    assert count_of(disposition) == count


# --- what the deliver function makes of an event that is not an SQS batch -----------------------


@dataclass
class _Services:
    sqs_batch: SqsBatch
    deliverer: Any = None


def invoke(event: Any) -> tuple[Any, list[dict[str, Any]]]:
    services = _Services(SqsBatch(InMemoryQueue()))
    handler = LambdaFunction(deliver, lambda: services)  # type: ignore[arg-type, return-value]
    with captured_log_lines() as stream:
        response = handler(event, LambdaContext("DeliverFunction", 60))
    return response, [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize("event", [{}, {"Records": "none"}, None, []])
def test_an_event_that_is_not_an_sqs_batch_is_one_log_line_and_nothing_done(
    event: Any,
) -> None:
    response, lines = invoke(event)
    assert response == {"batchItemFailures": []}
    [line] = lines
    assert (line["level"], line["message"], line["reason"]) == (
        "ERROR",
        "invalid deliver event; nothing done",
        "invalid_event",
    )


def test_a_record_without_a_message_id_is_one_log_line_and_no_traceback() -> None:
    # GIVEN a hand-made event whose one record has no messageId
    bare = record(1)
    del bare["messageId"]

    # WHEN the deliver function is given it
    response, lines = invoke({"Records": [bare]})

    # THEN one line names the problem, nothing is reported (there is nothing to report it by)
    assert response == {"batchItemFailures": []}
    [line] = lines
    assert line["reason"] == "missing_message_id"
    assert "Traceback" not in json.dumps(line)
