"""The inbound edge as the tests drive it: Function URL events signed the way the senders
sign them (Twilio's own RequestValidator, the standardwebhooks library), the real handler
(functions/inbound/app.py) on services built from InboundSettings, and every log record it
writes, unformatted, so a phone number the formatter would mask still shows up as a leak."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from standardwebhooks.webhooks import Webhook
from twilio.request_validator import RequestValidator

from proactive_delivery.bootstrap import InboundServices
from proactive_delivery.settings import InboundSettings
from proactive_delivery_tools.local.esm import LambdaContext
from tests.support.functions import load_function

HOST = "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws"
TWILIO_TOKEN = "f00dfeedf00dfeedf00dfeedf00dfeed"
OTHER_TWILIO_TOKEN = "0badc0de0badc0de0badc0de0badc0de"
EVENTS_SECRET = "whsec_" + base64.b64encode(b"inbound-events-test-signing-key!").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"a-key-some-forger-thought-of-32b").decode()
MESSAGE_SID = "SM" + "a1" * 16
# Fictional numbers (555-01xx) and a text that must never reach a log line.
PHONE = "+13125550142"
PHONE_DIGITS = "3125550142"
TEXT = "Yes Thursday at 4 works, see you at the Oak St job"
TWILIO_FORM = "application/x-www-form-urlencoded"


def twilio_params(**overrides: str) -> dict[str, str]:
    """An incoming message as Twilio posts it (the fields the edge reads, and some it does not)."""
    params = {
        "MessageSid": MESSAGE_SID,
        "SmsSid": MESSAGE_SID,
        "AccountSid": "AC" + "0" * 32,
        "From": PHONE,
        "To": "+13125550100",
        "Body": TEXT,
        "NumMedia": "0",
        "ApiVersion": "2010-04-01",
    }
    params.update(overrides)
    return params


def function_url_event(
    path: str,
    body: str,
    *,
    headers: dict[str, str] | None = None,
    method: str = "POST",
    query: str = "",
    host: str = HOST,
    base64_body: bool = False,
) -> dict[str, Any]:
    """A Lambda Function URL event (payload format 2.0) as the service builds it."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"host": host, "x-forwarded-proto": "https", **(headers or {})},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": host.split(".", maxsplit=1)[0],
            "domainName": host,
            "domainPrefix": host.split(".", maxsplit=1)[0],
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "198.51.100.7"},
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": 0,
        },
        "body": base64.b64encode(body.encode()).decode() if base64_body else body,
        "isBase64Encoded": base64_body,
    }


def twilio_event(
    path: str = "/twilio/inbound",
    params: dict[str, str] | None = None,
    *,
    token: str = TWILIO_TOKEN,
    signed_url: str | None = None,
    query: str = "",
    host: str = HOST,
    signature: str | None = None,
) -> dict[str, Any]:
    """A Twilio webhook request, signed by Twilio's RequestValidator over `signed_url` (by
    default the Function URL the request reaches), form-encoded and base64'd as the Function
    URL hands it over."""
    form = twilio_params() if params is None else params
    url = signed_url or f"https://{host}{path}{'?' + query if query else ''}"
    headers = {
        "content-type": TWILIO_FORM,
        "x-twilio-signature": signature
        if signature is not None
        else RequestValidator(token).compute_signature(url, form),
    }
    return function_url_event(
        path, urlencode(form), headers=headers, query=query, host=host, base64_body=True
    )


def events_body(kind: str = "sms.received", **data: Any) -> str:
    defaults: dict[str, dict[str, Any]] = {
        "sms.received": {
            "phone": PHONE,
            "message_content": TEXT,
            "ghl_contact_id": "cT9xQ2mLk4",
            "ghl_message_id": "mG7hR2pZ",
            "timestamp": "2026-12-01T21:00:00.000Z",
        },
        "message.status": {"message_id": "proactive-123", "status": "delivered"},
        "contact.dnd": {"phone": PHONE, "sms": "active"},
    }
    return json.dumps({"type": kind, "data": {**defaults.get(kind, {}), **data}})


def events_event(
    body: str | None = None,
    *,
    secret: str = EVENTS_SECRET,
    at: datetime | None = None,
    msg_id: str = "msg_2Lh9KRb0pzN4LePd3XiA4v12Axj",
    drop: tuple[str, ...] = (),
) -> dict[str, Any]:
    """An n8n event signed by the standardwebhooks library at `at` (default: now, when the
    test runs: a signature made when pytest collects would be stale in a long suite)."""
    text = events_body() if body is None else body
    moment = at or datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=msg_id, timestamp=moment, data=text),
    }
    for name in drop:
        del headers[name]
    return function_url_event("/events", text, headers=headers)


def inbound_env(**overrides: str) -> dict[str, str]:
    """The inbound function's settings in the tests: only what it reads (no database, no
    delivery queue, no n8n URL)."""
    env = {
        "STAGE": "test",
        "INBOUND_QUEUE_URL": "http://127.0.0.1:1/123456789012/inbound",
        "INBOUND_SIGNING_SECRET": EVENTS_SECRET,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v}


@dataclass
class Captured:
    records: list[logging.LogRecord] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def leaks(self, *secrets: str) -> list[str]:
        """Every record (its raw fields, before the masking formatter) or formatted line
        that contains one of `secrets`."""
        found = []
        for record in self.records:
            raw = json.dumps(record.__dict__, default=str)
            found.extend(f"record {record.getMessage()!r}: {s!r}" for s in secrets if s in raw)
        for line in self.lines:
            found.extend(f"line: {s!r}" for s in secrets if s in line)
        return found


class _Collector(logging.Handler):
    def __init__(self, captured: Captured, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.captured = captured
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        self.captured.records.append(record)
        self.captured.lines.append(self.format(record))


@contextmanager
def captured_logs() -> Iterator[Captured]:
    """Every record the package's loggers write while the block runs."""
    from proactive_delivery.handlers import logger

    captured = Captured()
    collector = _Collector(captured, logger.registered_formatter)
    root = logging.getLogger("proactive-delivery")
    root.addHandler(collector)
    try:
        yield captured
    finally:
        root.removeHandler(collector)


def inbound_handler(services: InboundServices) -> Any:
    """functions/inbound/app.py's handler, on `services`."""
    return load_function("inbound").lambda_handler.with_services(services)


def services_for(env: dict[str, str], queue: Any, **kwargs: Any) -> InboundServices:
    return InboundServices(InboundSettings.from_env(env), queue=queue, **kwargs)


def invoke(handler: Any, event: Any) -> tuple[dict[str, Any], Captured]:
    with captured_logs() as captured:
        result = handler(event, LambdaContext("inbound", 10))
    return result, captured
