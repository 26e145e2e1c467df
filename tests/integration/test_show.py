"""`proactive-delivery show SOURCE:ID` against a real PostgreSQL: one message's delivery
state and attempt history, never the contractor's contact details."""

from __future__ import annotations

import json
from typing import Any

import pytest

from proactive_delivery_tools import cli


@pytest.fixture
def failed_message(conn: Any, make_contractor: Any, make_message: Any) -> int:
    """A message that failed after two attempts, whose errors quote the contractor's number
    and address (as providers' error texts do)."""
    contractor = make_contractor(phone="(312) 555-0176", email="ana.lopez@example.com")
    message = make_message(contractor_id=contractor)
    delivery_id = conn.execute(
        "INSERT INTO delivery.message_state (source, source_id, state, reason, attempts, channel, "
        "last_error, contractor_id, queued_at, next_attempt_at) VALUES ('proactive', %s, 'failed', "
        "'attempts_exhausted', 2, 'sms', 'server_error: 503 for +15550109876 (ana.lopez@example.com)', %s, "
        "now() - interval '10 minutes', now()) RETURNING id",
        (message, contractor),
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO delivery.attempt_log (delivery_id, attempt, channel, started_at, finished_at, "
        "http_status, outcome, error, latency_ms) VALUES "
        "(%(d)s, 1, 'sms', now() - interval '9 minutes', now() - interval '9 minutes', 503, 'retry', "
        "'server_error: 503', 41),"
        "(%(d)s, 2, 'sms', now() - interval '1 minute', now() - interval '1 minute', 503, 'failed', "
        "'server_error: 503 for +15550109876 (ana.lopez@example.com)', 38)",
        {"d": delivery_id},
    )
    return int(message)


def test_show_prints_state_and_attempt_history_without_contact_details(
    database_url: str, failed_message: int, capsys: Any
) -> None:
    # WHEN an operator looks at one failed message
    assert cli.main(["--database-url", database_url, "show", f"proactive:{failed_message}"]) == 0
    out = capsys.readouterr().out
    # THEN its state, reason, attempts, channel, times, last error and every attempt are there
    assert f"proactive:{failed_message} (message id proactive-{failed_message})" in out
    for expected in (
        "failed (attempts_exhausted)",
        "attempts         2",
        "channel          sms",
        "queued at",
    ):
        assert expected in out
    assert "last error       server_error: 503" in out
    attempts = [line for line in out.splitlines() if line.lstrip().startswith("#")]
    assert len(attempts) == 2
    assert "retry" in attempts[0] and "http 503" in attempts[0] and "41 ms" in attempts[0]
    assert "failed" in attempts[1]
    # AND never the phone number or the email address
    assert "5550109876" not in out and "ana.lopez" not in out


def test_show_json_carries_the_same(database_url: str, failed_message: int, capsys: Any) -> None:
    assert cli.main(["--database-url", database_url, "show", f"proactive-{failed_message}", "--json"]) == 0
    out = capsys.readouterr().out
    report = json.loads(out)
    assert report["state"]["state"] == "failed"
    assert report["state"]["reason"] == "attempts_exhausted"
    assert report["state"]["attempts"] == 2
    assert report["state"]["queued_at"] and report["state"]["next_attempt_at"]
    assert [(a["attempt"], a["outcome"], a["http_status"], a["latency_ms"]) for a in report["attempts"]] == [
        (1, "retry", 503, 41),
        (2, "failed", 503, 38),
    ]
    assert all(a["started_at"] and a["finished_at"] for a in report["attempts"])
    assert "5550109876" not in out and "ana.lopez" not in out


def test_show_a_due_message_evaluate_has_not_seen_yet(
    database_url: str, make_message: Any, capsys: Any
) -> None:
    message = make_message()
    assert cli.main(["--database-url", database_url, "show", f"proactive:{message}"]) == 0
    assert "not seen by evaluate yet" in capsys.readouterr().out


def test_show_a_follow_up(database_url: str, make_followup: Any, capsys: Any) -> None:
    followup = make_followup(template="Follow up on the Smith estimate", status="cancelled")
    assert cli.main(["--database-url", database_url, "show", f"followup:{followup}", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["platform"]["status"] == "cancelled"
    assert report["state"] is None


@pytest.mark.parametrize(
    ("ref", "cause"),
    [
        ("proactive:999999", "no message proactive:999999"),
        ("followup:999999", "no message followup:999999"),
        ("proactive", "is not a message: use SOURCE:ID"),
        ("email:4", "is not a message: use SOURCE:ID"),
        ("proactive:abc", "is not a message"),
        ("proactive:0", "is not a message"),
    ],
)
def test_show_an_unknown_or_malformed_message_is_one_line(
    database_url: str, capsys: Any, ref: str, cause: str
) -> None:
    # WHEN show is given a message that does not exist, or not a message at all
    code = cli.main(["--database-url", database_url, "show", ref])
    # THEN exit 2 with one line naming why
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == "" and "Traceback" not in captured.err
    [line] = captured.err.strip().splitlines()
    assert cause in line
