"""The inbound edge through its real handler (functions/inbound/app.py) with an in-memory
inbound queue: routing, verification (requests signed by Twilio's RequestValidator and the
standardwebhooks library), limits, and what each answer stores and logs.

Every refused request: its status, exactly one log line, nothing queued, and neither the
phone number nor the message text in any log record (checked before the masking formatter).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from proactive_delivery.core.errors import ConfigError
from proactive_delivery.core.inbound import InboundEvent, MessageStatus, SmsReceived
from proactive_delivery_tools.fakes import InMemoryInboundQueue
from tests.support.inbound import (
    EVENTS_SECRET,
    HOST,
    MESSAGE_SID,
    OTHER_SECRET,
    OTHER_TWILIO_TOKEN,
    PHONE,
    PHONE_DIGITS,
    TEXT,
    TWILIO_TOKEN,
    Captured,
    events_body,
    events_event,
    function_url_event,
    inbound_env,
    inbound_handler,
    invoke,
    services_for,
    twilio_event,
    twilio_params,
)
from tests.support.telemetry import emf_metrics

TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


@pytest.fixture
def queue() -> InMemoryInboundQueue:
    return InMemoryInboundQueue()


@pytest.fixture
def handler(queue: InMemoryInboundQueue) -> Any:
    return inbound_handler(services_for(inbound_env(), queue))


def assert_refused_quietly(
    result: dict[str, Any], captured: Captured, queue: InMemoryInboundQueue, status: int
) -> None:
    assert result["statusCode"] == status, result
    assert len(captured.records) == 1, [r.getMessage() for r in captured.records]
    assert queue.bodies == []
    assert captured.leaks(PHONE, PHONE_DIGITS, TEXT) == []


# --------------------------------------------------------------------------- #
# Bad input: one line each, nothing queued                                    #
# --------------------------------------------------------------------------- #

BAD_REQUESTS: dict[str, tuple[Any, int, str]] = {
    # route, method, size
    "unknown route": (lambda: twilio_event("/twilio/inbound/extra"), 404, "unknown_route"),
    "a phone number as the path": (lambda: function_url_event(f"/{PHONE}", TEXT), 404, "unknown_route"),
    "GET on a route": (
        lambda: function_url_event("/twilio/inbound", "", method="GET"),
        405,
        "method_not_allowed",
    ),
    "body over 64 KiB": (
        lambda: events_event(events_body(message_content="x" * 70_000)),
        413,
        "body_too_large",
    ),
    # malformed bodies (signed correctly: only the content is wrong)
    "twilio message without From": (
        lambda: twilio_event(params={k: v for k, v in twilio_params().items() if k != "From"}),
        400,
        "malformed_body",
    ),
    "twilio message without MessageSid": (
        lambda: twilio_event(params={k: v for k, v in twilio_params().items() if k != "MessageSid"}),
        400,
        "malformed_body",
    ),
    "twilio message with a made-up sid": (
        lambda: twilio_event(params=twilio_params(MessageSid="SM-not-a-sid")),
        400,
        "malformed_body",
    ),
    "twilio status without MessageStatus": (
        lambda: twilio_event("/twilio/status", {"MessageSid": MESSAGE_SID, "To": PHONE}),
        400,
        "malformed_body",
    ),
    "twilio status with a bad ErrorCode": (
        lambda: twilio_event(
            "/twilio/status", {"MessageSid": MESSAGE_SID, "MessageStatus": "failed", "ErrorCode": "x1"}
        ),
        400,
        "malformed_body",
    ),
    "twilio body that is not form-encoded": (
        lambda: {
            **twilio_event(),
            "isBase64Encoded": False,
            "body": json.dumps({"From": PHONE, "Body": TEXT}),
        },
        400,
        "malformed_body",
    ),
    "events body that is not JSON": (
        lambda: events_event(f"phone={PHONE}&text={TEXT}"),
        400,
        "malformed_body",
    ),
    "events of an unknown type": (lambda: events_event(events_body("sms.sent")), 400, "malformed_body"),
    "events sms without a phone": (lambda: events_event(events_body(phone=None)), 400, "malformed_body"),
    "events sms with a timestamp without offset": (
        lambda: events_event(events_body(timestamp="2026-12-01T21:00:00")),
        400,
        "malformed_body",
    ),
    "events status outside the receipts": (
        lambda: events_event(events_body("message.status", status="opened")),
        400,
        "malformed_body",
    ),
    "events dnd with an unknown state": (
        lambda: events_event(events_body("contact.dnd", sms="maybe")),
        400,
        "malformed_body",
    ),
    "events with a webhook-id of spaces": (
        lambda: events_event(msg_id="msg with spaces"),
        400,
        "malformed_body",
    ),
    "not a Function URL event": (lambda: {"phone": PHONE, "text": TEXT}, 400, "malformed_body"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_is_refused_with_one_line_and_nothing_queued(
    case: str, handler: Any, queue: InMemoryInboundQueue
) -> None:
    make_event, status, reason = BAD_REQUESTS[case]
    # GIVEN a request that is wrong in one way
    event = make_event()
    # WHEN the edge handles it
    result, captured = invoke(handler, event)
    # THEN it is refused with its status, one log line naming the reason, nothing queued,
    # and no phone number or text anywhere in the log
    assert_refused_quietly(result, captured, queue, status)
    [record] = captured.records
    assert record.__dict__["reason"] == reason
    assert json.loads(result["body"])["error"]


def test_wrong_method_names_the_allowed_one(handler: Any, queue: InMemoryInboundQueue) -> None:
    # GIVEN a PUT to the events route WHEN it is handled
    result, captured = invoke(handler, function_url_event("/events", "{}", method="PUT"))
    # THEN 405 says POST is what the route takes, and the line says which method came
    assert_refused_quietly(result, captured, queue, 405)
    assert result["headers"]["allow"] == "POST"
    assert captured.records[0].__dict__["method"] == "PUT"


# --------------------------------------------------------------------------- #
# Fault 19: forged, stale or missing signatures                               #
# --------------------------------------------------------------------------- #

UNSIGNED: dict[str, tuple[Any, str]] = {
    "twilio: no X-Twilio-Signature": (
        lambda: {
            **(e := twilio_event()),
            "headers": {k: v for k, v in e["headers"].items() if k != "x-twilio-signature"},
        },
        "signature_missing",
    ),
    "twilio: signed with another account's token": (
        lambda: twilio_event(token=OTHER_TWILIO_TOKEN),
        "signature_invalid",
    ),
    "twilio: signature of another message": (
        lambda: {**twilio_event(), "headers": twilio_event(params=twilio_params(Body="hello"))["headers"]},
        "signature_invalid",
    ),
    "twilio: signed for another route": (
        lambda: twilio_event("/twilio/status", signed_url=f"https://{HOST}/twilio/inbound"),
        "signature_invalid",
    ),
    "twilio: SharedKey signature": (
        lambda: {
            **(e := twilio_event()),
            "headers": {
                **e["headers"],
                "x-twilio-webhooks-signature-settings": "key=KS1,algorithm=HMAC_SHA256",
            },
        },
        "signature_unsupported",
    ),
    "events: no webhook-signature": (lambda: events_event(drop=("webhook-signature",)), "signature_missing"),
    "events: no webhook-id": (lambda: events_event(drop=("webhook-id",)), "signature_missing"),
    "events: no webhook-timestamp": (lambda: events_event(drop=("webhook-timestamp",)), "signature_missing"),
    "events: signed with another key": (lambda: events_event(secret=OTHER_SECRET), "signature_invalid"),
    "events: signed with the outbound key's kind of value": (
        lambda: {
            **(e := events_event()),
            "headers": {**e["headers"], "webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl"},
        },
        "signature_invalid",
    ),
    "events: signature that is not v1,<base64>": (
        lambda: {**(e := events_event()), "headers": {**e["headers"], "webhook-signature": "garbage"}},
        "signature_invalid",
    ),
    "events: body changed after signing": (
        lambda: {**events_event(), "body": events_body(message_content="something else")},
        "signature_invalid",
    ),
    "events: signed 6 minutes ago": (
        lambda: events_event(at=datetime.now(UTC) - timedelta(minutes=6)),
        "timestamp_stale",
    ),
    "events: signed 6 minutes ahead": (
        lambda: events_event(at=datetime.now(UTC) + timedelta(minutes=6)),
        "timestamp_stale",
    ),
    "events: timestamp that is not a Unix time": (
        lambda: {**(e := events_event()), "headers": {**e["headers"], "webhook-timestamp": "yesterday"}},
        "timestamp_invalid",
    ),
}


@pytest.mark.parametrize("case", sorted(UNSIGNED))
def test_fault19_forged_stale_or_missing_signature_is_401_and_nothing_is_queued(
    case: str, handler: Any, queue: InMemoryInboundQueue, capsys: pytest.CaptureFixture[str]
) -> None:
    make_event, reason = UNSIGNED[case]
    # GIVEN a request whose signature is missing, forged or stale (signed when the test runs)
    event = make_event()
    capsys.readouterr()
    # WHEN the edge handles it
    result, captured = invoke(handler, event)
    # THEN 401, nothing queued, one line with the reason, no contact detail logged
    assert_refused_quietly(result, captured, queue, 401)
    assert captured.records[0].__dict__["reason"] == reason
    # AND the rejected-signature metric (the spike alarm's) counts it
    out = capsys.readouterr().out
    assert emf_metrics(out)["InboundSignatureRejections"] == 1
    assert emf_metrics(out, frozenset({"service", "outcome"})) == {"InboundRequests": 1}


def test_a_valid_request_is_refused_once_its_signature_is_stale(
    handler: Any, queue: InMemoryInboundQueue
) -> None:
    # GIVEN one event signed 4 minutes ago and one signed 5 minutes and 30 seconds ago
    fresh = events_event(at=datetime.now(UTC) - timedelta(minutes=4), msg_id="msg_fresh")
    stale = events_event(at=datetime.now(UTC) - timedelta(minutes=5, seconds=30), msg_id="msg_stale")
    # WHEN both are handled
    accepted, _ = invoke(handler, fresh)
    refused, _ = invoke(handler, stale)
    # THEN the tolerance is Standard Webhooks' 5 minutes
    assert (accepted["statusCode"], refused["statusCode"]) == (202, 401)
    assert [e.id for e in queue.events] == ["events:msg_fresh"]


# --------------------------------------------------------------------------- #
# Accepted: stored first, then answered                                       #
# --------------------------------------------------------------------------- #


def test_twilio_message_is_stored_and_answered_with_empty_twiml(
    handler: Any, queue: InMemoryInboundQueue
) -> None:
    # GIVEN an incoming STOP, signed by Twilio, classified by Advanced Opt-Out
    event = twilio_event(params=twilio_params(Body="STOP", OptOutType="STOP"))
    # WHEN the edge handles it
    result, captured = invoke(handler, event)
    # THEN it answers an empty TwiML response
    assert result["statusCode"] == 200
    assert result["headers"]["content-type"] == "text/xml"
    assert result["body"] == TWIML
    # AND the event is on the queue with its identity and what the contractor sent
    [stored] = queue.events
    assert stored.id == f"twilio:{MESSAGE_SID}"
    assert stored.data == SmsReceived(
        phone=PHONE, text="STOP", provider="twilio", provider_message_id=MESSAGE_SID, opt_out_type="STOP"
    )
    # AND one line says so, without the phone or the text
    assert [r.getMessage() for r in captured.records] == ["inbound event queued"]
    assert captured.leaks(PHONE, PHONE_DIGITS) == []


def test_twilio_message_text_never_reaches_the_log(handler: Any, queue: InMemoryInboundQueue) -> None:
    result, captured = invoke(handler, twilio_event())
    assert result["statusCode"] == 200
    assert queue.events[0].data == SmsReceived(PHONE, TEXT, "twilio", MESSAGE_SID)
    assert captured.leaks(PHONE, PHONE_DIGITS, TEXT) == []


def test_an_opt_out_class_twilio_adds_later_is_left_to_the_text(
    handler: Any, queue: InMemoryInboundQueue
) -> None:
    result, _ = invoke(handler, twilio_event(params=twilio_params(Body="UNSUBSCRIBE", OptOutType="UNSUB")))
    assert result["statusCode"] == 200
    [stored] = queue.events
    assert isinstance(stored.data, SmsReceived) and stored.data.opt_out_type is None
    assert stored.data.text == "UNSUBSCRIBE"


@pytest.mark.parametrize(
    ("form", "identity", "status", "error_code"),
    [
        ({"MessageStatus": "delivered"}, f"twilio:{MESSAGE_SID}:delivered", "delivered", None),
        ({"MessageStatus": "sent"}, f"twilio:{MESSAGE_SID}:sent", "sent", None),
        (
            {"MessageStatus": "undelivered", "ErrorCode": "30006"},
            f"twilio:{MESSAGE_SID}:undelivered:30006",
            "undelivered",
            "30006",
        ),
        ({"MessageStatus": "failed", "ErrorCode": ""}, f"twilio:{MESSAGE_SID}:failed", "failed", None),
        ({"MessageStatus": "read"}, f"twilio:{MESSAGE_SID}:read", "read", None),
    ],
)
def test_twilio_receipts_are_stored_once_per_status(
    form: dict[str, str],
    identity: str,
    status: str,
    error_code: str | None,
    handler: Any,
    queue: InMemoryInboundQueue,
) -> None:
    # GIVEN a Twilio status callback
    event = twilio_event("/twilio/status", {"MessageSid": MESSAGE_SID, "To": PHONE, "SmsStatus": "x", **form})
    # WHEN the edge handles it
    result, _ = invoke(handler, event)
    # THEN it is stored under one identity per status (and error code) and answered 204
    assert result["statusCode"] == 204
    [stored] = queue.events
    assert stored.id == identity
    assert stored.data == MessageStatus(
        message_id=None, provider_ref=MESSAGE_SID, status=status, error_code=error_code, provider="twilio"
    )


@pytest.mark.parametrize("status", ["queued", "accepted", "sending", "scheduled", "canceled"])
def test_twilio_statuses_before_sent_are_answered_and_dropped(
    status: str, handler: Any, queue: InMemoryInboundQueue
) -> None:
    # GIVEN a genuine callback for a message still on its way WHEN it is handled
    result, captured = invoke(
        handler, twilio_event("/twilio/status", {"MessageSid": MESSAGE_SID, "MessageStatus": status})
    )
    # THEN Twilio gets a 200, nothing is stored, one line says it was ignored and why
    assert result["statusCode"] == 200
    assert queue.bodies == []
    [record] = captured.records
    assert (record.getMessage(), record.__dict__["status"]) == ("inbound status ignored", status)


def test_events_sms_is_stored_with_the_webhook_id_as_identity(
    handler: Any, queue: InMemoryInboundQueue
) -> None:
    # GIVEN a GHL inbound SMS forwarded by n8n, with a timestamp in another zone
    body = events_body(timestamp="2026-12-01T16:00:00.000-05:00")
    # WHEN it is handled
    result, captured = invoke(handler, events_event(body, msg_id="msg_abc123"))
    # THEN 202 {"accepted": true}, stored under events:<webhook-id>, the time in UTC
    assert (result["statusCode"], json.loads(result["body"])) == (202, {"accepted": True})
    [stored] = queue.events
    assert stored.id == "events:msg_abc123"
    assert stored.data == SmsReceived(
        phone=PHONE,
        text=TEXT,
        provider="ghl",
        provider_message_id="mG7hR2pZ",
        sent_at="2026-12-01T21:00:00.000Z",
    )
    assert captured.leaks(PHONE, PHONE_DIGITS, TEXT) == []


@pytest.mark.parametrize(
    ("given", "message_id", "provider_ref"),
    [
        ("proactive-123", "proactive-123", None),
        ("followup-9", "followup-9", None),
        ("ghl-mG7hR2pZ", None, "ghl-mG7hR2pZ"),
    ],
)
def test_events_status_links_by_our_identity_or_the_providers(
    given: str, message_id: str | None, provider_ref: str | None, handler: Any, queue: InMemoryInboundQueue
) -> None:
    body = events_body("message.status", message_id=given, status="undelivered", error_code=30007)
    result, _ = invoke(handler, events_event(body))
    assert result["statusCode"] == 202
    assert queue.events[0].data == MessageStatus(message_id, provider_ref, "undelivered", "30007", "ghl")


def test_events_dnd_is_stored(handler: Any, queue: InMemoryInboundQueue) -> None:
    result, _ = invoke(handler, events_event(events_body("contact.dnd", sms="permanent"), msg_id="msg_dnd"))
    assert result["statusCode"] == 202
    [stored] = queue.events
    assert (stored.id, str(stored.kind), stored.data.sms) == ("events:msg_dnd", "contact.dnd", "permanent")  # type: ignore[union-attr]


def test_queued_event_metrics_count_by_kind(handler: Any, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    invoke(handler, twilio_event())
    out = capsys.readouterr().out
    assert emf_metrics(out, frozenset({"service", "kind"})) == {"InboundEventsQueued": 1}
    assert emf_metrics(out)["InboundRequests"] == 1
    assert "InboundSignatureRejections" not in emf_metrics(out)


# --------------------------------------------------------------------------- #
# The URL Twilio signed                                                       #
# --------------------------------------------------------------------------- #


def test_twilio_signature_over_the_function_url_with_its_query(
    handler: Any, queue: InMemoryInboundQueue
) -> None:
    # GIVEN a webhook URL with a query string, signed by Twilio over the URL as called
    event = twilio_event(query="tenant=power100&v=2")
    # WHEN it is handled THEN the query is part of what is verified
    result, _ = invoke(handler, event)
    assert result["statusCode"] == 200
    # AND the same signature on another query is refused
    tampered = {**event, "rawQueryString": "tenant=other&v=2"}
    refused, _ = invoke(handler, tampered)
    assert refused["statusCode"] == 401
    assert len(queue.bodies) == 1


def test_twilio_signature_over_the_url_with_its_default_port(
    handler: Any, queue: InMemoryInboundQueue
) -> None:
    # GIVEN Twilio signed the URL with :443 (it does not always sign the same form)
    event = twilio_event(signed_url=f"https://{HOST}:443/twilio/inbound")
    # WHEN it is handled THEN it is accepted, as Twilio's own validator accepts it
    result, _ = invoke(handler, event)
    assert result["statusCode"] == 200


def test_twilio_signature_over_the_public_url_needs_inbound_public_url(queue: InMemoryInboundQueue) -> None:
    # GIVEN a custom domain in front of the Function URL: Twilio signed the URL it called
    public = "https://hooks.example.com/sms"
    event = twilio_event(signed_url=f"{public}/twilio/inbound")
    # WHEN the edge reconstructs the URL from the request (no INBOUND_PUBLIC_URL)
    without, _ = invoke(inbound_handler(services_for(inbound_env(), queue)), event)
    # THEN it is not the URL Twilio signed: refused
    assert without["statusCode"] == 401
    # AND with INBOUND_PUBLIC_URL set it verifies against public URL + path
    with_url, _ = invoke(
        inbound_handler(services_for(inbound_env(INBOUND_PUBLIC_URL=public + "/"), queue)), event
    )
    assert with_url["statusCode"] == 200
    assert len(queue.bodies) == 1


def test_host_header_is_preferred_to_the_url_domain(handler: Any, queue: InMemoryInboundQueue) -> None:
    # GIVEN Twilio called the URL by the host it was given (the Host header)
    event = twilio_event(host="inbound.example.org")
    event["requestContext"]["domainName"] = HOST
    # WHEN it is handled THEN that host is the one verified
    result, _ = invoke(handler, event)
    assert result["statusCode"] == 200


# --------------------------------------------------------------------------- #
# Cheap rejection, configuration, the queue                                   #
# --------------------------------------------------------------------------- #


class CountingSecrets:
    def __init__(self) -> None:
        self.reads: list[str] = []

    def __call__(self, arn: str) -> str:
        self.reads.append(arn)
        if arn.endswith("twilio"):
            return json.dumps({"account_sid": "AC" + "0" * 32, "auth_token": TWILIO_TOKEN})
        return EVENTS_SECRET


class NoSqs:
    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"SQS was used ({name}) for a request that must be refused first")


ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:"


@pytest.mark.parametrize(
    "make_event",
    [
        lambda: function_url_event("/wp-login.php", "x"),
        lambda: function_url_event("/twilio/inbound", "", method="GET"),
        lambda: events_event(events_body(message_content="x" * 70_000)),
        lambda: {**twilio_event(), "headers": {"content-type": "application/x-www-form-urlencoded"}},
        lambda: events_event(drop=("webhook-signature",)),
        lambda: events_event(at=datetime.now(UTC) - timedelta(hours=1)),
    ],
    ids=["unknown route", "method", "size", "no twilio signature", "no events signature", "stale"],
)
def test_rejection_before_any_secret_read_or_aws_call(make_event: Any) -> None:
    # GIVEN an edge whose secrets come from Secrets Manager and whose SQS client fails if touched
    secrets = CountingSecrets()
    env = inbound_env(
        TWILIO_AUTH_TOKEN="",
        INBOUND_SIGNING_SECRET="",
        TWILIO_SECRET_ARN=ARN + "twilio",
        INBOUND_SIGNING_SECRET_ARN=ARN + "events",
    )
    from proactive_delivery.bootstrap import InboundServices
    from proactive_delivery.settings import InboundSettings

    services = InboundServices(InboundSettings.from_env(env), sqs=NoSqs(), secrets=secrets)
    # WHEN a request that fails the cheap checks arrives
    result, _ = invoke(inbound_handler(services), make_event())
    # THEN it is refused without reading a secret or calling AWS
    assert 400 <= result["statusCode"] < 500
    assert secrets.reads == []


def test_a_signed_request_reads_its_routes_secret_from_secrets_manager() -> None:
    # GIVEN secrets held in Secrets Manager
    secrets = CountingSecrets()
    env = inbound_env(
        TWILIO_AUTH_TOKEN="",
        INBOUND_SIGNING_SECRET="",
        TWILIO_SECRET_ARN=ARN + "twilio",
        INBOUND_SIGNING_SECRET_ARN=ARN + "events",
    )
    queue = InMemoryInboundQueue()
    handler = inbound_handler(services_for(env, queue, secrets=secrets))
    # WHEN a Twilio request and an n8n event arrive
    twilio, _ = invoke(handler, twilio_event())
    events, _ = invoke(handler, events_event())
    # THEN each was verified with its own route's secret (the Twilio channel's auth token,
    # the inbound events key)
    assert (twilio["statusCode"], events["statusCode"]) == (200, 202)
    assert secrets.reads == [ARN + "twilio", ARN + "events"]


@pytest.mark.parametrize(
    ("env", "path"),
    [
        (inbound_env(INBOUND_SIGNING_SECRET=""), "/events"),
        (inbound_env(TWILIO_AUTH_TOKEN=""), "/twilio/inbound"),
    ],
    ids=["events without a key", "twilio without a token"],
)
def test_a_route_without_its_secret_is_not_there(env: dict[str, str], path: str) -> None:
    queue = InMemoryInboundQueue()
    event = events_event() if path == "/events" else twilio_event()
    result, captured = invoke(inbound_handler(services_for(env, queue)), event)
    assert_refused_quietly(result, captured, queue, 404)
    assert captured.records[0].__dict__["reason"] == "route_disabled"


def test_an_unreadable_secret_is_a_503_the_sender_retries() -> None:
    # GIVEN a Twilio secret the role may not read
    def denied(arn: str) -> str:
        raise ConfigError("cannot read secret twilio: AccessDeniedException")

    queue = InMemoryInboundQueue()
    env = inbound_env(TWILIO_AUTH_TOKEN="", TWILIO_SECRET_ARN=ARN + "twilio")
    # WHEN a Twilio request arrives
    result, captured = invoke(inbound_handler(services_for(env, queue, secrets=denied)), twilio_event())
    # THEN 503 (never a 2xx for an event not stored), one error line naming the secret's problem
    assert_refused_quietly(result, captured, queue, 503)
    assert "AccessDeniedException" in captured.records[0].__dict__["detail"]


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"INBOUND_SIGNING_SECRET": EVENTS_SECRET}, "INBOUND_QUEUE_URL"),
        ({"INBOUND_QUEUE_URL": "http://127.0.0.1:1/123456789012/inbound"}, "INBOUND_SIGNING_SECRET(_ARN)"),
    ],
    ids=["no queue", "no secret at all"],
)
def test_a_misconfigured_edge_answers_503_with_one_line(
    env: dict[str, str], named: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN an environment the edge cannot start from (the handler builds from os.environ)
    from proactive_delivery.handlers import InboundFunction, _InboundFromEnvironment, inbound

    for name in ("INBOUND_QUEUE_URL", "INBOUND_SIGNING_SECRET", "TWILIO_AUTH_TOKEN", "TWILIO_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    function = InboundFunction(inbound, _InboundFromEnvironment())
    # WHEN a request arrives
    result, captured = invoke(function, twilio_event())
    # THEN 503, and the one line names the missing setting (no traceback)
    assert result["statusCode"] == 503
    [record] = captured.records
    assert named in record.__dict__["detail"]
    assert record.exc_info is None


def test_queue_refusing_is_503_and_never_2xx(handler: Any, queue: InMemoryInboundQueue) -> None:
    # GIVEN a queue that refuses every event
    queue.refuse = True
    # WHEN each route gets a valid request
    answers = [
        invoke(handler, event)
        for event in (
            twilio_event(),
            twilio_event("/twilio/status", {"MessageSid": MESSAGE_SID, "MessageStatus": "sent"}),
            events_event(),
        )
    ]
    # THEN each is a 503 with one error line, and nothing was stored
    for result, captured in answers:
        assert_refused_quietly(result, captured, queue, 503)
        assert captured.records[0].levelname == "ERROR"
        assert captured.records[0].__dict__["reason"] == "queue_unavailable"


def test_an_event_too_large_for_one_queue_message_is_refused_not_retried_forever(
    queue: InMemoryInboundQueue,
) -> None:
    # GIVEN the largest body the settings allow, of characters that JSON escapes (each
    # %01 in the form becomes \\u0001 on the queue: twice its size)
    handler = inbound_handler(services_for(inbound_env(INBOUND_MAX_BODY_BYTES="262144"), queue))
    event = twilio_event(params=twilio_params(Body="\x01" * 80_000))
    # WHEN it is handled THEN 413: SQS could never take it, so a retry would never succeed
    result, captured = invoke(handler, event)
    assert_refused_quietly(result, captured, queue, 413)
    assert captured.records[0].__dict__["reason"] == "event_too_large"


def test_a_stored_event_reads_back_as_the_contract_says(handler: Any, queue: InMemoryInboundQueue) -> None:
    invoke(handler, twilio_event())
    [body] = queue.bodies
    doc = json.loads(body)
    assert set(doc) == {"v", "id", "kind", "received_at", "data"}
    assert (doc["v"], doc["kind"]) == (1, "sms.received")
    assert doc["received_at"].endswith("Z")
    assert set(doc["data"]) == {"phone", "text", "provider", "provider_message_id", "opt_out_type", "sent_at"}
    assert InboundEvent.from_body(body).id == f"twilio:{MESSAGE_SID}"
