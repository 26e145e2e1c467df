"""`proactive-delivery`: the operator's command line.

Every command that cannot do its job says why in one line on stderr and exits 2, whatever
the cause (a bad setting, a database that refuses, AWS without a region or credentials);
piped into `head`, it stops quietly. The database is found the way the functions find it
(DATABASE_URL, or DATABASE_SECRET_ARN through Secrets Manager), plus --database-url and the
PG* variables for an operator's shell; nothing else of the functions' settings is needed
for a database-only command.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from proactive_delivery import __version__
from proactive_delivery.core.errors import ConfigError, DeliveryError
from proactive_delivery.settings import LOCAL_STAGES

# How a shell reports a command that a closed pipe stopped (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141
ALLOW_REMOTE_FLAG = "--allow-remote-database"


def _database_url(args: argparse.Namespace) -> str:
    """--database-url, DATABASE_URL, DATABASE_SECRET_ARN (the functions' settings), then
    the PG* variables."""
    given = getattr(args, "database_url", None)
    source = "--database-url"
    if not given and os.environ.get("DATABASE_URL", "").strip():
        given, source = os.environ["DATABASE_URL"].strip(), "DATABASE_URL"
    if given:
        # A postgresql:// URL, or libpq's key=value form (host=... dbname=...), which psycopg
        # reports itself (conn.info.dsn has that form); anything else is a slip.
        if not given.startswith(("postgresql://", "postgres://")) and "=" not in given:
            raise ConfigError(f"{source} is not a PostgreSQL URL (postgresql://user@host:5432/dbname)")
        return str(given)
    secret_arn = os.environ.get("DATABASE_SECRET_ARN", "").strip()
    if secret_arn:
        from proactive_delivery.adapters.secrets import database_url_from, powertools_reader

        return database_url_from(None, secret_arn, powertools_reader(300))
    if os.environ.get("PGHOST") or os.environ.get("PGDATABASE"):
        return "postgresql://"  # libpq fills the rest in from the PG* variables
    raise ConfigError(
        "no database: set DATABASE_URL or DATABASE_SECRET_ARN (or the PG* variables, or --database-url)"
    )


def remote_database_host(conninfo: str) -> str | None:
    """The first host of `conninfo` that is not this machine (loopback address, localhost
    or a Unix socket), or None when every one is local. Defaults come from PGHOST /
    PGHOSTADDR, as libpq takes them."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    from proactive_delivery.adapters.postgres.database import describe_connect_error
    from proactive_delivery.core.errors import StoreUnavailableError

    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        raise StoreUnavailableError(describe_connect_error(exc)) from exc
    # libpq connects to hostaddr when it is given (host then only names the server for TLS).
    targets = str(
        params.get("hostaddr")
        or os.environ.get("PGHOSTADDR")
        or params.get("host")
        or os.environ.get("PGHOST")
        or ""
    )
    for target in (t.strip() for t in targets.split(",")):
        if not target or target.startswith(("/", "@")) or target.lower() == "localhost":
            continue  # a Unix socket (libpq's default when no host is given) or localhost
        try:
            if ipaddress.ip_address(target.strip("[]")).is_loopback:
                continue
        except ValueError:
            pass  # a host name other than localhost
        return target
    return None


def refuse_remote_database(conninfo: str, what: str, args: argparse.Namespace) -> None:
    """Sample data and the platform's reference tables belong on a database of this
    machine. Whatever STAGE says, another host needs the flag that names the risk."""
    host = remote_database_host(conninfo)
    if host is not None and not getattr(args, "allow_remote_database", False):
        raise ConfigError(
            f"{what}, and the database is on {host}, not this machine: refused "
            f"(pass {ALLOW_REMOTE_FLAG} if that is really what you want)"
        )


def add_allow_remote_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        ALLOW_REMOTE_FLAG,
        action="store_true",
        help="allow a database that is not on this machine (loopback, localhost, Unix socket)",
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    from proactive_delivery_tools.schema.migrate import apply_migrations

    stage = os.environ.get("STAGE", "local")
    if args.reference_schema and stage not in LOCAL_STAGES:
        raise ConfigError(f"--reference-schema creates the platform's tables: refused in stage {stage!r}")
    url = _database_url(args)
    if args.reference_schema:
        refuse_remote_database(url, "--reference-schema creates the platform's tables", args)
    applied = apply_migrations(url, reference_schema=args.reference_schema)
    print(f"applied {len(applied)} migration(s): {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="proactive-delivery", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--database-url",
        help="PostgreSQL URL (default: DATABASE_URL, then DATABASE_SECRET_ARN, then the PG* variables)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    migrate = sub.add_parser("migrate", help="apply this project's migrations to the database")
    migrate.add_argument(
        "--reference-schema",
        action="store_true",
        help="also create the reference copy of the platform's tables (tests and local demo only)",
    )
    add_allow_remote_flag(migrate)
    migrate.set_defaults(func=cmd_migrate)

    from proactive_delivery_tools.cli.local import add_local_commands

    add_local_commands(sub)

    from proactive_delivery_tools.cli import ops as ops_cli

    ops_cli.register(sub, _database_url)

    from proactive_delivery_tools.cli import prefs as prefs_cli

    prefs_cli.add_parser(sub, _database_url)

    from proactive_delivery_tools.cli import inbound as inbound_cli

    inbound_cli.add_parser(sub, _database_url)
    return parser


def error_line(exc: BaseException) -> str | None:
    """The one line to print for an error an operator can fix, or None for a bug (which
    keeps its traceback). Looks through the chain, so a region missing deep inside the
    Secrets Manager read is reported as what it is."""
    from botocore.exceptions import NoCredentialsError, NoRegionError

    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in chain:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for link in chain:
        if isinstance(link, NoRegionError):
            return "no AWS region: set AWS_REGION or AWS_DEFAULT_REGION"
        if isinstance(link, NoCredentialsError):
            return "no AWS credentials found: set AWS_PROFILE or log in (aws sso login)"
    if isinstance(exc, DeliveryError):
        return str(exc)
    return _aws_error_line(exc)


def _aws_error_line(exc: BaseException) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach the AWS endpoint {exc.kwargs.get('endpoint_url', '')}".rstrip()
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        message = f": {error['Message']}" if error.get("Message") else ""
        return f"AWS refused {exc.operation_name}: {error.get('Code', 'error')}{message}"
    if isinstance(exc, BotoCoreError):
        return f"AWS: {exc}"
    return None


@contextmanager
def _aws_region_from_aws_region() -> Iterator[None]:
    """boto3 reads AWS_DEFAULT_REGION; Lambda and the AWS CLI also honour AWS_REGION."""
    region = os.environ.get("AWS_REGION", "").strip()
    if not region or os.environ.get("AWS_DEFAULT_REGION"):
        yield
        return
    os.environ["AWS_DEFAULT_REGION"] = region
    try:
        yield
    finally:
        os.environ.pop("AWS_DEFAULT_REGION", None)


def _quiet_stdout() -> None:
    """After EPIPE: point stdout at /dev/null so the interpreter's final flush does not
    raise again (and print "Exception ignored ...")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file descriptor (captured in tests)
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _aws_region_from_aws_region():
            code = int(args.func(args))
            sys.stdout.flush()
            return code
    except BrokenPipeError:
        # `proactive-delivery status | head`: the reader has what it wanted.
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        line = error_line(exc)
        if line is None:
            raise
        print(f"proactive-delivery: error: {' '.join(line.split())}", file=sys.stderr)
        return 2
