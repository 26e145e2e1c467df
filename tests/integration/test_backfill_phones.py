"""`proactive-delivery inbound backfill-phones` on a real PostgreSQL: every contractor's stored
phone, whatever its format, is hashed into the directory with the functions' own key, so a
STOP from a contractor we never texted is honoured; the STOPs recorded unmatched before are
applied; running it again changes nothing; --dry-run writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from proactive_delivery_tools.cli import main
from tests.support.processor import process, sms


@pytest.fixture
def shell(pipeline: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The operator's shell: the functions' stage and signing secret (a test stage derives
    the phone hash key from it, as the functions do), no key of its own."""
    monkeypatch.setenv("STAGE", "test")
    monkeypatch.setenv("WEBHOOK_SIGNING_SECRET", pipeline.env["WEBHOOK_SIGNING_SECRET"])
    unset = ("PHONE_HASH_KEY", "PHONE_HASH_KEY_ARN", "WEBHOOK_SIGNING_SECRET_ARN", "DEFAULT_PHONE_REGION")
    for name in unset:
        monkeypatch.delenv(name, raising=False)
    return pipeline


def directory(pipeline: Any) -> list[tuple[int, str]]:
    rows = pipeline.conn.execute(
        "SELECT contractor_id, source FROM delivery.contractor_phone ORDER BY contractor_id"
    ).fetchall()
    return [(int(c), str(s)) for c, s in rows]


def opted_out_channels(pipeline: Any, contractor: int) -> list[str] | None:
    row = pipeline.conn.execute(
        "SELECT opted_out_channels FROM delivery.contractor_preferences WHERE contractor_id = %s",
        (contractor,),
    ).fetchone()
    return None if row is None else list(row[0])


def test_backfill_lets_a_stop_from_a_contractor_never_texted_opt_them_out(
    shell: Any, make_contractor: Any, database_url: str, capsys: Any
) -> None:
    # GIVEN contractors we never texted, phones stored as typed, one not a number, one without
    ana = make_contractor(phone="(312) 555-0142")
    ben = make_contractor(phone="312.555.0143")
    cara = make_contractor(phone="+1 312 555 0144")
    make_contractor(phone="call my office")
    make_contractor(phone=None)
    # AND Ana texted STOP before anyone knew her number (recorded unmatched), Ben texted STOP
    # and then START (his last word: opt in)
    now = datetime.now(UTC)
    process(
        shell.services,
        sms("+13125550142", "STOP", at=now - timedelta(minutes=3)),
        sms("+13125550143", "STOP", at=now - timedelta(minutes=2)),
        sms("+13125550143", "START", at=now - timedelta(minutes=1)),
    )
    assert opted_out_channels(shell, ana) is None
    # WHEN the operator runs the dry run: nothing is written, the counts are told
    assert main(["--database-url", database_url, "inbound", "backfill-phones", "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "4 contractors with a phone, 3 numbers hashed, 1 not a valid number" in dry
    assert directory(shell) == []
    # WHEN the backfill runs
    assert main(["--database-url", database_url, "inbound", "backfill-phones"]) == 0
    out = capsys.readouterr().out
    # THEN every valid number is in the directory, and Ana's STOP is applied; Ben's is not
    assert directory(shell) == [(ana, "backfill"), (ben, "backfill"), (cara, "backfill")]
    assert "directory rows added: 3" in out and "now applied: 1 contractor(s)" in out
    assert "key derived from the signing secret (stage test)" in out
    assert opted_out_channels(shell, ana) == ["sms"]
    assert opted_out_channels(shell, ben) is None
    # AND from now on a STOP from Cara (never texted) is matched and applied at once
    process(shell.services, sms("+13125550144", "stop"))
    assert opted_out_channels(shell, cara) == ["sms"]
    # WHEN it runs again: nothing more is added or applied
    assert main(["--database-url", database_url, "inbound", "backfill-phones"]) == 0
    again = capsys.readouterr().out
    assert "directory rows added: 0" in again and "now applied: 0 contractor(s)" in again


def test_backfill_without_a_key_in_a_deployed_stage_is_one_line(
    shell: Any, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("STAGE", "prod")
    assert main(["--database-url", database_url, "inbound", "backfill-phones"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "PhoneHashKeyArn" in err
    assert directory(shell) == []
