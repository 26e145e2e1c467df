"""A local stand-in for the Twilio Messages API (POST /2010-04-01/Accounts/{sid}/Messages.json),
for tests and the demo: checks Basic auth, records the form, and answers like Twilio (201
with a message SID, or an error JSON with a code) as the reply plan says.

With `callbacks=True` it also calls back as Twilio does: for each message it accepted with a
`StatusCallback`, a `sent` then a `delivered` status callback (`undelivered` with ErrorCode
30006 for a number its handsets say is a landline), and, for a handset that answers, the
contractor's reply posted to the incoming-message webhook (`incoming_url`, the Messaging
Service's console setting). Every callback is form-encoded and signed with
`X-Twilio-Signature` under the account's auth token, as Twilio signs: base64(HMAC-SHA1(token,
URL + each parameter's name and value, sorted by name)). With `hold_callbacks=True` the
callbacks wait until `release()` (the local runtime releases them once no deliver invocation
is running, so each message's provider reference is recorded before its receipt arrives).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import httpx


@dataclass(frozen=True)
class TwilioReply:
    status: int = 201
    code: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    # Seconds before answering (the provider's latency).
    delay: float = 0.0


# Decides the reply from the recipient (To) and how many requests it has had (1-based).
TwilioPlan = Callable[[str, int], TwilioReply]


def twilio_ok(_to: str, _n: int) -> TwilioReply:
    return TwilioReply()


@dataclass
class TwilioRequest:
    account_sid: str
    form: dict[str, str]
    status: int
    sid: str | None
    # The idempotency-key header the request carried, if any.
    idempotency_key: str | None = None


# Twilio's code for a landline or unreachable carrier (a permanent failure for SMS).
LANDLINE_ERROR = "30006"


@dataclass(frozen=True)
class Handset:
    """What happens at one number: a landline never gets the message (undelivered, 30006);
    `reply` is what the contractor texts back after the first message that reaches them."""

    landline: bool = False
    reply: str | None = None


@dataclass(frozen=True)
class Callback:
    """One request Twilio makes to us: a status callback or an incoming message."""

    kind: str  # "status" | "incoming"
    url: str
    params: dict[str, str]


def twilio_signature(url: str, params: Mapping[str, str], auth_token: str) -> str:
    """X-Twilio-Signature as Twilio documents it: base64 of HMAC-SHA1 under the auth token over
    the full URL followed by each POST parameter's name and value, sorted by name."""
    signed = url + "".join(name + params[name] for name in sorted(params))
    digest = hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


@dataclass
class CallbackLog:
    """What the stand-in posted back, and how the endpoint answered."""

    posted: list[tuple[Callback, int]] = field(default_factory=list)

    def answers(self) -> Counter[int]:
        return Counter(status for _, status in self.posted)


class FakeTwilio:
    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        *,
        plan: TwilioPlan = twilio_ok,
        callbacks: bool = False,
        handsets: Mapping[str, Handset] | None = None,
        incoming_url: str | None = None,
        hold_callbacks: bool = False,
    ) -> None:
        self.account_sid = account_sid
        self._auth = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self._auth_token = auth_token
        self.plan = plan
        self.requests: list[TwilioRequest] = []
        self.unauthorized = 0
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.callbacks = callbacks
        self.handsets = dict(handsets or {})
        self.incoming_url = incoming_url
        self.hold_callbacks = hold_callbacks
        self.callback_log = CallbackLog()
        # One bundle per accepted message: its callbacks, posted in order by one poster.
        self._held: list[list[Callback]] = []
        self._outbox: list[list[Callback]] = []
        self._replied: set[str] = set()
        self._posting = 0
        self._wake = threading.Condition(self._lock)
        self._closing = False
        # Messages' callbacks go out side by side, as Twilio's do; each message's in order.
        self._posters = [
            threading.Thread(target=self._post_loop, name=f"fake-twilio-callbacks-{i}", daemon=True)
            for i in range(4)
        ]
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-twilio", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeTwilio:
        self._thread.start()
        if self.callbacks:
            for poster in self._posters:
                poster.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify_all()
        for poster in self._posters:
            if poster.is_alive():
                poster.join(timeout=10)
        self._server.shutdown()
        self._server.server_close()

    # Callbacks ------------------------------------------------------------------------------
    def release(self, limit: int | None = None) -> int:
        """Send the held callbacks (those of the first `limit` messages, in the order they were
        accepted); for how many messages."""
        with self._wake:
            released = self._held[:limit] if limit is not None else list(self._held)
            del self._held[: len(released)]
            self._outbox.extend(released)
            self._wake.notify_all()
        return len(released)

    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def idle(self) -> bool:
        """Nothing held, nothing waiting to be posted, nothing being posted."""
        with self._lock:
            return not (self._held or self._outbox or self._posting)

    def _callbacks_for(self, form: dict[str, str], sid: str) -> list[Callback]:
        url = form.get("StatusCallback")
        to = form.get("To", "")
        sender = form.get("From") or form.get("MessagingServiceSid", "")
        handset = self.handsets.get(to, Handset())
        base = {"AccountSid": self.account_sid, "ApiVersion": "2010-04-01", "From": sender, "To": to}
        made: list[Callback] = []
        if url:
            made.append(
                Callback(
                    "status",
                    url,
                    {**base, "MessageSid": sid, "SmsSid": sid, "MessageStatus": "sent", "SmsStatus": "sent"},
                )
            )
            final = {"MessageStatus": "delivered", "SmsStatus": "delivered"}
            if handset.landline:
                final = {"MessageStatus": "undelivered", "SmsStatus": "undelivered"}
                final["ErrorCode"] = LANDLINE_ERROR
            made.append(Callback("status", url, {**base, "MessageSid": sid, "SmsSid": sid, **final}))
        if handset.reply and not handset.landline and self.incoming_url and to not in self._replied:
            self._replied.add(to)
            reply_sid = "SM" + uuid.uuid4().hex
            made.append(Callback("incoming", self.incoming_url, {
                "AccountSid": self.account_sid, "ApiVersion": "2010-04-01", "MessageSid": reply_sid,
                "SmsSid": reply_sid, "SmsMessageSid": reply_sid, "From": to, "To": form.get("From", ""),
                "Body": handset.reply, "NumMedia": "0", "NumSegments": "1",
            }))  # fmt: skip
        return made

    def _post_loop(self) -> None:
        with httpx.Client(timeout=10) as client:
            while True:
                with self._wake:
                    while not self._outbox and not self._closing:
                        self._wake.wait()
                    if not self._outbox:
                        return
                    bundle = self._outbox.pop(0)
                    self._posting += 1
                try:
                    for callback in bundle:
                        status = self._post(client, callback)
                        with self._lock:
                            self.callback_log.posted.append((callback, status))
                finally:
                    with self._lock:
                        self._posting -= 1

    def _post(self, client: httpx.Client, callback: Callback) -> int:
        headers = {"X-Twilio-Signature": twilio_signature(callback.url, callback.params, self._auth_token)}
        try:
            return client.post(callback.url, data=callback.params, headers=headers).status_code
        except httpx.HTTPError:
            return 0

    def delivered(self) -> list[TwilioRequest]:
        with self._lock:
            return [r for r in self.requests if r.status == 201]

    def _answer(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, Any], TwilioReply]:
        expected = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        if path != expected:
            return 404, {"code": 20404, "message": "not found", "status": 404}, TwilioReply(404)
        if headers.get("authorization") != self._auth:
            with self._lock:
                self.unauthorized += 1
            return 401, {"code": 20003, "message": "Authenticate", "status": 401}, TwilioReply(401)
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        to = form.get("To", "")
        with self._lock:
            n = self._counts[to] = self._counts.get(to, 0) + 1
        reply = self.plan(to, n)
        if reply.delay:
            time.sleep(reply.delay)
        sid = "SM" + uuid.uuid4().hex if reply.status == 201 else None
        with self._wake:
            self.requests.append(
                TwilioRequest(self.account_sid, form, reply.status, sid, headers.get("idempotency-key"))
            )
            if sid and self.callbacks:
                made = self._callbacks_for(form, sid)
                if made:
                    (self._held if self.hold_callbacks else self._outbox).append(made)
                self._wake.notify_all()
        if reply.status == 201:
            return 201, {"sid": sid, "status": "queued", "to": to}, reply
        return reply.status, {"code": reply.code, "message": "error", "status": reply.status}, reply

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload, reply = fake._answer(self.path, headers, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
