"""One path from a message's facts to a verdict, taken at queue time (gate.py) and again
just before the send (deliver.py): the platform's own rules for the row (gone, sent by
someone else, cancelled, not scheduled, action item completed, not due yet), the rendered
text, the contact details as a provider needs them, then the delivery policy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from aws_lambda_powertools import Logger

from proactive_delivery import SERVICE
from proactive_delivery.core.content import e164, render_message
from proactive_delivery.core.models import MessageFacts, OutboundMessage
from proactive_delivery.core.policy import (
    ChannelCatalog,
    Contact,
    Decision,
    PolicyDefaults,
    PolicyInputError,
    Preferences,
    decide,
    ignored_run_until,
    resolve,
)
from proactive_delivery.core.segments import sms_size

logger = Logger(service=SERVICE, child=True)

# The platform's follow-up status that means "send this"; every other one is not due.
SCHEDULED = "scheduled"


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    # What to send, when the decision is to send.
    message: OutboundMessage | None = None
    error: str | None = None


class _OncePerValue:
    """Remembers which values were reported, so a bad value is logged once per execution
    environment rather than once per message."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def first(self, value: str) -> bool:
        with self._lock:
            if value in self._seen:
                return False
            self._seen.add(value)
            return True


_unusable_zones = _OncePerValue()


def platform_rule(facts: MessageFacts, now: datetime) -> Decision | None:
    """What the platform's own row says against sending now, or None when it says nothing."""
    if facts.contractor_id is None:
        return Decision("fail", reason="source_row_missing")
    if facts.platform_sent_at is not None or facts.platform_status == "sent":
        return Decision("skip", reason="sent_elsewhere")
    return _followup_rule(facts, now) if facts.key.source == "followup" else None


def _followup_rule(facts: MessageFacts, now: datetime) -> Decision | None:
    """A follow-up is sent only while it is scheduled and its action item is open."""
    if facts.platform_status == "cancelled":
        skipped: str | None = "cancelled"
    elif facts.platform_status != SCHEDULED:
        skipped = "not_scheduled"
    else:
        skipped = "action_completed" if facts.action_completed else None
    if skipped is not None:
        return Decision("skip", reason=skipped)
    if facts.due_at is not None and facts.due_at > now:
        # Rescheduled to later after it was queued: held until then, not an attempt.
        return Decision("defer", reason="not_due", not_before=facts.due_at)
    return None


def judge(
    facts: MessageFacts,
    *,
    now: datetime,
    defaults: PolicyDefaults,
    channels: ChannelCatalog,
    planned: int = 0,
    phone_hash: Callable[[str], str] | None = None,
    hash_recipient: bool = False,
) -> Verdict:
    """The verdict on one message. `planned` counts sends already let through for the same
    contractor in this batch or page (they count toward the daily cap). `phone_hash` hashes
    an E.164 number (core/phone_hash.py): a suppression holds only for the number that
    failed (the number is hashed only when a suppression names one), and with
    `hash_recipient` (deliver) a message sent on a phone channel carries the hash of the
    number it goes to."""
    key = facts.key
    refused = platform_rule(facts, now)
    if refused is not None:
        return Verdict(refused)
    assert facts.contractor_id is not None  # platform_rule fails a message without one
    try:
        text = render_message(facts.body, facts.names)
        prefs = resolve(facts.preferences, defaults, facts.contractor_timezone, known=channels.contacts)
    except PolicyInputError as exc:
        # Bad content is never sent (skipped); a bad preference row of ours is a failure to
        # fix (failed), as it would hold every message of that contractor.
        content = exc.reason in ("empty_message", "unrenderable_template")
        return Verdict(Decision("skip" if content else "fail", reason=exc.reason), error=str(exc))
    if prefs.unusable_platform_zone is not None and _unusable_zones.first(prefs.unusable_platform_zone):
        logger.warning(
            "contractor time zone is not an IANA zone; using DEFAULT_TIMEZONE",
            contractor_id=facts.contractor_id,
            timezone=prefs.unusable_platform_zone[:64],
            default_timezone=defaults.timezone,
        )
    phone = e164(facts.phone, defaults.phone_region)
    contact = Contact(
        phone=phone,
        email=facts.email,
        contractor_id=facts.contractor_id,
        sms_opt_in=facts.sms_opt_in,
        phone_invalid=phone is None and bool(facts.phone and facts.phone.strip()),
        phone_hash=phone_hash(phone)
        if phone is not None and phone_hash is not None and _names_a_number(prefs)
        else None,
    )
    decision = decide(
        now=now,
        due_at=facts.due_at,
        prefs=prefs,
        max_age=defaults.max_age,
        contact=contact,
        channels=channels,
        sent_times=(*facts.sent_times, *[now] * planned),
        paused_until=ignored_run_until(now, facts.recent_proactive, defaults.ignored_run_pause)
        if key.source == "proactive"
        else None,
    )
    if decision.action != "send":
        return Verdict(decision)
    size = sms_size(text) if decision.channel in channels.segmented else None
    message = OutboundMessage(
        key=key,
        contractor_id=facts.contractor_id,
        message_type=facts.message_type or "",
        text=text,
        first_name=facts.names.first,
        phone=phone,
        email=facts.email,
        display_name=facts.names.display_name,
        segments=size.segments if size else 0,
        ucs2=size is not None and size.encoding == "UCS-2",
        phone_hash=_recipient_hash(contact, phone_hash)
        if hash_recipient and channels.contacts.get(decision.channel or "") == "phone"
        else None,
    )
    return Verdict(decision, message=message)


def _names_a_number(prefs: Preferences) -> bool:
    """Whether a suppression holds only for one number (so the contractor's must be hashed)."""
    return any(s.phone_hash is not None for s in prefs.suppressed_channels.values())


def _recipient_hash(contact: Contact, phone_hash: Callable[[str], str] | None) -> str | None:
    if contact.phone_hash is not None or contact.phone is None or phone_hash is None:
        return contact.phone_hash
    return phone_hash(contact.phone)
