"""A webhook receiver in its own process, for the benchmark.

The deliver handler's real receiver (n8n) runs on another machine; in the benchmark's own
process a receiver would compete with the code under test for the GIL. This one verifies
each request's Standard Webhooks signature, answers 200 after DELAY seconds, and reports
what it saw at GET /stats.

    python benchmarks/remote_receiver.py PORT SECRET DELAY
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def serve(port: int, secret: str, delay: float) -> None:
    verifier = Webhook(secret)
    lock = threading.Lock()
    accepted: Counter[str] = Counter()
    rejected = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                verifier.verify(body, headers)
            except WebhookVerificationError:
                with lock:
                    rejected[0] += 1
                self._reply(401, b'{"ok":false}')
                return
            time.sleep(delay)
            with lock:
                accepted[headers.get("webhook-id", "")] += 1
            self._reply(200, b'{"ok":true}')

        def do_GET(self) -> None:
            with lock:
                stats = {
                    "accepted": sum(accepted.values()),
                    "bad_signatures": rejected[0],
                    "by_id": dict(accepted),
                }
            self._reply(200, json.dumps(stats).encode())

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]))
