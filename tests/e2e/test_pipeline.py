"""The happy path, end to end: evaluate -> SQS (moto) -> event source mapping -> deliver ->
signed webhook -> sent_at."""

from __future__ import annotations

from typing import Any

import pytest

from proactive_delivery_tools.local.esm import LambdaContext
from tests.support.db import attempts, platform_sent_at, state_row, states


def test_pipeline_delivers_every_due_message_once(
    pipeline: Any, make_messages: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN 25 due messages and one for a contractor without a phone
    ids = make_messages(25)
    no_phone = make_message(contractor_id=make_contractor(phone=None))

    # WHEN evaluate runs and the event source mapping drains the queue
    report = pipeline.evaluate()
    mapping = pipeline.drain()

    # THEN each message was POSTed exactly once, signed, and is sent in both tables (the one
    # without a phone is held back by the queue-time policy and never put on the queue)
    assert report["enqueued"] == 25
    assert report["sources"]["proactive"]["held"] == 1
    assert mapping.stats.handler_errors == 0
    posted = [r.webhook_id for r in pipeline.receiver.accepted()]
    assert sorted(posted) == sorted(f"proactive-{i}" for i in ids)
    assert pipeline.receiver.rejected_signatures == 0
    final = states(pipeline.conn)
    assert all(final[i] == "sent" for i in ids)
    assert all(platform_sent_at(pipeline.conn, i) is not None for i in ids)
    # AND the contractor without a phone is skipped with the reason, never POSTed
    assert final[no_phone] == "skipped"
    assert state_row(pipeline.conn, no_phone)["reason"] == "no_contact"
    assert platform_sent_at(pipeline.conn, no_phone) is None
    # AND every send left an attempt row with status and latency
    log = attempts(pipeline.conn, ids[0])
    assert [(a["outcome"], a["http_status"]) for a in log] == [("delivered", 200)]
    assert log[0]["latency_ms"] is not None


def test_payload_is_the_live_workflows_body_with_the_identity(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN one message, its contractor's phone stored as the platform stores phones
    contractor = make_contractor(first_name="Jade", phone="(312) 555-0142")
    message = make_message(contractor_id=contractor, content="Great week, Jade!", message_type="celebration")

    # WHEN it is delivered with the default N8N_PAYLOAD_FORMAT (ghl)
    pipeline.evaluate()
    pipeline.drain()

    # THEN the receiver got backend-to-ghl's body: the E.164 phone and text under
    # send_via_ghl, the platform row under metadata, the identity as webhook-id
    (received,) = pipeline.receiver.accepted()
    sent = received.payload["send_via_ghl"]
    assert (sent["phone"], sent["message"], sent["from_name"]) == (
        "+13125550142",
        "Great week, Jade!",
        "Power100 Concierge",
    )
    assert sent["timestamp"].endswith("Z")
    assert received.payload["metadata"] == {
        "contractor_id": contractor,
        "message_type": "celebration",
        "message_id": message,
        "source": "proactive",
        "idempotency_key": f"proactive-{message}",
    }
    assert received.webhook_id == f"proactive-{message}"


def test_flat_payload_format_sends_the_seed_documents_body(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN N8N_PAYLOAD_FORMAT=flat (the seed's sms-outbound path)
    pipeline.setenv(N8N_PAYLOAD_FORMAT="flat")
    contractor = make_contractor(first_name="Jade", phone="312.555.0142")
    message = make_message(contractor_id=contractor, content="Great week, Jade!", message_type="celebration")

    # WHEN it is delivered
    pipeline.evaluate()
    pipeline.drain()

    # THEN the old sender's payload plus the message identity
    (received,) = pipeline.receiver.accepted()
    assert received.payload["phone"] == "+13125550142"
    assert received.payload["message"] == "Great week, Jade!"
    assert received.payload["contractor_id"] == contractor
    assert received.payload["message_type"] == "celebration"
    assert received.payload["message_id"] == f"proactive-{message}"
    assert received.webhook_id == f"proactive-{message}"


def test_second_evaluate_run_queues_nothing_new(pipeline: Any, make_messages: Any) -> None:
    # GIVEN messages already queued by one run
    make_messages(12)
    first = pipeline.evaluate()

    # WHEN evaluate runs again before the reconciliation threshold
    second = pipeline.evaluate()

    # THEN nothing is queued twice
    assert first["enqueued"] == 12
    assert second["enqueued"] == 0
    visible, in_flight = pipeline.queue_depth()
    assert visible + in_flight == 12


@pytest.mark.parametrize(
    "event",
    [None, {"sources": "proactive"}, {"sources": None}, {"source": "proactive"}, {"sources": ["sms_blast"]}],
)
def test_an_evaluate_event_of_another_shape_does_nothing_and_says_why(
    pipeline: Any, make_messages: Any, event: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from proactive_delivery.core.errors import MalformedRecordError

    # GIVEN due messages WHEN evaluate is invoked with an event outside the one rule
    make_messages(2)
    with pytest.raises(MalformedRecordError) as excinfo:
        pipeline.evaluate_handler(event, LambdaContext("EvaluateFunction", 300))
    # THEN nothing was queued, and one error line names the reason
    assert excinfo.value.reason in ("invalid_event", "unknown_source")
    assert pipeline.conn.execute("SELECT count(*) FROM delivery.message_state").fetchone() == (0,)
    assert pipeline.queue_depth() == (0, 0)
    lines = [r for r in caplog.records if r.getMessage() == "invalid evaluate event; nothing done"]
    assert len(lines) == 1
