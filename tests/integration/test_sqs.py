"""Evaluate against moto's SQS, and SQS's own redrive to the DLQ."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws

from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.adapters.postgres.store import PostgresStore
from proactive_delivery.adapters.sqs import SqsDeliveryQueue
from proactive_delivery_tools.local.sqs import create_queues
from tests.pipeline import make_evaluator
from tests.support.db import states


def test_evaluate_sends_ids_in_batches_and_records_queued(
    database_url: str, make_messages: Any, conn: Any
) -> None:
    with mock_aws():
        # GIVEN 23 due messages and an SQS queue
        ids = make_messages(23)
        sqs = boto3.client("sqs", region_name="us-east-1")
        queues = create_queues(sqs)
        calls: list[int] = []
        original = sqs.send_message_batch

        def counting(**kwargs: Any) -> Any:
            calls.append(len(kwargs["Entries"]))
            return original(**kwargs)

        sqs.send_message_batch = counting
        evaluator = make_evaluator(
            PostgresStore(db := Database(lambda: database_url)),
            SqsDeliveryQueue(sqs, queues.queue_url),
            page_size=10,
        )

        # WHEN evaluate runs
        report = evaluator.run(["proactive"], lambda: 300_000)

        # THEN every id is on the queue once, as {source, id}, sent 10 per call, and queued in the DB
        assert report.enqueued == 23
        assert calls == [10, 10, 3]
        bodies = []
        while True:
            got = sqs.receive_message(QueueUrl=queues.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                break
            bodies.extend(json.loads(m["Body"]) for m in got)
        assert sorted(b["id"] for b in bodies) == sorted(ids)
        assert {b["source"] for b in bodies} == {"proactive"}
        assert set(states(conn).values()) == {"queued"}
        db.close()


def test_reconciliation_requeues_lost_and_expired(database_url: str, make_messages: Any, conn: Any) -> None:
    with mock_aws():
        # GIVEN one message whose SQS copy was lost long ago, one whose deliverer died mid-send,
        # and one queued a moment ago
        lost, died, fresh = make_messages(3)
        sqs = boto3.client("sqs", region_name="us-east-1")
        queues = create_queues(sqs)
        store = PostgresStore(db := Database(lambda: database_url))
        page = store.enqueue_new(
            "proactive",
            store.start_evaluate_run(["proactive"], lease_seconds=300),
            after_id=0,
            page_size=100,
        )
        store.mark_enqueued("proactive", page.queued_ids)  # SQS accepted all three
        conn.execute(
            "UPDATE delivery.message_state SET next_attempt_at = now() - interval '2 hours' "
            "WHERE source_id = %s",
            (lost,),
        )
        conn.execute(
            "UPDATE delivery.message_state SET state = 'sending', lease_expires_at = now() - interval '1 s' "
            "WHERE source_id = %s",
            (died,),
        )
        evaluator = make_evaluator(store, SqsDeliveryQueue(sqs, queues.queue_url))

        # WHEN evaluate runs
        report = evaluator.run(["proactive"], lambda: 300_000)

        # THEN the lost and the abandoned ones are queued again; the fresh one is left alone
        assert report.sources["proactive"].requeued == 2
        got = sqs.receive_message(QueueUrl=queues.queue_url, MaxNumberOfMessages=10).get("Messages", [])
        assert sorted(json.loads(m["Body"])["id"] for m in got) == sorted([lost, died])
        assert states(conn) == {lost: "queued", died: "queued", fresh: "queued"}
        db.close()


class _KilledBeforeSend(BaseException):
    """The environment dies between evaluate's commit and its SendMessageBatch (a timeout or
    an out-of-memory kill: nothing in the process gets to handle it)."""


class _DyingQueue(SqsDeliveryQueue):
    def send_keys(self, keys: Any, *, delay_seconds: int = 0) -> Any:
        raise _KilledBeforeSend


def _age_rows(conn: Any, minutes: int) -> None:
    """Let `minutes` pass for the rows' clocks (shorter than RECONCILE_AFTER_SECONDS)."""
    conn.execute(
        "UPDATE delivery.message_state SET updated_at = updated_at - make_interval(mins => %s),"
        " next_attempt_at = next_attempt_at - make_interval(mins => %s)",
        (minutes, minutes),
    )


def test_a_re_queuing_run_killed_before_its_send_does_not_restart_the_wait(
    database_url: str, make_messages: Any, conn: Any
) -> None:
    with mock_aws():
        # GIVEN 6 messages recorded by an evaluate run killed before its SendMessageBatch
        ids = make_messages(6)
        sqs = boto3.client("sqs", region_name="us-east-1")
        queues = create_queues(sqs)
        store = PostgresStore(db := Database(lambda: database_url))

        def run(queue: SqsDeliveryQueue) -> Any:
            # A 300 s function: a run's rows are another run's orphans once older than that.
            return make_evaluator(store, queue).run(["proactive"], lambda: 300_000)

        with pytest.raises(_KilledBeforeSend):
            run(_DyingQueue(sqs, queues.queue_url))
        # AND, once the reconciliation threshold has passed, a run that re-queues them and is
        # killed the same way
        _age_rows(conn, 31)
        with pytest.raises(_KilledBeforeSend):
            run(_DyingQueue(sqs, queues.queue_url))
        # WHEN the run after that comes 10 minutes later (well inside another threshold) and
        # SQS answers
        _age_rows(conn, 10)
        report = run(SqsDeliveryQueue(sqs, queues.queue_url))
        # THEN every orphan is on the queue now: the killed sweep did not restart their wait
        assert report.sources["proactive"].requeued == 6
        bodies: list[int] = []
        for _ in range(3):
            got = sqs.receive_message(QueueUrl=queues.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            bodies += [json.loads(m["Body"])["id"] for m in got]
        assert sorted(bodies) == ids
        # AND they are marked as on the queue: a run right after leaves them alone
        assert run(SqsDeliveryQueue(sqs, queues.queue_url)).sources["proactive"].requeued == 0
        db.close()


def test_a_concurrent_sweeps_rows_are_not_taken_twice(
    database_url: str, make_messages: Any, conn: Any
) -> None:
    with mock_aws():
        # GIVEN stranded rows that another evaluate run has just re-queued and is about to send
        make_messages(3)
        sqs = boto3.client("sqs", region_name="us-east-1")
        queues = create_queues(sqs)
        store = PostgresStore(db := Database(lambda: database_url))
        store.enqueue_new(
            "proactive",
            store.start_evaluate_run(["proactive"], lease_seconds=300),
            after_id=0,
            page_size=100,
        )
        _age_rows(conn, 31)
        swept = store.requeue_stranded(
            "proactive",
            store.start_evaluate_run(["proactive"], lease_seconds=300),
            after_id=0,
            page_size=100,
            reconcile_after_seconds=1800,
        )
        assert len(swept) == 3
        # WHEN an overlapping run sweeps
        report = make_evaluator(store, SqsDeliveryQueue(sqs, queues.queue_url)).run(
            ["proactive"], lambda: 300_000
        )
        # THEN it does not queue them a second time
        assert report.sources["proactive"].requeued == 0
        assert sqs.receive_message(QueueUrl=queues.queue_url).get("Messages", []) == []
        db.close()


def test_redrive_moves_a_message_to_the_dlq_after_max_receive_count() -> None:
    with mock_aws():
        # GIVEN the template's queue pair with maxReceiveCount 3 and a message nobody can process
        sqs = boto3.client("sqs", region_name="us-east-1")
        queues = create_queues(sqs, visibility_timeout=0, max_receive_count=3)
        sqs.send_message(QueueUrl=queues.queue_url, MessageBody='{"source":"proactive","id":1}')

        # WHEN it is received and not deleted three times
        receives = 0
        for _ in range(6):
            got = sqs.receive_message(QueueUrl=queues.queue_url, MaxNumberOfMessages=1).get("Messages", [])
            receives += len(got)

        # THEN the fourth receive finds it in the DLQ instead
        assert receives == 3
        dlq = sqs.receive_message(QueueUrl=queues.dlq_url, MaxNumberOfMessages=10).get("Messages", [])
        assert [m["Body"] for m in dlq] == ['{"source":"proactive","id":1}']
