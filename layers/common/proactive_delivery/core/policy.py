"""Delivery policy: opt-out, maximum age, channel choice, quiet hours in the contractor's own
time zone, and the daily cap. Pure functions of their inputs (no clock, no database), so the
queue-time check in evaluate and the send-time check in deliver decide the same way.

Every decision is one of: send on a channel, defer until a time (not an attempt, not a
failure), skip for good (policy said never) or fail (the data is unusable).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

E164: Final = re.compile(r"^\+[1-9]\d{6,14}$")
# A deferral this short rides on an SQS delay (DelaySeconds / ChangeMessageVisibility);
# a longer one is stored as `deferred` and picked up by the next evaluate run.
QUEUE_DELAY_LIMIT: Final = timedelta(minutes=15)


class PolicyInputError(ValueError):
    """A preference value that cannot be used. `reason` is what gets recorded."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class QuietHours:
    """A local-time window in which nothing is sent. start > end wraps midnight
    (21:00-08:00); start == end means no quiet hours."""

    start: time
    end: time

    def contains(self, local: time) -> bool:
        if self.start == self.end:
            return False
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"


NO_QUIET_HOURS: Final = QuietHours(time(0), time(0))
_WINDOW = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")


def parse_quiet_hours(text: str) -> QuietHours:
    """HH:MM-HH:MM in local time, or `none`."""
    value = text.strip().lower()
    if value in ("none", "off"):
        return NO_QUIET_HOURS
    match = _WINDOW.match(value)
    if not match:
        raise PolicyInputError("invalid_quiet_hours", f"expected HH:MM-HH:MM, got {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    try:
        return QuietHours(time(h1, m1), time(h2, m2))
    except ValueError:
        raise PolicyInputError("invalid_quiet_hours", f"not a time of day: {text!r}") from None


def parse_channels(values: str | Iterable[str], known: Collection[str]) -> tuple[str, ...]:
    """An ordered channel list (`sms,email`) of names from `known` (the channel registry's)."""
    names = values.split(",") if isinstance(values, str) else list(values)
    channels = tuple(dict.fromkeys(n.strip() for n in names if n and n.strip()))
    if not channels:
        raise PolicyInputError("unknown_channel", "at least one channel is required")
    unknown = [c for c in channels if c not in known]
    if unknown:
        raise PolicyInputError("unknown_channel", f"{', '.join(unknown)} (known: {', '.join(known)})")
    return channels


# The contact detail a channel needs to reach a contractor.
ContactField = Literal["phone", "email", "contractor_id"]


@dataclass(frozen=True)
class ChannelCatalog:
    """The channels the policy chooses among, as the channel registry (channels.py) declares
    them: every known channel with the contact detail it needs, which of them this deployment
    configured, which ones the platform's contractors.sms_opt_in governs, and which send SMS
    (counted in segments)."""

    contacts: Mapping[str, ContactField]
    configured: frozenset[str] = field(default_factory=frozenset)
    sms_consent: frozenset[str] = field(default_factory=frozenset)
    # Channels whose texts go out as SMS and are counted in segments.
    segmented: frozenset[str] = field(default_factory=frozenset)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.contacts)

    def parse(self, values: str | Iterable[str]) -> tuple[str, ...]:
        return parse_channels(values, self.contacts)


def load_zone(name: str) -> ZoneInfo:
    # ZoneInfo accepts relative paths and such; only plain IANA keys are allowed here.
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise PolicyInputError("invalid_timezone", repr(name))
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise PolicyInputError("invalid_timezone", repr(name)) from None


def is_e164(phone: str) -> bool:
    return bool(E164.match(phone))


@dataclass(frozen=True)
class IgnoredRunPause:
    """IGNORED_RUN_PAUSE: `count` proactive messages in a row without a reply pause proactive
    messages for `pause` from the oldest of them (the platform's own unwired safeguard)."""

    count: int
    pause: timedelta

    def __str__(self) -> str:
        hours = self.pause.total_seconds() / 3600
        return f"{self.count}/{hours / 24:g}d" if hours % 24 == 0 else f"{self.count}/{hours:g}h"


_PAUSE = re.compile(r"^(\d{1,2})/(\d{1,4})([dh])$")
# How many of a contractor's last proactive sends the facts carry (message_facts): the most
# IGNORED_RUN_PAUSE may count.
MAX_IGNORED_RUN: Final = 10


def parse_ignored_run_pause(text: str) -> IgnoredRunPause | None:
    """`N/Dd` or `N/Hh` (3/7d: three ignored in a row pause for seven days), or `off`."""
    value = text.strip().lower()
    if value in ("off", "none"):
        return None
    match = _PAUSE.match(value)
    if not match:
        raise PolicyInputError("invalid_pause", f"expected N/Dd (3/7d), N/Hh or off, got {text!r}")
    count, amount, unit = int(match[1]), int(match[2]), match[3]
    if not 1 <= count <= MAX_IGNORED_RUN or amount == 0:
        raise PolicyInputError("invalid_pause", f"the count must be 1-{MAX_IGNORED_RUN} and the pause > 0")
    return IgnoredRunPause(count, timedelta(days=amount) if unit == "d" else timedelta(hours=amount))


@dataclass(frozen=True)
class PolicyDefaults:
    """The deployment's delivery rules where a contractor has no preference of their own.
    Built from the settings (settings.py holds the defaults of each value)."""

    channels: tuple[str, ...]
    timezone: str
    quiet_hours: QuietHours
    max_per_day: int
    max_age: timedelta
    # Region for phone numbers stored without a country code ((312) 555-0142).
    phone_region: str
    # IGNORED_RUN_PAUSE (None: off, the default).
    ignored_run_pause: IgnoredRunPause | None = None


@dataclass(frozen=True)
class Suppression:
    """A channel a provider reported undeliverable for good (delivery.contractor_preferences
    .suppressed_channels): why, and for a phone channel the keyed hash of the number that
    failed (None: whatever the number)."""

    reason: str
    phone_hash: str | None = None


@dataclass(frozen=True)
class StoredPreferences:
    """A delivery.contractor_preferences row as stored (unvalidated: anyone with database
    access can write it). None means "use the default"."""

    channels: Sequence[str] | None = None
    opted_out: bool = False
    opted_out_channels: Sequence[str] = ()
    timezone: str | None = None
    quiet_start: time | None = None
    quiet_end: time | None = None
    max_per_day: int | None = None
    # Channel -> why a provider reported it undeliverable for good.
    suppressed_channels: Mapping[str, Suppression] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: Mapping[str, object]) -> StoredPreferences | None:
        if not row.get("pref_contractor_id"):
            return None
        max_per_day = row.get("pref_max_per_day")
        return cls(
            channels=_str_list(row.get("pref_channels")),
            opted_out=bool(row.get("pref_opted_out")),
            opted_out_channels=_str_list(row.get("pref_opted_out_channels")) or (),
            timezone=_opt_str(row.get("pref_timezone")),
            quiet_start=_opt_time(row.get("pref_quiet_start")),
            quiet_end=_opt_time(row.get("pref_quiet_end")),
            max_per_day=int(max_per_day) if isinstance(max_per_day, int) else None,
            suppressed_channels=_suppressions(row.get("pref_suppressed_channels")),
        )


def _suppressions(value: object) -> dict[str, Suppression]:
    """The suppressed_channels column (JSON written by the inbound processor; anything not
    shaped like its entries is a suppression with reason `suppressed`)."""
    if not isinstance(value, Mapping):
        return {}
    found: dict[str, Suppression] = {}
    for channel, entry in value.items():
        reason = entry.get("reason") if isinstance(entry, Mapping) else None
        phone_hash = entry.get("phone_hash") if isinstance(entry, Mapping) else None
        found[str(channel)] = Suppression(
            str(reason) if isinstance(reason, str) and reason else "suppressed",
            phone_hash if isinstance(phone_hash, str) and phone_hash else None,
        )
    return found


def _str_list(value: object) -> list[str] | None:
    return [str(v) for v in value] if isinstance(value, list | tuple) else None


def _opt_str(value: object) -> str | None:
    return str(value) if value is not None else None


def _opt_time(value: object) -> time | None:
    return value if isinstance(value, time) else None


@dataclass(frozen=True)
class Preferences:
    channels: tuple[str, ...]
    opted_out: bool
    opted_out_channels: frozenset[str]
    zone: ZoneInfo
    quiet_hours: QuietHours
    max_per_day: int
    # The platform's contractors.timezone when it is not a zone name (the default was used).
    unusable_platform_zone: str | None = None
    suppressed_channels: Mapping[str, Suppression] = field(default_factory=dict)


def resolve(
    stored: StoredPreferences | None,
    defaults: PolicyDefaults,
    platform_zone: str | None = None,
    *,
    known: Collection[str],
) -> Preferences:
    """Stored preferences over the platform's contractors.timezone over the defaults. Raises
    PolicyInputError on an unusable value of our own preference row (a channel name not in
    `known`, ...); an unusable platform zone falls back to the default (the platform fills
    that column by detection)."""
    stored = stored or StoredPreferences()
    channels = parse_channels(stored.channels, known) if stored.channels else defaults.channels
    quiet = defaults.quiet_hours
    if stored.quiet_start is not None and stored.quiet_end is not None:
        quiet = QuietHours(stored.quiet_start, stored.quiet_end)
    max_per_day = stored.max_per_day if stored.max_per_day is not None else defaults.max_per_day
    if max_per_day < 0:
        raise PolicyInputError("invalid_preference", "max_per_day must be >= 0")
    unusable: str | None = None
    if stored.timezone:
        zone = load_zone(stored.timezone)
    elif platform_zone and platform_zone.strip():
        try:
            zone = load_zone(platform_zone.strip())
        except PolicyInputError:
            unusable = platform_zone
            zone = load_zone(defaults.timezone)
    else:
        zone = load_zone(defaults.timezone)
    return Preferences(
        channels=channels,
        opted_out=stored.opted_out,
        opted_out_channels=frozenset(stored.opted_out_channels),
        zone=zone,
        quiet_hours=quiet,
        max_per_day=max_per_day,
        unusable_platform_zone=unusable,
        suppressed_channels=dict(stored.suppressed_channels),
    )


# --- time ------------------------------------------------------------------------------
def _at_local(day: datetime, at: time, zone: ZoneInfo) -> datetime:
    """`at` on the local date of `day`, as an aware UTC datetime. In a DST gap the wall time
    does not exist; zoneinfo then reads it with the offset before the change (fold=0), which
    lands just after the gap: never earlier than the wall time asked for."""
    local = datetime.combine(day.date(), at, tzinfo=zone)
    return local.astimezone(UTC)


def quiet_until(now: datetime, zone: ZoneInfo, quiet: QuietHours) -> datetime | None:
    """When the quiet window that `now` falls in ends (UTC), or None outside it."""
    local = now.astimezone(zone)
    if not quiet.contains(local.time()):
        return None
    end_day = local
    if quiet.start > quiet.end and local.time() >= quiet.start:
        end_day = (local.replace(hour=12) + timedelta(days=1)).astimezone(zone)
    return _at_local(end_day, quiet.end, zone)


def next_local_midnight(now: datetime, zone: ZoneInfo) -> datetime:
    local = now.astimezone(zone)
    tomorrow = (local.replace(hour=12, minute=0, second=0, microsecond=0) + timedelta(days=1)).date()
    return datetime.combine(tomorrow, time(0), tzinfo=zone).astimezone(UTC)


def sent_today(now: datetime, zone: ZoneInfo, sent_times: Iterable[datetime]) -> int:
    """Messages sent on the contractor's current local day (not the UTC day)."""
    today = now.astimezone(zone).date()
    return sum(1 for t in sent_times if t.astimezone(zone).date() == today)


# --- the decision ----------------------------------------------------------------------
Action = Literal["send", "defer", "skip", "fail"]


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str | None = None
    channel: str | None = None
    not_before: datetime | None = None

    def queue_delay(self, now: datetime) -> int | None:
        """Seconds to hold the queue message when the deferral is short enough for SQS."""
        if self.action != "defer" or self.not_before is None:
            return None
        wait = self.not_before - now
        if wait > QUEUE_DELAY_LIMIT:
            return None
        return max(1, int(wait.total_seconds() + 0.999))


@dataclass(frozen=True)
class Contact:
    """How a contractor can be reached. `phone` is E.164 (normalised before the policy
    sees it); `phone_invalid` says a phone was stored but is not a number."""

    phone: str | None
    email: str | None
    contractor_id: int | None
    # The platform's contractors.sms_opt_in: False means do not text (NULL does not).
    sms_opt_in: bool | None = None
    phone_invalid: bool = False
    # The keyed hash of `phone` (core/phone_hash.py), to tell whether a suppression was for
    # this number; None: unknown, and a suppression holds whatever the number.
    phone_hash: str | None = None


def suppressed(prefs: Preferences, contact: Contact, channel: str) -> Suppression | None:
    """The suppression that holds for `channel`: a phone channel's holds while the
    contractor's number is the one that failed (a corrected number is tried again)."""
    found = prefs.suppressed_channels.get(channel)
    if found is None:
        return None
    if (
        found.phone_hash is not None
        and contact.phone_hash is not None
        and found.phone_hash != contact.phone_hash
    ):
        return None
    return found


def choose_channel(prefs: Preferences, contact: Contact, channels: ChannelCatalog) -> Decision:
    """The first preferred channel that is configured, not opted out (ours or, for the
    channels it governs, the platform's sms_opt_in), not suppressed (a provider reported it
    undeliverable for good: the reason is the skip's when no channel is left), and for
    which the contractor has the contact detail the channel needs."""
    blocked: str | None = None
    for channel in prefs.channels:
        if channel in prefs.opted_out_channels or (
            channel in channels.sms_consent and contact.sms_opt_in is False
        ):
            blocked = blocked or "opted_out"
            continue
        if channel not in channels.configured:
            continue
        suppression = suppressed(prefs, contact, channel)
        if suppression is not None:
            blocked = blocked or suppression.reason
            continue
        needs = channels.contacts[channel]
        if needs == "phone":
            if contact.phone_invalid:
                blocked = "invalid_phone"
                continue
            if not contact.phone:
                continue
            if not is_e164(contact.phone):
                blocked = "invalid_phone"
                continue
        elif needs == "email":
            if not contact.email or "@" not in contact.email:
                continue
        elif not contact.contractor_id:
            continue
        return Decision("send", channel=channel)
    if blocked is not None:
        return Decision("skip", reason=blocked)
    return Decision("skip", reason="no_contact")


def decide(
    *,
    now: datetime,
    due_at: datetime | None,
    prefs: Preferences,
    max_age: timedelta,
    contact: Contact,
    channels: ChannelCatalog,
    sent_times: Iterable[datetime] = (),
    paused_until: datetime | None = None,
) -> Decision:
    """The policy's verdict on a message that is otherwise ready to send. `due_at` None
    means its age is unknown (a proactive row without created_at): never expired.
    `paused_until`: IGNORED_RUN_PAUSE holds the contractor's proactive messages until then."""
    if prefs.opted_out:
        return Decision("skip", reason="opted_out")
    if due_at is not None and now - due_at > max_age:
        return Decision("skip", reason="expired")
    choice = choose_channel(prefs, contact, channels)
    if choice.action != "send":
        return choice
    held = _held(now, prefs, paused_until)
    if held is not None:
        reason, until = held
        return Decision("defer", reason=reason, channel=choice.channel, not_before=until)
    if sent_today(now, prefs.zone, sent_times) >= prefs.max_per_day:
        opens = next_local_midnight(now, prefs.zone)
        # Local midnight is usually inside quiet hours: go straight to when both allow it.
        opens = quiet_until(opens, prefs.zone, prefs.quiet_hours) or opens
        return Decision("defer", reason="daily_cap", channel=choice.channel, not_before=opens)
    return choice


def _held(now: datetime, prefs: Preferences, paused_until: datetime | None) -> tuple[str, datetime] | None:
    """(reason, until) when the message must wait: IGNORED_RUN_PAUSE first (quiet hours at
    the pause's end are the next verdict's business), then quiet hours."""
    if paused_until is not None and paused_until > now:
        return "ignored_run_pause", paused_until
    until = quiet_until(now, prefs.zone, prefs.quiet_hours)
    return ("quiet_hours", until) if until is not None else None


def ignored_run_until(
    now: datetime, recent: Sequence[tuple[datetime, bool]], rule: IgnoredRunPause | None
) -> datetime | None:
    """When IGNORED_RUN_PAUSE lets proactive messages go again, or None when it holds
    nothing: `recent` is the contractor's last proactive sends, newest first, each (sent at,
    answered). The `count` most recent all unanswered pause them for `pause` from the
    oldest of those."""
    if rule is None or len(recent) < rule.count:
        return None
    run = recent[: rule.count]
    if any(answered for _, answered in run):
        return None
    until = min(sent_at for sent_at, _ in run) + rule.pause
    return until if until > now else None
