"""A Lambda Function URL on loopback: each HTTP request becomes the payload-format-2.0 event
Lambda builds for a Function URL (raw path and query, lower-case headers, the body as text,
or base64 when its content type is not text or JSON), the function is invoked with it, and
its result (statusCode, headers, body) is the HTTP answer.

What is not emulated: the `https://<id>.lambda-url.<region>.on.aws/` domain (the server is
plain HTTP on 127.0.0.1, so a sender signs that URL), IAM auth (the template's AuthType is
NONE), response streaming and cookies.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

Invoke = Callable[[dict[str, Any]], Any]

# Content types a Function URL passes as text; anything else arrives base64-encoded.
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")


def _is_text(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind.startswith(_TEXT_TYPES) or kind.endswith("+json") or kind.endswith("+xml")


def function_url_event(
    method: str, target: str, headers: dict[str, str], body: bytes, host: str
) -> dict[str, Any]:
    """The event Lambda hands a function behind a Function URL for this request."""
    parts = urlsplit(target)
    now = datetime.now(UTC)
    text = _is_text(headers.get("content-type", ""))
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path or "/",
        "rawQueryString": parts.query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "local",
            "domainName": host,
            "domainPrefix": "local",
            "http": {
                "method": method,
                "path": parts.path or "/",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "isBase64Encoded": not text,
    }
    if body:
        event["body"] = body.decode("utf-8", errors="replace") if text else base64.b64encode(body).decode()
    return event


class FunctionUrlServer:
    """Serves one function's Function URL on 127.0.0.1 (a free port) until closed."""

    def __init__(self, invoke: Invoke, *, name: str = "function-url") -> None:
        self._invoke = invoke
        self.requests = 0
        self.statuses: dict[int, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name=name, daemon=True)

    @property
    def url(self) -> str:
        """The base URL, with its trailing slash, as a Function URL's is."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def __enter__(self) -> FunctionUrlServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        event = function_url_event(method, target, headers, body, headers.get("host", ""))
        try:
            result = self._invoke(event)
        except Exception:
            # Lambda answers a function error with 502 and no detail.
            result = {"statusCode": 502, "body": '{"message":"Internal Server Error"}'}
        if not isinstance(result, dict):
            result = {"statusCode": 200, "body": result if isinstance(result, str) else ""}
        status = int(result.get("statusCode", 200))
        out_headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
        raw = result.get("body")
        data = b""
        if isinstance(raw, str):
            data = base64.b64decode(raw) if result.get("isBase64Encoded") else raw.encode()
        with self._lock:
            self.requests += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
        return status, out_headers, data

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("content-length") or "0")
                body = self.rfile.read(length) if length else b""
                # A Function URL lower-cases header names and joins repeated ones with commas.
                headers: dict[str, str] = {}
                for name, value in self.headers.items():
                    key = name.lower()
                    headers[key] = f"{headers[key]},{value}" if key in headers else value
                status, out_headers, data = server._answer(self.command, self.path, headers, body)
                self.send_response(status)
                for name, value in out_headers.items():
                    if name.lower() not in ("content-length", "connection"):
                        self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return

        return Handler
