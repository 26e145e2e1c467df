"""The inbound processor without a database: what the use case hands the statement
(app/inbound_apply.py) and what the SQS edge does with each record (adapters/inbound_batch.py):
a poison record goes to the DLQ with its reason and one log line naming no value, a receipt
that waits comes back later, a database that cannot be reached fails the batch as a whole."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from proactive_delivery.adapters.inbound_batch import InboundBatch
from proactive_delivery.app.inbound_apply import (
    RECEIPT_WAIT_SECONDS,
    Applied,
    ApplyOptions,
    Arrival,
    InboundApplier,
    InboundRow,
)
from proactive_delivery.core.errors import StoreUnavailableError
from proactive_delivery.core.phone_hash import PhoneHasher
from proactive_delivery_tools.fakes import InMemoryQueue
from tests.support.processor import dnd, ghl_status, ses_body, sms, sqs_event, twilio_sid, twilio_status

HASH = PhoneHasher(b"unit-test-phone-hash-key-32bytes", "US")
PHONE = "+13125550142"
TEXT = "Thursday at 4 works, see you at the Oak St job"


@dataclass
class RecordingStore:
    """Answers every row with `outcome` (or what `by_kind` says), and keeps the rows."""

    outcome: str = "recorded"
    by_kind: Mapping[str, str] = field(default_factory=dict)
    rows: list[InboundRow] = field(default_factory=list)
    fail: bool = False

    def apply_inbound(self, rows: Sequence[InboundRow], options: ApplyOptions) -> dict[int, Applied]:
        if self.fail:
            raise StoreUnavailableError("cannot connect to PostgreSQL at 127.0.0.1:1: connection refused")
        self.rows.extend(rows)
        return {r.ord: Applied(self.by_kind.get(r.kind, self.outcome), None) for r in rows}


def applier(store: RecordingStore) -> InboundApplier:
    return InboundApplier(store, HASH, ApplyOptions())


def test_each_event_becomes_the_row_the_statement_needs() -> None:
    store = RecordingStore()
    sid = twilio_sid()
    ghl_at = datetime(2026, 12, 1, 21, 0, tzinfo=UTC)
    arrivals = [
        Arrival(sms("(312) 555-0142", TEXT)),
        Arrival(sms(PHONE, "Stop.", sid=sid)),
        Arrival(sms(PHONE, "Yes", opt_out_type="START")),
        Arrival(sms(PHONE, "help")),
        Arrival(sms(PHONE, "Sure", ghl=True, at=ghl_at)),
        Arrival(dnd(PHONE, "permanent")),
        Arrival(dnd(PHONE, "inactive")),
        Arrival(twilio_status(sid, "undelivered", "30006")),
        Arrival(ghl_status("followup-9", "delivered")),
    ]
    applier(store).apply(arrivals)
    reply, stop, yes, help_, ghl, dnd_on, dnd_off, receipt, by_id = store.rows
    # An SMS: the sender as the keyed hash of its E.164 form, what it asks for, the text only
    # when it is a reply (to be written on the platform's row it answers)
    assert reply.phone_hash == HASH(PHONE) and (reply.action, reply.is_reply, reply.body) == (
        "reply",
        True,
        TEXT,
    )
    assert (stop.consent, stop.consent_source, stop.keyword, stop.body, stop.is_reply) == (
        "out",
        "keyword",
        "STOP",
        None,
        False,
    )
    assert (yes.consent, yes.is_reply, yes.body) == ("in", True, "Yes")
    assert (help_.action, help_.consent, help_.body) == ("help", None, None)
    # GHL's own time is when it happened
    assert ghl.occurred_at == ghl_at and ghl.provider == "ghl"
    assert (dnd_on.consent, dnd_on.consent_source, dnd_off.consent) == ("out", "dnd", "in")
    # A receipt: by the provider's reference or by our identity, with what its code means
    assert (receipt.provider_ref, receipt.status, receipt.receipt_effect, receipt.effect_reason) == (
        sid,
        "undelivered",
        "suppress",
        "landline_or_unreachable_carrier",
    )
    assert (by_id.message_source, by_id.message_source_id, by_id.provider_ref) == ("followup", 9, None)
    # AND nothing that is a number or a text goes anywhere but where it is needed
    assert [r.ord for r in store.rows] == list(range(9))
    assert all(PHONE not in json.dumps([r.identity, r.keyword, r.action]) for r in store.rows)


def test_an_ses_event_is_a_receipt_of_the_email() -> None:
    from proactive_delivery.adapters.inbound_batch import parse_body

    store = RecordingStore()
    bounce = parse_body(
        ses_body(
            "Bounce", message_id="proactive-5", bounce={"bounceType": "Permanent", "bounceSubType": "General"}
        )
    )
    applier(store).apply([Arrival(bounce)])
    [row] = store.rows
    assert (row.kind, row.provider, row.message_source, row.message_source_id) == (
        "message.status",
        "ses",
        "proactive",
        5,
    )
    assert (row.status, row.receipt_effect, row.effect_reason) == ("undelivered", "suppress", "bounced")


def test_a_receipt_may_wait_only_while_young_and_seldom_received() -> None:
    store = RecordingStore()
    now = datetime.now(UTC)
    young = twilio_status(twilio_sid(), "delivered")
    old = twilio_status(twilio_sid(), "delivered")
    old = type(old)(old.id, now - timedelta(minutes=11), old.data)
    applier(store).apply([Arrival(young, 1), Arrival(young, 5), Arrival(old, 1)])
    assert [r.may_wait for r in store.rows] == [True, False, False]


# --- the SQS edge ---------------------------------------------------------------------------
@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="proactive-delivery")
    return caplog


POISON = [
    ("not json", "invalid_json"),
    ('{"v": 1, "id": "twilio:SMx", "kind": "sms.received"}', "invalid_envelope"),
    (
        json.dumps({"v": 2, "id": "events:x", "kind": "sms.received", "received_at": "x", "data": {}}),
        "unsupported_version",
    ),
    (
        json.dumps(
            {
                "v": 1,
                "id": "events:x",
                "kind": "sms.received",
                "received_at": "2026-12-01T21:00:00Z",
                "data": {"phone": PHONE, "text": TEXT, "provider": "carrier-pigeon"},
            }
        ),
        "invalid_data",
    ),
    (json.dumps({"source": "aws.ses", "id": "e1", "detail": {"eventType": "Open"}}), "invalid_ses_event"),
]


def test_poison_records_go_to_the_dlq_with_their_reason_and_the_rest_are_applied(
    captured: pytest.LogCaptureFixture,
) -> None:
    # GIVEN a batch of five poison records among three good events
    store = RecordingStore()
    queue = InMemoryQueue()
    good = [sms(PHONE, TEXT), twilio_status(twilio_sid(), "delivered"), dnd(PHONE, "active")]
    event = sqs_event([*good[:2], *(body for body, _ in POISON), good[2]])
    # WHEN the edge handles it
    response, report = InboundBatch(queue).handle(event, applier(store).apply)
    # THEN the good ones were applied, in one call
    assert len(store.rows) == 3
    # AND each poison record is on the DLQ with its reason and acknowledged (not reported)
    assert queue.dead_letters == [(body, reason) for body, reason in POISON]
    assert response == {"batchItemFailures": []}
    assert (report.malformed, report.dead_lettered) == (5, 5)
    # AND each got exactly one error line naming its reason and never a number or a text
    errors = [r for r in captured.records if r.levelname == "ERROR"]
    assert [r.__dict__["reason"] for r in errors] == [reason for _, reason in POISON]
    for record in captured.records:
        raw = json.dumps(record.__dict__, default=str)
        assert PHONE not in raw and TEXT not in raw and "3125550142" not in raw


def test_without_a_dlq_to_write_to_a_poison_record_is_reported_failed_for_the_redrive() -> None:
    event = sqs_event(["not json"])
    response, _ = InboundBatch(None).handle(event, applier(RecordingStore()).apply)
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}


def test_a_receipt_that_waits_comes_back_after_the_wait() -> None:
    store = RecordingStore(by_kind={"message.status": "wait", "sms.received": "linked"})
    queue = InMemoryQueue()
    event = sqs_event([twilio_status(twilio_sid(), "delivered"), sms(PHONE, TEXT)])
    response, report = InboundBatch(queue).handle(event, applier(store).apply)
    waiting = event["Records"][0]
    assert response == {"batchItemFailures": [{"itemIdentifier": waiting["messageId"]}]}
    assert queue.visibility == [(waiting["receiptHandle"], RECEIPT_WAIT_SECONDS)]
    assert report.waiting == 1


def test_a_database_that_cannot_be_reached_fails_the_whole_batch_and_writes_no_dead_letter(
    captured: pytest.LogCaptureFixture,
) -> None:
    queue = InMemoryQueue()
    event = sqs_event([sms(PHONE, TEXT), "not json"])
    with pytest.raises(StoreUnavailableError):
        InboundBatch(queue).handle(event, applier(RecordingStore(fail=True)).apply)
    # Nothing acknowledged and nothing dead-lettered: the whole batch comes back as it was
    assert queue.dead_letters == [] and queue.visibility == []
    # AND one line says why (besides the malformed record's own), naming no value
    [line] = [r for r in captured.records if r.__dict__.get("reason") == "database_unavailable"]
    assert "connection refused" in line.__dict__["error"] and line.__dict__["records"] == 2
    assert all(PHONE not in json.dumps(r.__dict__, default=str) for r in captured.records)


def test_an_event_that_is_not_an_sqs_event_is_one_line_and_nothing_done(
    captured: pytest.LogCaptureFixture,
) -> None:
    store = RecordingStore()
    response, report = InboundBatch(None).handle({"hello": "world"}, applier(store).apply)
    assert response == {"batchItemFailures": []} and store.rows == [] and report.malformed == 1
    assert [r.__dict__["reason"] for r in captured.records if r.levelname == "ERROR"] == ["invalid_event"]


def test_metrics_count_what_the_statement_did(capsys: Any) -> None:
    from aws_lambda_powertools import Metrics

    from proactive_delivery.adapters import telemetry

    store = RecordingStore(by_kind={"message.status": "recorded", "sms.received": "linked"})
    event = sqs_event([twilio_status(twilio_sid(), "undelivered", "30006"), sms(PHONE, TEXT)])
    _, report = InboundBatch(None).handle(event, applier(store).apply)
    metrics = Metrics(namespace=telemetry.NAMESPACE, service="proactive-delivery")
    telemetry.emit_inbound_processor(metrics, report)
    metrics.flush_metrics()
    blobs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for blob in blobs:
        directive = blob["_aws"]["CloudWatchMetrics"][0]
        dims = tuple(sorted((d, str(blob[d])) for d in directive["Dimensions"][0] if d != "service"))
        for metric in directive["Metrics"]:
            value = blob[metric["Name"]]
            values[(metric["Name"], dims)] = sum(value) if isinstance(value, list) else value
    assert values[("InboundEventsApplied", ())] == 2
    assert values[("RepliesLinked", ())] == 1
    assert values[("DeliveryReceipts", (("status", "undelivered"),))] == 1
    assert values[("ChannelsSuppressed", (("reason", "landline_or_unreachable_carrier"),))] == 1
    assert values[("InboundEventsApplied", (("kind", "sms.received"), ("outcome", "linked")))] == 1
