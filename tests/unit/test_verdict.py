"""The one path from a message's facts to a verdict (verdict.judge), on the platform's own
rules: follow-up status, completed action items, rows sent by someone else, unknown age,
the platform's sms_opt_in and timezone, phones as stored."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from aws_lambda_powertools import Logger

from proactive_delivery.app import verdict
from proactive_delivery.app.verdict import judge
from proactive_delivery.core.content import Names
from proactive_delivery.core.models import MessageFacts, MessageKey
from proactive_delivery.core.policy import StoredPreferences
from tests.support.policy import ALL_CHANNELS, NEW_YORK

# 15:00 UTC: 10:00 in New York, 00:00 in Tokyo (inside 21:00-08:00 there).
NOW = datetime(2025, 1, 15, 15, 0, 0, tzinfo=UTC)
DEFAULTS = NEW_YORK
ALL = ALL_CHANNELS


def facts(source: str = "proactive", **values: object) -> MessageFacts:
    base = MessageFacts(
        key=MessageKey(source, 9),
        contractor_id=7,
        message_type="check_in",
        body="Hi {first_name}",
        due_at=NOW - timedelta(minutes=1),
        platform_status="scheduled" if source == "followup" else None,
        names=Names("Ana", "Silva"),
        phone="(312) 555-0142",
        email="ana@example.com",
    )
    return replace(base, **values)  # type: ignore[arg-type]


def action_reason(message: MessageFacts) -> tuple[str, str | None]:
    decision = judge(message, now=NOW, defaults=DEFAULTS, channels=ALL).decision
    return decision.action, decision.reason


# --- the platform's row ---------------------------------------------------------------------
def test_a_message_ready_to_send_carries_the_rendered_text_and_the_e164_phone() -> None:
    result = judge(facts(), now=NOW, defaults=DEFAULTS, channels=ALL)
    assert result.decision.action == "send" and result.decision.channel == "sms"
    assert result.message is not None
    assert (result.message.text, result.message.phone) == ("Hi Ana", "+13125550142")
    assert (result.message.first_name, result.message.display_name) == ("Ana", "Ana Silva")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"contractor_id": None}, ("fail", "source_row_missing")),
        ({"platform_sent_at": NOW - timedelta(seconds=5)}, ("skip", "sent_elsewhere")),
        ({"platform_status": "sent"}, ("skip", "sent_elsewhere")),
        ({"platform_status": "cancelled"}, ("skip", "cancelled")),
        ({"platform_status": "pending"}, ("skip", "not_scheduled")),
        ({"platform_status": "skipped"}, ("skip", "not_scheduled")),
        ({"platform_status": None}, ("skip", "not_scheduled")),
        ({"action_completed": True}, ("skip", "action_completed")),
        ({"body": "Hi {first_name}, meet {partner_name}"}, ("skip", "unrenderable_template")),
        ({"body": ""}, ("skip", "empty_message")),
        ({"phone": "555-0100", "email": "none on file"}, ("skip", "invalid_phone")),
    ],
)
def test_followup_rules_of_the_platforms_own_sender(
    values: dict[str, object], expected: tuple[str, str]
) -> None:
    assert action_reason(facts("followup", **values)) == expected


def test_a_followup_rescheduled_to_later_is_held_until_its_time() -> None:
    later = NOW + timedelta(minutes=10)
    decision = judge(facts("followup", due_at=later), now=NOW, defaults=DEFAULTS, channels=ALL).decision
    assert (decision.action, decision.reason, decision.not_before) == ("defer", "not_due", later)
    assert decision.queue_delay(NOW) == 600


def test_proactive_status_rules_do_not_apply_to_proactive_messages() -> None:
    # ai_proactive_messages has no status: sent_at is its only signal.
    assert action_reason(facts("proactive", platform_status=None)) == ("send", None)


def test_a_proactive_message_without_created_at_is_due_and_never_expired() -> None:
    # GIVEN a row whose nullable created_at is NULL (its age is unknown)
    # THEN it is sent, not expired, however old the pipeline thinks it might be
    assert action_reason(facts(due_at=None)) == ("send", None)
    assert action_reason(facts(due_at=NOW - timedelta(hours=73))) == ("skip", "expired")


# --- the platform's contact rules -------------------------------------------------------------
def test_sms_opt_in_false_uses_the_next_preferred_channel() -> None:
    result = judge(facts(sms_opt_in=False), now=NOW, defaults=DEFAULTS, channels=ALL)
    assert (result.decision.action, result.decision.channel) == ("send", "email")


def test_sms_opt_in_false_with_no_other_channel_is_skipped_opted_out() -> None:
    assert action_reason(facts(sms_opt_in=False, email="none on file")) == ("skip", "opted_out")


def test_sms_opt_in_null_or_true_allows_sms() -> None:
    for value in (None, True):
        result = judge(facts(sms_opt_in=value), now=NOW, defaults=DEFAULTS, channels=ALL)
        assert result.decision.channel == "sms"


def test_the_contractors_timezone_on_the_platform_sets_the_quiet_hours() -> None:
    # GIVEN the platform says the contractor is in Tokyo (00:00 there now): quiet hours
    decision = judge(
        facts(contractor_timezone="Asia/Tokyo"), now=NOW, defaults=DEFAULTS, channels=ALL
    ).decision
    # THEN held until 08:00 in Tokyo (23:00 UTC)
    assert (decision.action, decision.reason) == ("defer", "quiet_hours")
    assert decision.not_before == datetime(2025, 1, 15, 23, 0, tzinfo=UTC)


def test_our_preference_rows_zone_wins_over_the_platforms() -> None:
    prefs = StoredPreferences(timezone="America/New_York")
    result = judge(
        facts(contractor_timezone="Asia/Tokyo", preferences=prefs), now=NOW, defaults=DEFAULTS, channels=ALL
    )
    assert result.decision.action == "send"


def test_an_invalid_platform_zone_falls_back_to_the_default_and_is_logged_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a logger that writes to a buffer, and a zone that is not an IANA name
    stream = io.StringIO()
    monkeypatch.setattr(verdict, "logger", Logger(service="test", logger_handler=None, stream=stream))
    monkeypatch.setattr(verdict, "_unusable_zones", verdict._OncePerValue())
    bad = facts(contractor_timezone="Central Time (US)")
    # WHEN two messages of that contractor are judged
    first = judge(bad, now=NOW, defaults=DEFAULTS, channels=ALL)
    second = judge(bad, now=NOW, defaults=DEFAULTS, channels=ALL)
    # THEN both use DEFAULT_TIMEZONE (10:00 in New York: sent)
    assert first.decision.action == second.decision.action == "send"
    # AND one warning line names the zone and the default
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    assert lines[0]["timezone"] == "Central Time (US)"
    assert lines[0]["default_timezone"] == "America/New_York"


def test_a_phone_that_is_not_a_number_uses_the_next_channel() -> None:
    result = judge(facts(phone="call me"), now=NOW, defaults=DEFAULTS, channels=ALL)
    assert result.decision.channel == "email"
    assert result.message is not None and result.message.phone is None


def test_the_default_region_reads_the_stored_phone() -> None:
    uk = replace(DEFAULTS, phone_region="GB")
    result = judge(facts(phone="020 7946 0958"), now=NOW, defaults=uk, channels=ALL)
    assert result.message is not None and result.message.phone == "+442079460958"
