"""`make build` and `make deploy`: sam build and sam deploy as a user runs them, plus the
migrations between the two.

    python scripts/deploy.py build  [--config-env ENV] [--architecture arm64|x86_64]
    python scripts/deploy.py deploy [--config-env ENV] [--architecture ...] [KEY=VALUE ...]

build   sam build (no container; scripts/sam.sh puts the real python3.12 on PATH) with the
        same --parameter-overrides as the deploy, Architecture included: the layer's
        binary wheels (psycopg) are built for the architecture the functions run on.
deploy  build, then `proactive-delivery migrate` against the stack's database secret
        (DATABASE_SECRET_ARN), then sam deploy. The migrations are additive and run before
        any function changes, so the old code keeps working on the new schema and the new
        code never starts on the old one. A rejected change set leaves the (harmless)
        migrations applied.

--parameter-overrides on the command line replaces samconfig.toml's list, so the deploy
passes samconfig.toml's parameter_overrides for ENV, then Architecture, then
DatabaseSecretArn=$DATABASE_SECRET_ARN, then the KEY=VALUE arguments (later ones win).
Parameters not given keep their deployed values (sam deploy asks CloudFormation for
UsePreviousValue). The architecture is --architecture, else samconfig.toml's, else the
deployed stack's (so a deploy never flips it by accident), else the template's default.

Environment: SAM (default scripts/sam.sh), PROACTIVE_DELIVERY (default
.venv/bin/proactive-delivery), DATABASE_SECRET_ARN (deploy: required), AWS_REGION /
AWS_DEFAULT_REGION / AWS_PROFILE as for any AWS command. --dry-run prints the commands.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURES = ("arm64", "x86_64")


class DeployError(Exception):
    pass


def samconfig(config_env: str) -> dict[str, Any]:
    path = ROOT / "samconfig.toml"
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    if config_env not in data:
        raise DeployError(f"samconfig.toml has no [{config_env}] environment")
    env: dict[str, Any] = data[config_env]
    return env


def section(env: dict[str, Any], command: str) -> dict[str, Any]:
    return dict((env.get(command) or {}).get("parameters") or {})


def parse_overrides(value: Any) -> dict[str, str]:
    """samconfig's parameter_overrides: one string of KEY=VALUE pairs, or a list of them."""
    items = shlex.split(value) if isinstance(value, str) else [str(v) for v in (value or [])]
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key:
            raise DeployError(f"parameter override {item!r} is not KEY=VALUE")
        pairs[key] = val
    return pairs


def template_default_architecture() -> str:
    from proactive_delivery_tools.local.template import load_yaml

    return str(load_yaml(ROOT / "template.yaml")["Parameters"]["Architecture"]["Default"])


def deployed_architecture(stack_name: str, region: str | None) -> str | None:
    """The Architecture parameter of the deployed stack, None when it does not exist yet."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        stacks = boto3.client("cloudformation", region_name=region).describe_stacks(StackName=stack_name)
    except ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise DeployError(f"cannot read stack {stack_name}: {exc}") from None
    except BotoCoreError as exc:
        raise DeployError(f"cannot read stack {stack_name}: {exc}") from None
    for parameter in stacks["Stacks"][0].get("Parameters", []):
        if parameter["ParameterKey"] == "Architecture":
            return str(parameter.get("ParameterValue"))
    return None


def run(command: list[str], *, dry_run: bool, env: dict[str, str] | None = None) -> None:
    print("+ " + shlex.join(command), flush=True)
    if dry_run:
        return
    completed = subprocess.run(command, cwd=ROOT, env=env, check=False)  # noqa: S603 - our own tools
    if completed.returncode != 0:
        raise DeployError(f"{Path(command[0]).name} {command[1]} failed (exit {completed.returncode})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("build", "deploy"))
    parser.add_argument("--config-env", default="default", help="samconfig.toml environment (default)")
    parser.add_argument("--architecture", choices=ARCHITECTURES, help="arm64 or x86_64")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="more template parameters")
    args = parser.parse_intermixed_args(argv)
    try:
        return deploy(args)
    except DeployError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return 2


def deploy(args: argparse.Namespace) -> int:
    env = samconfig(args.config_env)
    deploy_params = section(env, "deploy")
    stack_name = str(section(env, "global").get("stack_name") or deploy_params.get("stack_name") or "")
    region = section(env, "global").get("region") or deploy_params.get("region")
    overrides = parse_overrides(deploy_params.get("parameter_overrides"))
    extra = parse_overrides(args.overrides)
    sam = os.environ.get("SAM") or str(ROOT / "scripts" / "sam.sh")
    cli = os.environ.get("PROACTIVE_DELIVERY") or str(ROOT / ".venv" / "bin" / "proactive-delivery")

    secret_arn = os.environ.get("DATABASE_SECRET_ARN", "").strip()
    if args.action == "deploy":
        if not secret_arn:
            raise DeployError(
                "DATABASE_SECRET_ARN is required: the migrations run against the stack's database secret "
                "(the DatabaseSecretArn parameter) before the functions change"
            )
        if not stack_name:
            raise DeployError(f"samconfig.toml [{args.config_env}] has no stack_name")
        overrides["DatabaseSecretArn"] = secret_arn

    architecture = (
        args.architecture
        or extra.get("Architecture")
        or overrides.get("Architecture")
        or (
            deployed_architecture(stack_name, region)
            if args.action == "deploy" and not args.dry_run
            else None
        )
        or template_default_architecture()
    )
    if architecture not in ARCHITECTURES:
        raise DeployError(f"Architecture must be one of {', '.join(ARCHITECTURES)}, got {architecture!r}")
    overrides["Architecture"] = architecture
    overrides.update({k: v for k, v in extra.items() if k != "Architecture"})
    pairs = [f"{k}={v}" for k, v in overrides.items()]

    print(
        f"{args.action}: config env {args.config_env}, stack {stack_name or '-'}, architecture {architecture}"
    )
    run(
        [sam, "build", "--config-env", args.config_env, "--template-file", "template.yaml",
         "--parameter-overrides", *pairs],
        dry_run=args.dry_run,
    )  # fmt: skip
    if args.action == "build":
        return 0

    # The migrations first, with the same secret the functions will read. DATABASE_URL is
    # dropped so that an operator's local setting cannot point them elsewhere; the
    # secret's region is used when none is set.
    migrate_env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if not (migrate_env.get("AWS_REGION") or migrate_env.get("AWS_DEFAULT_REGION")):
        migrate_env["AWS_DEFAULT_REGION"] = str(region or secret_arn.split(":")[3])
    run([cli, "migrate"], dry_run=args.dry_run, env=migrate_env)
    run(
        [sam, "deploy", "--config-env", args.config_env, "--parameter-overrides", *pairs],
        dry_run=args.dry_run,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
