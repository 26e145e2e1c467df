"""`proactive-delivery status`: backlog, states, failures, what came back (receipts, replies,
opt-outs), queues, the last evaluate run of each source and other senders."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from typing import Any

from proactive_delivery_tools.ops.queues import find_queues, queue_depth
from proactive_delivery_tools.ops.store import OperationsStore


def collect_status(
    store: OperationsStore, sqs: Any, queue_url: str | None, sources: Sequence[str]
) -> dict[str, Any]:
    backlog = {}
    sent_by_others = {}
    present = store.sources()
    for source in (s for s in sources if s in present):
        b = store.unsent_backlog(source)
        backlog[source] = {"unsent": b.count, "oldest_unsent_age_seconds": round(b.oldest_age_seconds, 1)}
        others = store.sent_by_others(source)
        last = others["last_sent_at"]
        sent_by_others[source] = {
            "messages": others["messages"],
            "last_sent_at": last.isoformat() if last is not None else None,
        }
    states: dict[str, dict[str, int]] = {}
    for row in store.state_counts():
        states.setdefault(row["source"], {})[row["state"]] = int(row["messages"])
    failures = [
        {"source": r["source"], "reason": r["reason"], "messages": int(r["messages"])}
        for r in store.recent_failures()
    ]
    last = store.last_evaluate_run()
    # Per source as well: the schedules run each source on its own (follow-ups every 5
    # minutes, proactive hourly), so the latest run of all is seldom the proactive one.
    by_source = {
        row["source"]: _run(row) if row["id"] is not None else None
        for row in store.last_evaluate_run_by_source([s for s in sources if s in present])
    }
    queues: dict[str, Any] | None = None
    if queue_url:
        found = find_queues(sqs, queue_url, None)
        queues = {
            "delivery": {"url": queue_url, **queue_depth(sqs, queue_url, "delivery queue")},
            "dlq": {"url": found.dlq_url, **queue_depth(sqs, found.dlq_url, "dead-letter queue")},
        }
    return {
        "providers": [_provider(row) for row in store.provider_pace()],
        "backlog": backlog,
        "states": states,
        "failures_24h": failures,
        "way_back_24h": _way_back(store.way_back()),
        "queues": queues,
        "last_evaluate_run": _run(last) if last is not None else None,
        "last_evaluate_run_by_source": by_source,
        "sent_by_others_24h": sent_by_others,
    }


def _way_back(row: dict[str, Any]) -> dict[str, Any]:
    """What the inbound processor applied in the last 24 h (ops/sql/operations.sql
    way_back_24h): messages by the receipt they now have, replies, opt-outs and opt-ins."""
    return {
        "delivered": int(row["delivered"]),
        "undelivered": int(row["undelivered"]),
        "undelivered_by_code": {str(k): int(v) for k, v in sorted(row["undelivered_by_code"].items())},
        "replied": int(row["replied"]),
        "replies_not_linked": int(row["replies_not_linked"]),
        "opted_out": int(row["opted_out_keyword"]) + int(row["opted_out_dnd"]),
        "opted_out_keyword": int(row["opted_out_keyword"]),
        "opted_out_dnd": int(row["opted_out_dnd"]),
        "opted_in": int(row["opted_in"]),
    }


def _run(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "finished_at": row["finished_at"].astimezone(UTC).isoformat(),
        "age_seconds": round(float(row["age_seconds"]), 1),
        "sources": list(row["sources"]),
        "enqueued": int(row["enqueued"]),
        "stopped_early": bool(row["stopped_early"]),
    }


def _when(value: Any) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def _provider(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "provider": row["provider"],
        "rate_limit_per_second": row["rate"],
        "circuit": row["circuit"],
        "open_until": _when(row["open_until"]),
        "opened_at": _when(row["opened_at"]),
        "probe_until": _when(row["probe_until"]),
        "blocked_until": _when(row["blocked_until"]) if row["blocked"] else None,
        "attempts_per_second_last_minute": round(float(row["attempts_per_second"]), 2),
    }
