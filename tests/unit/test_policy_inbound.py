"""What the way back changes in the policy (verdict.judge over MessageFacts, as gate and
deliver take it): a channel a provider reported undeliverable for good is passed over with
its reason, for the number that failed only; IGNORED_RUN_PAUSE holds proactive messages after
a run of unanswered ones; an SMS carries the hash of the number it goes to."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from proactive_delivery.app.verdict import judge
from proactive_delivery.core.models import MessageFacts, MessageKey
from proactive_delivery.core.phone_hash import PhoneHasher
from proactive_delivery.core.policy import (
    NO_QUIET_HOURS,
    IgnoredRunPause,
    PolicyInputError,
    StoredPreferences,
    Suppression,
    ignored_run_until,
    parse_ignored_run_pause,
)
from tests.support.policy import ALL_CHANNELS, NEW_YORK

HASH = PhoneHasher(b"unit-test-phone-hash-key-32bytes", "US")
PHONE = "+13125550101"
NOW = datetime(2025, 1, 15, 15, tzinfo=UTC)  # 10:00 in New York: outside quiet hours
DEFAULTS = replace(NEW_YORK, channels=("sms", "email"))


def facts(
    stored: StoredPreferences | None = None,
    *,
    source: str = "proactive",
    phone: str | None = PHONE,
    recent: tuple[tuple[datetime, bool], ...] = (),
) -> MessageFacts:
    return MessageFacts(
        key=MessageKey(source, 1),
        contractor_id=7,
        message_type="check_in",
        body="Hi {first_name}",
        due_at=NOW - timedelta(minutes=1),
        platform_status="scheduled" if source == "followup" else None,
        phone=phone,
        email="ana@example.com",
        preferences=stored,
        recent_proactive=recent,
    )


def verdict(  # type: ignore[no-untyped-def]
    message: MessageFacts, defaults=DEFAULTS, *, hashed: bool = True, recipient: bool = True
):
    """As deliver takes it (the recipient's number hashed), or as the queue-time gate does."""
    return judge(
        message,
        now=NOW,
        defaults=defaults,
        channels=ALL_CHANNELS,
        phone_hash=HASH.of_e164 if hashed else None,
        hash_recipient=recipient,
    )


# --- suppression ----------------------------------------------------------------------------
def test_a_suppressed_sms_goes_to_the_next_channel_and_is_skipped_with_its_reason_when_none_is_left() -> None:
    landline = {"sms": Suppression("landline_or_unreachable_carrier", HASH(PHONE))}
    # GIVEN SMS suppressed (30006) for the contractor's number, and e-mail next in their order
    assert verdict(facts(StoredPreferences(suppressed_channels=landline))).decision.channel == "email"
    # AND with SMS the only channel, the message is skipped with the suppression's reason
    only_sms = StoredPreferences(channels=["sms"], suppressed_channels=landline)
    decision = verdict(facts(only_sms)).decision
    assert (decision.action, decision.reason) == ("skip", "landline_or_unreachable_carrier")


def test_a_suppression_holds_for_the_number_that_failed_only() -> None:
    # GIVEN SMS suppressed for an old number
    old = {"sms": Suppression("invalid_number", HASH("+13125550199"))}
    stored = StoredPreferences(channels=["sms"], suppressed_channels=old)
    # WHEN the platform now has another number for the contractor
    decision = verdict(facts(stored)).decision
    # THEN the new number is tried
    assert (decision.action, decision.channel) == ("send", "sms")
    # AND without a hash to compare (unknown), the suppression holds
    assert verdict(facts(stored), hashed=False).decision.reason == "invalid_number"
    # AND a suppression that names no number holds whatever the number (an e-mail bounce)
    bounced = StoredPreferences(channels=["email"], suppressed_channels={"email": Suppression("bounced")})
    assert verdict(facts(bounced)).decision.reason == "bounced"


def test_an_opt_out_is_the_reason_before_a_suppression() -> None:
    both = StoredPreferences(
        channels=["sms", "email"],
        opted_out_channels=["sms"],
        suppressed_channels={"email": Suppression("bounced")},
    )
    assert verdict(facts(both)).decision.reason == "opted_out"


def test_suppressions_read_from_the_row_as_the_processor_writes_them() -> None:
    row = {
        "pref_contractor_id": 7,
        "pref_suppressed_channels": {
            "sms": {
                "reason": "unknown_handset",
                "code": "30005",
                "phone_hash": "ab" * 32,
                "at": "2026-01-01",
            },
            "email": {"reason": "bounced", "phone_hash": None},
            "web_chat": "written by hand",
        },
    }
    stored = StoredPreferences.from_row(row)
    assert stored is not None
    assert stored.suppressed_channels == {
        "sms": Suppression("unknown_handset", "ab" * 32),
        "email": Suppression("bounced"),
        "web_chat": Suppression("suppressed"),
    }


def test_an_sms_carries_the_hash_of_the_number_it_goes_to_and_an_email_none() -> None:
    sms = verdict(facts()).message
    assert sms is not None and sms.phone_hash == HASH(PHONE)
    email = verdict(facts(StoredPreferences(channels=["email"]))).message
    assert email is not None and email.phone_hash is None
    # AND at queue time (the gate) nothing is hashed that nothing compares
    queued = verdict(facts(), recipient=False).message
    assert queued is not None and queued.phone_hash is None


# --- IGNORED_RUN_PAUSE ------------------------------------------------------------------------
def ago(hours: float) -> datetime:
    return NOW - timedelta(hours=hours)


PAUSED = replace(
    DEFAULTS, quiet_hours=NO_QUIET_HOURS, ignored_run_pause=IgnoredRunPause(3, timedelta(days=7))
)


def test_three_unanswered_in_a_row_defer_proactive_messages_seven_days_from_the_oldest() -> None:
    run = ((ago(1), False), (ago(30), False), (ago(60), False))
    decision = verdict(facts(recent=run), PAUSED).decision
    assert (decision.action, decision.reason) == ("defer", "ignored_run_pause")
    assert decision.not_before == ago(60) + timedelta(days=7)
    # AND a follow-up is not held by it
    assert verdict(facts(source="followup", recent=run), PAUSED).decision.action == "send"
    # AND with the pause off (the default) nothing is held
    assert verdict(facts(recent=run), replace(PAUSED, ignored_run_pause=None)).decision.action == "send"


@pytest.mark.parametrize(
    "recent",
    [
        ((ago(1), False), (ago(30), True), (ago(60), False)),  # one of the three answered
        ((ago(1), False), (ago(30), False)),  # only two sent
        ((ago(1), False), (ago(30), False), (ago(24 * 8), False)),  # the pause is over
    ],
)
def test_no_pause_without_a_full_unanswered_run_in_force(recent: tuple[tuple[datetime, bool], ...]) -> None:
    assert ignored_run_until(NOW, recent, PAUSED.ignored_run_pause) is None
    assert verdict(facts(recent=recent), PAUSED).decision.action == "send"


def test_an_opted_out_contractor_is_skipped_not_paused() -> None:
    run = ((ago(1), False), (ago(2), False), (ago(3), False))
    stored = StoredPreferences(opted_out_channels=["sms", "email"])
    assert verdict(facts(stored, recent=run), PAUSED).decision.reason == "opted_out"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("off", None),
        ("OFF", None),
        ("3/7d", IgnoredRunPause(3, timedelta(days=7))),
        ("5/36h", IgnoredRunPause(5, timedelta(hours=36))),
    ],
)
def test_the_setting_reads_n_over_a_duration(text: str, expected: IgnoredRunPause | None) -> None:
    assert parse_ignored_run_pause(text) == expected
    if expected is not None:
        assert parse_ignored_run_pause(str(expected)) == expected


@pytest.mark.parametrize("text", ["3", "3/7", "0/7d", "11/7d", "3/0d", "three/7d", "3/7w"])
def test_a_bad_setting_is_refused(text: str) -> None:
    with pytest.raises(PolicyInputError):
        parse_ignored_run_pause(text)
