"""Keep contact details out of logs.

Nothing in the package logs a phone number or an email address on purpose; the formatter
below is the second line of defence: it masks anything that looks like one in every key
and value of every log line (nested ones, the message, exception text and tracebacks
included) before the line becomes JSON. Only the keys the formatter fills in itself
(level, timestamp, the Lambda context) are left as they are.
"""

from __future__ import annotations

import re
from typing import Any, Final

from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# E.164 (+ and 7-15 digits, optionally grouped) and North American 3-3-4 groupings.
_PHONE = re.compile(
    r"(?<![\w+])\+\d(?:[\s.-]?\d){6,14}\b"  # +15550100042, +44 20 7946 0958
    r"|(?<![\w-])\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}\b"  # (555) 010-0042, 555-010-0042
)
# Inside a single string value (not the whole JSON line) a bare run of 10-15 digits is
# treated as a phone number too.
_BARE_PHONE = re.compile(r"(?<![\w.:-])\d{10,15}(?![\w.:-])")
# What every match of the three patterns above contains: an @, or seven digits with at most
# two other characters between neighbours. A value without either is left as it is,
# without running them (most values of a log line: states, reasons, ids, counts).
_MAYBE_CONTACT = re.compile(r"@|\d(?:\D{0,2}\d){6}")


def mask_phone(phone: str | None) -> str | None:
    if not phone:
        return phone
    digits = re.sub(r"\D", "", phone)
    return f"***{digits[-2:]}" if len(digits) > 4 else "***"


def mask_email(email: str | None) -> str | None:
    if not email or "@" not in email:
        return email
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def redact_text(text: str) -> str:
    text = _EMAIL.sub(lambda m: mask_email(m.group(0)) or "", text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)) or "", text)


def redact_value(value: Any) -> Any:
    """Mask contact details in every string inside a log record, before it becomes JSON
    (after, a phone at the start of a line would follow an escaped "\\n")."""
    if isinstance(value, str):
        if not _MAYBE_CONTACT.search(value):
            return value
        return _BARE_PHONE.sub(lambda m: mask_phone(m.group(0)) or "", redact_text(value))
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if value is None or isinstance(value, bool | int | float):
        return value
    # Anything else (an exception in a stack trace, a datetime) becomes its str() in the
    # JSON (the formatter's json_default): masked as that text.
    return redact_value(str(value))


# Keys whose values the formatter itself fills in (never from a message or a contractor).
_FORMATTER_KEYS = frozenset(
    {"level", "location", "timestamp", "service", "sampling_rate", "xray_trace_id", "cold_start"}
    | {"function_name", "function_memory_size", "function_arn", "function_request_id"}
)


def redacted(log: dict[str, Any]) -> dict[str, Any]:
    """A log record with every key and value masked, but the formatter's own."""
    return {
        (k if k in _FORMATTER_KEYS else redact_value(k)): (v if k in _FORMATTER_KEYS else redact_value(v))
        for k, v in log.items()
    }


class RedactingFormatter(LambdaPowertoolsFormatter):
    def serialize(self, log: Any) -> str:
        return super().serialize(redacted(log))


# The key under which a batch's per-message lines are handed to the logger in one call.
MESSAGE_LINES: Final = "message_lines"


class DeliveryLogFormatter(RedactingFormatter):
    """Masks contact details and makes the message identity the correlation id of every
    line about one message (message_id, or the SQS message id of a record that never
    parsed), so one search in CloudWatch Logs Insights follows a message end to end.

    A batch's per-message lines come in one call, `logger.info(msg, message_lines=[{...}])`,
    and leave as one line per message: level, message, timestamp, correlation_id and that
    message's fields, nothing else (the invocation's context is on the batch's metrics
    blob). Lambda turns each line of the function's output into a log event of its own, so
    on-call sees one event per message, at a fraction of the cost and the bytes of a full
    record per message."""

    def serialize(self, log: Any) -> str:
        lines = log.pop(MESSAGE_LINES, None)
        if isinstance(lines, list):
            head = {
                "level": log.get("level"),
                "message": log.get("message"),
                "timestamp": log.get("timestamp"),
            }
            return "\n".join(self._message_line(head, line) for line in lines if isinstance(line, dict))
        if not log.get("correlation_id"):
            identity = log.get("message_id") or log.get("sqs_message_id")
            if identity:
                log["correlation_id"] = identity
        return super().serialize(log)

    def _message_line(self, head: dict[str, Any], fields: dict[str, Any]) -> str:
        line = {**head, "correlation_id": fields.get("message_id")}
        line.update((k, v) for k, v in fields.items() if k != "message_id" and v is not None)
        return str(self.json_serializer(redacted(line)))
