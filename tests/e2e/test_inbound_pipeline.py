"""The way back end to end: Twilio's and n8n's requests, signed by their own libraries
(Twilio's RequestValidator, standardwebhooks), through the real inbound edge handler
(functions/inbound) onto an inbound queue in moto with the template's redrive, consumed by the
real inbound processor (functions/inbound_processor) under the emulated SQS event source
mapping, into PostgreSQL with the platform's reference tables; and the deliver function
reading what the processor wrote.

FAULTS rows 19 (a forged, stale or missing signature changes nothing), 22 (PostgreSQL down
during a burst: every event answered 2xx only once stored, all applied after it returns, none
lost) and 23 (STOP while a message is queued: not sent, skipped opted_out), START after a
keyword STOP, and a poison event on the inbound DLQ with its reason."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from psycopg.rows import dict_row

from proactive_delivery.bootstrap import InboundServices
from proactive_delivery.settings import InboundSettings
from proactive_delivery_tools.local.esm import SqsEventSourceMapping
from proactive_delivery_tools.local.sqs import QueuePair, create_queues
from tests.support.db import state_row
from tests.support.inbound import (
    OTHER_SECRET,
    OTHER_TWILIO_TOKEN,
    events_body,
    events_event,
    inbound_env,
    inbound_handler,
    invoke,
    twilio_event,
    twilio_params,
)
from tests.support.processor import processor_handler, twilio_sid

PHONE = "+13125550142"
STORED_AS = "(312) 555-0142"


@dataclass
class WayBack:
    pipeline: Any
    queues: QueuePair
    edge: Any
    mapping: SqsEventSourceMapping

    def twilio_sms(self, text: str, *, phone: str = PHONE, **params: str) -> dict[str, Any]:
        sid = twilio_sid()
        form = twilio_params(MessageSid=sid, SmsSid=sid, From=phone, Body=text, **params)
        result, _ = invoke(self.edge, twilio_event(params=form))
        return result

    def drain(self) -> None:
        self.mapping.drain(timeout=60)

    def events(self) -> list[dict[str, Any]]:
        with self.pipeline.conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(
                "SELECT identity, action, outcome FROM delivery.inbound_event ORDER BY id"
            ).fetchall()

    def dlq(self) -> list[dict[str, Any]]:
        got = self.pipeline.sqs.receive_message(
            QueueUrl=self.queues.dlq_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        return list(got.get("Messages", []))


@pytest.fixture
def way_back(pipeline: Any) -> Iterator[WayBack]:
    # The template's inbound queue: a DLQ after 10 receives (a short visibility here).
    queues = create_queues(pipeline.sqs, name="inbound", visibility_timeout=2, max_receive_count=10)
    edge_settings = InboundSettings.from_env(inbound_env(INBOUND_QUEUE_URL=queues.queue_url))
    edge = inbound_handler(InboundServices(edge_settings, sqs=pipeline.sqs))
    pipeline.setenv(INBOUND_QUEUE_URL=queues.queue_url, INBOUND_DLQ_URL=queues.dlq_url)
    arn = pipeline.sqs.get_queue_attributes(QueueUrl=queues.queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]

    def processor(event: dict[str, Any], context: Any) -> Any:
        # Bound per invocation: a test that changes the settings rebuilds the services.
        return processor_handler(pipeline.services)(event, context)

    mapping = SqsEventSourceMapping(
        pipeline.sqs,
        queues.queue_url,
        arn,
        processor,
        function_name="InboundProcessorFunction",
        batch_size=10,
    )
    yield WayBack(pipeline, queues, edge, mapping)


def texted(pipeline: Any, make_message: Any, contractor: int) -> int:
    """A message to the contractor, sent by the real evaluate and deliver functions."""
    message = make_message(contractor)
    pipeline.evaluate({"sources": ["proactive"]})
    pipeline.drain(timeout=30)
    assert state_row(pipeline.conn, message)["state"] == "sent"
    return int(message)


def test_a_reply_from_twilio_and_one_from_n8n_reach_the_platforms_columns(
    way_back: WayBack, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN two contractors texted, their phones stored as typed
    ana, ben = make_contractor(phone=STORED_AS), make_contractor(phone="312.555.0143")
    to_ana, to_ben = (texted(way_back.pipeline, make_message, c) for c in (ana, ben))
    # WHEN Ana replies through Twilio and Ben through GHL and n8n (/events, signed)
    assert way_back.twilio_sms("Yes, Thursday works")["statusCode"] == 200
    body = events_body("sms.received", phone="+13125550143", message_content="Done", timestamp=None)
    assert invoke(way_back.edge, events_event(body, msg_id="ghl-msg-1"))[0]["statusCode"] == 202
    way_back.drain()
    # THEN each reply is on the message it answers
    rows = dict(
        way_back.pipeline.conn.execute(
            "SELECT id, contractor_response FROM ai_proactive_messages WHERE id IN (%s, %s)", (to_ana, to_ben)
        ).fetchall()
    )
    assert rows == {to_ana: "Yes, Thursday works", to_ben: "Done"}


def test_fault19_forged_stale_or_missing_signatures_change_nothing(
    way_back: WayBack, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN a contractor we texted
    contractor = make_contractor(phone=PHONE)
    texted(way_back.pipeline, make_message, contractor)
    stop = twilio_params(Body="STOP", OptOutType="STOP")
    refused = [
        # Twilio: signed with another token, no signature at all
        twilio_event(params=stop, token=OTHER_TWILIO_TOKEN),
        twilio_event(params=stop, signature=""),
        # n8n: another key, a timestamp ten minutes old, no signature headers
        events_event(events_body("contact.dnd"), secret=OTHER_SECRET, msg_id="dnd-1"),
        events_event(
            events_body("contact.dnd"), at=datetime.now(UTC) - timedelta(minutes=10), msg_id="dnd-2"
        ),
        events_event(events_body("contact.dnd"), msg_id="dnd-3", drop=("webhook-signature",)),
    ]
    # WHEN each is posted to the edge, and the processor drains the queue
    statuses = [invoke(way_back.edge, event)[0]["statusCode"] for event in refused]
    way_back.drain()
    # THEN each was refused 401, and nothing reached the database
    assert statuses == [401] * 5
    assert way_back.events() == []
    preferences = way_back.pipeline.conn.execute("SELECT count(*) FROM delivery.contractor_preferences")
    assert preferences.fetchone() == (0,)
    assert way_back.pipeline.conn.execute(
        "SELECT sms_opt_in FROM contractors WHERE id = %s", (contractor,)
    ).fetchone() == (None,)
    # AND the same STOP, genuinely signed, does opt out (the test can fail)
    assert invoke(way_back.edge, twilio_event(params=stop))[0]["statusCode"] == 200
    way_back.drain()
    assert [e["outcome"] for e in way_back.events()] == ["opted_out"]


def test_fault23_stop_while_a_message_is_queued_it_is_not_sent_and_start_opens_sms_again(
    way_back: WayBack, make_contractor: Any, make_message: Any
) -> None:
    pipeline = way_back.pipeline
    # GIVEN a contractor we texted, and a second message queued for them
    contractor = make_contractor(phone=STORED_AS)
    texted(pipeline, make_message, contractor)
    queued = make_message(contractor)
    pipeline.evaluate({"sources": ["proactive"]})
    assert state_row(pipeline.conn, queued)["state"] == "queued"
    # WHEN the contractor texts STOP and the processor applies it
    assert way_back.twilio_sms("Stop")["statusCode"] == 200
    way_back.drain()
    # AND then the deliver function gets the queued message
    posts_before = len(pipeline.receiver.requests)
    pipeline.drain(timeout=30)
    # THEN it is not sent: skipped opted_out
    row = state_row(pipeline.conn, queued)
    assert (row["state"], row["reason"]) == ("skipped", "opted_out")
    assert len(pipeline.receiver.requests) == posts_before
    # WHEN the contractor texts START, and a new message comes
    assert way_back.twilio_sms("START")["statusCode"] == 200
    way_back.drain()
    again = texted(pipeline, make_message, contractor)
    # THEN it is sent
    assert [r.webhook_id for r in pipeline.receiver.requests[posts_before:]] == [f"proactive-{again}"]
    assert [e["outcome"] for e in way_back.events()] == ["opted_out", "opted_in"]


def test_fault22_postgresql_down_during_a_burst_every_event_is_applied_once_after_it_returns(
    way_back: WayBack, make_contractor: Any, make_message: Any
) -> None:
    pipeline = way_back.pipeline
    # GIVEN 20 contractors we texted
    phones = [f"+1312555{300 + i:04d}" for i in range(20)]
    contractors = [make_contractor(phone=p) for p in phones]
    messages = [texted(pipeline, make_message, c) for c in contractors]
    # WHEN PostgreSQL goes down
    pipeline.setenv(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere")
    # AND a burst of 20 replies arrives, each once more as Twilio's retry
    answers = []
    for i, phone in enumerate(phones):
        sid = f"SM{i + 1:032x}"
        form = twilio_params(MessageSid=sid, SmsSid=sid, From=phone, Body=f"reply {i}")
        answers += [invoke(way_back.edge, twilio_event(params=form))[0]["statusCode"] for _ in range(2)]
    # THEN the edge stored and answered each (it needs no database)
    assert answers == [200] * 40
    # AND the processor fails as a whole and acknowledges nothing
    way_back.mapping.poll_once()
    assert way_back.mapping.stats.handler_errors >= 1
    assert all("StoreUnavailableError" in e for e in way_back.mapping.stats.errors)
    visible, in_flight = way_back.mapping.depth()
    assert visible + in_flight == 40
    # WHEN PostgreSQL is back
    pipeline.setenv(DATABASE_URL=os.environ["PD_TEST_DATABASE_URL"])
    way_back.drain()
    # THEN every reply was applied exactly once, none lost, none in the DLQ
    responses = dict(
        pipeline.conn.execute(
            "SELECT id, contractor_response FROM ai_proactive_messages WHERE id = ANY(%s)", (messages,)
        ).fetchall()
    )
    assert responses == {m: f"reply {i}" for i, m in enumerate(messages)}
    assert sorted(e["outcome"] for e in way_back.events()) == ["linked"] * 20
    continued = pipeline.conn.execute(
        "SELECT count(*) FROM ai_proactive_messages WHERE conversation_continued"
    ).fetchone()
    assert continued == (0,)
    assert way_back.dlq() == []


def test_a_poison_event_reaches_the_inbound_dlq_with_its_reason(way_back: WayBack) -> None:
    pipeline = way_back.pipeline
    # GIVEN an event on the inbound queue that is no event (a body nothing can apply), and a
    # good one in the same batch
    poison = '{"source": "aws.ses", "id": "x"}'
    pipeline.sqs.send_message(QueueUrl=way_back.queues.queue_url, MessageBody=poison)
    assert way_back.twilio_sms("HELP")["statusCode"] == 200
    # WHEN the processor drains the queue
    way_back.drain()
    # THEN the poison event is on the DLQ with the reason, at once (not after 10 receives)
    [dead] = way_back.dlq()
    assert json.loads(dead["Body"]) == {"source": "aws.ses", "id": "x"}
    assert dead["MessageAttributes"]["reason"]["StringValue"] == "invalid_ses_event"
    assert way_back.mapping.stats.invocations == 1
    # AND the good one was applied
    assert [e["outcome"] for e in way_back.events()] == ["unmatched"]
