"""Operations end to end: DLQ replay (docs/faults.md row 15), resend, metrics, logs, traces."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from typing import Any

import pytest

from proactive_delivery.adapters import telemetry, tracing
from proactive_delivery_tools.local.receiver import Reply
from proactive_delivery_tools.ops.queues import find_queues
from proactive_delivery_tools.ops.replay import ReplayOptions, replay_dlq
from tests.support.db import state_row
from tests.support.telemetry import captured_log_lines, emf_blobs


def _posts(pipeline: Any, message_id: int) -> list[Any]:
    return list(pipeline.receiver.posts_for(f"proactive-{message_id}"))


def _dead_letter_queued(pipeline: Any) -> int:
    """Move everything on the delivery queue to the DLQ while the rows stay queued: what a
    database outage leaves behind after maxReceiveCount failed receives."""
    moved = 0
    while got := pipeline.receive(10):
        for m in got:
            pipeline.sqs.send_message(QueueUrl=pipeline.queues.dlq_url, MessageBody=m["Body"])
            pipeline.sqs.delete_message(QueueUrl=pipeline.queues.queue_url, ReceiptHandle=m["ReceiptHandle"])
            moved += 1
    return moved


class _KillOnDelete:
    """An SQS client that dies (like a Ctrl-C) at the first DeleteMessageBatch: after the
    re-send, before the delete."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def delete_message_batch(self, **kwargs: Any) -> Any:
        raise KeyboardInterrupt


def test_fault15_dlq_replay_run_twice_and_killed_half_way(pipeline: Any, make_messages: Any) -> None:
    # GIVEN 6 messages dead-lettered while their rows were still queued
    ids = make_messages(6)
    pipeline.evaluate()
    assert _dead_letter_queued(pipeline) == 6
    # AND 2 of them delivered since by another path (a reconciliation run, a resend)
    pipeline.send_keys(ids[0], ids[1])
    pipeline.drain(timeout=30)
    assert all(len(_posts(pipeline, i)) == 1 for i in ids[:2])
    queues = find_queues(pipeline.sqs, pipeline.queues.queue_url, None)
    options = ReplayOptions(max_messages=100, rate=1000, visibility_timeout=1)

    # WHEN a replay is killed between re-send and delete
    with pytest.raises(KeyboardInterrupt):
        replay_dlq(_KillOnDelete(pipeline.sqs), queues, options)
    # AND the replay is then run twice more to completion
    first = replay_dlq(pipeline.sqs, queues, options)
    time.sleep(1.1)  # the killed run's batch becomes visible in the DLQ again
    second = replay_dlq(pipeline.sqs, queues, options)
    pipeline.drain(timeout=60)

    # THEN nothing is lost: the DLQ is empty and every message is sent
    assert first.moved + second.moved == 6
    assert pipeline.dlq_bodies() == []
    assert {state_row(pipeline.conn, i)["state"] for i in ids} == {"sent"}
    # AND nothing was sent twice, the two already delivered ones included
    assert [len(_posts(pipeline, i)) for i in ids] == [1] * 6


def test_resend_puts_failed_messages_back_through_the_same_gate(
    pipeline: Any, make_messages: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proactive_delivery_tools import cli

    # The operator's shell: where the delivery queue is (the functions get it from the stack).
    monkeypatch.setenv("DELIVERY_QUEUE_URL", pipeline.queues.queue_url)

    # GIVEN two messages that failed permanently during a provider outage, and one sent
    ids = make_messages(3)
    pipeline.receiver.plan = lambda msg_id, _n: Reply(400) if msg_id != f"proactive-{ids[2]}" else Reply(200)
    pipeline.evaluate()
    pipeline.drain(timeout=30)
    assert [state_row(pipeline.conn, i)["state"] for i in ids] == ["failed", "failed", "sent"]
    pipeline.receiver.plan = lambda _id, _n: Reply(200)

    # WHEN resend runs as a dry run
    assert (
        cli.main(
            ["--database-url", pipeline.conn.info.dsn, "resend", "--failed-since", "2000-01-01", "--dry-run"]
        )
        == 0
    )
    # THEN nothing changed
    assert [state_row(pipeline.conn, i)["state"] for i in ids] == ["failed", "failed", "sent"]

    # WHEN resend runs for real, twice, and the pipeline drains
    for _ in range(2):
        assert (
            cli.main(["--database-url", pipeline.conn.info.dsn, "resend", "--failed-since", "2000-01-01"])
            == 0
        )
    pipeline.drain(timeout=30)
    # THEN the failed ones are sent once each and the sent one was not touched
    assert [state_row(pipeline.conn, i)["state"] for i in ids] == ["sent"] * 3
    assert [len(_posts(pipeline, i)) for i in ids] == [2, 2, 1]  # one 400 + one success each
    assert [r.status for r in _posts(pipeline, ids[0])] == [400, 200]


# --------------------------------------------------------------------------- #
# Metrics, logs, traces                                                       #
# --------------------------------------------------------------------------- #


def _seed_mixed(pipeline: Any, make_contractor: Any, make_message: Any) -> dict[str, Any]:
    phones = [f"+1312555{170 + n:04d}" for n in range(3)]
    emails = [f"person{n}@contractors.example.org" for n in range(3)]
    contractors = [make_contractor(phone=p, email=e) for p, e in zip(phones, emails, strict=True)]
    no_phone = make_contractor(phone=None, email="nophone@contractors.example.org")
    emails.append("nophone@contractors.example.org")
    ids = [make_message(contractor_id=c) for c in contractors] + [make_message(contractor_id=no_phone)]
    rejected = f"proactive-{ids[1]}"
    pipeline.receiver.plan = lambda msg_id, _n: Reply(400) if msg_id == rejected else Reply(200)
    return {"phones": phones, "emails": emails, "ids": ids}


def test_e2e_logs_mask_contact_details_and_carry_the_message_id(
    pipeline: Any, make_contractor: Any, make_message: Any, caplog: Any
) -> None:
    # GIVEN contractors with phones and emails, one rejected by the provider, one without a phone
    seeded = _seed_mixed(pipeline, make_contractor, make_message)
    # WHEN the whole pipeline runs and every log line is captured
    with captured_log_lines() as stream:
        pipeline.evaluate()
        pipeline.drain(timeout=30)
    out = stream.getvalue()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"level"' in line]
    everything = out + "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
    assert len(lines) >= 4
    # THEN no seeded phone number or email address appears anywhere
    for secret in seeded["phones"] + seeded["emails"]:
        assert secret not in everything
        assert secret.lstrip("+") not in everything
    # AND every line about one message carries its identity as the correlation id (each
    # message's outcome line among them), and a line that names it otherwise agrees
    per_message = [line for line in lines if "correlation_id" in line]
    assert {line["correlation_id"] for line in per_message} >= {f"proactive-{i}" for i in seeded["ids"]}
    # (the one without a phone is held at queue time and never reaches deliver)
    outcomes = [line for line in per_message if line["message"] == "delivery outcome"]
    assert {line["correlation_id"] for line in outcomes} == {f"proactive-{i}" for i in seeded["ids"][:3]}
    assert all(line["correlation_id"] == line["message_id"] for line in per_message if "message_id" in line)


def test_e2e_metrics_are_all_registered_and_cover_outcomes_and_backlog(
    pipeline: Any, make_contractor: Any, make_message: Any, capsys: Any
) -> None:
    # GIVEN one delivered, one rejected and one skipped message, and one left unsent
    seeded = _seed_mixed(pipeline, make_contractor, make_message)
    # WHEN evaluate and deliver run, then evaluate again
    pipeline.evaluate()
    pipeline.drain(timeout=30)
    make_message(created_offset_seconds=-600)
    pipeline.evaluate()
    blobs = emf_blobs(capsys.readouterr().out)
    # THEN every metric printed is one the registry (and so the dashboard) knows
    printed: list[tuple[str, frozenset[str], dict[str, Any]]] = []
    for blob in blobs:
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == telemetry.NAMESPACE
            for dims in directive["Dimensions"]:
                for metric in directive["Metrics"]:
                    telemetry.check_registered(metric["Name"], [d for d in dims if d != "service"])
                    printed.append((metric["Name"], frozenset(dims), blob))
    names = {(n, d) for n, d, _ in printed}
    # AND the outcomes by class and reason, the latency and the backlog are there
    assert ("MessagesFailed", frozenset({"service", "reason_class"})) in names
    assert ("MessagesSkipped", frozenset({"service", "reason"})) in names
    assert ("DeliveryLatency", frozenset({"service", "source", "channel"})) in names
    backlog = [b for n, _, b in printed if n == "UnsentBacklog"]
    oldest = [b for n, _, b in printed if n == "OldestUnsentAgeSeconds"]
    # (after the first run the 3 queued are still open - the one without a phone was skipped
    # at queue time; after the second only the new one is)
    assert [_value(b["UnsentBacklog"]) for b in backlog] == [len(seeded["ids"]) - 1, 1]
    assert _value(oldest[-1]["OldestUnsentAgeSeconds"]) >= 600


def _value(v: Any) -> float:
    return float(v[0] if isinstance(v, list) else v)


def test_e2e_traces_cover_database_queue_and_channel(
    pipeline: Any, make_messages: Any, monkeypatch: Any
) -> None:
    opened: list[str] = []

    class _Recorder:
        @contextmanager
        def in_subsegment(self, name: str) -> Any:
            opened.append(name)

            class _Segment:
                def put_annotation(self, key: str, value: Any) -> None:
                    pass

            yield _Segment()

    class _Tracer:
        provider = _Recorder()

    monkeypatch.setattr(tracing, "tracer", _Tracer())
    # GIVEN a message WHEN it goes through the pipeline
    make_messages(1)
    pipeline.evaluate()
    pipeline.drain(timeout=30)
    # THEN the database, the queue and the channel call each had a subsegment
    assert {"postgres", "sqs.SendMessageBatch", "channel.sms"} <= set(opened)
