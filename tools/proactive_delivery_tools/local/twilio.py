"""A local stand-in for the Twilio Messages API (POST /2010-04-01/Accounts/{sid}/Messages.json),
for tests and the demo: checks Basic auth, records the form, and answers like Twilio (201
with a message SID, or an error JSON with a code) as the reply plan says."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


@dataclass(frozen=True)
class TwilioReply:
    status: int = 201
    code: int | None = None
    headers: tuple[tuple[str, str], ...] = ()


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


class FakeTwilio:
    def __init__(self, account_sid: str, auth_token: str, *, plan: TwilioPlan = twilio_ok) -> None:
        self.account_sid = account_sid
        self._auth = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode()
        self.plan = plan
        self.requests: list[TwilioRequest] = []
        self.unauthorized = 0
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-twilio", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeTwilio:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

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
        sid = "SM" + uuid.uuid4().hex if reply.status == 201 else None
        with self._lock:
            self.requests.append(
                TwilioRequest(self.account_sid, form, reply.status, sid, headers.get("idempotency-key"))
            )
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
