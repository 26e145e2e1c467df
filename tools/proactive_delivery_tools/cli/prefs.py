"""`proactive-delivery prefs show|set`: read and change a contractor's delivery preferences."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any, TextIO

import psycopg
from psycopg.rows import dict_row

from proactive_delivery.adapters.postgres.database import connect, load_queries
from proactive_delivery.channels import CHANNELS
from proactive_delivery.core.errors import ConfigError, StoreUnavailableError
from proactive_delivery.core.policy import (
    PolicyInputError,
    StoredPreferences,
    load_zone,
    parse_channels,
    parse_quiet_hours,
    resolve,
)
from proactive_delivery.settings import _policy_defaults, _Reader


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
    params = {"contractor_id": args.contractor_id}
    if args.prefs_command == "set":
        params.update(_changes(args))
        name = "upsert_preferences"
    else:
        name = "get_preferences"
    queries = load_queries("preferences.sql", "proactive_delivery_tools.ops.sql")
    with connect(conninfo) as conn:
        try:
            with conn.cursor(row_factory=dict_row) as cur:
                row = cur.execute(queries[name], params).fetchone()
        except psycopg.Error as exc:
            what = "change" if args.prefs_command == "set" else "read"
            raise StoreUnavailableError(f"cannot {what} preferences: {type(exc).__name__}") from exc
    if row is None:
        # Both statements find the contractor in the platform's table first; nothing was written.
        raise ConfigError(
            f"contractor {args.contractor_id} does not exist in the platform's contractors table"
        )
    _print(args.contractor_id, row, out)
    return 0


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


def _print(contractor_id: int, row: dict[str, Any] | None, out: TextIO) -> None:
    defaults = _policy_defaults(_Reader(os.environ))
    has_row = bool(row and row["has_row"])
    stored = (
        StoredPreferences.from_row({f"pref_{k}": v for k, v in row.items() if k != "has_row"})
        if row and has_row
        else None
    )
    print(f"contractor {contractor_id}", file=out)
    if row is None or not has_row:
        print("  no preference row: the defaults apply", file=out)
    else:
        opted = "all channels" if row["opted_out"] else ", ".join(row["opted_out_channels"]) or "no"
        print(f"  opted out        {opted}", file=out)
        if row["opted_out_at"]:
            print(
                f"  opt-out changed  {row['opted_out_at']:%Y-%m-%d %H:%M:%S %Z} by {row['opt_out_source']}",
                file=out,
            )
    try:
        prefs = resolve(stored, defaults, known=CHANNELS.names)
    except PolicyInputError as exc:
        print(f"  INVALID          {exc} (messages fail with this reason until it is fixed)", file=out)
        return
    print(f"  channels         {','.join(prefs.channels)}", file=out)
    print(f"  timezone         {prefs.zone.key}", file=out)
    print(f"  quiet hours      {prefs.quiet_hours}", file=out)
    print(f"  max per day      {prefs.max_per_day}", file=out)
