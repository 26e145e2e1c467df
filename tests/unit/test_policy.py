"""The delivery policy through the one path that gate and deliver take (verdict.judge over
MessageFacts): quiet hours in the contractor's own time zone (DST, east of UTC), the daily
cap on the local day, maximum age, opt-out, channel choice and bad preference values."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from proactive_delivery.app.verdict import judge
from proactive_delivery.core.models import MessageFacts, MessageKey
from proactive_delivery.core.policy import (
    ChannelCatalog,
    Contact,
    Decision,
    PolicyInputError,
    QuietHours,
    StoredPreferences,
    load_zone,
    next_local_midnight,
    parse_quiet_hours,
    quiet_until,
    sent_today,
)
from tests.support.policy import ALL_CHANNELS, NEW_YORK, configured

DEFAULTS = replace(NEW_YORK, channels=("sms",))
CONTACT = Contact(phone="+13125550101", email="ana@example.com", contractor_id=7)
NY = load_zone("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def decision_at(
    now: datetime,
    stored: StoredPreferences | None = None,
    *,
    due_at: datetime | str | None = "default",
    body: str | None = "Hi Ana",
    contact: Contact = CONTACT,
    channels: ChannelCatalog = ALL_CHANNELS,
    sent_times: list[datetime] | tuple[datetime, ...] = (),
    **facts: object,
) -> Decision:
    """The verdict on a proactive message with these facts, as gate and deliver take it."""
    message = MessageFacts(
        key=MessageKey("proactive", 1),
        contractor_id=contact.contractor_id or 7,
        message_type="check_in",
        body=body,
        due_at=now - timedelta(minutes=1) if due_at == "default" else due_at,  # type: ignore[arg-type]
        phone=contact.phone,
        email=contact.email,
        preferences=stored,
        sent_times=tuple(sent_times),
        **facts,  # type: ignore[arg-type]
    )
    return judge(message, now=now, defaults=DEFAULTS, channels=channels).decision


# --- docs/faults.md row 17: boundaries of the quiet window -----------------------------------------
def test_fault17_one_second_before_quiet_hours_end_is_deferred_to_the_exact_end() -> None:
    # GIVEN 07:59:59 in New York on a winter day (12:59:59 UTC)
    now = utc(2025, 1, 15, 12, 59, 59)
    # WHEN the policy decides
    decision = decision_at(now)
    # THEN deferred until 08:00:00 local, which is 13:00:00 UTC, one second away
    assert decision.action == "defer"
    assert decision.reason == "quiet_hours"
    assert decision.not_before == utc(2025, 1, 15, 13, 0, 0)
    assert decision.queue_delay(now) == 1


def test_fault17_exactly_when_the_window_opens_is_sent() -> None:
    # GIVEN 08:00:00 in New York WHEN the policy decides THEN it sends
    assert decision_at(utc(2025, 1, 15, 13, 0, 0)).action == "send"


def test_fault17_one_second_before_quiet_hours_start_is_sent_and_at_start_is_held() -> None:
    # GIVEN 20:59:59 and 21:00:00 in New York
    before = decision_at(utc(2025, 1, 16, 1, 59, 59))
    at = decision_at(utc(2025, 1, 16, 2, 0, 0))
    # THEN the first sends, the second waits until 08:00 the next local morning
    assert before.action == "send"
    assert at.action == "defer"
    assert at.not_before == utc(2025, 1, 16, 13, 0, 0)
    assert at.queue_delay(utc(2025, 1, 16, 2, 0, 0)) is None  # 11 hours: stored as deferred


def test_fault17_same_instant_differs_by_time_zone() -> None:
    # GIVEN 14:00 UTC: 09:00 in New York, 23:00 in Tokyo, 06:00 in Los Angeles
    now = utc(2025, 1, 15, 14, 0, 0)
    results = {
        zone: decision_at(now, StoredPreferences(timezone=zone))
        for zone in ("America/New_York", "Asia/Tokyo", "America/Los_Angeles")
    }
    # THEN only New York is outside quiet hours; each other one opens at its own 08:00
    assert results["America/New_York"].action == "send"
    assert results["Asia/Tokyo"].not_before == utc(2025, 1, 15, 23, 0, 0)  # 08:00 JST next day
    assert results["America/Los_Angeles"].not_before == utc(2025, 1, 15, 16, 0, 0)


def test_fault17_dst_spring_forward_opens_at_local_eight() -> None:
    # GIVEN the night US clocks jump from 02:00 to 03:00 (2025-03-09), at 01:30 EST
    now = utc(2025, 3, 9, 6, 30, 0)
    # WHEN the policy decides
    decision = decision_at(now)
    # THEN the window opens at 08:00 EDT = 12:00 UTC (not 13:00 as in winter)
    assert decision.not_before == utc(2025, 3, 9, 12, 0, 0)


def test_fault17_dst_fall_back_opens_at_local_eight() -> None:
    # GIVEN 23:00 EDT on 2025-11-01, the night clocks go back
    decision = decision_at(utc(2025, 11, 2, 3, 0, 0))
    # THEN 08:00 EST on 2025-11-02 = 13:00 UTC
    assert decision.not_before == utc(2025, 11, 2, 13, 0, 0)


def test_fault17_quiet_window_inside_a_dst_gap_never_opens_early() -> None:
    # GIVEN a window ending at 02:30, a wall time that does not exist on 2025-03-09 in New York
    quiet = QuietHours(time(1), time(2, 30))
    now = utc(2025, 3, 9, 6, 15, 0)  # 01:15 EST
    # WHEN the end is computed
    until = quiet_until(now, NY, quiet)
    # THEN it is not before 02:30 EST (07:30 UTC)
    assert until is not None
    assert until >= utc(2025, 3, 9, 7, 30, 0)


def test_fault17_daily_cap_counts_the_local_day_east_of_utc() -> None:
    # GIVEN a contractor in Tokyo (UTC+9), cap 2; at 10:00 JST on the 15th (01:00 UTC), two
    # messages went out at 09:00 and 09:30 JST (00:00 / 00:30 UTC: the same UTC day), and one
    # at 20:00 JST on the 14th (11:00 UTC on the 14th: a different local day)
    stored = StoredPreferences(timezone="Asia/Tokyo", max_per_day=2)
    now = utc(2025, 1, 15, 1, 0, 0)
    sent = [utc(2025, 1, 15, 0, 0, 0), utc(2025, 1, 15, 0, 30, 0), utc(2025, 1, 14, 11, 0, 0)]
    # WHEN the policy decides
    decision = decision_at(now, stored, sent_times=sent)
    # THEN the cap holds it until the next local day's window opens: 08:00 JST on the 16th
    assert decision.action == "defer"
    assert decision.reason == "daily_cap"
    assert decision.not_before == utc(2025, 1, 15, 23, 0, 0)


def test_fault17_sends_of_the_previous_utc_day_count_on_the_same_local_day() -> None:
    # GIVEN Tokyo, 07:00 UTC on the 15th = 16:00 JST; a send at 23:30 UTC on the 14th was
    # 08:30 JST on the 15th: the same local day although a different UTC day
    zone = load_zone("Asia/Tokyo")
    # THEN it counts toward today
    assert sent_today(utc(2025, 1, 15, 7, 0, 0), zone, [utc(2025, 1, 14, 23, 30, 0)]) == 1


def test_next_local_midnight_across_dst() -> None:
    # GIVEN noon EST on the day before spring forward THEN midnight is 05:00 UTC
    assert next_local_midnight(utc(2025, 3, 8, 17, 0, 0), NY) == utc(2025, 3, 9, 5, 0, 0)
    # AND after the change it is 04:00 UTC
    assert next_local_midnight(utc(2025, 3, 9, 17, 0, 0), NY) == utc(2025, 3, 10, 4, 0, 0)


def test_quiet_hours_none_and_same_day_window() -> None:
    assert parse_quiet_hours("none").contains(time(3)) is False
    window = parse_quiet_hours("13:00-14:00")
    assert window.contains(time(13, 30)) and not window.contains(time(14))


# --- other policy decisions --------------------------------------------------------------
def test_opted_out_contractor_is_skipped() -> None:
    decision = decision_at(utc(2025, 1, 15, 15), StoredPreferences(opted_out=True))
    assert (decision.action, decision.reason) == ("skip", "opted_out")


def test_message_older_than_max_age_is_expired() -> None:
    now = utc(2025, 1, 15, 15)
    assert decision_at(now, due_at=now - timedelta(hours=72, seconds=1)).reason == "expired"
    assert decision_at(now, due_at=now - timedelta(hours=72)).action == "send"


def test_channel_fallback_follows_the_preference_order() -> None:
    now = utc(2025, 1, 15, 15)
    prefs = StoredPreferences(channels=["email", "sms", "web_chat"])
    # GIVEN email first: it is used when the contractor has an address
    assert decision_at(now, prefs).channel == "email"
    # AND without an address the next one, sms
    assert decision_at(now, prefs, contact=Contact("+13125550101", None, 7)).channel == "sms"
    # AND without either, web chat
    assert decision_at(now, prefs, contact=Contact(None, None, 7)).channel == "web_chat"
    # AND an unconfigured channel is passed over
    assert decision_at(now, prefs, channels=configured("sms")).channel == "sms"
    # AND opted out of sms per channel: email is next
    per_channel = StoredPreferences(channels=["sms", "email"], opted_out_channels=["sms"])
    assert decision_at(now, per_channel).channel == "email"


def test_no_channel_with_contact_details_is_skipped_no_contact() -> None:
    decision = decision_at(utc(2025, 1, 15, 15), contact=Contact(None, None, 7))
    assert (decision.action, decision.reason) == ("skip", "no_contact")


def test_only_channel_opted_out_is_skipped_opted_out() -> None:
    decision = decision_at(utc(2025, 1, 15, 15), StoredPreferences(opted_out_channels=["sms"]))
    assert (decision.action, decision.reason) == ("skip", "opted_out")


# --- bad input: recorded reason, no send, no crash ---------------------------------------
@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        (StoredPreferences(channels=["pigeon", "sms"]), "unknown_channel"),
        (StoredPreferences(timezone="Mars/Olympus_Mons"), "invalid_timezone"),
        (StoredPreferences(timezone="../../etc/passwd"), "invalid_timezone"),
    ],
)
def test_unusable_preference_row_fails_with_a_reason(stored: StoredPreferences, reason: str) -> None:
    # GIVEN an unusable value in our own preference row WHEN the policy decides
    decision = decision_at(utc(2025, 1, 15, 15), stored)
    # THEN it fails with the reason (an operator must fix the row), no channel
    assert (decision.action, decision.reason, decision.channel) == ("fail", reason, None)


@pytest.mark.parametrize(
    ("contact", "body", "reason"),
    [
        (Contact("555-0100", None, 7), "Hi", "invalid_phone"),
        (Contact("not a phone", None, 7), "Hi", "invalid_phone"),
        (CONTACT, "   ", "empty_message"),
        (CONTACT, None, "empty_message"),
        (CONTACT, "Hi {partner_name}", "unrenderable_template"),
    ],
)
def test_unusable_content_is_skipped_with_a_reason(contact: Contact, body: str | None, reason: str) -> None:
    # GIVEN content or a phone that cannot be sent WHEN the policy decides
    decision = decision_at(utc(2025, 1, 15, 15), contact=contact, body=body)
    # THEN it is skipped for good with the reason, no channel
    assert (decision.action, decision.reason, decision.channel) == ("skip", reason, None)


def test_non_e164_phone_falls_back_to_the_next_channel() -> None:
    prefs = StoredPreferences(channels=["sms", "email"])
    decision = decision_at(utc(2025, 1, 15, 15), prefs, contact=Contact("5550100", "a@example.com", 7))
    assert decision.channel == "email"


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_quiet_hours, "9pm-8am"),
        (parse_quiet_hours, "25:00-08:00"),
        (ALL_CHANNELS.parse, "sms,fax"),
        (ALL_CHANNELS.parse, ""),
        (load_zone, "Nowhere/City"),
    ],
)
def test_parsers_reject_bad_values(parse: object, text: str) -> None:
    with pytest.raises(PolicyInputError):
        parse(text)  # type: ignore[operator]
