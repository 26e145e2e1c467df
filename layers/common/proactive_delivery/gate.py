"""The queue-time policy check: evaluate asks it about freshly queued (or re-queued)
messages before putting them on the queue. Messages the policy holds are recorded in one
statement (deferred / skipped / failed with the reason); short deferrals stay queued and go
on the queue with a DelaySeconds that opens with the window."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from aws_lambda_powertools import Logger

from proactive_delivery import SERVICE
from proactive_delivery.db import QueueDecision
from proactive_delivery.policy import (
    Contact,
    Decision,
    PolicyDefaults,
    PolicyInputError,
    StoredPreferences,
    decide,
    render_template,
)

logger = Logger(service=SERVICE, child=True)


class GateStore(Protocol):
    def policy_inputs(self, source: str, source_ids: Sequence[int]) -> list[dict[str, Any]]: ...

    def apply_queue_decisions(self, source: str, decisions: Sequence[QueueDecision]) -> int: ...


@dataclass
class GateResult:
    send_now: list[int] = field(default_factory=list)
    # DelaySeconds -> ids, for deferrals short enough for SQS to hold.
    delayed: dict[int, list[int]] = field(default_factory=dict)
    deferred: int = 0
    held: int = 0
    # "state:reason" -> count, for metrics (deferred counts short deferrals too).
    reasons: dict[str, int] = field(default_factory=dict)

    def note(self, state: str, reason: str | None) -> None:
        key = f"{state}:{reason or 'unknown'}"
        self.reasons[key] = self.reasons.get(key, 0) + 1


def decide_for_row(
    row: dict[str, Any],
    *,
    now: datetime,
    defaults: PolicyDefaults,
    available: Iterable[str],
    source: str,
    planned: int = 0,
) -> Decision:
    if row.get("contractor_id") is None:
        return Decision("fail", reason="source_row_missing")
    if source == "followup" and row.get("source_status") == "cancelled":
        return Decision("skip", reason="cancelled")
    body = row.get("body")
    if source == "followup" and body:
        try:
            body = render_template(
                str(body), {"first_name": row.get("first_name"), "contractor_id": row["contractor_id"]}
            )
        except PolicyInputError as exc:
            return Decision("fail", reason=exc.reason)
    return decide(
        now=now,
        due_at=row.get("due_at"),
        body=body,
        stored=StoredPreferences.from_row(row),
        defaults=defaults,
        contact=Contact(row.get("phone"), row.get("email"), row.get("contractor_id")),
        available=available,
        sent_times=(*(row.get("sent_times") or ()), *[now] * planned),
    )


class QueueGate:
    def __init__(
        self,
        store: GateStore,
        defaults: PolicyDefaults,
        available: Sequence[str],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._defaults = defaults
        self._available = tuple(available)
        self._clock = clock

    def check(self, source: str, source_ids: Sequence[int]) -> GateResult:
        result = GateResult()
        if not source_ids:
            return result
        now = self._clock()
        decisions: list[QueueDecision] = []
        seen: set[int] = set()
        # Messages already let through in this page count toward the contractor's cap.
        planned: dict[int, int] = {}
        for row in self._store.policy_inputs(source, source_ids):
            source_id = int(row["source_id"])
            seen.add(source_id)
            contractor = row.get("contractor_id")
            decision = decide_for_row(
                row,
                now=now,
                defaults=self._defaults,
                available=self._available,
                source=source,
                planned=planned.get(contractor, 0) if contractor is not None else 0,
            )
            if decision.action == "send":
                result.send_now.append(source_id)
                if contractor is not None:
                    planned[contractor] = planned.get(contractor, 0) + 1
                continue
            # One line per held message, with its identity, as deliver logs its outcomes.
            logger.info(
                "message held by policy at queue time",
                message_id=f"{source}-{source_id}",
                action=decision.action,
                reason=decision.reason,
                not_before=decision.not_before.isoformat() if decision.not_before else None,
            )
            if decision.action == "defer":
                result.deferred += 1
                result.note("deferred", decision.reason)
                delay = decision.queue_delay(now)
                if delay is not None:
                    decisions.append(QueueDecision(source_id, "queued", decision.reason, decision.not_before))
                    result.delayed.setdefault(delay, []).append(source_id)
                    continue
                decisions.append(QueueDecision(source_id, "deferred", decision.reason, decision.not_before))
            else:
                state = "skipped" if decision.action == "skip" else "failed"
                result.note(state, decision.reason)
                decisions.append(QueueDecision(source_id, state, decision.reason))
            result.held += 1
        # Ids the inputs query did not return (cannot happen for rows we just queued) go on
        # the queue unchanged: the send-time check still applies there.
        result.send_now.extend(i for i in source_ids if i not in seen)
        self._store.apply_queue_decisions(source, decisions)
        return result
