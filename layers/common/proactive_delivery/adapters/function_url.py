"""Lambda Function URL events (payload format 2.0) in and out of the inbound edge.

A Function URL hands the function the request as it arrived: the raw path and query string,
lower-case header names, and the body as text, or base64 when its content type is not
text or JSON (Twilio's form posts arrive base64-encoded).
"""

from __future__ import annotations

from typing import Any

from proactive_delivery.app.inbound_edge import HttpRequest, HttpResponse
from proactive_delivery.core.errors import MalformedRecordError


def request_from_event(event: Any) -> HttpRequest:
    """The request a Function URL event describes; MalformedRecordError for anything else
    (a direct invoke with some other payload)."""
    context = event.get("requestContext") if isinstance(event, dict) else None
    http = context.get("http") if isinstance(context, dict) else None
    if not isinstance(http, dict) or not isinstance(http.get("method"), str):
        raise MalformedRecordError("invalid_event", "not a Function URL event (payload format 2.0)")
    raw_headers = event.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise MalformedRecordError("invalid_event", "headers must be an object")
    headers = {str(name).lower(): str(value) for name, value in raw_headers.items()}
    body = event.get("body")
    return HttpRequest(
        method=http["method"].upper(),
        path=str(event.get("rawPath") or http.get("path") or "/"),
        query=str(event.get("rawQueryString") or ""),
        # The host the caller used (what Twilio signed); the URL's own domain otherwise.
        host=headers.get("host") or str(context.get("domainName") or ""),  # type: ignore[union-attr]
        headers=headers,
        raw_body=body if isinstance(body, str) else "",
        base64_encoded=event.get("isBase64Encoded") is True,
    )


def function_url_result(response: HttpResponse) -> dict[str, Any]:
    """The Function URL's answer: status, headers and a text body."""
    headers = dict(response.headers)
    if response.content_type:
        headers["content-type"] = response.content_type
    return {
        "statusCode": response.status,
        "headers": headers,
        "body": response.body,
        "isBase64Encoded": False,
    }
