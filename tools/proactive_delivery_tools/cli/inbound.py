"""`proactive-delivery inbound backfill-phones`: fill the contractor <-> number directory from
the platform's contractors.phone (docs/inbound.md#phone-hash-key).

evaluate registers a contractor's number (as its keyed hash) before it queues their first
message, and deliver records the number it texts, so a reply or a STOP finds them from then
on; each applies the keyword opt-outs recorded `unmatched` from a number it adds. A number
evaluate has not met yet (a contractor with nothing due) finds no one: the backfill hashes
every contractor's stored phone once (E.164 in DEFAULT_PHONE_REGION, then HMAC-SHA256 under
the phone hash key) with the same statement evaluate uses, then applies the unmatched opt-outs
of every number the directory knows. Safe to run again: it adds what is missing and changes
nothing else.

The key is the functions' own: PHONE_HASH_KEY_ARN (the stack output PhoneHashKeyArn) or
PHONE_HASH_KEY; a local or test stage without either derives it from WEBHOOK_SIGNING_SECRET
as the functions do there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO

import psycopg

from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.adapters.postgres.store import PostgresStore
from proactive_delivery.adapters.secrets import phone_hash_key_from, powertools_reader, signing_secret_from
from proactive_delivery.core.errors import ConfigError, StoreUnavailableError
from proactive_delivery.core.models import PhonePair
from proactive_delivery.core.phone_hash import PhoneHasher, derive_local_key
from proactive_delivery.settings import (
    LOCAL_STAGES,
    platform_write_sms_opt_in_from_env,
    policy_defaults_from_env,
)

SQL_PACKAGE = "proactive_delivery_tools.ops.sql"
PAGE_SIZE = 1000
# delivery.contractor_phone.source of a number the backfill added.
BACKFILL_SOURCE = "backfill"


def add_parser(sub: Any, database_url: Callable[[argparse.Namespace], str]) -> None:
    inbound = sub.add_parser("inbound", help="the way back: the contractor <-> number directory")
    actions = inbound.add_subparsers(dest="inbound_command", required=True)
    backfill = actions.add_parser(
        "backfill-phones",
        help="hash every contractor's phone into the directory (safe to repeat), then apply the"
        " keyword opt-outs recorded unmatched from numbers it now knows",
    )
    backfill.add_argument("--dry-run", action="store_true", help="count only; write nothing")
    backfill.add_argument(
        "--page-size", type=int, default=PAGE_SIZE, help=f"contractors a page ({PAGE_SIZE})"
    )
    backfill.add_argument("--json", action="store_true", help="print the report as JSON")
    inbound.set_defaults(func=lambda args: run(args, database_url(args)))


def phone_hasher_from_env(environ: dict[str, str] | None = None) -> tuple[PhoneHasher, str]:
    """The functions' phone hasher, from this shell's environment, and where its key came from."""
    env = dict(os.environ if environ is None else environ)
    region = policy_defaults_from_env(env).phone_region
    read = powertools_reader(300)
    key = phone_hash_key_from(
        env.get("PHONE_HASH_KEY", "").strip(), env.get("PHONE_HASH_KEY_ARN", "").strip(), read
    )
    if key is not None:
        where = "PHONE_HASH_KEY" if env.get("PHONE_HASH_KEY", "").strip() else "PHONE_HASH_KEY_ARN"
        return PhoneHasher(key, region), where
    stage = env.get("STAGE", "local").strip() or "local"
    secret = env.get("WEBHOOK_SIGNING_SECRET", "").strip()
    secret_arn = env.get("WEBHOOK_SIGNING_SECRET_ARN", "").strip()
    if stage in LOCAL_STAGES and (secret or secret_arn):
        signing = signing_secret_from(secret or None, secret_arn or None, read)
        return PhoneHasher(
            derive_local_key(signing), region
        ), f"derived from the signing secret (stage {stage})"
    raise ConfigError(
        "no phone hash key: set PHONE_HASH_KEY_ARN to the stack's output PhoneHashKeyArn"
        " (or PHONE_HASH_KEY); a local stage derives it from WEBHOOK_SIGNING_SECRET"
    )


def run(args: argparse.Namespace, conninfo: str, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.page_size < 1 or args.page_size > 10_000:
        raise ConfigError("--page-size must be between 1 and 10000")
    hasher, key_source = phone_hasher_from_env()
    region = policy_defaults_from_env().phone_region
    write_sms_opt_in = platform_write_sms_opt_in_from_env()
    db = Database(lambda: conninfo)
    # The functions' own statement (sql/inbound.sql, register_contractor_phones).
    store = PostgresStore(db)
    report = {"contractors": 0, "hashed": 0, "invalid": 0, "added": 0, "opt_outs_applied": 0}
    try:
        after = 0
        while True:
            page = db.fetch_all(
                _sql(db, "contractor_phones_page"), {"after_id": after, "page_size": args.page_size}
            )
            if not page:
                break
            after = int(page[-1]["contractor_id"])
            pairs = []
            for row in page:
                digest = hasher(row["phone"])
                if digest is None:
                    report["invalid"] += 1
                else:
                    pairs.append(PhonePair(int(row["contractor_id"]), digest))
            report["contractors"] += len(page)
            report["hashed"] += len(pairs)
            if pairs and not args.dry_run:
                done = store.register_phones(pairs, source=BACKFILL_SOURCE, write_sms_opt_in=write_sms_opt_in)
                report["added"] += done.registered
                report["opt_outs_applied"] += len(done.opted_out)
        if not args.dry_run:
            # Then every number of the directory, whoever added it (a number deliver recorded
            # after an unmatched STOP from it, too).
            done = store.register_phones(None, source=BACKFILL_SOURCE, write_sms_opt_in=write_sms_opt_in)
            report["opt_outs_applied"] += len(done.opted_out)
    except psycopg.Error as exc:
        raise StoreUnavailableError(f"cannot backfill the phone directory: {type(exc).__name__}") from exc
    finally:
        db.close()
    if args.json:
        print(json.dumps({**report, "dry_run": args.dry_run, "region": region, "key": key_source}), file=out)
        return 0
    print(
        f"phone directory backfill{' (dry run: nothing written)' if args.dry_run else ''}:"
        f" {report['contractors']} contractors with a phone, {report['hashed']} numbers hashed,"
        f" {report['invalid']} not a valid number in region {region}; key {key_source}",
        file=out,
    )
    if not args.dry_run:
        print(
            f"directory rows added: {report['added']} (numbers already there are kept); keyword"
            f" opt-outs recorded unmatched and now applied: {report['opt_outs_applied']} contractor(s)",
            file=out,
        )
    return 0


def _sql(db: Database, name: str) -> Any:
    return db.sql(name, "phones.sql", package=SQL_PACKAGE)
