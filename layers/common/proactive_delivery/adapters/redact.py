"""Keep contact details out of logs.

Nothing in the package logs a phone number or an email address on purpose; the formatter
below is the second line of defence: it masks anything that looks like one in the final
JSON of every log line, exception text and tracebacks included.
"""

from __future__ import annotations

import re
from typing import Any

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
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value


# Keys whose values the formatter itself fills in (never from a message or a contractor):
# left out of the value pass; the pass over the finished line still covers them.
_FORMATTER_KEYS = frozenset(
    {"level", "location", "timestamp", "service", "sampling_rate", "xray_trace_id", "cold_start"}
    | {"function_name", "function_memory_size", "function_arn", "function_request_id"}
)


class RedactingFormatter(LambdaPowertoolsFormatter):
    def serialize(self, log: Any) -> str:
        # Values first, then the finished line as a second line of defence.
        values = {k: v if k in _FORMATTER_KEYS else redact_value(v) for k, v in log.items()}
        return redact_text(super().serialize(values))


class DeliveryLogFormatter(RedactingFormatter):
    """Masks contact details and makes the message identity the correlation id of every
    line about one message (message_id, or the SQS message id of a record that never
    parsed), so one search in CloudWatch Logs Insights follows a message end to end."""

    def serialize(self, log: Any) -> str:
        if not log.get("correlation_id"):
            identity = log.get("message_id") or log.get("sqs_message_id")
            if identity:
                log["correlation_id"] = identity
        return super().serialize(log)
