"""The inbound edge against SQS (moto): a verified event lands on the inbound queue in the
contract's format, and an event SQS did not take is never answered 2xx.

The edge needs no database: these tests give it none (FAULTS row 22, the edge's part: while
PostgreSQL is down, every event is answered 2xx only once it is stored in SQS)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from proactive_delivery.bootstrap import InboundServices
from proactive_delivery.core.inbound import InboundEvent, MessageStatus, SmsReceived
from proactive_delivery.settings import InboundSettings
from tests.pipeline import PROCESS_ENV
from tests.support.inbound import (
    MESSAGE_SID,
    PHONE,
    PHONE_DIGITS,
    TEXT,
    events_body,
    events_event,
    inbound_env,
    inbound_handler,
    invoke,
    twilio_event,
    twilio_params,
)

# Twilio sids for a burst: SM + 32 hex digits each.
BURST_SIDS = [f"SM{i:032x}" for i in range(1, 41)]


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in PROCESS_ENV.items():
        monkeypatch.setenv(name, value)
    # The edge's environment has no database of any kind.
    for name in ("DATABASE_URL", "DATABASE_SECRET_ARN", "DELIVERY_QUEUE_URL", "N8N_OUTBOUND_WEBHOOK_URL"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def inbound_queue(sqs: Any) -> str:
    dlq = sqs.create_queue(QueueName="stack-InboundDLQ")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "10"})
    attributes = {"RedrivePolicy": redrive, "MaximumMessageSize": "262144"}
    return str(sqs.create_queue(QueueName="stack-InboundQueue", Attributes=attributes)["QueueUrl"])


def drain(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
        if not got.get("Messages"):
            return messages
        for message in got["Messages"]:
            messages.append(message)
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def edge(sqs: Any, url: str, client: Any = None) -> Any:
    settings = InboundSettings.from_env(inbound_env(INBOUND_QUEUE_URL=url))
    return inbound_handler(InboundServices(settings, sqs=client or sqs))


def test_verified_events_land_on_the_inbound_queue_in_the_contract_format(sqs: Any) -> None:
    # GIVEN the inbound queue and the edge writing to it through SQS
    url = inbound_queue(sqs)
    handler = edge(sqs, url)
    # WHEN Twilio posts a message and a receipt, and n8n an inbound SMS
    answers = [
        invoke(handler, twilio_event(params=twilio_params(OptOutType="STOP", Body="STOP")))[0],
        invoke(
            handler, twilio_event("/twilio/status", {"MessageSid": MESSAGE_SID, "MessageStatus": "delivered"})
        )[0],
        invoke(handler, events_event(events_body(), msg_id="msg_from_n8n"))[0],
    ]
    # THEN each was answered as its sender expects
    assert [a["statusCode"] for a in answers] == [200, 204, 202]
    # AND the queue holds one message per event, each exactly the contract's envelope
    messages = drain(sqs, url)
    by_id = {}
    for message in messages:
        doc = json.loads(message["Body"])
        assert set(doc) == {"v", "id", "kind", "received_at", "data"}
        event = InboundEvent.from_body(message["Body"])
        # the kind is also a message attribute, for routing without parsing
        assert message["MessageAttributes"]["kind"]["StringValue"] == str(event.kind)
        by_id[event.id] = event
    assert sorted(by_id) == sorted(
        [f"twilio:{MESSAGE_SID}", f"twilio:{MESSAGE_SID}:delivered", "events:msg_from_n8n"]
    )
    assert by_id[f"twilio:{MESSAGE_SID}"].data == SmsReceived(PHONE, "STOP", "twilio", MESSAGE_SID, "STOP")
    assert by_id[f"twilio:{MESSAGE_SID}:delivered"].data == MessageStatus(
        None, MESSAGE_SID, "delivered", None, "twilio"
    )
    assert by_id["events:msg_from_n8n"].data == SmsReceived(
        PHONE, TEXT, "ghl", "mG7hR2pZ", None, "2026-12-01T21:00:00.000Z"
    )


def test_sqs_refusing_is_a_503_and_the_retry_is_stored_once(sqs: Any) -> None:
    # GIVEN an edge whose inbound queue does not exist (deleted, wrong account: SQS refuses)
    url = inbound_queue(sqs)
    sqs.delete_queue(QueueUrl=url)
    handler = edge(sqs, url)
    event = twilio_event()
    # WHEN Twilio posts an incoming message
    refused, captured = invoke(handler, event)
    # THEN 503, one error line with SQS's reason and no contact detail
    assert refused["statusCode"] == 503
    [record] = captured.records
    assert record.levelname == "ERROR" and "NonExistentQueue" in record.__dict__["detail"]
    assert captured.leaks(PHONE, PHONE_DIGITS, TEXT) == []
    # AND once the queue is back, the sender's retry is stored and answered 200
    assert inbound_queue(sqs) == url
    accepted, _ = invoke(handler, event)
    assert accepted["statusCode"] == 200
    assert [InboundEvent.from_body(m["Body"]).id for m in drain(sqs, url)] == [f"twilio:{MESSAGE_SID}"]


class FlakySqs:
    """An SQS client that refuses every third SendMessage, as an outage that comes and goes."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._calls = 0
        self._lock = threading.Lock()

    def send_message(self, **kwargs: Any) -> Any:
        from botocore.exceptions import ClientError

        with self._lock:
            self._calls += 1
            refuse = self._calls % 3 == 0
        if refuse:
            error = {"Error": {"Code": "ServiceUnavailable", "Message": "try later"}}
            raise ClientError(error, "SendMessage")  # type: ignore[arg-type]
        return self._client.send_message(**kwargs)


def test_fault22_edge_answers_2xx_only_for_events_stored_in_sqs(sqs: Any) -> None:
    # GIVEN an edge with no database configured at all, and SQS refusing every third event
    url = inbound_queue(sqs)
    handler = edge(sqs, url, FlakySqs(sqs))
    # WHEN a burst of 40 inbound messages arrives, and Twilio retries each one refused
    answers: dict[str, list[int]] = {sid: [] for sid in BURST_SIDS}
    pending = list(BURST_SIDS)
    for _ in range(5):
        retry = []
        for sid in pending:
            result, _ = invoke(handler, twilio_event(params=twilio_params(MessageSid=sid, SmsSid=sid)))
            answers[sid].append(result["statusCode"])
            if result["statusCode"] != 200:
                retry.append(sid)
        pending = retry
        if not pending:
            break
    # THEN every answer was 200 (stored) or 503 (not stored), some were refused at first,
    # and all were stored in the end
    assert {code for codes in answers.values() for code in codes} == {200, 503}
    assert pending == []
    # AND the queue holds exactly the events answered 200: each once, none answered 2xx missing
    stored = [InboundEvent.from_body(m["Body"]).id for m in drain(sqs, url)]
    answered_200 = [f"twilio:{sid}" for sid, codes in answers.items() if 200 in codes]
    assert sorted(stored) == sorted(answered_200) == sorted(f"twilio:{sid}" for sid in BURST_SIDS)
    assert all(codes.count(200) == 1 and codes[-1] == 200 for codes in answers.values())
