"""Operator commands against moto SQS (receive/re-send/delete), botocore's Stubber
(StartMessageMoveTask, which moto does not implement) and a real PostgreSQL."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from proactive_delivery_tools import cli
from proactive_delivery_tools.local.sqs import QueuePair, create_queues
from proactive_delivery_tools.ops.errors import OperationsError
from proactive_delivery_tools.ops.queues import Queues, find_queues
from proactive_delivery_tools.ops.replay import ReplayOptions, replay_dlq

DLQ_ARN = "arn:aws:sqs:us-east-1:123456789012:delivery-dlq"
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:delivery"
STUB_QUEUES = Queues(
    queue_url="https://sqs.example/123456789012/delivery",
    queue_arn=QUEUE_ARN,
    dlq_url="https://sqs.example/123456789012/delivery-dlq",
    dlq_arn=DLQ_ARN,
)


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, QueuePair]]:
    for key, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        client = boto3.client("sqs", region_name="us-east-1")
        queues = create_queues(client, visibility_timeout=30)
        monkeypatch.setenv("DELIVERY_QUEUE_URL", queues.queue_url)
        yield client, queues


def _fill_dlq(client: Any, queues: QueuePair, bodies: list[str]) -> None:
    for body in bodies:
        client.send_message(QueueUrl=queues.dlq_url, MessageBody=body)


def _bodies(client: Any, url: str) -> list[str]:
    out: list[str] = []
    while got := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30).get(
        "Messages", []
    ):
        out.extend(m["Body"] for m in got)
    return sorted(out)


def _key(source: str, i: int) -> str:
    return json.dumps({"source": source, "id": i}, separators=(",", ":"))


# --------------------------------------------------------------------------- #
# StartMessageMoveTask (Stubber)                                              #
# --------------------------------------------------------------------------- #


def _stubbed() -> tuple[Any, Stubber]:
    client = boto3.client(
        "sqs", region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    return client, Stubber(client)


def _task(status: str, moved: int) -> dict[str, Any]:
    return {
        "Results": [
            {
                "TaskHandle": "handle-1",
                "Status": status,
                "SourceArn": DLQ_ARN,
                "DestinationArn": QUEUE_ARN,
                "ApproximateNumberOfMessagesMoved": moved,
                "ApproximateNumberOfMessagesToMove": 5,
                "StartedTimestamp": 1,
            }
        ]
    }


def test_replay_without_filters_uses_a_move_task_and_follows_it_until_done() -> None:
    client, stub = _stubbed()
    # GIVEN no move task running, a DLQ with nothing malformed in it (read, then made visible
    # again), then a task that runs and completes
    stub.add_response("list_message_move_tasks", {"Results": []}, {"SourceArn": DLQ_ARN, "MaxResults": 1})
    stub.add_response(
        "receive_message",
        {"Messages": [{"MessageId": "m-1", "ReceiptHandle": "r-1", "Body": _key("proactive", 1)}]},
    )
    stub.add_response("receive_message", {"Messages": []})
    stub.add_response(
        "change_message_visibility_batch",
        {"Successful": [{"Id": "0"}], "Failed": []},
        {
            "QueueUrl": STUB_QUEUES.dlq_url,
            "Entries": [{"Id": "0", "ReceiptHandle": "r-1", "VisibilityTimeout": 0}],
        },
    )
    stub.add_response(
        "start_message_move_task",
        {"TaskHandle": "handle-1"},
        {"SourceArn": DLQ_ARN, "DestinationArn": QUEUE_ARN, "MaxNumberOfMessagesPerSecond": 20},
    )
    stub.add_response("list_message_move_tasks", _task("RUNNING", 2), {"SourceArn": DLQ_ARN, "MaxResults": 1})
    stub.add_response(
        "list_message_move_tasks", _task("COMPLETED", 5), {"SourceArn": DLQ_ARN, "MaxResults": 1}
    )
    stub.add_response("get_queue_attributes", {"Attributes": {"ApproximateNumberOfMessages": "0"}})
    sleeps: list[float] = []
    # WHEN the DLQ is replayed without filters
    with stub:
        report = replay_dlq(client, STUB_QUEUES, ReplayOptions(rate=20), sleep=sleeps.append)
        stub.assert_no_pending_responses()
    # THEN the task moved everything back to the delivery queue, polled until COMPLETED
    assert (report.method, report.task_status, report.moved, report.left) == (
        "StartMessageMoveTask",
        "COMPLETED",
        5,
        0,
    )
    assert sleeps == [2.0]


def test_replay_run_again_follows_the_running_task_instead_of_starting_another() -> None:
    client, stub = _stubbed()
    # GIVEN a move task still running from an earlier (killed) replay
    stub.add_response("list_message_move_tasks", _task("RUNNING", 1))
    stub.add_response("list_message_move_tasks", _task("COMPLETED", 5))
    stub.add_response("get_queue_attributes", {"Attributes": {"ApproximateNumberOfMessages": "0"}})
    # WHEN replay runs again THEN it follows that task (no StartMessageMoveTask stubbed)
    with stub:
        report = replay_dlq(client, STUB_QUEUES, ReplayOptions(), sleep=lambda _s: None)
        stub.assert_no_pending_responses()
    assert report.task_handle == "handle-1"
    assert report.moved == 5


def test_a_failed_move_task_is_one_clear_error() -> None:
    client, stub = _stubbed()
    stub.add_response("list_message_move_tasks", {"Results": []})
    stub.add_response("receive_message", {})  # an empty look: nothing malformed
    stub.add_response("start_message_move_task", {"TaskHandle": "h"})
    failed = _task("FAILED", 0)
    failed["Results"][0]["FailureReason"] = "AWS.SimpleQueueService.NonExistentQueue"
    stub.add_response("list_message_move_tasks", failed)
    with stub, pytest.raises(OperationsError, match=r"the move task failed: AWS\.SimpleQueueService"):
        replay_dlq(client, STUB_QUEUES, ReplayOptions(), sleep=lambda _s: None)


class _RefusingSqs(BaseHTTPRequestHandler):
    """An SQS endpoint that refuses every call the way AWS refuses bad credentials, and
    remembers which operations were asked for."""

    code = "ExpiredToken"
    calls: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.calls.append(self.headers.get("X-Amz-Target", "").rsplit(".", 1)[-1])
        body = json.dumps({"__type": f"com.amazon.coral.service#{self.code}", "message": "refused"}).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/x-amz-json-1.0")
        self.send_header("x-amzn-query-error", f"{self.code};Sender")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_RefusingSqs]]:
    handler = type("Handler", (_RefusingSqs,), {"calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    for key, value in {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{server.server_address[1]}",
        "DELIVERY_QUEUE_URL": STUB_QUEUES.queue_url or "",
    }.items():
        monkeypatch.setenv(key, value)
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("code", ["ExpiredToken", "InvalidClientTokenId", "AccessDenied"])
def test_expired_or_wrong_credentials_are_one_line_and_nothing_moves(
    code: str, refusing_sqs: type[_RefusingSqs], capsys: Any
) -> None:
    # GIVEN an SQS endpoint that refuses the credentials
    refusing_sqs.code = code
    # WHEN replay-dlq runs
    rc = cli.main(["replay-dlq"])
    # THEN one line on stderr naming the problem, a non-zero exit, and no other call made
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1
    assert f"AWS refused the credentials ({code})" in err[0]
    assert refusing_sqs.calls == ["GetQueueAttributes"]


# --------------------------------------------------------------------------- #
# receive / re-send / delete (moto)                                           #
# --------------------------------------------------------------------------- #


def test_replay_falls_back_to_receive_resend_delete_where_move_tasks_are_missing(sqs: Any) -> None:
    client, queues = sqs
    # GIVEN 12 messages in the DLQ and an endpoint without StartMessageMoveTask (moto)
    bodies = [_key("proactive", i) for i in range(1, 13)]
    _fill_dlq(client, queues, bodies)
    found = find_queues(client, queues.queue_url, None)
    # WHEN replayed without filters
    report = replay_dlq(client, found, ReplayOptions(rate=1000))
    # THEN every message is on the delivery queue and none is left in the DLQ
    assert report.method == "receive-resend-delete"
    assert report.moved == 12
    assert _bodies(client, queues.queue_url) == sorted(bodies)
    assert _bodies(client, queues.dlq_url) == []


def test_source_and_max_filters_leave_the_rest_in_the_dlq(sqs: Any) -> None:
    client, queues = sqs
    # GIVEN messages of two sources and a malformed one
    _fill_dlq(client, queues, [_key("proactive", i) for i in range(1, 6)] + [_key("followup", 1), "not json"])
    found = find_queues(client, queues.queue_url, None)
    # WHEN 3 proactive messages are replayed
    report = replay_dlq(client, found, ReplayOptions(source="proactive", max_messages=3, rate=1000))
    # THEN exactly 3 proactive ones moved and everything else is still in the DLQ
    assert report.moved == 3
    moved = _bodies(client, queues.queue_url)
    assert len(moved) == 3
    assert all(json.loads(b)["source"] == "proactive" for b in moved)
    left = _bodies(client, queues.dlq_url)
    assert len(left) == 4
    assert "not json" in left


def test_rate_limits_the_replay(sqs: Any) -> None:
    client, queues = sqs
    _fill_dlq(client, queues, [_key("proactive", i) for i in range(1, 21)])
    found = find_queues(client, queues.queue_url, None)
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    # GIVEN a rate of 5 per second WHEN 20 messages are replayed (filtered by --max)
    report = replay_dlq(
        client, found, ReplayOptions(max_messages=20, rate=5), sleep=sleep, clock=lambda: now[0]
    )
    # THEN it took at least 20 / 5 = 4 seconds of pacing
    assert report.moved == 20
    assert sum(slept) >= 4.0 - 1e-9


def test_dry_run_lists_and_changes_nothing(sqs: Any, capsys: Any) -> None:
    client, queues = sqs
    _fill_dlq(client, queues, [_key("proactive", 1), _key("proactive", 2), "{}"])
    # WHEN replay-dlq --dry-run runs
    assert cli.main(["replay-dlq", "--dry-run"]) == 0
    out = capsys.readouterr().out
    # THEN it lists each message, the malformed one as staying, and moves none
    assert "proactive-1" in out and "proactive-2" in out and "(malformed: stays in the DLQ)" in out
    assert "would move 2 message(s)" in out and "1 malformed would stay" in out
    assert _bodies(client, queues.queue_url) == []
    assert len(_bodies(client, queues.dlq_url)) == 3


def test_dry_run_with_include_malformed_lists_them_as_moving(sqs: Any, capsys: Any) -> None:
    client, queues = sqs
    _fill_dlq(client, queues, [_key("proactive", 1), "{}"])
    assert cli.main(["replay-dlq", "--dry-run", "--include-malformed"]) == 0
    out = capsys.readouterr().out
    assert "(malformed)  receives=" in out and "would move 2 message(s)" in out and "stay" not in out
    assert len(_bodies(client, queues.dlq_url)) == 2


# Bodies the deliverer cannot read as a message key (MessageKey.from_body): each is
# dead-lettered again if replayed.
MALFORMED = ["not json", '{"source": "legacy", "id": 3}', '{"source": "proactive", "id": 0}']


def test_a_plain_replay_leaves_malformed_messages_in_the_dlq(sqs: Any, capsys: Any) -> None:
    client, queues = sqs
    # GIVEN 4 messages the deliverer can read and 3 it cannot, on an endpoint without move tasks
    good = [_key("proactive", i) for i in range(1, 4)] + [_key("followup", 1)]
    _fill_dlq(client, queues, good + MALFORMED)
    # WHEN replay-dlq runs without options
    assert cli.main(["replay-dlq", "--rate", "1000"]) == 0
    out = capsys.readouterr().out
    # THEN the readable ones moved and the malformed ones are still in the DLQ, said so
    assert "moved 4 message(s) with receive-resend-delete; 3 left in the DLQ; 3 malformed kept" in out
    assert _bodies(client, queues.queue_url) == sorted(good)
    assert _bodies(client, queues.dlq_url) == sorted(MALFORMED)


def test_include_malformed_moves_them_too(sqs: Any, capsys: Any) -> None:
    client, queues = sqs
    _fill_dlq(client, queues, [_key("proactive", 1), *MALFORMED])
    assert cli.main(["replay-dlq", "--rate", "1000", "--include-malformed", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["moved"], report["left_in_dlq"], report["malformed_kept"]) == (4, 0, [])
    assert _bodies(client, queues.queue_url) == sorted([_key("proactive", 1), *MALFORMED])


class _MoveTasksOverMoto:
    """An SQS client with message move tasks, over moto (which has none): a task moves
    every message of the DLQ at once, malformed or not, as SQS's does."""

    def __init__(self, client: Any, queues: QueuePair) -> None:
        self._client = client
        self._queues = queues
        self.started: list[dict[str, Any]] = []
        self._tasks: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def list_message_move_tasks(self, **_: Any) -> Any:
        return {"Results": self._tasks[-1:]}

    def start_message_move_task(self, **kwargs: Any) -> Any:
        self.started.append(kwargs)
        moved = 0
        while got := self._client.receive_message(
            QueueUrl=self._queues.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=30
        ).get("Messages", []):
            for m in got:
                self._client.send_message(QueueUrl=self._queues.queue_url, MessageBody=m["Body"])
                self._client.delete_message(QueueUrl=self._queues.dlq_url, ReceiptHandle=m["ReceiptHandle"])
                moved += 1
        self._tasks.append(
            {
                "TaskHandle": f"task-{len(self._tasks)}",
                "Status": "COMPLETED",
                "ApproximateNumberOfMessagesMoved": moved,
            }
        )
        return {"TaskHandle": self._tasks[-1]["TaskHandle"]}


@pytest.mark.parametrize(
    ("bodies", "include", "task"),
    [
        ([_key("proactive", i) for i in range(1, 6)], False, True),
        ([_key("proactive", 1), _key("proactive", 2), *MALFORMED], False, False),
        ([_key("proactive", 1), _key("proactive", 2), *MALFORMED], True, True),
    ],
    ids=["none-malformed", "malformed-kept", "malformed-included"],
)
def test_a_move_task_is_started_only_when_it_would_not_move_malformed_messages_unasked(
    sqs: Any, bodies: list[str], include: bool, task: bool
) -> None:
    client, queues = sqs
    # GIVEN an endpoint with move tasks and a DLQ with or without malformed messages
    _fill_dlq(client, queues, bodies)
    with_tasks = _MoveTasksOverMoto(client, queues)
    found = find_queues(with_tasks, queues.queue_url, None)
    # WHEN replayed without filters
    report = replay_dlq(with_tasks, found, ReplayOptions(rate=1000, include_malformed=include))
    # THEN a task moved everything when nothing malformed was there or it was asked for;
    # otherwise the manual path moved the rest and the malformed ones stayed
    kept = [] if include else [b for b in bodies if b in MALFORMED]
    assert (len(with_tasks.started) == 1) is task
    assert report.method == ("StartMessageMoveTask" if task else "receive-resend-delete")
    assert report.moved == len(bodies) - len(kept)
    assert _bodies(client, queues.queue_url) == sorted(b for b in bodies if b not in kept)
    assert _bodies(client, queues.dlq_url) == sorted(kept)
    assert len(report.malformed_kept) == len(kept)


def test_replay_of_a_dlq_that_does_not_exist_is_one_line(sqs: Any, capsys: Any) -> None:
    client, queues = sqs
    _fill_dlq(client, queues, [_key("proactive", 1)])
    # WHEN --dlq-url names a queue that does not exist
    rc = cli.main(["replay-dlq", "--dlq-url", queues.dlq_url + "-missing"])
    # THEN one clear line, exit 2, and the real DLQ still holds its message
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1
    assert "does not exist" in err[0]
    assert _bodies(client, queues.dlq_url) == [_key("proactive", 1)]


# --------------------------------------------------------------------------- #
# status and resend (PostgreSQL)                                              #
# --------------------------------------------------------------------------- #


def test_status_reports_backlog_failures_queues_and_last_run(
    sqs: Any, database_url: str, conn: Any, make_messages: Any, capsys: Any
) -> None:
    client, queues = sqs
    # GIVEN 3 unsent messages (one failed, one queued), a DLQ message and an evaluate run
    ids = make_messages(3)
    conn.execute(
        "INSERT INTO delivery.message_state (source, source_id, state, reason) VALUES "
        "('proactive', %s, 'failed', 'attempts_exhausted'), ('proactive', %s, 'queued', NULL)",
        (ids[0], ids[1]),
    )
    conn.execute(
        "INSERT INTO delivery.evaluate_run (sources, enqueued, stopped_early, report) "
        "VALUES ('{proactive}', 2, false, '{}')"
    )
    _fill_dlq(client, queues, [_key("proactive", 99)])
    # WHEN status --json runs
    assert cli.main(["--database-url", database_url, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    # THEN it reports what the on-call person needs
    assert status["backlog"]["proactive"]["unsent"] == 2  # the failed one is not backlog
    assert status["states"]["proactive"] == {"failed": 1, "queued": 1}
    assert status["failures_24h"] == [{"source": "proactive", "reason": "attempts_exhausted", "messages": 1}]
    assert status["queues"]["dlq"]["visible"] == 1
    assert status["last_evaluate_run"]["enqueued"] == 2
    # AND the table form renders the same facts
    assert cli.main(["--database-url", database_url, "status"]) == 0
    table = capsys.readouterr().out
    assert "attempts_exhausted" in table and "Last evaluate run by source" in table


def test_status_shows_the_last_run_of_each_source_not_only_the_latest(
    database_url: str, conn: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DELIVERY_QUEUE_URL", raising=False)
    # GIVEN an hourly proactive run 40 minutes ago, then follow-up runs every 5 minutes
    # since (the newest 2 minutes ago), and an older run of both sources
    conn.execute(
        "INSERT INTO delivery.evaluate_run (finished_at, sources, enqueued, stopped_early, report) VALUES"
        " (now() - interval '3 hours', '{proactive,followup}', 9, false, '{}'),"
        " (now() - interval '40 minutes', '{proactive}', 7, true, '{}')"
    )
    for minutes in range(37, 1, -5):
        conn.execute(
            "INSERT INTO delivery.evaluate_run (finished_at, sources, enqueued, stopped_early, report)"
            " VALUES (now() - make_interval(mins => %s), '{followup}', %s, false, '{}')",
            (minutes, minutes),
        )
    # AND runs of both sources that started a minute ago and have not finished (yet, or ever)
    conn.execute(
        "INSERT INTO delivery.evaluate_run (started_at, deadline_at, finished_at, sources, enqueued,"
        " stopped_early, report) VALUES (now() - interval '1 minute', now() + interval '4 minutes', NULL,"
        " '{proactive}', 0, false, '{}'), (now() - interval '1 minute', now() + interval '4 minutes', NULL,"
        " '{followup}', 0, false, '{}')"
    )
    # WHEN status --json runs
    assert cli.main(["--database-url", database_url, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    # THEN the latest finished run of all is the follow-up one, and each source has its own
    # last finished run
    assert status["last_evaluate_run"]["sources"] == ["followup"]
    runs = status["last_evaluate_run_by_source"]
    assert list(runs) == ["proactive", "followup"]
    assert (runs["proactive"]["enqueued"], runs["proactive"]["stopped_early"]) == (7, True)
    assert 40 * 60 - 5 <= runs["proactive"]["age_seconds"] < 41 * 60
    assert (runs["followup"]["enqueued"], runs["followup"]["sources"]) == (2, ["followup"])
    # AND the table form has one line per source, the proactive one first
    assert cli.main(["--database-url", database_url, "status"]) == 0
    table = capsys.readouterr().out.splitlines()
    at = table.index("Last evaluate run by source")
    proactive, followup = table[at + 1], table[at + 2]
    assert proactive.split()[0] == "proactive" and "(40m ago): enqueued 7, stopped early" in proactive
    assert followup.split()[0] == "followup" and "enqueued 2" in followup and "stopped" not in followup


def test_status_says_never_for_a_source_no_run_has_worked_and_names_a_shared_run(
    database_url: str, conn: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DELIVERY_QUEUE_URL", raising=False)
    # GIVEN no run at all THEN every source reads never
    assert cli.main(["--database-url", database_url, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["last_evaluate_run_by_source"] == {"proactive": None, "followup": None}
    assert cli.main(["--database-url", database_url, "status"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  proactive +never$", out, re.MULTILINE), out
    # GIVEN one run of both sources (an invocation without a selector) THEN both lines name it
    conn.execute(
        "INSERT INTO delivery.evaluate_run (sources, enqueued, stopped_early, report)"
        " VALUES ('{proactive,followup}', 4, false, '{}')"
    )
    assert cli.main(["--database-url", database_url, "status"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  followup .*enqueued 4 \(a run of proactive,followup\)$", out, re.MULTILINE), out


def test_status_warns_when_another_sender_is_still_running(
    sqs: Any, database_url: str, conn: Any, make_messages: Any, capsys: Any
) -> None:
    # GIVEN three platform rows marked sent in the last 24 h: one by this pipeline, two by the
    # platform's own sender (sent_at set, our state not 'sent'); and one sent two days ago
    ours, theirs, also_theirs, old = make_messages(4)
    conn.execute(
        "UPDATE ai_proactive_messages SET sent_at = (now() AT TIME ZONE 'UTC') - interval '1 hour'"
        " WHERE id IN (%s, %s, %s)",
        (ours, theirs, also_theirs),
    )
    conn.execute(
        "UPDATE ai_proactive_messages SET sent_at = (now() AT TIME ZONE 'UTC') - interval '2 days'"
        " WHERE id = %s",
        (old,),
    )
    conn.execute(
        "INSERT INTO delivery.message_state (source, source_id, state, sent_at)"
        " VALUES ('proactive', %s, 'sent', now() - interval '1 hour')",
        (ours,),
    )
    # WHEN status runs
    assert cli.main(["--database-url", database_url, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    # THEN it counts the two rows someone else sent, not ours, not the old one
    assert status["sent_by_others_24h"]["proactive"]["messages"] == 2
    assert status["sent_by_others_24h"]["followup"]["messages"] == 0
    # AND the table form leads with a one-line warning
    assert cli.main(["--database-url", database_url, "status"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("WARNING: another sender is still running") and "2 proactive" in first


def test_status_has_no_warning_when_only_this_pipeline_sends(
    sqs: Any, database_url: str, make_messages: Any, capsys: Any
) -> None:
    make_messages(2)
    assert cli.main(["--database-url", database_url, "status"]) == 0
    assert "WARNING" not in capsys.readouterr().out


def test_resend_with_a_bad_timestamp_is_one_line_and_changes_nothing(
    sqs: Any, database_url: str, conn: Any, make_messages: Any, capsys: Any
) -> None:
    [message] = make_messages(1)
    conn.execute(
        "INSERT INTO delivery.message_state (source, source_id, state, reason) "
        "VALUES ('proactive', %s, 'failed', 'rejected')",
        (message,),
    )
    # WHEN --failed-since is not a timestamp
    rc = cli.main(["--database-url", database_url, "resend", "--failed-since", "yesterday-ish"])
    # THEN one clear line, exit 2, and the row is still failed
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1
    assert "is not a timestamp" in err[0]
    assert conn.execute("SELECT state FROM delivery.message_state").fetchone() == ("failed",)


def test_resend_filters_by_reason_and_time(
    sqs: Any, database_url: str, conn: Any, make_messages: Any, capsys: Any
) -> None:
    client, queues = sqs
    a, b, c = make_messages(3)
    conn.execute(
        "INSERT INTO delivery.message_state (source, source_id, state, reason, attempts, updated_at) VALUES "
        "('proactive', %s, 'failed', 'attempts_exhausted', 5, now()),"
        "('proactive', %s, 'failed', 'rejected', 1, now()),"
        "('proactive', %s, 'failed', 'attempts_exhausted', 5, now() - interval '3 days')",
        (a, b, c),
    )
    since = conn.execute("SELECT (now() - interval '1 day')::text").fetchone()[0]
    # WHEN resend runs for exhausted failures of the last day
    rc = cli.main(
        ["--database-url", database_url, "resend", "--failed-since", since, "--reason", "attempts_exhausted"]
    )
    # THEN only that message is queued again, with a fresh attempt budget, and on the queue
    assert rc == 0
    rows = dict(conn.execute("SELECT source_id, state FROM delivery.message_state").fetchall())
    assert rows == {a: "queued", b: "failed", c: "failed"}
    assert conn.execute(
        "SELECT attempts FROM delivery.message_state WHERE source_id = %s", (a,)
    ).fetchone() == (0,)
    assert _bodies(client, queues.queue_url) == [_key("proactive", a)]


def test_backlog_leaves_out_messages_held_until_later_but_counts_them_when_their_time_comes(
    database_url: str, conn: Any, make_messages: Any
) -> None:
    from proactive_delivery.adapters.postgres.database import Database
    from proactive_delivery_tools.ops.store import OperationsStore

    # GIVEN four due messages: one deferred until tomorrow (quiet hours), one whose deferral
    # ended a minute ago, one queued and one evaluate has not seen yet
    later, ended, queued, _unseen = make_messages(4)
    conn.execute(
        "INSERT INTO delivery.message_state (source, source_id, state, reason, next_attempt_at) VALUES "
        "('proactive', %s, 'deferred', 'quiet_hours', now() + interval '1 day'),"
        "('proactive', %s, 'deferred', 'quiet_hours', now() - interval '1 minute'),"
        "('proactive', %s, 'queued', NULL, now())",
        (later, ended, queued),
    )
    db = Database(lambda: database_url)
    try:
        # WHEN the backlog gauge is read
        backlog = OperationsStore(db).unsent_backlog("proactive")
    finally:
        db.close()
    # THEN the one held until tomorrow is not waiting on the pipeline; the other three are
    assert backlog.count == 3


# --------------------------------------------------------------------------- #
# Move tasks failing: the manual path takes over                              #
# --------------------------------------------------------------------------- #


class _MoveTasksFail:
    """An SQS client whose message move task calls answer HTTP 500, the rest moto's."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def _fail(self, operation: str) -> Any:
        from botocore.exceptions import ClientError

        self.calls.append(operation)
        raise ClientError(
            {
                "Error": {"Code": "InternalFailure", "Message": ""},
                "ResponseMetadata": {"HTTPStatusCode": 500},
            },
            operation,
        )

    def list_message_move_tasks(self, **_: Any) -> Any:
        return self._fail("ListMessageMoveTasks")

    def start_message_move_task(self, **_: Any) -> Any:
        return self._fail("StartMessageMoveTask")


def test_replay_falls_back_when_list_message_move_tasks_answers_500_in_process(sqs: Any) -> None:
    client, queues = sqs
    # GIVEN 5 messages in the DLQ and move task calls that answer HTTP 500
    bodies = [_key("proactive", i) for i in range(1, 6)]
    _fill_dlq(client, queues, bodies)
    failing = _MoveTasksFail(client)
    found = find_queues(failing, queues.queue_url, None)
    # WHEN replayed without filters
    report = replay_dlq(failing, found, ReplayOptions(rate=1000))
    # THEN ListMessageMoveTasks (asked first) failed, no task was started, and the manual
    # path moved everything
    assert failing.calls == ["ListMessageMoveTasks"]
    assert (report.method, report.moved, report.left) == ("receive-resend-delete", 5, 0)
    assert _bodies(client, queues.queue_url) == sorted(bodies)


def test_replay_against_motos_server_falls_back_and_moves_everything(
    monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from proactive_delivery_tools.local.sqs import LocalSqsServer

    # GIVEN moto's server on 127.0.0.1 (it answers ListMessageMoveTasks with a 500 and has no
    # StartMessageMoveTask) and 15 messages in its DLQ
    server = LocalSqsServer().start()
    try:
        for key, value in {
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_ENDPOINT_URL_SQS": server.endpoint,
        }.items():
            monkeypatch.setenv(key, value)
        client = server.client()
        queues = create_queues(client, visibility_timeout=30)
        bodies = [_key("proactive", i) for i in range(1, 16)]
        _fill_dlq(client, queues, bodies)
        monkeypatch.setenv("DELIVERY_QUEUE_URL", queues.queue_url)
        # WHEN the operator runs replay-dlq without filters
        rc = cli.main(["replay-dlq", "--rate", "1000"])
        out = capsys.readouterr().out
        # THEN it moved every message the manual way and the DLQ is empty
        assert rc == 0
        assert "moved 15 message(s) with receive-resend-delete; 0 left in the DLQ" in out
        assert _bodies(client, queues.queue_url) == sorted(bodies)
        assert _bodies(client, queues.dlq_url) == []
    finally:
        server.stop()


def test_a_task_that_was_started_but_cannot_be_followed_is_one_clear_error() -> None:
    client, stub = _stubbed()
    # GIVEN no task yet, StartMessageMoveTask accepted, then ListMessageMoveTasks failing
    stub.add_response("list_message_move_tasks", {"Results": []})
    stub.add_response("receive_message", {})  # an empty look: nothing malformed
    stub.add_response("start_message_move_task", {"TaskHandle": "h-1"})
    stub.add_client_error(
        "list_message_move_tasks", service_error_code="InternalFailure", http_status_code=500
    )
    # WHEN replayed THEN one error that says the task runs and how to follow it
    with stub, pytest.raises(OperationsError, match="follow the task in the SQS console"):
        replay_dlq(client, STUB_QUEUES, ReplayOptions(), sleep=lambda _s: None)
