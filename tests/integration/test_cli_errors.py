"""Every bad input to the operator's command line is one line on stderr naming the cause,
exit code 2, no traceback; piped into a reader that stops early it exits quietly.

Most cases call cli.main() in-process (capsys); the ones about the process itself (a
closed pipe, the installed entry point) run it as a subprocess. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws

from proactive_delivery import __version__
from proactive_delivery.adapters.postgres.database import describe_connect_error
from proactive_delivery.core.errors import ConfigError
from proactive_delivery_tools import cli
from proactive_delivery_tools.local.postgres import url_from_params
from proactive_delivery_tools.local.sqs import LocalSqsServer, create_queues, free_port

ROOT = Path(__file__).resolve().parents[2]
AWS_TEST_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    # Never ask an instance metadata endpoint for anything.
    "AWS_EC2_METADATA_DISABLED": "true",
}


def one_error_line(capsys: Any) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("proactive-delivery: error: ")
    return lines[0]


def server_url(database_url: str, **changes: str) -> str:
    """The test server's URL with some connection parameters changed."""
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    params.update(changes)
    return url_from_params(params)


@pytest.fixture
def no_aws_region(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SQS",
    ):
        monkeypatch.delenv(name, raising=False)
    # No ~/.aws/config either: this machine's operator settings are not the test's.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def no_database_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "DATABASE_SECRET_ARN", "PGHOST", "PGDATABASE", "PGHOSTADDR"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- #
# The database                                                                #
# --------------------------------------------------------------------------- #


def test_a_database_url_that_is_not_a_url_is_one_line(
    monkeypatch: pytest.MonkeyPatch, no_database_settings: None, capsys: Any
) -> None:
    # GIVEN DATABASE_URL=foo WHEN migrate runs THEN one line names the setting, exit 2
    monkeypatch.setenv("DATABASE_URL", "foo")
    assert cli.main(["migrate"]) == 2
    assert "DATABASE_URL is not a PostgreSQL URL" in one_error_line(capsys)


def test_a_database_url_that_is_not_a_url_is_one_line_from_the_installed_command(tmp_path: Path) -> None:
    # GIVEN DATABASE_URL=foo WHEN the installed entry point runs migrate as its own process
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DATABASE_"))}
    env["DATABASE_URL"] = "foo"
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("proactive-delivery")), "migrate"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    # THEN exit 2 and exactly one line on stderr, no traceback
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "proactive-delivery: error: DATABASE_URL is not a PostgreSQL URL (postgresql://user@host:5432/dbname)"
    ]


def test_a_libpq_key_value_string_is_accepted_and_its_failure_named(
    no_database_settings: None, capsys: Any
) -> None:
    # GIVEN the key=value form psycopg itself prints (conn.info.dsn), pointing at nothing
    port = free_port()
    # WHEN a command runs THEN the connection is tried, and its failure named
    assert cli.main(["--database-url", f"host=127.0.0.1 port={port} dbname=x user=postgres", "status"]) == 2
    assert f"at 127.0.0.1:{port}: connection refused" in one_error_line(capsys)


def test_no_database_at_all_is_one_line(no_database_settings: None, capsys: Any) -> None:
    assert cli.main(["status"]) == 2
    assert "no database: set DATABASE_URL or DATABASE_SECRET_ARN" in one_error_line(capsys)


@pytest.mark.parametrize(
    ("command", "prefix"),
    [
        (["migrate"], "cannot apply migrations: "),
        (["status"], ""),
        (["prefs", "show", "1"], ""),
        (["show", "proactive:1"], ""),
    ],
)
def test_refused_connection_auth_failure_and_missing_database_are_told_apart(
    database_url: str, no_database_settings: None, capsys: Any, command: list[str], prefix: str
) -> None:
    port = str(free_port())  # nothing listens there
    cases = {
        server_url(database_url, host="127.0.0.1", port=port): f"at 127.0.0.1:{port}: connection refused",
        server_url(database_url, user="pd_no_such_role"): 'authentication failed (role "pd_no_such_role"',
        server_url(
            database_url, dbname="pd_no_such_database"
        ): 'database "pd_no_such_database" does not exist',
    }
    for url, cause in cases.items():
        # GIVEN a database URL that fails for one reason WHEN a command runs
        code = cli.main(["--database-url", url, *command])
        # THEN exit 2, one line that names that reason
        line = one_error_line(capsys)
        assert code == 2
        assert f"error: {prefix}cannot connect to PostgreSQL" in line, line
        assert cause in line, line


@pytest.mark.parametrize(
    ("message", "cause"),
    [
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  password '
            'authentication failed for user "app"',
            'at 10.0.0.5:5432: authentication failed (password authentication failed for user "app")',
        ),
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  no pg_hba.conf '
            'entry for host "10.0.0.9", user "app", database "x", no encryption',
            "at 10.0.0.5:5432: authentication failed (no pg_hba.conf entry",
        ),
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: timeout expired',
            "at 10.0.0.5:5432: the connection timed out",
        ),
        (
            'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  sorry, '
            "too many clients already; remaining connection slots are reserved",
            "no free connection slots",
        ),
    ],
)
def test_connect_errors_name_their_cause(message: str, cause: str) -> None:
    # GIVEN libpq's words for a failure this machine cannot produce (its server trusts every
    # local user) WHEN translated THEN the cause is named
    assert cause in describe_connect_error(psycopg.OperationalError(message))


def test_a_malformed_url_is_named_without_repeating_its_password() -> None:
    # GIVEN a URL libpq cannot parse, with the bad token inside the password
    with pytest.raises(psycopg.Error) as caught:
        psycopg.connect("postgresql://app:se%zzcret@127.0.0.1:1/db", connect_timeout=1)
    # WHEN translated THEN it says what is wrong and never the token
    text = describe_connect_error(caught.value)
    assert text == "the database URL is invalid: invalid percent-encoded token"
    assert "se%zz" not in text


def test_database_secret_arn_without_a_region_is_one_line(
    monkeypatch: pytest.MonkeyPatch, no_database_settings: None, no_aws_region: None, capsys: Any
) -> None:
    # GIVEN the functions' database setting, a secret ARN, and no AWS region
    monkeypatch.setenv(
        "DATABASE_SECRET_ARN", "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf"
    )
    # WHEN a database-only command runs (no webhook or queue settings are needed for it)
    assert cli.main(["migrate"]) == 2
    # THEN the one line says what to set
    assert one_error_line(capsys).endswith("no AWS region: set AWS_REGION or AWS_DEFAULT_REGION")


def test_database_secret_arn_is_read_like_the_functions_read_it(
    monkeypatch: pytest.MonkeyPatch, database_url: str, no_database_settings: None, capsys: Any
) -> None:
    # GIVEN only DATABASE_SECRET_ARN (plus AWS_REGION, as Lambda and the AWS CLI spell it),
    # naming an RDS-style JSON secret
    for name in ("AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SECRETS_MANAGER"):
        monkeypatch.delenv(name, raising=False)
    for key, value in AWS_TEST_ENV.items():
        if key != "AWS_DEFAULT_REGION":
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    with mock_aws():
        arn = boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name="proactive-delivery/db",
            SecretString=json.dumps(
                {
                    "host": params.get("host", "127.0.0.1"),
                    "port": int(params.get("port", 5432)),
                    "username": params.get("user", "postgres"),
                    "password": params.get("password", "unused"),
                    "dbname": params["dbname"],
                }
            ),
        )["ARN"]
        monkeypatch.setenv("DATABASE_SECRET_ARN", arn)
        # WHEN migrate runs with no other setting of the functions
        assert cli.main(["migrate"]) == 0
    # THEN it reached the database the secret names
    assert "schema is up to date" in capsys.readouterr().out


# --------------------------------------------------------------------------- #
# Sample data and the reference schema only on this machine                   #
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("conninfo", "pghost", "remote"),
    [
        ("postgresql://postgres@127.0.0.1:5432/x", None, None),
        ("postgresql://postgres@127.10.20.30:5432/x", None, None),
        ("postgresql://postgres@[::1]:5432/x", None, None),
        ("postgresql://postgres@localhost/x", None, None),
        ("postgresql://postgres@/x?host=/var/run/postgresql", None, None),
        ("postgresql:///x", None, None),  # libpq's default: the local Unix socket
        ("postgresql://", "/tmp", None),
        ("postgresql://", "10.1.2.3", "10.1.2.3"),
        ("postgresql://postgres@db.example.com:5432/x", None, "db.example.com"),
        ("postgresql://postgres@127.0.0.1,10.9.9.9/x", None, "10.9.9.9"),
        ("postgresql://postgres@localhost/x?hostaddr=10.0.0.7", None, "10.0.0.7"),
    ],
)
def test_which_databases_count_as_this_machine(
    monkeypatch: pytest.MonkeyPatch, conninfo: str, pghost: str | None, remote: str | None
) -> None:
    monkeypatch.delenv("PGHOSTADDR", raising=False)
    if pghost is None:
        monkeypatch.delenv("PGHOST", raising=False)
    else:
        monkeypatch.setenv("PGHOST", pghost)
    assert cli.remote_database_host(conninfo) == remote


@pytest.mark.parametrize("stage", ["local", "test"])
@pytest.mark.parametrize("command", [["seed"], ["migrate", "--reference-schema"]])
def test_seed_and_reference_schema_refuse_a_remote_database_whatever_the_stage(
    monkeypatch: pytest.MonkeyPatch, capsys: Any, stage: str, command: list[str]
) -> None:
    # GIVEN a local stage and a database on another host (refused before any connection,
    # so no name is ever resolved)
    monkeypatch.setenv("STAGE", stage)
    url = "postgresql://postgres@db.example.com:5432/platform"
    # WHEN seed or migrate --reference-schema runs
    code = cli.main(["--database-url", url, *command])
    # THEN it refuses in one line naming the host and the flag that accepts the risk
    line = one_error_line(capsys)
    assert code == 2
    assert "db.example.com, not this machine: refused" in line
    assert "--allow-remote-database" in line


def test_the_flag_that_names_the_risk_lets_a_remote_database_through() -> None:
    url = "postgresql://postgres@db.example.com:5432/platform"
    cli.refuse_remote_database(url, "seed", argparse.Namespace(allow_remote_database=True))
    with pytest.raises(ConfigError, match="--allow-remote-database"):
        cli.refuse_remote_database(url, "seed", argparse.Namespace(allow_remote_database=False))


def test_seed_on_this_machine_still_works(database_url: str, capsys: Any) -> None:
    assert cli.main(["--database-url", database_url, "seed", "--count", "3", "--contractors", "2"]) == 0
    assert "seeded 3 messages" in capsys.readouterr().out


# --------------------------------------------------------------------------- #
# AWS                                                                         #
# --------------------------------------------------------------------------- #


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    for key, value in AWS_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        client = boto3.client("sqs", region_name="us-east-1")
        yield client, create_queues(client, visibility_timeout=30)


@pytest.mark.parametrize("command", [["replay-dlq"], ["replay-dlq", "--dry-run"], ["status"]])
def test_the_dlq_url_given_as_the_delivery_queue_is_one_line(
    sqs: Any, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any, command: list[str]
) -> None:
    client, queues = sqs
    client.send_message(QueueUrl=queues.dlq_url, MessageBody='{"source": "proactive", "id": 1}')
    # GIVEN DELIVERY_QUEUE_URL set to the dead-letter queue's URL
    monkeypatch.setenv("DELIVERY_QUEUE_URL", queues.dlq_url)
    # WHEN an operator command that reads the queues runs
    code = cli.main(["--database-url", database_url, *command])
    # THEN one line says it is not a delivery queue, and nothing moved
    assert code == 2
    assert "is not a delivery queue: it has no redrive policy" in one_error_line(capsys)
    attrs = client.get_queue_attributes(
        QueueUrl=queues.dlq_url, AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "1"


def test_the_dlq_url_as_delivery_queue_is_refused_with_an_explicit_dlq_too(
    sqs: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    _client, queues = sqs
    monkeypatch.setenv("DELIVERY_QUEUE_URL", queues.dlq_url)
    assert cli.main(["replay-dlq", "--dlq-url", queues.dlq_url]) == 2
    assert "not a delivery queue" in one_error_line(capsys)


@pytest.mark.parametrize(
    "command",
    [["replay-dlq", "--dry-run"], ["pause", "--stack-name", "proactive-delivery"], ["status"]],
)
def test_no_aws_region_is_one_line(
    monkeypatch: pytest.MonkeyPatch, database_url: str, no_aws_region: None, capsys: Any, command: list[str]
) -> None:
    # GIVEN no region anywhere (environment, profile) and a command that needs AWS
    monkeypatch.setenv("DELIVERY_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/delivery")
    # WHEN it runs THEN one line says what to set; nothing reached the network
    assert cli.main(["--database-url", database_url, *command]) == 2
    assert one_error_line(capsys) == (
        "proactive-delivery: error: no AWS region: set AWS_REGION or AWS_DEFAULT_REGION"
    )


@pytest.mark.parametrize("stack", [False, True])
def test_resend_dry_run_only_counts_rows_and_needs_no_aws(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    no_aws_region: None,
    capsys: Any,
    conn: Any,
    make_messages: Any,
    stack: bool,
) -> None:
    # GIVEN two failed messages, no AWS region anywhere, and a queue URL or a stack name set
    a, b = make_messages(2)
    conn.execute(
        "INSERT INTO delivery.message_state (source, source_id, state, reason) VALUES"
        " ('proactive', %s, 'failed', 'attempts_exhausted'), ('proactive', %s, 'failed', 'rejected')",
        (a, b),
    )
    if stack:
        monkeypatch.delenv("DELIVERY_QUEUE_URL", raising=False)
        monkeypatch.setenv("STACK_NAME", "proactive-delivery")
    else:
        monkeypatch.setenv("DELIVERY_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/delivery")
    since = "2000-01-01T00:00Z"
    # WHEN resend --dry-run runs THEN it counts them without asking AWS for anything
    assert cli.main(["--database-url", database_url, "resend", "--failed-since", since, "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.strip() == "would resend 2 failed message(s): attempts_exhausted=1, rejected=1"
    # AND changes nothing
    assert conn.execute("SELECT count(*) FROM delivery.message_state WHERE state = 'failed'").fetchone() == (
        2,
    )
    # AND the real resend still needs the region (it puts the messages on the queue)
    monkeypatch.setenv("DELIVERY_QUEUE_URL", "https://sqs.us-east-1.amazonaws.com/123456789012/delivery")
    assert cli.main(["--database-url", database_url, "resend", "--failed-since", since]) == 2
    assert one_error_line(capsys) == (
        "proactive-delivery: error: no AWS region: set AWS_REGION or AWS_DEFAULT_REGION"
    )


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_resend_with_a_reason_no_failure_is_recorded_with_is_one_line_listing_the_known_ones(
    database_url: str, capsys: Any, conn: Any, make_messages: Any, dry_run: list[str]
) -> None:
    from proactive_delivery.core.states import FAILED_REASONS

    [message] = make_messages(1)
    conn.execute(
        "INSERT INTO delivery.message_state (source, source_id, state, reason)"
        " VALUES ('proactive', %s, 'failed', 'attempts_exhausted')",
        (message,),
    )
    # WHEN --reason is misspelt
    code = cli.main(
        ["--database-url", database_url, "resend", "--failed-since", "2000-01-01", "--reason", "typo_reason",
         *dry_run]
    )  # fmt: skip
    # THEN one line, exit 2, naming it and every reason the pipeline records failures with
    line = one_error_line(capsys)
    assert code == 2
    assert "--reason 'typo_reason' is not a reason failed messages are recorded with" in line
    assert f"(known: {', '.join(sorted(FAILED_REASONS))})" in line
    assert {"attempts_exhausted", "rejected", "invalid_number", "source_row_missing"} <= FAILED_REASONS
    # AND nothing changed
    assert conn.execute("SELECT state FROM delivery.message_state").fetchone() == ("failed",)


# --------------------------------------------------------------------------- #
# The process: closed pipes, --version                                        #
# --------------------------------------------------------------------------- #


def run_into_closed_pipe(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command with stdout a pipe whose reader is already gone, as `| head -1` is
    once head has its line: the first write fails with EPIPE, deterministically."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "proactive_delivery_tools.cli", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)


def test_status_piped_into_head_exits_quietly(database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DELIVERY_QUEUE_URL", "STACK_NAME")}
    env["DATABASE_URL"] = database_url
    # WHEN `status | head -1` runs and head has gone THEN nothing on stderr, SIGPIPE's status
    proc = run_into_closed_pipe(["status"], env)
    assert proc.stderr == ""
    assert proc.returncode == cli.EXIT_BROKEN_PIPE


def test_replay_dlq_piped_into_head_exits_quietly() -> None:
    server = LocalSqsServer().start()
    try:
        client = server.client()
        queues = create_queues(client, visibility_timeout=30)
        for i in range(1, 31):
            client.send_message(
                QueueUrl=queues.dlq_url, MessageBody=json.dumps({"source": "proactive", "id": i})
            )
        env = {**os.environ, **AWS_TEST_ENV, "AWS_ENDPOINT_URL_SQS": server.endpoint}
        env["DELIVERY_QUEUE_URL"] = queues.queue_url
        # WHEN `replay-dlq --dry-run | head -1` runs against moto's server and head has gone
        proc = run_into_closed_pipe(["replay-dlq", "--dry-run"], env)
    finally:
        server.stop()
    # THEN it stops quietly
    assert "Traceback" not in proc.stderr and "Broken pipe" not in proc.stderr, proc.stderr
    assert proc.stderr.strip() == ""
    assert proc.returncode == cli.EXIT_BROKEN_PIPE


def test_version_prints_the_package_version(capsys: Any) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"proactive-delivery {__version__}"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{__version__}"' in pyproject
