"""A provider that takes R requests a second, in its own process, for the pace benchmark.

It stands for GoHighLevel behind n8n: a token bucket of RATE tokens a second holding at most
BURST (default RATE: a second's worth); a request that finds a token is answered 200 after
DELAY seconds, one that finds none at once with 429 and `Retry-After` (whole seconds until
the next token, at least 1), as GHL answers above its limit. Every request's Standard
Webhooks signature is verified first (401 without a token taken), as
benchmarks/remote_receiver.py does. GET /stats reports every answer per webhook-id, with the
time (time.time()) the request arrived.

    python benchmarks/rate_limited_provider.py PORT SECRET RATE DELAY [BURST]
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; starts full."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("the rate must be above 0 and the burst at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """0.0 when a token was taken; otherwise the seconds until one will be there."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate


def retry_after(wait: float) -> str:
    """Retry-After in delay-seconds (RFC 9110: a whole number), never 0."""
    return str(max(1, math.ceil(wait)))


def make_server(port: int, secret: str, rate: float, delay: float, burst: float) -> ThreadingHTTPServer:
    """The provider on 127.0.0.1:port (port 0: any free one), not yet serving."""
    verifier = Webhook(secret)
    bucket = TokenBucket(rate, burst)
    lock = threading.Lock()
    answers: dict[str, list[tuple[int, float]]] = defaultdict(list)
    bad_signatures = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            arrived = time.time()
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                verifier.verify(body, headers)
            except WebhookVerificationError:
                with lock:
                    bad_signatures[0] += 1
                self._reply(401, b'{"ok":false}')
                return
            webhook_id = headers.get("webhook-id", "")
            wait = bucket.take()
            if wait:
                with lock:
                    answers[webhook_id].append((429, arrived))
                self._reply(429, b'{"message":"Too Many Requests"}', {"retry-after": retry_after(wait)})
                return
            with lock:
                answers[webhook_id].append((200, arrived))
            time.sleep(delay)
            self._reply(200, b'{"ok":true}')

        def do_GET(self) -> None:
            with lock:
                stats = {"bad_signatures": bad_signatures[0], "answers": dict(answers)}
            self._reply(200, json.dumps(stats).encode())

        def log_message(self, format: str, *args: Any) -> None:
            return

    class Server(ThreadingHTTPServer):
        # Five deliver processes open ten connections each at once: the default listen
        # backlog (5) would drop connection attempts, which come back a second later.
        request_queue_size = 128
        daemon_threads = True

    return Server(("127.0.0.1", port), Handler)


if __name__ == "__main__":
    rate_arg = float(sys.argv[3])
    burst_arg = float(sys.argv[5]) if len(sys.argv) > 5 else rate_arg
    make_server(int(sys.argv[1]), sys.argv[2], rate_arg, float(sys.argv[4]), burst_arg).serve_forever()
