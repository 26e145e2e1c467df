"""A STOP from a contractor we never texted, on a real PostgreSQL with the platform's reference
tables: the real processor records it `unmatched` (nobody has the number yet), then the real
evaluate function, before it queues the contractor's first message, registers their stored
phone in the contractor <-> number directory and applies that STOP, so the message is never
sent (skipped `opted_out`) without an operator running `inbound backfill-phones`.

Covers: the STOP honoured whatever format the platform stored the phone in (the keyword
source in our preferences, contractors.sms_opt_in false, or left alone with
PLATFORM_WRITE_SMS_OPT_IN off); a START after it (matched from then on) sends again; a STOP
then START both before we knew the number changes nothing; an operator's opt-out stays; a
number deliver texted keeps its row; a DND opt-out and a follow-up the same way; the
statements per evaluate run do not grow with the page; the backfill applies what evaluate
has not met; the unmatched opt-outs are read on their partial index."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import ClientCursor

from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.adapters.postgres.store import INBOUND_SQL
from proactive_delivery_tools.cli import main
from tests.support.db import operator_opts_out, plan_nodes, preferences, sms_opt_in, state_row
from tests.support.processor import dnd, process, sms

# The number the contractor texts from (Twilio's E.164), and as the platform stored it.
FROM = "+13125550177"
STORED_AS = "(312) 555-0177"


def outcomes(conn: psycopg.Connection[Any]) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT outcome FROM delivery.inbound_event ORDER BY id")]


def directory(conn: psycopg.Connection[Any]) -> list[tuple[int, str]]:
    rows = conn.execute(
        "SELECT contractor_id, source FROM delivery.contractor_phone ORDER BY contractor_id, source"
    ).fetchall()
    return [(int(c), str(s)) for c, s in rows]


def sent_ids(pipeline: Any) -> list[str]:
    return [r.webhook_id for r in pipeline.receiver.requests]


def evaluate_and_deliver(pipeline: Any) -> None:
    pipeline.evaluate({"sources": ["proactive", "followup"]})
    pipeline.drain(timeout=30)


def test_a_stop_from_a_number_nobody_had_stops_the_first_message(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN a contractor imported after any backfill, never texted, phone stored as typed
    contractor = make_contractor(phone=STORED_AS, sms_opt_in=True)
    # AND they texted STOP (to the platform's own GHL number, say): nobody had the number
    process(pipeline.services, sms(FROM, "STOP"))
    assert outcomes(pipeline.conn) == ["unmatched"]
    assert preferences(pipeline.conn, contractor) is None
    # WHEN a message comes due for them, and evaluate and deliver run
    message = make_message(contractor)
    evaluate_and_deliver(pipeline)
    # THEN it is never sent: skipped opted_out at queue time
    row = state_row(pipeline.conn, message)
    assert (row["state"], row["reason"], row["attempts"]) == ("skipped", "opted_out", 0)
    assert sent_ids(pipeline) == []
    # AND our preferences record the keyword opt-out of SMS, at the STOP's time
    prefs = preferences(pipeline.conn, contractor)
    assert prefs is not None and prefs["opted_out_channels"] == ["sms"]
    assert prefs["opt_out_source"] == "keyword"
    entry = prefs["opt_out_sources"]["sms"]
    assert (entry["opted_out"], entry["source"], entry["platform"]) == (True, "keyword", True)
    # AND the platform's consent flag is false (PLATFORM_WRITE_SMS_OPT_IN, default on)
    assert sms_opt_in(pipeline.conn, contractor) is False
    # AND the number is in the directory (as its hash: no phone in clear)
    assert directory(pipeline.conn) == [(contractor, "evaluate")]
    stored = pipeline.conn.execute("SELECT phone_hash FROM delivery.contractor_phone").fetchone()
    assert stored is not None and len(bytes(stored[0])) == 32
    assert b"5550177" not in bytes(stored[0])


def test_a_start_after_such_a_stop_sends_again(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    contractor = make_contractor(phone="312.555.0177", sms_opt_in=True)
    process(pipeline.services, sms(FROM, "stop"))
    first = make_message(contractor)
    evaluate_and_deliver(pipeline)
    assert (state_row(pipeline.conn, first)["state"], sent_ids(pipeline)) == ("skipped", [])
    # WHEN the contractor texts START: the number is known now, so it is matched at once
    process(pipeline.services, sms(FROM, "START"))
    assert outcomes(pipeline.conn) == ["unmatched", "opted_in"]
    # THEN their next message is sent, and the platform's flag is back on
    again = make_message(contractor)
    evaluate_and_deliver(pipeline)
    assert state_row(pipeline.conn, again)["state"] == "sent"
    assert sent_ids(pipeline) == [f"proactive-{again}"]
    assert sms_opt_in(pipeline.conn, contractor) is True
    # AND the number deliver texted is now the contractor's by a send
    assert directory(pipeline.conn) == [(contractor, "send")]


def test_a_stop_then_a_start_before_we_knew_the_number_changes_nothing(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    contractor = make_contractor(phone=STORED_AS)
    now = datetime.now(UTC)
    process(
        pipeline.services,
        sms(FROM, "STOP", at=now - timedelta(minutes=2)),
        sms(FROM, "START", at=now - timedelta(minutes=1)),
    )
    assert outcomes(pipeline.conn) == ["unmatched", "unmatched"]
    message = make_message(contractor)
    evaluate_and_deliver(pipeline)
    # THEN their last word (START) stands: the message is sent
    assert sent_ids(pipeline) == [f"proactive-{message}"]
    assert preferences(pipeline.conn, contractor) is None


def test_an_operators_opt_out_is_not_undone(
    pipeline: Any, make_contractor: Any, make_message: Any, database_url: str, capsys: Any
) -> None:
    contractor = make_contractor(phone=STORED_AS)
    # GIVEN the operator opted the contractor out (the real command)
    operator_opts_out(database_url, contractor)
    capsys.readouterr()
    # AND a STOP from their number nobody had
    process(pipeline.services, sms(FROM, "STOP"))
    message = make_message(contractor)
    evaluate_and_deliver(pipeline)
    assert (state_row(pipeline.conn, message)["state"], state_row(pipeline.conn, message)["reason"]) == (
        "skipped",
        "opted_out",
    )
    # WHEN the contractor texts START (matched now that evaluate registered the number)
    process(pipeline.services, sms(FROM, "START"))
    # THEN the operator's opt-out stays, and nothing is sent
    assert outcomes(pipeline.conn)[-1] == "kept_operator_opt_out"
    prefs = preferences(pipeline.conn, contractor)
    assert prefs is not None and prefs["opted_out"] is True
    again = make_message(contractor)
    evaluate_and_deliver(pipeline)
    assert state_row(pipeline.conn, again)["reason"] == "opted_out"
    assert sent_ids(pipeline) == []


def test_a_dnd_opt_out_and_a_followup_the_same_way_without_writing_the_platform(
    pipeline: Any, make_contractor: Any, make_followup: Any
) -> None:
    pipeline.setenv(PLATFORM_WRITE_SMS_OPT_IN="false")
    contractor = make_contractor(phone="+1 312 555 0177", sms_opt_in=True)
    # GIVEN GHL's do-not-disturb turned on for a number nobody had
    process(pipeline.services, dnd(FROM, "active"))
    assert outcomes(pipeline.conn) == ["unmatched"]
    # WHEN a follow-up comes due
    followup = make_followup(contractor)
    evaluate_and_deliver(pipeline)
    # THEN it is skipped opted_out, the source is the DND event, the platform's flag untouched
    row = state_row(pipeline.conn, followup, source="followup")
    assert (row["state"], row["reason"]) == ("skipped", "opted_out")
    prefs = preferences(pipeline.conn, contractor)
    assert prefs is not None
    assert (prefs["opt_out_sources"]["sms"]["source"], prefs["opt_out_sources"]["sms"]["platform"]) == (
        "dnd",
        False,
    )
    assert sms_opt_in(pipeline.conn, contractor) is True
    assert sent_ids(pipeline) == []


def test_a_number_deliver_texted_keeps_its_row_and_a_new_one_is_registered_beside_it(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN a contractor we texted at one number
    contractor = make_contractor(phone="+13125550178")
    first = make_message(contractor)
    evaluate_and_deliver(pipeline)
    assert state_row(pipeline.conn, first)["state"] == "sent"
    assert directory(pipeline.conn) == [(contractor, "send")]
    # WHEN the platform's phone changes to a number that texted STOP before we knew it
    process(pipeline.services, sms(FROM, "STOP"))
    pipeline.conn.execute("UPDATE contractors SET phone = %s WHERE id = %s", (STORED_AS, contractor))
    second = make_message(contractor)
    evaluate_and_deliver(pipeline)
    # THEN the texted number keeps its row, the new one is added, and the STOP holds
    assert directory(pipeline.conn) == [(contractor, "evaluate"), (contractor, "send")]
    assert state_row(pipeline.conn, second)["reason"] == "opted_out"
    assert sent_ids(pipeline) == [f"proactive-{first}"]


def test_statements_per_evaluate_run_do_not_grow_with_the_page(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    database = pipeline.services.database
    counts = []
    for first, contractors in ((400, 3), (500, 30)):
        # GIVEN contractors never texted, each of whom texted STOP first, one message each
        phones = [f"+1312555{first + i:04d}" for i in range(contractors)]
        people = [make_contractor(phone=p) for p in phones]
        process(pipeline.services, *(sms(p, "STOP") for p in phones))
        messages = [make_message(c) for c in people]
        before = database.statements
        # WHEN evaluate runs over them (one page)
        pipeline.evaluate({"sources": ["proactive"]})
        counts.append(database.statements - before)
        # THEN every message is skipped opted_out
        assert {state_row(pipeline.conn, m)["reason"] for m in messages} == {"opted_out"}
    # AND ten times the contractors took the same statements
    assert counts[0] == counts[1]


def test_the_backfill_still_applies_what_evaluate_has_not_met(
    pipeline: Any, make_contractor: Any, database_url: str, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STAGE", "test")
    monkeypatch.setenv("WEBHOOK_SIGNING_SECRET", pipeline.env["WEBHOOK_SIGNING_SECRET"])
    for name in (
        "PHONE_HASH_KEY",
        "PHONE_HASH_KEY_ARN",
        "WEBHOOK_SIGNING_SECRET_ARN",
        "DEFAULT_PHONE_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    # GIVEN a contractor with nothing due, who texted STOP from a number nobody had
    contractor = make_contractor(phone=STORED_AS, sms_opt_in=True)
    process(pipeline.services, sms(FROM, "STOP"))
    # WHEN the operator runs the backfill
    assert main(["--database-url", database_url, "inbound", "backfill-phones"]) == 0
    out = capsys.readouterr().out
    # THEN the number is added and the STOP applied, the platform's flag with it
    assert "directory rows added: 1" in out and "now applied: 1 contractor(s)" in out
    assert directory(pipeline.conn) == [(contractor, "backfill")]
    prefs = preferences(pipeline.conn, contractor)
    assert prefs is not None and prefs["opted_out_channels"] == ["sms"]
    assert sms_opt_in(pipeline.conn, contractor) is False


def test_the_unmatched_opt_outs_are_read_on_their_partial_index(database_url: str) -> None:
    # GIVEN 100,000 inbound events, replies and receipts linked to messages, among them 50
    # STOPs from numbers nobody had, and fresh statistics
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO delivery.inbound_event (identity, kind, received_at, occurred_at, phone_hash,"
            " action, outcome)"
            " SELECT 'test:' || g, 'sms.received', now(), now() - make_interval(secs => g),"
            " decode(md5(g::text), 'hex'),"
            " CASE WHEN g % 2000 = 0 THEN 'opt_out' WHEN g % 2 = 0 THEN 'receipt' ELSE 'reply' END,"
            " CASE WHEN g % 2000 = 0 THEN 'unmatched' ELSE 'linked' END"
            " FROM generate_series(1, 100000) g"
        )
        conn.execute("ANALYZE delivery.inbound_event")
    database = Database(lambda: database_url)
    try:
        statement = database.sql("register_contractor_phones", INBOUND_SQL)
    finally:
        database.close()
    # WHEN the planner plans evaluate's registration of a page of 1,000 new numbers
    params = {
        "contractor_ids": list(range(1, 1001)),
        "phone_hashes": [f"{n:064x}" for n in range(1, 1001)],
        "every_number": False,
        "source": "evaluate",
        "write_sms_opt_in": True,
    }
    with psycopg.connect(database_url, cursor_factory=ClientCursor) as conn:
        [(explained,)] = conn.execute("EXPLAIN (FORMAT JSON) " + statement, params).fetchall()
    nodes = list(plan_nodes(explained[0]["Plan"]))
    # THEN inbound_event is read on the partial index of unmatched opt-outs and opt-ins
    # (migration 0010), never whole
    on_events = [n for n in nodes if n.get("Relation Name") == "inbound_event"]
    assert on_events and {n.get("Index Name") for n in on_events} == {"inbound_event_unmatched_consent_idx"}
