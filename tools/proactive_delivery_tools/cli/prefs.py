"""`proactive-delivery prefs show|set`: read and change a contractor's delivery preferences.

`show` prints what the pipeline will use for the contractor, each value with where it comes
from: our row (delivery.contractor_preferences), the platform's own columns
(contractors.sms_opt_in, contractors.timezone) or the deployment's default (a setting). The
values are resolved by the pipeline's own policy functions (core/policy.py: resolve,
choose_channel) from the same columns the pipeline reads; the defaults are the settings as
the functions read them, from this shell's environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

import psycopg

from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.channels import CHANNELS
from proactive_delivery.core.errors import ConfigError, StoreUnavailableError
from proactive_delivery.core.policy import (
    ChannelCatalog,
    Contact,
    PolicyDefaults,
    PolicyInputError,
    Preferences,
    QuietHours,
    StoredPreferences,
    choose_channel,
    load_zone,
    parse_channels,
    parse_quiet_hours,
    resolve,
)
from proactive_delivery.settings import policy_defaults_from_env

SQL_PACKAGE = "proactive_delivery_tools.ops.sql"
# Where a value comes from.
OUR_ROW = "delivery.contractor_preferences"
PLATFORM_TIMEZONE_COLUMN = "contractors.timezone"
PLATFORM_SMS_COLUMN = "contractors.sms_opt_in"


def add_parser(sub: Any, database_url: Callable[[argparse.Namespace], str]) -> None:
    prefs = sub.add_parser("prefs", help="show or change a contractor's delivery preferences")
    actions = prefs.add_subparsers(dest="prefs_command", required=True)
    show = actions.add_parser("show", help="stored preferences and the values in effect")
    show.add_argument("contractor_id", type=int)
    change = actions.add_parser("set", help="change preferences (only the options given)")
    change.add_argument("contractor_id", type=int)
    change.add_argument("--channels", help=f"ordered, comma-separated: {','.join(CHANNELS.names)}")
    change.add_argument("--timezone", help="IANA time zone, e.g. America/Chicago")
    change.add_argument("--quiet-hours", help="HH:MM-HH:MM local time, or none")
    change.add_argument("--max-per-day", type=int, help="messages per local day")
    optout = change.add_mutually_exclusive_group()
    optout.add_argument("--opt-out", dest="opted_out", action="store_const", const=True)
    optout.add_argument("--opt-in", dest="opted_out", action="store_const", const=False)
    prefs.set_defaults(func=lambda args: run(args, database_url(args)))


def run(args: argparse.Namespace, conninfo: str, out: TextIO | None = None) -> int:
    import sys

    out = out or sys.stdout
    if args.contractor_id <= 0:
        raise ConfigError("CONTRACTOR_ID must be a positive integer")
    params: dict[str, Any] = {"contractor_id": args.contractor_id}
    changing = args.prefs_command == "set"
    if changing:
        params.update(_changes(args))
    # Read (and checked) before anything is written: a bad default is one line, no change.
    defaults = policy_defaults_from_env(os.environ)
    db = Database(lambda: conninfo)
    try:
        found = True
        if changing:
            found = bool(db.fetch_all(_sql(db, "upsert_preferences"), params, retry=False))
        rows = db.fetch_all(_sql(db, "get_preferences"), params) if found else []
    except psycopg.Error as exc:
        what = "change" if changing else "read"
        raise StoreUnavailableError(f"cannot {what} preferences: {type(exc).__name__}") from exc
    finally:
        db.close()
    if not rows:
        # Both statements find the contractor in the platform's table first; nothing was written.
        raise ConfigError(
            f"contractor {args.contractor_id} does not exist in the platform's contractors table"
        )
    _print(args.contractor_id, rows[0], defaults, out)
    return 0


def _sql(db: Database, name: str) -> Any:
    return db.sql(name, "preferences.sql", package=SQL_PACKAGE)


def _changes(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {
        "channels": None,
        "timezone": None,
        "quiet_start": None,
        "quiet_end": None,
        "max_per_day": None,
        "opted_out": args.opted_out,
    }
    try:
        if args.channels is not None:
            changes["channels"] = list(parse_channels(args.channels, CHANNELS.names))
        if args.timezone is not None:
            changes["timezone"] = load_zone(args.timezone).key
        if args.quiet_hours is not None:
            window = parse_quiet_hours(args.quiet_hours)
            changes["quiet_start"], changes["quiet_end"] = window.start, window.end
    except PolicyInputError as exc:
        raise ConfigError(str(exc)) from None
    if args.max_per_day is not None:
        if args.max_per_day < 0:
            raise ConfigError("--max-per-day must be >= 0")
        changes["max_per_day"] = args.max_per_day
    if all(v is None for v in changes.values()):
        raise ConfigError(
            "nothing to change: give --channels, --timezone, --quiet-hours, --max-per-day,"
            " --opt-out or --opt-in"
        )
    return changes


def _print(contractor_id: int, row: Mapping[str, Any], defaults: PolicyDefaults, out: TextIO) -> None:
    stored = StoredPreferences.from_row(row)
    print(f"contractor {contractor_id}", file=out)
    if stored is None:
        print(f"  no preference row in {OUR_ROW}: the platform's columns and the defaults apply", file=out)
    try:
        prefs = resolve(stored, defaults, row["contractor_timezone"], known=CHANNELS.names)
    except PolicyInputError as exc:
        print(
            f"  INVALID          {exc} in {OUR_ROW} (messages fail with this reason until it is fixed)",
            file=out,
        )
        return
    for label, value, source in _effective(prefs, row):
        print(f"  {label:<16} {value:<17} from {source}" if source else f"  {label:<16} {value}", file=out)


def _effective(prefs: Preferences, row: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(label, value in effect, where it comes from), in the order the pipeline decides."""
    stored = StoredPreferences.from_row(row)
    platform_zone: str | None = row["contractor_timezone"]
    sms_opt_in: bool | None = row["sms_opt_in"]
    lines: list[tuple[str, str, str]] = []
    # The preferred channels in their order, then the others (an opt-out holds either way).
    every = [*prefs.channels, *(c for c in CHANNELS.names if c not in prefs.channels)]
    blocked = [c for c in every if prefs.opted_out or _opted_out(prefs, sms_opt_in, c)]
    if prefs.opted_out:
        lines.append(("opted out", "all channels", _our_opt_out(row)))
    elif blocked:
        for channel in blocked:
            why = []
            if channel in prefs.opted_out_channels:
                why.append(f"{_channel_opt_out(row, channel)} (opted_out_channels)")
            if channel in _NOTHING_CONFIGURED.sms_consent and sms_opt_in is False:
                why.append(f"{PLATFORM_SMS_COLUMN} = false (the platform's; --opt-in does not change it)")
            lines.append(("opted out", channel, "; ".join(why)))
    else:
        lines.append(("opted out", "no", ""))
    for channel, suppression in prefs.suppressed_channels.items():
        # A provider reported the channel undeliverable for good (the inbound processor).
        lines.append(
            (
                "suppressed",
                channel,
                f"{OUR_ROW} (suppressed_channels): {suppression.reason}; a phone channel is tried again"
                " once the contractor's number changes; --opt-in lifts it",
            )
        )
    source = OUR_ROW if stored is not None and stored.channels else _default("DEFAULT_CHANNELS")
    lines.append(("channels", ",".join(prefs.channels), source))
    open_channels = [c for c in prefs.channels if c not in blocked and c not in prefs.suppressed_channels]
    lines.append(
        (
            "open channels",
            ",".join(open_channels) + " (sent on the first that is configured and reachable)"
            if open_channels
            else "none: every message is skipped (opted_out)",
            "",
        )
    )
    lines.append(("timezone", prefs.zone.key, _zone_source(prefs, stored, platform_zone)))
    quiet_from_row = stored is not None and stored.quiet_start is not None and stored.quiet_end is not None
    lines.append(
        ("quiet hours", _quiet(prefs.quiet_hours), OUR_ROW if quiet_from_row else _default("QUIET_HOURS"))
    )
    cap_from_row = stored is not None and stored.max_per_day is not None
    lines.append(
        ("max per day", str(prefs.max_per_day), OUR_ROW if cap_from_row else _default("MAX_MESSAGES_PER_DAY"))
    )
    return lines


def _opted_out(prefs: Preferences, sms_opt_in: bool | None, channel: str) -> bool:
    """Whether the pipeline's channel choice refuses `channel` as opted out (ours, or the
    platform's sms_opt_in): asked about that channel alone with no channel configured,
    choose_channel answers opted_out for an opt-out and no_contact otherwise."""
    only = dataclasses.replace(prefs, channels=(channel,))
    contact = Contact(phone=None, email=None, contractor_id=None, sms_opt_in=sms_opt_in)
    return choose_channel(only, contact, _NOTHING_CONFIGURED).reason == "opted_out"


# Every declared channel, none configured: choose_channel then only says whether it is opted out.
_NOTHING_CONFIGURED = ChannelCatalog(
    contacts={d.name: d.contact for d in CHANNELS},
    sms_consent=frozenset(d.name for d in CHANNELS if d.sms_consent),
)


def _our_opt_out(row: Mapping[str, Any]) -> str:
    when = row.get("opted_out_at")
    if when is None:
        return OUR_ROW
    return f"{OUR_ROW}, changed {when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC by {row.get('opt_out_source')}"


def _channel_opt_out(row: Mapping[str, Any], channel: str) -> str:
    """Where one channel's opt-out comes from: its own entry (who, when), else the row's."""
    sources = row.get("opt_out_sources")
    entry = sources.get(channel) if isinstance(sources, Mapping) else None
    if not isinstance(entry, Mapping) or not entry.get("opted_out") or not entry.get("source"):
        return _our_opt_out(row)
    try:
        at = datetime.fromisoformat(str(entry.get("at")))
    except ValueError:
        at = None
    # The processor writes the time with its offset; one without (written by hand) is not read
    # in this shell's zone.
    when = f"{at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if at and at.tzinfo else "at an unknown time"
    return f"{OUR_ROW}, changed {when} by {entry['source']}"


def _zone_source(prefs: Preferences, stored: StoredPreferences | None, platform_zone: str | None) -> str:
    if stored is not None and stored.timezone:
        return OUR_ROW
    if prefs.unusable_platform_zone is not None:
        unusable = prefs.unusable_platform_zone[:64]
        return f"{_default('DEFAULT_TIMEZONE')}: {PLATFORM_TIMEZONE_COLUMN} {unusable!r} is not an IANA zone"
    if platform_zone and platform_zone.strip():
        return f"{PLATFORM_TIMEZONE_COLUMN} (the platform's)"
    return _default("DEFAULT_TIMEZONE")


def _default(variable: str) -> str:
    """A default of the deployment: the setting as this shell has it, or its built-in value."""
    if os.environ.get(variable, "").strip():
        return f"{variable} as set in this shell"
    return f"the built-in default ({variable} is not set in this shell)"


def _quiet(window: QuietHours) -> str:
    # start == end is no window at all (QuietHours.contains is never true).
    return "none" if window.start == window.end else str(window)
