"""`proactive-delivery`: the operator's command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from proactive_delivery.errors import ConfigError, DeliveryError
from proactive_delivery.settings import LOCAL_STAGES


def _database_url(args: argparse.Namespace) -> str:
    url = getattr(args, "database_url", None) or os.environ.get("DATABASE_URL")
    if url:
        return url
    if os.environ.get("PGHOST") or os.environ.get("PGDATABASE"):
        return "postgresql://"  # libpq fills the rest in from the PG* variables
    raise ConfigError("DATABASE_URL is required (or the PG* variables): where is the database?")


def cmd_migrate(args: argparse.Namespace) -> int:
    from proactive_delivery.migrate import apply_migrations

    stage = os.environ.get("STAGE", "local")
    if args.reference_schema and stage not in LOCAL_STAGES:
        raise ConfigError(f"--reference-schema creates the platform's tables: refused in stage {stage!r}")
    applied = apply_migrations(_database_url(args), reference_schema=args.reference_schema)
    print(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proactive-delivery", description=__doc__)
    parser.add_argument(
        "--database-url", help="PostgreSQL URL (default: DATABASE_URL, then the PG* variables)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    migrate = sub.add_parser("migrate", help="apply this project's migrations to the database")
    migrate.add_argument(
        "--reference-schema",
        action="store_true",
        help="also create the reference copy of the platform's tables (tests and local demo only)",
    )
    migrate.set_defaults(func=cmd_migrate)

    from proactive_delivery.local_cli import add_local_commands

    add_local_commands(sub)

    from proactive_delivery import ops_cli

    ops_cli.register(sub, _database_url)

    from proactive_delivery import prefs_cli

    prefs_cli.add_parser(sub, _database_url)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ConfigError, DeliveryError) as exc:
        print(f"proactive-delivery: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
