"""docs/faults.md rows, each a test named faultNN_... (`pytest -k fault07`), on a real
PostgreSQL, SQS faked by moto, and a real local webhook receiver."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import psycopg
import pytest

from proactive_delivery_tools.local.esm import LambdaContext
from proactive_delivery_tools.local.receiver import Reply
from tests.pipeline import retry_env
from tests.support.db import attempts, platform_sent_at, state_row, states
from tests.support.telemetry import emf_metrics


def _posts(pipeline: Any, message_id: int) -> list[Any]:
    return pipeline.receiver.posts_for(f"proactive-{message_id}")


def test_fault01_webhook_429_then_5xx_then_delivered_with_backoff(pipeline: Any, make_message: Any) -> None:
    # GIVEN a receiver that rate-limits once (Retry-After: 2) and then fails once with a 503
    message = make_message()
    replies = {1: Reply(429, headers={"Retry-After": "2"}), 2: Reply(503)}
    pipeline.receiver.plan = lambda _id, n: replies.get(n, Reply(200))

    # WHEN the pipeline runs until the queue is empty
    pipeline.evaluate()
    pipeline.drain(timeout=30)

    # THEN the message was delivered on the third POST, and the retry waited for Retry-After
    posts = _posts(pipeline, message)
    assert [p.status for p in posts] == [429, 503, 200]
    assert posts[1].at - posts[0].at >= 1.9
    row = state_row(pipeline.conn, message)
    assert row["state"] == "sent"
    assert row["attempts"] == 3
    assert [a["outcome"] for a in attempts(pipeline.conn, message)] == ["retry", "retry", "delivered"]
    assert [a["http_status"] for a in attempts(pipeline.conn, message)] == [429, 503, 200]
    # AND sent_at was set once, to the time of the successful send
    assert platform_sent_at(pipeline.conn, message) == row["sent_at"]


def test_fault02_poison_records_never_crash_the_batch(pipeline: Any, make_messages: Any, caplog: Any) -> None:
    # GIVEN a batch of 10 records: 7 good ones, bad JSON, an unknown id and an unknown source
    ids = make_messages(7)
    pipeline.evaluate()
    pipeline.send_raw(
        "{not json",
        json.dumps({"source": "proactive", "id": 999999}),
        json.dumps({"source": "carrier-pigeon", "id": 1}),
    )
    pipeline.setenv(**retry_env(2))
    messages = pipeline.receive(10)
    assert len(messages) == 10

    # WHEN the deliver handler gets all 10 in one invocation
    mapping = pipeline.mapping()
    mapping.invoke(messages)

    # THEN the batch did not crash: the 3 poison records are reported failed (a good record
    # that met a transient network error on this busy machine would be reported failed too,
    # and retried, which the drain below settles), and the good ones went out
    assert mapping.stats.handler_errors == 0
    poison_ids = {
        m["MessageId"]
        for m in messages
        if not m["Body"].startswith('{"source":"proactive","id":') or "999999" in m["Body"]
    }
    assert len(poison_ids) == 3
    assert mapping.stats.reported_failed >= 3
    assert sum(states(pipeline.conn)[i] == "sent" for i in ids) >= 6
    # AND each failure was logged with its reason
    logged = {(r.getMessage(), getattr(r, "reason", None)) for r in caplog.records if r.levelname == "ERROR"}
    assert ("malformed queue record", "invalid_json") in logged
    assert ("malformed queue record", "unknown_source") in logged
    assert ("queue record names an unknown message", None) in logged

    # WHEN they keep failing until the queue's maxReceiveCount
    pipeline.drain(timeout=30)
    assert all(states(pipeline.conn)[i] == "sent" for i in ids)

    # THEN all three sit in the DLQ and nothing else does
    dlq = sorted(pipeline.dlq_bodies())
    assert dlq == sorted(
        [
            "{not json",
            json.dumps({"source": "proactive", "id": 999999}),
            json.dumps({"source": "carrier-pigeon", "id": 1}),
        ]
    )
    assert len(pipeline.receiver.accepted()) == 7


def test_fault03_timeout_after_accepting_is_retried_with_same_key(pipeline: Any, make_message: Any) -> None:
    # GIVEN a receiver that accepts the first request but answers after the client's
    # read timeout (2 s here)
    message = make_message()
    pipeline.receiver.plan = lambda _id, n: Reply(200, delay=3.0) if n == 1 else Reply(200)

    # WHEN the pipeline runs
    pipeline.evaluate()
    pipeline.drain(timeout=30)

    # THEN the retry carried the same webhook-id (the idempotency key) and the message is sent
    posts = _posts(pipeline, message)
    assert len(posts) == 2
    assert {p.webhook_id for p in posts} == {f"proactive-{message}"}
    # AND the same body, but for the send time the workflow is given
    first, second = (dict(p.payload, send_via_ghl=dict(p.payload["send_via_ghl"])) for p in posts)
    for body in (first, second):
        body["send_via_ghl"].pop("timestamp")
    assert first == second
    assert [a["outcome"] for a in attempts(pipeline.conn, message)] == ["retry", "delivered"]
    assert attempts(pipeline.conn, message)[0]["error"].startswith("timeout")
    assert state_row(pipeline.conn, message)["state"] == "sent"


def test_fault04_crash_after_2xx_before_commit_resends_once_with_same_key(
    pipeline: Any, make_messages: Any, monkeypatch: Any
) -> None:
    # GIVEN 3 messages, a short lease, and a deliverer that dies after the webhook answered
    # 2xx but before its outcome statement committed (the first time only)
    ids = make_messages(3)
    pipeline.setenv(LEASE_SECONDS="1")
    pipeline.evaluate()
    crashing = pipeline.crash_before_the_first_commit()

    # WHEN the queue is drained (the batch comes back after the visibility timeout and the
    # expired lease lets the next invocation claim it again)
    mapping = pipeline.drain(timeout=30)

    # THEN the crashed invocation was a function error, each message got at most one extra
    # POST, every POST of a message carried the same webhook-id, and nothing was lost
    assert crashing.crashed and mapping.stats.handler_errors == 1
    for i in ids:
        posts = _posts(pipeline, i)
        assert 1 <= len(posts) <= 2
        assert {p.webhook_id for p in posts} == {f"proactive-{i}"}
        assert state_row(pipeline.conn, i)["state"] == "sent"
        assert platform_sent_at(pipeline.conn, i) is not None
    assert sum(len(_posts(pipeline, i)) for i in ids) == 6


def test_fault05_crash_after_commit_before_delete_sends_nothing_more(
    pipeline: Any, make_messages: Any
) -> None:
    # GIVEN a deliver function that dies after its work is committed but before Lambda could
    # delete the messages from the queue
    ids = make_messages(4)
    pipeline.evaluate()

    def crash_after_commit(event: dict[str, Any], context: Any) -> Any:
        pipeline.deliver_handler(event, context)
        raise RuntimeError("environment killed before the poller deleted the batch")

    crashing = pipeline.mapping(handler=crash_after_commit)
    crashing.poll_once()
    assert crashing.stats.handler_errors == 1
    assert len(pipeline.receiver.accepted()) == 4

    # WHEN SQS redelivers the batch after the visibility timeout
    pipeline.drain(timeout=30)

    # THEN zero extra POSTs: every id was POSTed once and is sent
    assert sorted(r.webhook_id for r in pipeline.receiver.requests) == sorted(f"proactive-{i}" for i in ids)
    assert all(states(pipeline.conn)[i] == "sent" for i in ids)


def test_fault06_same_id_delivered_twice_by_sqs(pipeline: Any, make_message: Any) -> None:
    # GIVEN the same message id on the queue three times (duplicate SQS delivery)
    message = make_message()
    pipeline.evaluate()
    pipeline.send_keys(message, message)

    # WHEN everything is consumed, in one batch and across batches
    pipeline.drain(timeout=30)

    # THEN one POST
    assert len(_posts(pipeline, message)) == 1
    assert state_row(pipeline.conn, message)["state"] == "sent"


def test_fault07_two_invocations_claim_same_id_at_once(pipeline: Any, make_messages: Any) -> None:
    # GIVEN 5 messages and two deliver invocations holding records for the same ids
    ids = make_messages(5)
    pipeline.evaluate()
    pipeline.receiver.plan = lambda _id, _n: Reply(200, delay=0.2)
    bodies = [json.dumps({"source": "proactive", "id": i}) for i in ids]
    events = [
        {
            "Records": [
                {
                    "messageId": f"{tag}-{n}",
                    "receiptHandle": f"rh-{tag}-{n}",
                    "body": body,
                    "attributes": {"ApproximateReceiveCount": "1"},
                    "eventSource": "aws:sqs",
                }
                for n, body in enumerate(bodies)
            ]
        }
        for tag in ("a", "b")
    ]
    barrier = threading.Barrier(2)
    results: list[Any] = []

    def invoke(event: dict[str, Any]) -> None:
        barrier.wait()
        results.append(pipeline.deliver(event))

    # WHEN both start together
    threads = [threading.Thread(target=invoke, args=(e,)) for e in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    # THEN each id was POSTed once, and both invocations acknowledged everything
    assert sorted(r.webhook_id for r in pipeline.receiver.requests) == sorted(f"proactive-{i}" for i in ids)
    assert all(r == {"batchItemFailures": []} for r in results)
    assert all(states(pipeline.conn)[i] == "sent" for i in ids)


def test_fault08_overlapping_evaluate_runs(pipeline: Any, make_messages: Any) -> None:
    # GIVEN 300 due messages and two evaluate runs started together
    ids = make_messages(300)
    pipeline.setenv(EVALUATE_PAGE_SIZE="50")
    barrier = threading.Barrier(2)
    reports: list[dict[str, Any]] = []

    def run() -> None:
        barrier.wait()
        reports.append(pipeline.evaluate())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)

    # THEN between them each id was queued (at most duplicated, never lost)
    assert sum(r["enqueued"] for r in reports) >= 300
    visible, _ = pipeline.queue_depth()
    assert visible >= 300

    # WHEN the queue is drained
    pipeline.drain(timeout=60)

    # THEN one POST per id
    posted = [r.webhook_id for r in pipeline.receiver.requests]
    assert sorted(posted) == sorted(f"proactive-{i}" for i in ids)


class _PartiallyFailingSqs:
    """Wraps the moto client; SendMessageBatch reports every entry whose id ends in the given
    digits as failed (the way SQS reports throttled entries), everything else goes through."""

    def __init__(
        self, client: Any, failing_suffixes: tuple[str, ...], crash_after_calls: int | None = None
    ) -> None:
        self._client = client
        self._failing = failing_suffixes
        self._crash_after = crash_after_calls
        self.calls = 0
        self._lock = threading.Lock()  # evaluate sends from several threads

    def send_message_batch(self, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            self.calls += 1
            number = self.calls
        if self._crash_after is not None and number > self._crash_after:
            raise RuntimeError("evaluate killed part way")
        ok = [e for e in Entries if not e["Id"].endswith(self._failing)]
        failed = [e for e in Entries if e["Id"].endswith(self._failing)]
        response = (
            self._client.send_message_batch(QueueUrl=QueueUrl, Entries=ok) if ok else {"Successful": []}
        )
        response["Failed"] = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "try again"}
            for e in failed
        ]
        return response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_fault09_sendmessagebatch_partial_failure(pipeline: Any, make_messages: Any) -> None:
    # GIVEN SQS refusing the entries of every id ending in 3 or 7
    ids = make_messages(40)
    refused = {i for i in ids if str(i).endswith(("3", "7"))}
    pipeline.use(sqs=_PartiallyFailingSqs(pipeline.sqs, ("3", "7")))

    # WHEN evaluate runs
    report = pipeline.evaluate()

    # THEN only the refused entries are counted and back to pending; the rest are queued
    assert report["sources"]["proactive"]["send_failed"] == len(refused)
    final = states(pipeline.conn)
    assert {i for i in ids if final[i] == "pending"} == refused
    visible, _ = pipeline.queue_depth()
    assert visible == len(ids) - len(refused)

    # WHEN SQS recovers and evaluate runs again
    pipeline.use(sqs=None)
    second = pipeline.evaluate()
    pipeline.drain(timeout=60)

    # THEN only the refused ones were sent again, and every message went out once
    assert second["sources"]["proactive"]["requeued"] == len(refused)
    assert sorted(r.webhook_id for r in pipeline.receiver.requests) == sorted(f"proactive-{i}" for i in ids)


def test_fault10_evaluate_crash_part_way_next_run_queues_the_rest(pipeline: Any, make_messages: Any) -> None:
    # GIVEN an evaluate run that is killed after 3 SendMessageBatch calls, pages of 20
    ids = make_messages(100)
    pipeline.setenv(EVALUATE_PAGE_SIZE="20")
    pipeline.use(sqs=_PartiallyFailingSqs(pipeline.sqs, (), crash_after_calls=3))
    try:
        pipeline.evaluate()
    except RuntimeError as exc:
        assert "killed part way" in str(exc)
    else:
        raise AssertionError("the run should have died")
    visible, _ = pipeline.queue_depth()
    assert visible == 30

    # WHEN the next run comes after the reconciliation threshold (30 minutes) has passed
    pipeline.use(sqs=None)
    pipeline.conn.execute(
        "UPDATE delivery.message_state SET updated_at = updated_at - interval '31 minutes',"
        " next_attempt_at = next_attempt_at - interval '31 minutes'"
    )
    pipeline.setenv(EVALUATE_PAGE_SIZE="20")
    report = pipeline.evaluate()
    pipeline.drain(timeout=60)

    # THEN the 60 never recorded were queued, the 40 recorded by the dead run (10 of them
    # never sent) were queued again, and every message was delivered exactly once
    assert report["sources"]["proactive"]["queued_new"] == 60
    assert report["sources"]["proactive"]["requeued"] == 40
    assert sorted(r.webhook_id for r in pipeline.receiver.requests) == sorted(f"proactive-{i}" for i in ids)
    assert set(states(pipeline.conn).values()) == {"sent"}


def test_fault10_the_rows_of_a_run_killed_before_its_send_are_found_by_the_next_run(
    pipeline: Any, make_messages: Any
) -> None:
    # GIVEN an evaluate run of a function with a 15-second timeout, killed between its page
    # statement (the rows are recorded as queued) and its first SendMessageBatch
    ids = make_messages(12)
    pipeline.use(sqs=_PartiallyFailingSqs(pipeline.sqs, (), crash_after_calls=0))
    with pytest.raises(RuntimeError, match="killed part way"):
        pipeline.evaluate(timeout=15)
    assert pipeline.queue_depth() == (0, 0)
    assert set(states(pipeline.conn).values()) == {"queued"}

    # WHEN the schedule's next runs come, long before RECONCILE_AFTER_SECONDS (30 minutes)
    pipeline.use(sqs=None)
    requeued, deadline = 0, time.monotonic() + 120
    while requeued < len(ids) and time.monotonic() < deadline:
        requeued += pipeline.evaluate()["sources"]["proactive"]["requeued"]
        if requeued < len(ids):
            time.sleep(0.5)  # the killed run's deadline has not passed yet: it might be alive
    pipeline.drain(timeout=60)

    # THEN the first run after the killed one was certainly over (its deadline passed, and it
    # never finished) queued its rows, and each message was delivered once
    assert requeued == len(ids)
    assert sorted(r.webhook_id for r in pipeline.receiver.requests) == sorted(f"proactive-{i}" for i in ids)
    assert set(states(pipeline.conn).values()) == {"sent"}


def test_fault11_database_down_no_posts_batch_retried(pipeline: Any, make_messages: Any) -> None:
    # GIVEN queued messages, then a database that cannot be reached
    ids = make_messages(3)
    pipeline.evaluate()
    good_url = pipeline.conn.info.dsn
    pipeline.setenv(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere")

    # WHEN the deliver function is invoked
    mapping = pipeline.mapping()
    mapping.poll_once()

    # THEN it fails as a whole (a function error), nothing is POSTed and nothing deleted
    assert mapping.stats.handler_errors == 1
    assert "StoreUnavailableError" in mapping.stats.errors[0]
    assert pipeline.receiver.requests == []
    visible, in_flight = pipeline.queue_depth()
    assert visible + in_flight == 3

    # WHEN the database is back
    pipeline.setenv(DATABASE_URL=_url_from(pipeline, good_url))
    pipeline.drain(timeout=30)

    # THEN the retried batch is delivered
    assert sorted(r.webhook_id for r in pipeline.receiver.requests) == sorted(f"proactive-{i}" for i in ids)


def _url_from(pipeline: Any, _dsn: str) -> str:
    import os

    return os.environ["PD_TEST_DATABASE_URL"]


def test_fault12_connection_killed_mid_batch(pipeline: Any, make_messages: Any, database_url: str) -> None:
    # GIVEN a receiver that kills the deliverer's database connection while the batch is
    # being sent (between the claim and the outcome statement)
    ids = make_messages(6)
    pipeline.evaluate()
    killed = threading.Event()

    def kill_then_ok(_id: str, _n: int) -> Reply:
        if not killed.is_set():
            killed.set()
            with psycopg.connect(database_url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'proactive-delivery' AND pid <> pg_backend_pid()"
                )
        return Reply(200)

    pipeline.receiver.plan = kill_then_ok

    # WHEN the queue is drained
    mapping = pipeline.drain(timeout=30)

    # THEN the deliverer reconnected, recorded the batch, and nothing was sent twice
    assert killed.is_set()
    assert mapping.stats.handler_errors == 0
    assert sorted(r.webhook_id for r in pipeline.receiver.requests) == sorted(f"proactive-{i}" for i in ids)
    assert all(states(pipeline.conn)[i] == "sent" for i in ids)


def test_fault13_visibility_shorter_than_processing(pipeline: Any, make_message: Any) -> None:
    # GIVEN a queue whose visibility timeout (2 s) is shorter than the send (1.5 s receiver
    # + the rest), so SQS hands the same message to a second invocation mid-send
    message = make_message()
    pipeline.evaluate()
    pipeline.receiver.plan = lambda _id, _n: Reply(200, delay=3.0)
    pipeline.setenv(HTTP_READ_TIMEOUT_SECONDS="5")
    first = pipeline.receive(1)
    assert len(first) == 1
    mapping = pipeline.mapping()
    worker = threading.Thread(target=mapping.invoke, args=(first,))
    worker.start()

    # WHEN the message reappears and a second invocation takes it while the first is sending
    second: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while not second and time.monotonic() < deadline:
        second = pipeline.receive(1)
        time.sleep(0.1)
    assert second, "the message should have become visible again"
    assert worker.is_alive()
    mapping.invoke(second)
    worker.join(30)

    # THEN the lease in the database let only one of them POST
    assert len(_posts(pipeline, message)) == 1
    assert state_row(pipeline.conn, message)["state"] == "sent"


def test_fault14_deadline_mid_batch(pipeline: Any, make_messages: Any) -> None:
    # GIVEN 6 messages, 2 sends at a time, each send taking 1.5 s, a send budget of 3 s
    # (1 s connect + 2 s read) plus a 2 s margin, and only 7 s left in the invocation
    ids = make_messages(6)
    pipeline.evaluate()
    pipeline.setenv(SEND_CONCURRENCY="2")
    pipeline.receiver.plan = lambda _id, _n: Reply(200, delay=1.5)
    messages = pipeline.receive(10)
    assert len(messages) == 6
    mapping = pipeline.mapping(function_timeout=7)

    # WHEN the invocation runs
    started = time.monotonic()
    mapping.invoke(messages)
    elapsed = time.monotonic() - started

    # THEN it returned before its deadline, the finished sends are committed, the ones it
    # had no time for were never started and are reported failed
    assert elapsed < 7
    sent_now = [i for i in ids if states(pipeline.conn)[i] == "sent"]
    assert 2 <= len(sent_now) < 6
    assert len(pipeline.receiver.requests) == len(sent_now)
    assert mapping.stats.reported_failed == 6 - len(sent_now)
    assert all(states(pipeline.conn)[i] == "queued" for i in ids if i not in sent_now)

    # WHEN the released ones come back
    pipeline.drain(timeout=30, function_timeout=60)

    # THEN everything is sent, once
    assert sorted(r.webhook_id for r in pipeline.receiver.requests) == sorted(f"proactive-{i}" for i in ids)


def test_fault16_permanent_error_fails_at_once(pipeline: Any, make_message: Any) -> None:
    # GIVEN a receiver that rejects the message with a 400
    message = make_message()
    pipeline.receiver.plan = lambda _id, _n: Reply(400)

    # WHEN the pipeline runs
    pipeline.evaluate()
    mapping = pipeline.drain(timeout=30)

    # THEN one POST, the message is failed with the reason and status, acknowledged (no retry,
    # not in the DLQ)
    assert len(_posts(pipeline, message)) == 1
    row = state_row(pipeline.conn, message)
    assert row["state"] == "failed"
    assert row["reason"] == "rejected"
    assert "HTTP 400" in row["last_error"]
    assert mapping.stats.reported_failed == 0
    assert pipeline.dlq_bodies() == []
    assert platform_sent_at(pipeline.conn, message) is None


def test_fault18_attempts_exhausted(
    monkeypatch: Any, database_url: str, signing_secret: str, make_message: Any, capsys: Any
) -> None:
    from tests.pipeline import running_pipeline

    # Nothing here depends on how fast this machine is: the HTTP timeouts are far longer
    # than any local 503 can take (a timeout would be a different failure, with its own
    # last error and maybe no POST), the visibility timeout far longer than an invocation
    # (every redelivery is the one the deliverer asked for: backoff, or at once when the
    # budget is spent), and the drain waits for the outcome itself, the row failed and the
    # message in the DLQ, rather than for the queue to look empty (which it does, to a
    # loaded machine, while the message waits out its backoff), with a bound only
    # against a hang.
    with running_pipeline(
        monkeypatch, database_url, signing_secret, visibility_timeout=60, max_receive_count=3
    ) as pipeline:
        pipeline.setenv(HTTP_CONNECT_TIMEOUT_SECONDS="20", HTTP_READ_TIMEOUT_SECONDS="30")
        # GIVEN a receiver that always answers 503 and an attempt budget of 3
        message = make_message()
        pipeline.receiver.plan = lambda _id, _n: Reply(503)

        # WHEN the pipeline runs until the message failed and SQS dead-lettered it
        pipeline.evaluate()

        def failed_and_dead_lettered() -> bool:
            state = pipeline.conn.execute(
                "SELECT state FROM delivery.message_state WHERE source = 'proactive' AND source_id = %s",
                (message,),
            ).fetchone()
            dlq = pipeline.sqs.get_queue_attributes(
                QueueUrl=pipeline.queues.dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
            )["Attributes"]
            return state == ("failed",) and int(dlq["ApproximateNumberOfMessages"]) == 1

        pipeline.mapping(function_timeout=120).drain(timeout=600, until=failed_and_dead_lettered)

        # THEN three POSTs, the message is failed with the last error, and it is in the DLQ
        assert len(_posts(pipeline, message)) == 3
        row = state_row(pipeline.conn, message)
        assert row["state"] == "failed"
        assert row["reason"] == "attempts_exhausted"
        assert "server_error" in row["last_error"]
        assert [a["outcome"] for a in attempts(pipeline.conn, message)] == ["retry", "retry", "failed"]
        assert pipeline.dlq_bodies() == [
            json.dumps({"source": "proactive", "id": message}, separators=(",", ":"))
        ]
        # AND the failure metric the alarm watches was emitted
        metrics = emf_metrics(capsys.readouterr().out)
        assert metrics.get("MessagesFailed") == 1
        assert metrics.get("MessagesRetried") == 2


def test_emulated_lambda_context_has_a_shrinking_deadline() -> None:
    # The emulated context gives handlers a real, shrinking deadline.
    context = LambdaContext("DeliverFunction", 1.0)
    first = context.get_remaining_time_in_millis()
    time.sleep(0.05)
    assert 0 < context.get_remaining_time_in_millis() < first <= 1000
