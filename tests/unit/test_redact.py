"""RedactingFormatter: no phone number or email address reaches a log line, through a real
Powertools Logger writing to a StringIO."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
from aws_lambda_powertools import Logger

from proactive_delivery.adapters.redact import (
    DeliveryLogFormatter,
    RedactingFormatter,
    mask_email,
    mask_phone,
    redact_text,
)

E164 = "+13125550142"
US = "(555) 010-4242"
US_DASHED = "555-010-4343"
EMAIL = "ana.contractor@example.com"
RAW_VALUES = (E164, US, US_DASHED, EMAIL, "5550100042", "ana.contractor@")


def make_logger() -> tuple[Logger, io.StringIO]:
    stream = io.StringIO()
    # A unique service per test: Powertools reuses a configured logger (and its stream) by name.
    logger = Logger(
        service=f"redact-{uuid.uuid4().hex}", logger_formatter=RedactingFormatter(), stream=stream
    )
    return logger, stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def assert_no_raw_contact(output: str) -> None:
    for raw in RAW_VALUES:
        assert raw not in output, raw


def test_contact_details_in_the_message_are_masked() -> None:
    # GIVEN a logger with the redacting formatter
    logger, stream = make_logger()

    # WHEN a message mentions an E.164 phone, a US phone and an email
    logger.info("texting %s / %s / %s, cc %s", E164, US, US_DASHED, EMAIL)

    # THEN none of them appear raw, and each is replaced by its mask
    output = stream.getvalue()
    assert_no_raw_contact(output)
    [line] = lines(stream)
    assert line["message"] == "texting ***42 / ***42 / ***43, cc a***@example.com"


def test_contact_details_in_extra_fields_are_masked() -> None:
    # GIVEN a logger with the redacting formatter
    logger, stream = make_logger()

    # WHEN contact details are passed as keyword fields (and nested)
    logger.info("sending", phone=E164, us_phone=US, email=EMAIL, contact={"alt": [US_DASHED]})

    # THEN the fields are present but masked
    assert_no_raw_contact(stream.getvalue())
    [line] = lines(stream)
    assert line["phone"] == "***42"
    assert line["us_phone"] == "***42"
    assert line["email"] == "a***@example.com"
    assert line["contact"] == {"alt": ["***43"]}


def test_contact_details_in_exception_text_are_masked() -> None:
    # GIVEN a logger with the redacting formatter
    logger, stream = make_logger()

    # WHEN an exception whose text carries contact details is logged with its traceback
    try:
        raise ValueError(f"provider refused {E164} and {EMAIL} (alt {US})")
    except ValueError:
        logger.exception("send failed")

    # THEN neither the exception field nor the structured stack trace leaks them
    output = stream.getvalue()
    assert_no_raw_contact(output)
    [line] = lines(stream)
    assert "ValueError: provider refused ***42 and a***@example.com (alt ***42)" in line["exception"]


def test_structural_fields_are_untouched() -> None:
    # GIVEN values that look numeric but are not contact details
    logger, stream = make_logger()
    request_id = "123e4567-e89b-12d3-a456-426614174000"
    numeric_uuid = "12345678-1234-1234-1234-123456789012"

    # WHEN they are logged
    logger.info(
        "batch done",
        request_id=request_id,
        other_id=numeric_uuid,
        at="2025-03-04T12:00:00.123456+00:00",
        epoch_ms=1741089600123,
        sqs_message_id="059f36b4-87a3-44ab-83d2-661975830a7d",
    )

    # THEN they come out exactly as given, and so does the record's own timestamp
    [line] = lines(stream)
    assert line["request_id"] == request_id
    assert line["other_id"] == numeric_uuid
    assert line["at"] == "2025-03-04T12:00:00.123456+00:00"
    assert line["epoch_ms"] == 1741089600123
    assert line["sqs_message_id"] == "059f36b4-87a3-44ab-83d2-661975830a7d"
    assert "***" not in line["timestamp"]


def test_phone_at_the_start_of_a_line_is_masked() -> None:
    # GIVEN a multi-line message (as exception text often is) with a phone starting a line
    logger, stream = make_logger()

    # WHEN it is logged
    logger.info("provider said:\n%s\n%s", E164, US_DASHED)

    # THEN the phones are still masked
    assert_no_raw_contact(stream.getvalue())


# --- mask helpers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        (E164, "***42"),
        ("+44 20 7946 0958", "***58"),
        (US, "***42"),
        ("1234", "***"),
        ("", ""),
        (None, None),
    ],
)
def test_mask_phone_keeps_at_most_the_last_two_digits(phone: str | None, masked: str | None) -> None:
    assert mask_phone(phone) == masked


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        (EMAIL, "a***@example.com"),
        ("x@example.org", "x***@example.org"),
        ("not-an-email", "not-an-email"),
        ("", ""),
        (None, None),
    ],
)
def test_mask_email_keeps_the_first_letter_and_the_domain(email: str | None, masked: str | None) -> None:
    assert mask_email(email) == masked


def test_redact_text_masks_grouped_international_numbers() -> None:
    # GIVEN international numbers written with spaces, dots and dashes
    text = "call +44 20 7946 0958 or +1.555.010.4242 or +33-1-23-45-67-89"

    # WHEN / THEN no digits run of the originals survives
    redacted = redact_text(text)
    assert redacted == "call ***58 or ***42 or ***89"


def test_contact_details_in_keys_are_masked() -> None:
    logger, stream = make_logger()
    logger.info("by number", replies={E164: 2, EMAIL: 1})
    assert_no_raw_contact(stream.getvalue())
    [line] = lines(stream)
    assert line["replies"] == {"***42": 2, "a***@example.com": 1}


def test_a_batchs_message_lines_leave_as_one_lean_line_per_message() -> None:
    # GIVEN the deliver function's formatter
    stream = io.StringIO()
    logger = Logger(
        service=f"lines-{uuid.uuid4().hex}", logger_formatter=DeliveryLogFormatter(), stream=stream
    )
    logger.append_keys(function_request_id="123e4567-e89b-12d3-a456-426614174000")

    # WHEN two messages' outcomes are logged in one call (one carries a contact detail)
    logger.info(
        "delivery outcome",
        message_lines=[
            {"message_id": "proactive-1", "state": "sent", "http_status": 200, "reason": None},
            {
                "message_id": "proactive-2",
                "state": "failed",
                "reason": "rejected",
                "error": f"refused {E164}",
            },
        ],
    )

    # THEN each message is a line of its own, with its identity as the correlation id, the
    # record's level, message and time, its own fields (no None), masked, and nothing else
    assert_no_raw_contact(stream.getvalue())
    first, second = lines(stream)
    assert set(first) == {"level", "message", "timestamp", "correlation_id", "state", "http_status"}
    assert (first["level"], first["message"], first["correlation_id"]) == (
        "INFO",
        "delivery outcome",
        "proactive-1",
    )
    assert second["correlation_id"] == "proactive-2"
    assert (second["reason"], second["error"]) == ("rejected", "refused ***42")
    assert first["timestamp"] == second["timestamp"]
