"""Hostile data end to end: SQL injection strings in message text, first names and phone
numbers are stored and sent as data, never executed (real PostgreSQL, moto SQS, the real
handlers and a signature-verifying receiver)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.db import platform_sent_at, states

INJECTIONS = [
    "'); DROP TABLE contractors; --",
    "Robert'); DROP TABLE ai_proactive_messages;--",
    "x' OR '1'='1",
    "1; UPDATE delivery.message_state SET state = 'sent'; --",
    "%(id)s %s $1 \\'; SELECT pg_sleep(5); --",
    "'; TRUNCATE delivery.attempt_log; --",
]
TABLES = (
    "public.contractors",
    "public.ai_proactive_messages",
    "delivery.message_state",
    "delivery.attempt_log",
    "delivery.schema_migrations",
)


def existing_tables(conn: Any) -> set[str]:
    rows = conn.execute(
        "SELECT table_schema || '.' || table_name FROM information_schema.tables "
        "WHERE table_schema IN ('public', 'delivery')"
    ).fetchall()
    return {str(r[0]) for r in rows}


@pytest.mark.parametrize("injection", INJECTIONS)
def test_injection_strings_are_stored_and_sent_as_data(
    pipeline: Any, make_contractor: Any, make_message: Any, injection: str
) -> None:
    # GIVEN a contractor whose names and a message whose text are SQL injection strings
    # (message_type cannot be: the platform's CHECK refuses it), next to an ordinary message
    assert existing_tables(pipeline.conn) >= set(TABLES)
    hostile = make_message(
        contractor_id=make_contractor(
            first_name=injection[:100], name=injection, last_name=injection[:100], phone="+13125550199"
        ),
        content=f"Hi {{first_name}}, {injection}, how did the bids go?",
    )
    ordinary = make_message()

    # WHEN the pipeline runs end to end
    report = pipeline.evaluate()
    pipeline.drain()

    # THEN the receiver got the exact strings, once each
    assert report["enqueued"] == 2
    [post] = pipeline.receiver.posts_for(f"proactive-{hostile}")
    sent = post.payload["send_via_ghl"]
    assert sent["phone"] == "+13125550199"
    assert sent["message"] == f"Hi {injection[:100]}, {injection}, how did the bids go?"
    assert post.payload["metadata"]["message_id"] == hostile
    assert len(pipeline.receiver.posts_for(f"proactive-{ordinary}")) == 1
    # AND both messages are sent, nothing else changed state
    assert states(pipeline.conn) == {hostile: "sent", ordinary: "sent"}
    assert platform_sent_at(pipeline.conn, hostile) is not None
    # AND every table is still there, with its rows
    assert existing_tables(pipeline.conn) >= set(TABLES)
    row = pipeline.conn.execute(
        "SELECT c.first_name, m.message_content FROM ai_proactive_messages m "
        "JOIN contractors c ON c.id = m.contractor_id WHERE m.id = %s",
        (hostile,),
    ).fetchone()
    assert row == (injection[:100], f"Hi {{first_name}}, {injection}, how did the bids go?")
    attempts = pipeline.conn.execute("SELECT count(*) FROM delivery.attempt_log").fetchone()
    assert attempts == (2,)


@pytest.mark.parametrize("injection", INJECTIONS)
def test_injection_in_a_phone_number_is_stored_refused_and_recorded(
    pipeline: Any, make_contractor: Any, make_message: Any, injection: str
) -> None:
    # GIVEN a contractor whose phone number (varchar(20) on the platform) is an SQL
    # injection string
    hostile = make_message(contractor_id=make_contractor(phone=injection[:20]))
    ordinary = make_message()

    # WHEN the pipeline runs end to end
    pipeline.evaluate()
    pipeline.drain()

    # THEN the hostile phone is never sent to (it is not a phone number): the message is
    # skipped with the reason, the ordinary one is sent, and the string is still there, as data
    assert pipeline.receiver.posts_for(f"proactive-{hostile}") == []
    assert len(pipeline.receiver.posts_for(f"proactive-{ordinary}")) == 1
    assert states(pipeline.conn) == {hostile: "skipped", ordinary: "sent"}
    reason = pipeline.conn.execute(
        "SELECT reason FROM delivery.message_state WHERE source_id = %s", (hostile,)
    ).fetchone()
    assert reason == ("invalid_phone",)
    assert existing_tables(pipeline.conn) >= set(TABLES)
    phone = pipeline.conn.execute(
        "SELECT c.phone FROM ai_proactive_messages m JOIN contractors c ON c.id = m.contractor_id "
        "WHERE m.id = %s",
        (hostile,),
    ).fetchone()
    assert phone == (injection[:20],)
