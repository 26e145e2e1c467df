"""The local runtime's stand-ins for the way back: the Twilio stand-in signs its callbacks as
Twilio's own library does, and the Function URL stand-in hands the function the payload-2.0
event a Function URL builds (form posts base64-encoded, JSON as text)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from twilio.request_validator import RequestValidator

from proactive_delivery_tools.local.function_url import FunctionUrlServer
from proactive_delivery_tools.local.twilio import twilio_signature

TOKEN = "f00dfeedf00dfeedf00dfeedf00dfeed"


def test_the_twilio_stand_in_signs_as_twilios_request_validator_computes() -> None:
    # GIVEN a status callback's parameters and the URL it is posted to
    url = "http://127.0.0.1:40123/twilio/status"
    params = {"MessageSid": "SM" + "ab" * 16, "MessageStatus": "undelivered", "ErrorCode": "30006",
              "To": "+14155550183", "From": "+14155550100", "AccountSid": "AC" + "0" * 32}  # fmt: skip
    # WHEN the stand-in signs them
    signature = twilio_signature(url, params, TOKEN)
    # THEN Twilio's library computes the same signature and validates it, and not under
    # another token or for another URL
    validator = RequestValidator(TOKEN)
    assert signature == validator.compute_signature(url, params)
    assert validator.validate(url, params, signature)
    assert not RequestValidator("0" * 32).validate(url, params, signature)
    assert not validator.validate(url.replace("status", "inbound"), params, signature)


def test_the_function_url_stand_in_builds_the_payload_2_event() -> None:
    # GIVEN a function that records its events and answers like the inbound edge
    events: list[dict[str, Any]] = []

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        events.append(event)
        return {"statusCode": 202, "headers": {"content-type": "text/xml"}, "body": "<Response/>"}

    with FunctionUrlServer(invoke) as server:
        # WHEN a form post (as Twilio sends) and a JSON post (as n8n sends) arrive
        form = httpx.post(f"{server.url}twilio/inbound?x=1", data={"Body": "STOP", "From": "+14155550181"})
        json_answer = httpx.post(f"{server.url}events", content=b'{"type":"x"}',
                                 headers={"Content-Type": "application/json", "X-Test": "a"})  # fmt: skip
    # THEN the function saw each as a Function URL event, and its answer is the HTTP answer
    assert (form.status_code, form.text, form.headers["content-type"]) == (202, "<Response/>", "text/xml")
    assert json_answer.status_code == 202 and server.requests == 2
    first, second = events
    assert first["version"] == "2.0" and first["requestContext"]["http"]["method"] == "POST"
    assert (first["rawPath"], first["rawQueryString"]) == ("/twilio/inbound", "x=1")
    assert first["isBase64Encoded"] is True
    assert base64.b64decode(first["body"]).decode() == "Body=STOP&From=%2B14155550181"
    assert first["headers"]["host"] == server.url.removeprefix("http://").rstrip("/")
    assert (second["isBase64Encoded"], second["body"], second["headers"]["x-test"]) == (
        False,
        '{"type":"x"}',
        "a",
    )
