"""The delivery store the use cases talk to (app/ports.py): every method is one SQL
statement from sql/queries.sql."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.app.inbound_apply import Applied, ApplyOptions, InboundRow
from proactive_delivery.core.models import (
    ClaimedRow,
    EnqueuePage,
    EvaluateRun,
    MessageFacts,
    MessageKey,
    Outcome,
    PhonePair,
    PhonesRegistered,
    QueueDecision,
    Slot,
    SlotRequest,
    UnsentBacklog,
)
from proactive_delivery.core.pace import MAX_RESERVATION_SECONDS, CircuitPolicy, PacePolicy
from proactive_delivery.core.receipts import PROVIDER_OPT_OUT_SOURCE

# Recorded with an opt-out the provider reported (Twilio error 21610).
OPT_OUT_SOURCE = PROVIDER_OPT_OUT_SOURCE
# The inbound processor's named queries.
INBOUND_SQL = "inbound.sql"


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        # Every time handed to SQL carries its offset: read the same in any session zone.
        if value.tzinfo is None:
            raise TypeError("a naive datetime cannot be written: its zone would be the session's")
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def as_json(rows: Sequence[Any]) -> str:
    """Dataclass rows as one JSON array for `jsonb_to_recordset` (one parameter a batch:
    cheaper to send than a column array per field)."""
    return json.dumps([vars(row) for row in rows], default=_json_value, separators=(",", ":"))


class PostgresStore:
    def __init__(
        self,
        db: Database,
        *,
        followup_sent_by: str = "scheduler",
        pace: PacePolicy | None = None,
        ignored_run: int = 0,
    ) -> None:
        self.db = db
        # What a sent follow-up's sent_by says (the platform's senders each wrote their name).
        self._followup_sent_by = followup_sent_by
        # How many of a contractor's last proactive sends the facts carry (IGNORED_RUN_PAUSE's
        # count): read only where the database renders the `ignored_run` feature (bootstrap
        # switches it on with the pause).
        self._ignored_run = ignored_run
        pace = pace or PacePolicy(limits={}, circuit=CircuitPolicy())
        self._limits = json.dumps(
            {p: {"rate": limit.per_second, "burst": limit.burst} for p, limit in pace.limits.items()}
        )
        circuit = pace.circuit
        self._circuit = json.dumps(
            {
                "enabled": circuit.enabled,
                "window": circuit.window,
                "min_attempts": circuit.min_attempts,
                "failure_share": circuit.failure_share,
                "cool_off": circuit.cool_off_seconds,
                "max_cool_off": circuit.max_cool_off_seconds,
            }
        )
        self._probe_interval = circuit.cool_off_seconds

    def _run(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """The named query (rendered for this database's platform schema), run once."""
        return self.db.fetch_all(self.db.sql(name), params)

    def sources(self) -> tuple[str, ...]:
        return self.db.platform_schema().sources

    # evaluate ---------------------------------------------------------------------------
    def enqueue_new(self, source: str, run: EvaluateRun, *, after_id: int, page_size: int) -> EnqueuePage:
        [row] = self._run(
            f"enqueue_new_{source}", source=source, run_id=run.run_id, after_id=after_id, page_size=page_size
        )
        return EnqueuePage(last_id=row["last_id"], scanned=row["scanned"], queued_ids=list(row["queued_ids"]))

    def requeue_stranded(
        self, source: str, run: EvaluateRun, *, after_id: int, page_size: int, reconcile_after_seconds: int
    ) -> list[tuple[int, int]]:
        rows = self._run(
            "requeue_stranded",
            source=source,
            run_id=run.run_id,
            run_lease=run.lease_seconds,
            after_id=after_id,
            page_size=page_size,
            reconcile_after=reconcile_after_seconds,
        )
        return sorted((r["id"], r["source_id"]) for r in rows)

    def mark_enqueued(self, source: str, source_ids: Sequence[int]) -> int:
        return (
            len(self._run("mark_enqueued", source=source, source_ids=list(source_ids))) if source_ids else 0
        )

    def return_to_pending(self, source: str, source_ids: Sequence[int]) -> int:
        if not source_ids:
            return 0
        return len(self._run("return_to_pending", source=source, source_ids=list(source_ids)))

    def policy_inputs(self, source: str, source_ids: Sequence[int]) -> list[MessageFacts]:
        if not source_ids:
            return []
        rows = self._run(
            "policy_inputs", source=source, source_ids=list(source_ids), ignored_run=self._ignored_run
        )
        return [MessageFacts.from_row(MessageKey(r["source"], r["source_id"]), r) for r in rows]

    def apply_queue_decisions(self, source: str, decisions: Sequence[QueueDecision]) -> int:
        if not decisions:
            return 0
        return len(self._run("apply_queue_decisions", source=source, decisions=as_json(decisions)))

    def register_phones(
        self, pairs: Sequence[PhonePair] | None, *, source: str, write_sms_opt_in: bool
    ) -> PhonesRegistered:
        """The contractor <-> number directory (sql/inbound.sql, register_contractor_phones):
        evaluate before its queue-time verdict, and the operator's backfill."""
        if pairs is not None and not pairs:
            return PhonesRegistered()
        rows = self.db.fetch_all(
            self.db.sql("register_contractor_phones", INBOUND_SQL),
            {
                # Two arrays: cheaper to send and read than a JSON array a page.
                "contractor_ids": [p.contractor_id for p in pairs or ()],
                "phone_hashes": [p.phone_hash for p in pairs or ()],
                "every_number": pairs is None,
                "source": source,
                "write_sms_opt_in": write_sms_opt_in,
            },
        )
        return PhonesRegistered(
            registered=sum(1 for r in rows if r["what"] == "registered"),
            opted_out=frozenset(int(r["contractor_id"]) for r in rows if r["what"] == "opted_out"),
        )

    # deliver ----------------------------------------------------------------------------
    def claim_batch(
        self, keys: Sequence[MessageKey], *, claim_token: uuid.UUID, lease_seconds: int
    ) -> list[ClaimedRow]:
        rows = self._run(
            "claim_batch",
            sources=[k.source for k in keys],
            source_ids=[k.source_id for k in keys],
            claim_token=claim_token,
            lease_seconds=lease_seconds,
            ignored_run=self._ignored_run,
        )
        return [ClaimedRow.from_row(r) for r in rows]

    def record_outcomes(self, outcomes: Sequence[Outcome], *, claim_token: uuid.UUID) -> set[int]:
        """The delivery ids whose outcome was recorded (all of them, unless this claim's lease
        was lost on some)."""
        if not outcomes:
            return set()
        rows = self._run(
            "record_outcomes",
            claim_token=claim_token,
            outcomes=as_json(outcomes),
            opt_out_source=OPT_OUT_SOURCE,
            sent_by=self._followup_sent_by,
            circuit=self._circuit,
        )
        return {int(r["id"]) for r in rows}

    def take_slots(self, requests: Sequence[SlotRequest]) -> list[Slot]:
        if not requests:
            return []
        rows = self._run(
            "take_provider_slots",
            requests=json.dumps(
                [
                    {"ord": i, "provider": r.provider, "cost": r.cost, "reserved": r.reserved}
                    for i, r in enumerate(requests)
                ]
            ),
            limits=self._limits,
            horizon=float(MAX_RESERVATION_SECONDS),
            probe_interval=float(self._probe_interval),
        )
        return [Slot(r["action"], float(r["wait_seconds"] or 0.0), r["reason"]) for r in rows]

    # the evaluate run's bookkeeping --------------------------------------------------------
    def unsent_backlog(self, source: str) -> UnsentBacklog:
        [row] = self._run(f"unsent_backlog_{source}")
        return UnsentBacklog(count=int(row["backlog"]), oldest_age_seconds=float(row["oldest_age_seconds"]))

    def start_evaluate_run(self, sources: Sequence[str], *, lease_seconds: int) -> EvaluateRun:
        [row] = self._run("start_evaluate_run", sources=list(sources), lease_seconds=lease_seconds)
        return EvaluateRun(int(row["id"]), lease_seconds)

    def finish_evaluate_run(
        self, run_id: int, *, enqueued: int, stopped_early: bool, report: dict[str, Any]
    ) -> None:
        self._run(
            "finish_evaluate_run",
            run_id=run_id,
            enqueued=enqueued,
            stopped_early=stopped_early,
            report=json.dumps(report, default=str),
        )

    # the inbound processor (sql/inbound.sql) ------------------------------------------------
    def apply_inbound(self, rows: Sequence[InboundRow], options: ApplyOptions) -> dict[int, Applied]:
        """A batch of inbound events applied in one statement: the outcome of each row, by
        its `ord`."""
        if not rows:
            return {}
        found = self.db.fetch_all(
            self.db.sql("apply_inbound_events", INBOUND_SQL),
            {
                "events": as_json(rows),
                "reply_window_seconds": options.reply_window.total_seconds(),
                "write_responses": options.write_responses,
                "write_sms_opt_in": options.write_sms_opt_in,
                "liftable": list(options.liftable_sources),
            },
        )
        return {int(r["ord"]): Applied(str(r["outcome"]), r["message_id"]) for r in found}
