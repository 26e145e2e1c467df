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


def cmd_demo(args: argparse.Namespace) -> int:
    # Before the package's loggers exist: the demo prints a summary, not every delivery.
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")
    from proactive_delivery.local.demo import DemoOptions, run_demo

    summary = run_demo(
        DemoOptions(
            database_url=_database_url(args), count=args.count, fail_rate=args.fail_rate, latency=args.latency
        ),
        sys.stdout,
    )
    open_states = {k: v for k, v in summary["states"].items() if k in ("queued", "pending", "sending")}
    return 1 if open_states else 0


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

    demo = sub.add_parser("demo", help="run the pipeline locally once (no AWS account, no Docker)")
    demo.add_argument("--count", type=int, default=100, help="sample messages to seed (default 100)")
    demo.add_argument("--fail-rate", type=float, default=0.1, help="share of webhook calls answered 503")
    demo.add_argument("--latency", type=float, default=0.02, help="receiver latency in seconds")
    demo.set_defaults(func=cmd_demo)

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
