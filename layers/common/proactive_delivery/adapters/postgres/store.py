"""The delivery store the use cases talk to (app/ports.py): every method is one SQL
statement from sql/queries.sql."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.core.models import (
    ClaimedRow,
    EnqueuePage,
    MessageFacts,
    MessageKey,
    Outcome,
    QueueDecision,
    UnsentBacklog,
)

# Recorded with an opt-out the provider reported (Twilio error 21610).
OPT_OUT_SOURCE = "twilio"


class PostgresStore:
    def __init__(self, db: Database, *, followup_sent_by: str = "scheduler") -> None:
        self.db = db
        # What a sent follow-up's sent_by says (the platform's senders each wrote their name).
        self._followup_sent_by = followup_sent_by

    def sources(self) -> tuple[str, ...]:
        return self.db.platform_schema().sources

    # evaluate ---------------------------------------------------------------------------
    def enqueue_new(self, source: str, *, run_id: int, after_id: int, page_size: int) -> EnqueuePage:
        row = self.db.fetch_all(
            self.db.sql(f"enqueue_new_{source}"),
            {"run_id": run_id, "after_id": after_id, "page_size": page_size},
        )[0]
        return EnqueuePage(last_id=row["last_id"], scanned=row["scanned"], queued_ids=list(row["queued_ids"]))

    def requeue_stranded(
        self,
        source: str,
        *,
        run_id: int,
        after_id: int,
        page_size: int,
        reconcile_after_seconds: int,
        run_lease_seconds: int,
    ) -> list[tuple[int, int]]:
        rows = self.db.fetch_all(
            self.db.sql("requeue_stranded"),
            {
                "run_id": run_id,
                "source": source,
                "after_id": after_id,
                "page_size": page_size,
                "reconcile_after": reconcile_after_seconds,
                "run_lease": run_lease_seconds,
            },
        )
        return sorted((r["id"], r["source_id"]) for r in rows)

    def mark_enqueued(self, source: str, source_ids: Sequence[int]) -> int:
        if not source_ids:
            return 0
        rows = self.db.fetch_all(
            self.db.sql("mark_enqueued"), {"source": source, "source_ids": list(source_ids)}
        )
        return len(rows)

    def return_to_pending(self, source: str, source_ids: Sequence[int]) -> int:
        if not source_ids:
            return 0
        rows = self.db.fetch_all(
            self.db.sql("return_to_pending"), {"source": source, "source_ids": list(source_ids)}
        )
        return len(rows)

    def policy_inputs(self, source: str, source_ids: Sequence[int]) -> list[MessageFacts]:
        if not source_ids:
            return []
        rows = self.db.fetch_all(
            self.db.sql("policy_inputs"), {"source": source, "source_ids": list(source_ids)}
        )
        return [MessageFacts.from_row(MessageKey(r["source"], r["source_id"]), r) for r in rows]

    def apply_queue_decisions(self, source: str, decisions: Sequence[QueueDecision]) -> int:
        if not decisions:
            return 0
        rows = self.db.fetch_all(
            self.db.sql("apply_queue_decisions"),
            {
                "source": source,
                "source_ids": [d.source_id for d in decisions],
                "states": [d.state for d in decisions],
                "reasons": [d.reason for d in decisions],
                "next_attempt_ats": [d.next_attempt_at for d in decisions],
            },
        )
        return len(rows)

    # deliver ----------------------------------------------------------------------------
    def claim_batch(
        self, keys: Sequence[MessageKey], *, claim_token: uuid.UUID, lease_seconds: int
    ) -> list[ClaimedRow]:
        rows = self.db.fetch_all(
            self.db.sql("claim_batch"),
            {
                "sources": [k.source for k in keys],
                "source_ids": [k.source_id for k in keys],
                "claim_token": claim_token,
                "lease_seconds": lease_seconds,
            },
        )
        return [ClaimedRow.from_row(r) for r in rows]

    def record_outcomes(self, outcomes: Sequence[Outcome], *, claim_token: uuid.UUID) -> set[int]:
        """The delivery ids whose outcome was recorded (all of them, unless this claim's lease
        was lost on some)."""
        if not outcomes:
            return set()
        rows = self.db.fetch_all(
            self.db.sql("record_outcomes"),
            {
                "claim_token": claim_token,
                "delivery_ids": [o.delivery_id for o in outcomes],
                "states": [o.state for o in outcomes],
                "outcomes": [o.outcome for o in outcomes],
                "attempted": [o.attempted for o in outcomes],
                "channels": [o.channel for o in outcomes],
                "provider_refs": [o.provider_ref for o in outcomes],
                "reasons": [o.reason for o in outcomes],
                "errors": [o.error for o in outcomes],
                "http_statuses": [o.http_status for o in outcomes],
                "started_ats": [o.started_at for o in outcomes],
                "finished_ats": [o.finished_at for o in outcomes],
                "latencies_ms": [o.latency_ms for o in outcomes],
                "next_attempt_ats": [o.next_attempt_at for o in outcomes],
                "opt_out_contractor_ids": [o.opt_out_contractor_id for o in outcomes],
                "opt_out_channels": [o.opt_out_channel for o in outcomes],
                "opt_out_source": OPT_OUT_SOURCE,
                "sent_by": self._followup_sent_by,
            },
        )
        return {int(r["id"]) for r in rows}

    # the evaluate run's bookkeeping --------------------------------------------------------
    def unsent_backlog(self, source: str) -> UnsentBacklog:
        row = self.db.fetch_all(self.db.sql(f"unsent_backlog_{source}"), {})[0]
        return UnsentBacklog(count=int(row["backlog"]), oldest_age_seconds=float(row["oldest_age_seconds"]))

    def start_evaluate_run(self, sources: Sequence[str], *, lease_seconds: int) -> int:
        rows = self.db.fetch_all(
            self.db.sql("start_evaluate_run"), {"sources": list(sources), "lease_seconds": lease_seconds}
        )
        return int(rows[0]["id"])

    def finish_evaluate_run(
        self, run_id: int, *, enqueued: int, stopped_early: bool, report: dict[str, Any]
    ) -> None:
        self.db.fetch_all(
            self.db.sql("finish_evaluate_run"),
            {
                "run_id": run_id,
                "enqueued": enqueued,
                "stopped_early": stopped_early,
                "report": json.dumps(report, default=str),
            },
        )
