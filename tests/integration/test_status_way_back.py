"""`proactive-delivery status`: the way back over the last 24 hours (receipts, replies,
opt-outs the inbound processor applied), from events applied by the real inbound processor
after the real evaluate and deliver functions sent the messages; and the plan of its query on
tables of a deployment's shape."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from psycopg import ClientCursor

from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery_tools import cli
from proactive_delivery_tools.ops.store import SQL_PACKAGE
from tests.support.db import plan_nodes, state_row
from tests.support.processor import dnd, ghl_status, process, sms

PHONES = {"ana": "+13125550142", "ben": "+13125550143", "cy": "+13125550144", "dee": "+13125550145"}


@pytest.fixture
def came_back(pipeline: Any, make_contractor: Any, make_message: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Four messages sent, then what came back: receipts (delivered, read, undelivered
    30003, failed 30006), replies (one linked, one from a number nobody has), a keyword STOP
    and a START, a DND opt-out; and one receipt applied two days ago, outside the window."""
    monkeypatch.delenv("DELIVERY_QUEUE_URL", raising=False)
    monkeypatch.delenv("STACK_NAME", raising=False)
    messages = {}
    for name, phone in PHONES.items():
        messages[name] = make_message(make_contractor(phone=phone))
    pipeline.evaluate({"sources": ["proactive"]})
    pipeline.drain(timeout=30)
    assert {state_row(pipeline.conn, m)["state"] for m in messages.values()} == {"sent"}
    services = pipeline.services
    process(
        services,
        ghl_status(f"proactive-{messages['ana']}", "delivered"),
        ghl_status(f"proactive-{messages['ben']}", "read"),
        ghl_status(f"proactive-{messages['cy']}", "undelivered", "30003"),
        ghl_status(f"proactive-{messages['dee']}", "failed", "30006"),
    )
    process(services, sms(PHONES["ana"], "Thursday works"), sms("+13125550199", "who is this?"))
    process(services, sms(PHONES["ben"], "STOP"))
    process(services, sms(PHONES["ben"], "START"))
    process(services, dnd(PHONES["cy"], "active"))
    # A delivered receipt for a message of two days ago: not in the last 24 h
    old = make_message(make_contractor())
    pipeline.evaluate({"sources": ["proactive"]})
    pipeline.drain(timeout=30)
    process(services, ghl_status(f"proactive-{old}", "delivered"))
    pipeline.conn.execute(
        "UPDATE delivery.inbound_event SET applied_at = applied_at - interval '2 days'"
        " WHERE delivery_id = %s",
        (state_row(pipeline.conn, old)["id"],),
    )
    return str(pipeline.env["DATABASE_URL"])


def test_status_counts_what_came_back_in_the_last_24_hours(came_back: str, capsys: Any) -> None:
    # WHEN status runs, as JSON
    assert cli.main(["--database-url", came_back, "status", "--json"]) == 0
    back = json.loads(capsys.readouterr().out)["way_back_24h"]
    # THEN messages are counted by the receipt they have now (read is delivered; failed is
    # undelivered), replies linked and not, keyword and DND opt-outs, and the START
    assert back == {
        "delivered": 2,
        "undelivered": 2,
        "undelivered_by_code": {"30003": 1, "30006": 1},
        "replied": 1,
        "replies_not_linked": 1,
        "opted_out": 2,
        "opted_out_keyword": 1,
        "opted_out_dnd": 1,
        "opted_in": 1,
    }
    # AND the text says the same
    assert cli.main(["--database-url", came_back, "status"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    start = lines.index("The way back, last 24 h (what the inbound processor applied)")
    section = lines[start + 1 : start + 5]
    assert [line.split()[:2] for line in section] == [
        ["delivered", "2"],
        ["undelivered", "2"],
        ["replied", "1"],
        ["opted", "out"],
    ]
    assert "(by code: 30003 1, 30006 1)" in section[1]
    assert "; 1 linked to none" in section[2]
    assert section[3].split()[2] == "2" and "keyword 1, DND 1; opted in 1" in section[3]
    # AND no number in it
    assert "555014" not in out


def test_status_says_zero_when_nothing_came_back(database_url: str, capsys: Any) -> None:
    assert cli.main(["--database-url", database_url, "status", "--json"]) == 0
    back = json.loads(capsys.readouterr().out)["way_back_24h"]
    assert back["undelivered_by_code"] == {}
    counts = ["delivered", "undelivered", "replied", "replies_not_linked", "opted_out"]
    counts += ["opted_out_keyword", "opted_out_dnd", "opted_in"]
    assert {k: v for k, v in back.items() if k != "undelivered_by_code"} == dict.fromkeys(counts, 0)


def test_the_way_back_reads_the_last_day_on_indexes_only(database_url: str) -> None:
    # GIVEN 90 days of messages (90,000) and of inbound events (90,000: receipts and
    # replies, a thousand a day) and fresh statistics
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO delivery.message_state (source, source_id, state, sent_at, updated_at,"
            " delivery_status, delivery_status_at)"
            " SELECT 'proactive', g, 'sent', t, t,"
            " CASE WHEN g % 5 = 0 THEN 'undelivered' ELSE 'delivered' END, t"
            " FROM generate_series(1, 90000) g, LATERAL (SELECT now() - make_interval(secs => g * 86.4)) w(t)"
        )
        conn.execute(
            "INSERT INTO delivery.inbound_event (identity, kind, received_at, occurred_at, applied_at,"
            " action, outcome, delivery_id, status)"
            " SELECT 'test:' || g, CASE WHEN g % 2 = 0 THEN 'message.status' ELSE 'sms.received' END,"
            " t, t, t,"
            " CASE WHEN g % 2 = 0 THEN 'receipt' ELSE 'reply' END,"
            " CASE WHEN g % 2 = 0 THEN 'recorded' ELSE 'linked' END, g, NULL"
            " FROM generate_series(1, 90000) g, LATERAL (SELECT now() - make_interval(secs => g * 86.4)) w(t)"
        )
        conn.execute("ANALYZE delivery.message_state")
        conn.execute("ANALYZE delivery.inbound_event")
    database = Database(lambda: database_url)
    try:
        statement = database.sql("way_back_24h", "operations.sql", package=SQL_PACKAGE)
    finally:
        database.close()
    # WHEN the planner plans status's query
    with psycopg.connect(database_url, cursor_factory=ClientCursor) as conn:
        [(explained,)] = conn.execute("EXPLAIN (FORMAT JSON) " + statement).fetchall()
    nodes = list(plan_nodes(explained[0]["Plan"]))
    ours = {"message_state", "inbound_event"}
    # THEN the last day's events are a range of inbound_event_applied_idx, their messages are
    # found by key, and neither table is read whole
    assert [n for n in nodes if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in ours] == []
    assert {n["Index Name"] for n in nodes if "Index Name" in n} == {
        "inbound_event_applied_idx",
        "message_state_pkey",
    }
