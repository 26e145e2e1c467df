"""A local webhook receiver that verifies Standard Webhooks signatures and records what a
contractor would have received. Faults are injectable per request, so tests and the demo
can make it fail, slow down or rate-limit on purpose."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    webhook_id: str
    path: str
    payload: dict[str, Any]
    status: int
    at: float


# A fault plan decides the reply for the n-th request (1-based) carrying a given webhook-id.
FaultPlan = Callable[[str, int], Reply]


def always_ok(_webhook_id: str, _n: int) -> Reply:
    return Reply()


class WebhookReceiver:
    """Run with `with WebhookReceiver(secret) as r:`; r.url is the endpoint."""

    def __init__(self, signing_secret: str, *, plan: FaultPlan = always_ok, port: int = 0) -> None:
        self._verifier = Webhook(signing_secret)
        self.plan = plan
        self.requests: list[Received] = []
        self.rejected_signatures = 0
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/webhook"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # What tests ask -------------------------------------------------------------------
    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def posts_for(self, webhook_id: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.webhook_id == webhook_id]

    def _handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[Reply, bool]:
        try:
            payload = self._verifier.verify(body, headers)
        except WebhookVerificationError:
            with self._lock:
                self.rejected_signatures += 1
            return Reply(401), False
        webhook_id = headers.get("webhook-id", "")
        with self._lock:
            n = self._counts[webhook_id] = self._counts.get(webhook_id, 0) + 1
        reply = self.plan(webhook_id, n)
        if reply.delay:
            time.sleep(reply.delay)
        with self._lock:
            self.requests.append(Received(webhook_id, path, payload, reply.status, time.time()))
        return reply, True

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes on a keep-alive socket: without
            # TCP_NODELAY, Nagle + delayed ACK add ~40 ms to every reply.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                reply, _ok = receiver._handle(self.path, headers, body)
                data = json.dumps({"ok": 200 <= reply.status < 300}).encode()
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
