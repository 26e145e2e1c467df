"""The core pipeline on deployments whose platform schema differs from the real one: the
seed document's minimal variant (timestamptz columns, no contractors.timezone / sms_opt_in,
no follow-up recurrence or sent_by columns), and a deployment without the follow-up table,
whose scheduled follow-up run must not break the proactive one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tests.pipeline import running_pipeline
from tests.support.db import VARIANTS


def test_the_core_pipeline_runs_on_the_seed_minimal_variant(
    monkeypatch: pytest.MonkeyPatch, platform_database: Callable[[str], str], signing_secret: str
) -> None:
    # GIVEN the seed's minimal tables, with a proactive message and a due follow-up
    url = platform_database(VARIANTS["seed_minimal"][0])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO contractors (first_name, phone, email)"
            " VALUES ('Ana', '(312) 555-0142', 'ana@example.com')"
        )
        conn.execute(
            "INSERT INTO ai_proactive_messages (contractor_id, message_type, message_content)"
            " VALUES (1, 'check_in', 'Hi {first_name}, how did the bids go?')"
        )
        conn.execute(
            "INSERT INTO contractor_followup_schedules (contractor_id, scheduled_time, followup_type,"
            " message_template) VALUES (1, now() - interval '1 minute', 'check_in', 'Hi {first_name}!')"
        )
    before = datetime.now(UTC)
    with running_pipeline(monkeypatch, url, signing_secret) as pipeline:
        # WHEN both schedules run and the queue drains
        pipeline.evaluate({"sources": ["proactive", "followup"]})
        pipeline.drain()
        # THEN both were sent once, rendered, to the E.164 number
        texts = {p.webhook_id: p.payload["send_via_ghl"] for p in pipeline.receiver.accepted()}
        assert texts["proactive-1"]["message"] == "Hi Ana, how did the bids go?"
        assert texts["followup-1"]["message"] == "Hi Ana!"
        assert {t["phone"] for t in texts.values()} == {"+13125550142"}
        # AND the platform rows carry sent_at (timestamptz here) and the follow-up's status
        proactive = pipeline.conn.execute("SELECT sent_at FROM ai_proactive_messages").fetchone()
        followup = pipeline.conn.execute(
            "SELECT sent_at, status FROM contractor_followup_schedules"
        ).fetchone()
        assert proactive is not None and followup is not None
        for sent_at in (proactive[0], followup[0]):
            assert before - timedelta(seconds=1) <= sent_at <= datetime.now(UTC) + timedelta(seconds=1)
        assert followup[1] == "sent"


def test_a_deployment_without_the_followup_table_still_delivers_proactive_messages(
    monkeypatch: pytest.MonkeyPatch, platform_database: Callable[[str], str], signing_secret: str
) -> None:
    # GIVEN a platform database without contractor_followup_schedules
    url = platform_database(VARIANTS["no_followup_table"][0])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO contractors (first_name, phone, email) VALUES ('Ana', '3125550142', 'a@example.com')"
        )
        conn.execute(
            "INSERT INTO ai_proactive_messages (contractor_id, message_type, message_content, ai_reasoning)"
            " VALUES (1, 'check_in', 'Hi Ana', 'why')"
        )
    with running_pipeline(monkeypatch, url, signing_secret) as pipeline:
        # WHEN the follow-up schedule fires (as the template's schedule does) and the proactive one
        followups: Any = pipeline.evaluate({"sources": ["followup"]})
        proactive: Any = pipeline.evaluate({"sources": ["proactive"]})
        pipeline.drain()
        # THEN the follow-up run reports the missing table and does nothing, without an error
        assert followups["missing_sources"] == ["followup"] and followups["enqueued"] == 0
        # AND the proactive message was delivered
        assert proactive["enqueued"] == 1
        assert [p.webhook_id for p in pipeline.receiver.accepted()] == ["proactive-1"]
