"""The local commands of `proactive-delivery`: `local` (the pipeline as template.yaml
declares it, on this machine), `seed` (sample data) and `demo` (`local --once`)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from proactive_delivery.core.errors import ConfigError


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
    return value


def _overrides(items: list[str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--parameter-overrides wants Key=Value, got {item!r}")
        values[key] = value
    return values


def add_local_commands(sub: Any) -> None:
    local = sub.add_parser(
        "local",
        help="run the pipeline as template.yaml declares it, on this machine (no AWS, no Docker)",
        description="Queues, schedules, the SQS event source mapping and each function's environment "
        "come from the template; SQS is moto's server, the webhook a local signature-checking receiver.",
    )
    local.add_argument("--template", type=Path, default=Path("template.yaml"), help="SAM template")
    local.add_argument(
        "--env-vars",
        type=Path,
        default=Path("events/env.local.json"),
        help="env file in `sam local invoke --env-vars` format (default events/env.local.json)",
    )
    local.add_argument(
        "--parameter-overrides", nargs="*", default=[], metavar="KEY=VALUE", help="template parameters"
    )
    local.add_argument("--once", action="store_true", help="fire every schedule once, drain the queue, exit")
    local.add_argument("--speed", type=_positive_float, default=1.0, help="schedule time runs N times faster")
    local.add_argument(
        "--count", type=int, default=100, help="sample messages to seed into a fresh database (0: none)"
    )
    local.add_argument("--fail-rate", type=float, default=0.0, help="share of webhook calls that fail")
    local.add_argument("--latency", type=float, default=0.02, help="webhook receiver latency in seconds")
    local.add_argument("--status", type=int, default=503, help="HTTP status of a failed call (429, 500, 400)")
    local.add_argument(
        "--sms-provider",
        choices=("twilio", "n8n"),
        default="twilio",
        help="SMS through the Twilio stand-in, which calls back (default), or n8n's webhook receiver",
    )
    local.add_argument("--no-live", action="store_true", help="plain progress lines instead of a live view")
    local.add_argument("--for", dest="run_for", type=_positive_float, help="stop after this many seconds")
    local.add_argument("--max-wait", type=_positive_float, default=300.0, help="--once gives up after this")
    local.add_argument("--keep-data", action="store_true", help="keep a throwaway cluster's data directory")
    local.set_defaults(func=cmd_local)

    demo = sub.add_parser("demo", help="the pipeline once with the default sample (= local --once)")
    demo.add_argument("--count", type=int, default=100, help="sample messages to seed (default 100)")
    demo.add_argument("--fail-rate", type=float, default=0.1, help="share of webhook calls answered 503")
    demo.add_argument("--latency", type=float, default=0.02, help="receiver latency in seconds")
    demo.set_defaults(func=cmd_demo)

    seed = sub.add_parser("seed", help="insert sample contractors and messages (reference schema)")
    seed.add_argument("--count", type=int, default=100, help="messages (default 100)")
    seed.add_argument("--contractors", type=int, default=20, help="contractors (default 20)")
    from proactive_delivery_tools.cli import add_allow_remote_flag

    add_allow_remote_flag(seed)
    seed.set_defaults(func=cmd_seed)


def cmd_local(args: argparse.Namespace) -> int:
    from proactive_delivery_tools.local.runtime import RuntimeOptions, run_local

    if args.count < 0:
        raise ConfigError("--count must be >= 0")
    env_vars = args.env_vars
    if env_vars is not None and not env_vars.exists() and env_vars == Path("events/env.local.json"):
        env_vars = None  # the default file is optional outside a checkout
    options = RuntimeOptions(
        template=args.template,
        env_vars=env_vars,
        parameter_overrides=_overrides(args.parameter_overrides),
        once=args.once,
        speed=args.speed,
        count=args.count,
        fail_rate=args.fail_rate,
        latency=args.latency,
        status=args.status,
        live=not args.no_live,
        database_url=getattr(args, "database_url", None),
        run_for=args.run_for,
        max_wait=args.max_wait,
        keep_data=args.keep_data,
        sms_provider=getattr(args, "sms_provider", "twilio"),
    )
    return run_local(options, sys.stdout).exit_code


def cmd_demo(args: argparse.Namespace) -> int:
    argv = ["--once", "--count", str(args.count), "--fail-rate", str(args.fail_rate)]
    argv += ["--latency", str(args.latency)]
    parser = argparse.ArgumentParser()
    add_local_commands(parser.add_subparsers())
    local_args = parser.parse_args(["local", *argv])
    local_args.database_url = getattr(args, "database_url", None)
    return cmd_local(local_args)


def cmd_seed(args: argparse.Namespace) -> int:
    from proactive_delivery.adapters.postgres.database import connect
    from proactive_delivery.settings import LOCAL_STAGES
    from proactive_delivery_tools.cli import _database_url, refuse_remote_database
    from proactive_delivery_tools.local.seed import seed
    from proactive_delivery_tools.schema.migrate import apply_migrations

    if args.count < 0 or args.contractors < 1:
        raise ConfigError("--count must be >= 0 and --contractors >= 1")
    stage = os.environ.get("STAGE", "local")
    if stage not in LOCAL_STAGES:
        raise ConfigError(f"seed writes sample rows into the platform's tables: refused in stage {stage!r}")
    url = _database_url(args)
    refuse_remote_database(url, "seed writes sample rows into the platform's tables", args)
    apply_migrations(url, reference_schema=True)
    with connect(url) as conn:
        result = seed(conn, count=args.count, contractors=args.contractors, inbound_scenario=True)
    print(
        f"seeded {result.messages} messages for {result.contractors} contractors "
        f"({result.without_phone} without a phone), {result.followups} follow-ups"
    )
    return 0
