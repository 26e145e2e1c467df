"""The inbound edge (functions/inbound, behind a Lambda Function URL): one HTTP request from
Twilio or n8n in, one answer out, and in between a verified event stored on the inbound
queue (docs/inbound.md).

Two promises shape it:

* Never a 2xx for an event that was not stored. The answer is built after the queue took
  the event; a queue that refuses it is a 503, which the sender retries.
* A forged request is cheap. The URL is public (Twilio and n8n cannot sign SigV4 requests),
  so the route, the method, the size and the presence of the signature headers are checked
  first: a request failing those costs no secret read and no AWS call. The secrets come
  through a cached reader, and nothing reaches the queue unverified.

Every refused request gets exactly one log line saying why, naming fields and never their
values: no phone number or message text reaches a log.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final
from urllib.parse import parse_qsl

from aws_lambda_powertools import Logger
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from proactive_delivery import SERVICE
from proactive_delivery.app.ports import QUEUE_MESSAGE_LIMIT_BYTES, InboundQueue
from proactive_delivery.core.errors import ConfigError, MalformedRecordError, QueueError
from proactive_delivery.core.inbound import (
    OPT_OUT_TYPES,
    ContactDnd,
    EventData,
    InboundEvent,
    MessageStatus,
    SmsReceived,
    events_identity,
    our_message_id,
    parse_utc,
    twilio_error_code,
    twilio_message_identity,
    twilio_receipt_status,
    twilio_status_identity,
    utc_iso,
)
from proactive_delivery.core.twilio_signature import FormParams, is_valid_signature

logger = Logger(service=SERVICE, child=True)

Clock = Callable[[], datetime]
# Reads a secret (cached); raises ConfigError when it cannot.
SecretSource = Callable[[], str]

DEFAULT_MAX_BODY_BYTES: Final = 65_536
# Standard Webhooks' tolerance: a request signed longer ago (or ahead) than this is refused.
SIGNATURE_TOLERANCE: Final = timedelta(minutes=5)
# Twilio's webhooks carry a few dozen parameters; parsing stops well above that.
MAX_FORM_FIELDS: Final = 200
TWIML_EMPTY: Final = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_HTTP_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Route(StrEnum):
    TWILIO_INBOUND = "/twilio/inbound"
    TWILIO_STATUS = "/twilio/status"
    EVENTS = "/events"

    @property
    def label(self) -> str:
        """The route's name in log lines and metrics: twilio_inbound, twilio_status, events."""
        return self.value.strip("/").replace("/", "_")


class Outcome(StrEnum):
    """What became of a request: the log line's reason and the metric's outcome dimension."""

    QUEUED = "queued"
    IGNORED = "ignored"
    UNKNOWN_ROUTE = "unknown_route"
    ROUTE_DISABLED = "route_disabled"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    BODY_TOO_LARGE = "body_too_large"
    SIGNATURE_MISSING = "signature_missing"
    SIGNATURE_UNSUPPORTED = "signature_unsupported"
    SIGNATURE_INVALID = "signature_invalid"
    TIMESTAMP_INVALID = "timestamp_invalid"
    TIMESTAMP_STALE = "timestamp_stale"
    MALFORMED_BODY = "malformed_body"
    EVENT_TOO_LARGE = "event_too_large"
    CONFIG_ERROR = "config_error"
    QUEUE_UNAVAILABLE = "queue_unavailable"


_ERROR_NAMES: Final = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    503: "unavailable",
}


@dataclass(frozen=True)
class HttpRequest:
    """One request as the Function URL delivered it; header names lower-case."""

    method: str
    path: str
    query: str = ""
    host: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    raw_body: str = ""
    base64_encoded: bool = False

    @property
    def body_size(self) -> int:
        """The body's size in bytes, without decoding a base64 body."""
        raw = self.raw_body
        if self.base64_encoded:
            return len(raw) * 3 // 4 - raw[-2:].count("=")
        # A body with more characters than any allowed limit has at least as many bytes:
        # no need to encode it to refuse it.
        return len(raw) if len(raw) > QUEUE_MESSAGE_LIMIT_BYTES else len(raw.encode("utf-8"))

    def body(self) -> bytes:
        """The body's bytes; ValueError for a base64 body that is not base64."""
        if self.base64_encoded:
            return base64.b64decode(self.raw_body, validate=True)
        return self.raw_body.encode("utf-8")


@dataclass(frozen=True)
class HttpResponse:
    status: int
    outcome: Outcome
    body: str = ""
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # The queued event's kind (metrics count queued events by kind).
    kind: str | None = None


class _Refused(Exception):
    def __init__(self, status: int, outcome: Outcome, detail: str = "") -> None:
        super().__init__(outcome.value)
        self.status = status
        self.outcome = outcome
        self.detail = detail


@dataclass(frozen=True)
class _Ignored:
    """A verified request that records nothing (a Twilio status before "sent")."""

    status: str


class InboundEdge:
    def __init__(
        self,
        queue: InboundQueue,
        *,
        twilio_auth_token: SecretSource | None,
        signing_secret: SecretSource | None,
        public_url: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self._queue = queue
        self._secrets: dict[Route, SecretSource | None] = {
            Route.TWILIO_INBOUND: twilio_auth_token,
            Route.TWILIO_STATUS: twilio_auth_token,
            Route.EVENTS: signing_secret,
        }
        # What Twilio called when a custom domain fronts the Function URL.
        self._public_url = public_url.rstrip("/") if public_url else None
        self._max_body_bytes = max_body_bytes
        self._clock = clock

    def handle(self, request: HttpRequest) -> HttpResponse:
        route = _route(request.path)
        try:
            verified = self._verified(route, request)
            if isinstance(verified, _Ignored):
                logger.info(
                    "inbound status ignored", route=route.label if route else None, status=verified.status
                )
                return HttpResponse(200, Outcome.IGNORED)
            self._store(verified)
        except _Refused as refused:
            return _refuse(route, request, refused)
        assert route is not None  # _verified refuses an unknown route
        logger.info(
            "inbound event queued", inbound_id=verified.id, kind=str(verified.kind), route=route.label
        )
        return _accepted(route, verified)

    # -- checks, cheapest first ---------------------------------------------------------------
    def _verified(self, route: Route | None, request: HttpRequest) -> InboundEvent | _Ignored:
        if route is None:
            raise _Refused(404, Outcome.UNKNOWN_ROUTE)
        if self._secrets[route] is None:
            raise _Refused(404, Outcome.ROUTE_DISABLED, "no secret is configured for this route")
        if request.method != "POST":
            raise _Refused(405, Outcome.METHOD_NOT_ALLOWED)
        if request.body_size > self._max_body_bytes:
            raise _Refused(413, Outcome.BODY_TOO_LARGE, f"over {self._max_body_bytes} bytes")
        if route is Route.EVENTS:
            return self._standard_webhooks_event(request)
        params = self._verified_twilio_form(route, request)
        if route is Route.TWILIO_INBOUND:
            return self._twilio_message(params)
        return self._twilio_status(params)

    def _secret(self, route: Route) -> str:
        source = self._secrets[route]
        assert source is not None  # _verified refuses a route without one
        try:
            return source()
        except ConfigError as exc:
            raise _Refused(503, Outcome.CONFIG_ERROR, str(exc)) from None

    def _store(self, event: InboundEvent) -> None:
        if len(event.to_body().encode("utf-8")) > QUEUE_MESSAGE_LIMIT_BYTES:
            raise _Refused(
                413, Outcome.EVENT_TOO_LARGE, f"over the queue's {QUEUE_MESSAGE_LIMIT_BYTES} bytes"
            )
        try:
            self._queue.put(event)
        except QueueError as exc:
            raise _Refused(503, Outcome.QUEUE_UNAVAILABLE, str(exc)) from None

    # -- Twilio ---------------------------------------------------------------------------------
    def _verified_twilio_form(self, route: Route, request: HttpRequest) -> dict[str, list[str]]:
        signature = request.headers.get("x-twilio-signature", "")
        if not signature:
            raise _Refused(401, Outcome.SIGNATURE_MISSING, "no X-Twilio-Signature header")
        settings = request.headers.get("x-twilio-webhooks-signature-settings", "")
        if _signature_algorithm(settings) != "HMAC_SHA1":
            raise _Refused(
                401, Outcome.SIGNATURE_UNSUPPORTED, "only auth-token (HMAC-SHA1) signatures are verified"
            )
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded":
            raise _Refused(
                400, Outcome.MALFORMED_BODY, "content-type must be application/x-www-form-urlencoded"
            )
        params = _form(request)
        if not is_valid_signature(
            signed_url(request, self._public_url), params, signature, self._secret(route)
        ):
            raise _Refused(401, Outcome.SIGNATURE_INVALID, "X-Twilio-Signature does not match")
        return params

    def _twilio_message(self, params: FormParams) -> InboundEvent:
        sid = _single(params, "MessageSid")
        opt_out = _single(params, "OptOutType", default="").strip().upper()
        return _event(
            lambda: twilio_message_identity(sid),
            self._clock(),
            lambda: SmsReceived(
                phone=_single(params, "From"),
                # An MMS may come without text.
                text=_single(params, "Body", default=""),
                provider="twilio",
                provider_message_id=sid,
                # A class Twilio adds later is left to the processor's own keyword check.
                opt_out_type=opt_out if opt_out in OPT_OUT_TYPES else None,
            ),
        )

    def _twilio_status(self, params: FormParams) -> InboundEvent | _Ignored:
        sid = _single(params, "MessageSid")
        given = _single(params, "MessageStatus")
        receipt = twilio_receipt_status(given)
        if receipt is None:
            return _Ignored(given.strip().lower()[:32])
        status: str = receipt
        try:
            error_code = twilio_error_code(_single(params, "ErrorCode", default=""))
        except MalformedRecordError as exc:
            raise _Refused(400, Outcome.MALFORMED_BODY, str(exc)) from None
        return _event(
            lambda: twilio_status_identity(sid, status, error_code),
            self._clock(),
            lambda: MessageStatus(
                message_id=None, provider_ref=sid, status=status, error_code=error_code, provider="twilio"
            ),
        )

    # -- Standard Webhooks (n8n) ----------------------------------------------------------------
    def _standard_webhooks_event(self, request: HttpRequest) -> InboundEvent:
        headers = {name: request.headers.get(name, "") for name in _WEBHOOK_HEADERS}
        if not all(headers.values()):
            raise _Refused(
                401,
                Outcome.SIGNATURE_MISSING,
                "webhook-id, webhook-timestamp and webhook-signature are required",
            )
        if not _TIMESTAMP.match(headers["webhook-timestamp"]):
            raise _Refused(401, Outcome.TIMESTAMP_INVALID, "webhook-timestamp is not a Unix time")
        now = self._clock()
        if abs(now.timestamp() - int(headers["webhook-timestamp"])) > SIGNATURE_TOLERANCE.total_seconds():
            raise _Refused(401, Outcome.TIMESTAMP_STALE, "webhook-timestamp is more than 5 minutes away")
        try:
            text = request.body().decode("utf-8")
        except ValueError:
            raise _Refused(400, Outcome.MALFORMED_BODY, "the body is not UTF-8 text") from None
        verifier = _verifier(self._secret(Route.EVENTS))
        try:
            verifier.verify(text, headers, json_parse=False)
        except (WebhookVerificationError, ValueError):
            # ValueError: a signature header that is not "v1,<base64>" at all.
            raise _Refused(401, Outcome.SIGNATURE_INVALID, "webhook-signature does not match") from None
        try:
            doc = json.loads(text)
        except ValueError:
            raise _Refused(400, Outcome.MALFORMED_BODY, "the body is not JSON") from None
        return _event(lambda: events_identity(headers["webhook-id"]), now, lambda: _envelope_data(doc))


_WEBHOOK_HEADERS: Final = ("webhook-id", "webhook-timestamp", "webhook-signature")


@lru_cache(maxsize=4)
def _standard_webhook(secret: str) -> Webhook:
    return Webhook(secret)


def _verifier(secret: str) -> Webhook:
    """The verifier for the secret in effect (a rotated secret gets its own)."""
    try:
        return _standard_webhook(secret)
    except (ValueError, TypeError):
        raise _Refused(503, Outcome.CONFIG_ERROR, "the inbound signing secret is not base64") from None


def _envelope_data(doc: Any) -> EventData:
    """The event data of an n8n event {"type": ..., "data": {...}} (docs/inbound.md)."""
    if (
        not isinstance(doc, dict)
        or not isinstance(doc.get("type"), str)
        or not isinstance(doc.get("data"), dict)
    ):
        raise MalformedRecordError("invalid_envelope", "the body must be {type, data}")
    data: dict[str, Any] = doc["data"]

    def given(name: str) -> Any:
        # Missing is None; the event data's own checks refuse a missing required field.
        return data.get(name)

    kind = doc["type"]
    if kind == "sms.received":
        sent_at = given("timestamp")
        return SmsReceived(
            phone=given("phone"),
            text=given("message_content"),
            provider="ghl",
            provider_message_id=given("ghl_message_id"),
            sent_at=None if sent_at is None else utc_iso(parse_utc(sent_at, "timestamp")),
        )
    if kind == "message.status":
        reference = given("message_id")
        if not isinstance(reference, str) or not reference:
            raise MalformedRecordError("invalid_data", "message_id must be a non-empty string")
        message_id, provider_ref = our_message_id(reference)
        code: Any = given("error_code")
        if isinstance(code, int) and not isinstance(code, bool):
            code = str(code)
        return MessageStatus(
            message_id=message_id,
            provider_ref=provider_ref,
            status=given("status"),
            error_code=None if code in (None, "") else code,
            provider="ghl",
        )
    if kind == "contact.dnd":
        return ContactDnd(phone=given("phone"), sms=given("sms"))
    raise MalformedRecordError("unknown_kind", "type must be sms.received, message.status or contact.dnd")


# -- helpers ------------------------------------------------------------------------------------


def _route(path: str) -> Route | None:
    try:
        return Route(path)
    except ValueError:
        return None


def signed_url(request: HttpRequest, public_url: str | None = None) -> str:
    """The URL Twilio called and signed: `public_url` + path + query when a custom domain
    fronts the function (INBOUND_PUBLIC_URL), else the Function URL as the request reached
    it (https, its host, path and query exactly as sent)."""
    query = f"?{request.query}" if request.query else ""
    base = public_url.rstrip("/") if public_url else f"https://{request.host}"
    return f"{base}{request.path}{query}"


def _signature_algorithm(settings_header: str) -> str:
    """The algorithm X-Twilio-Webhooks-Signature-Settings names; none named is HMAC-SHA1
    with the auth token (Twilio's default signature)."""
    for part in settings_header.split(","):
        name, _, value = part.partition("=")
        if name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return "HMAC_SHA1"


def _form(request: HttpRequest) -> dict[str, list[str]]:
    try:
        pairs = parse_qsl(
            request.body().decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=True,
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except ValueError:
        raise _Refused(400, Outcome.MALFORMED_BODY, "not a form-encoded UTF-8 body") from None
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        params.setdefault(name, []).append(value)
    return params


def _single(params: FormParams, name: str, *, default: str | None = None) -> str:
    values = params.get(name)
    if not values:
        if default is None:
            raise _Refused(400, Outcome.MALFORMED_BODY, f"{name} is missing")
        return default
    if len(values) > 1:
        raise _Refused(400, Outcome.MALFORMED_BODY, f"{name} is repeated")
    return values[0]


def _event(identity: Callable[[], str], received_at: datetime, data: Callable[[], EventData]) -> InboundEvent:
    """The event, or a 400 naming what the body got wrong (never the value)."""
    try:
        return InboundEvent(id=identity(), received_at=received_at, data=data())
    except MalformedRecordError as exc:
        raise _Refused(400, Outcome.MALFORMED_BODY, str(exc)) from None


def _accepted(route: Route, event: InboundEvent) -> HttpResponse:
    kind = str(event.kind)
    if route is Route.TWILIO_INBOUND:
        # An empty TwiML answer: nothing is sent back to the contractor from here.
        return HttpResponse(200, Outcome.QUEUED, TWIML_EMPTY, "text/xml", kind=kind)
    if route is Route.TWILIO_STATUS:
        return HttpResponse(204, Outcome.QUEUED, kind=kind)
    return HttpResponse(202, Outcome.QUEUED, '{"accepted":true}', "application/json", kind=kind)


def unreadable_request(detail: str) -> HttpResponse:
    """The answer to an invocation that is not an HTTP request at all (one log line, 400)."""
    return _refuse(None, HttpRequest(method="", path=""), _Refused(400, Outcome.MALFORMED_BODY, detail))


def edge_unavailable(detail: str) -> HttpResponse:
    """The answer when the edge cannot start (its configuration): 503, so the sender retries
    once it is fixed, and one log line naming the setting."""
    return _refuse(None, HttpRequest(method="", path=""), _Refused(503, Outcome.CONFIG_ERROR, detail))


def _refuse(route: Route | None, request: HttpRequest, refused: _Refused) -> HttpResponse:
    fields: dict[str, Any] = {"status": refused.status, "reason": refused.outcome.value}
    if route is not None:
        fields["route"] = route.label
    if refused.detail:
        fields["detail"] = refused.detail
    headers: dict[str, str] = {}
    if refused.status == 405:
        # The method as sent only when it is a real one: the line holds nothing a sender chose.
        fields["method"] = request.method if request.method in _HTTP_METHODS else "other"
        headers["allow"] = "POST"
    if refused.status >= 500:
        logger.error("inbound request not stored; answered 503 so the sender retries", **fields)
    else:
        logger.warning("inbound request refused", **fields)
    body = json.dumps({"error": _ERROR_NAMES[refused.status]})
    return HttpResponse(refused.status, refused.outcome, body, "application/json", headers)
