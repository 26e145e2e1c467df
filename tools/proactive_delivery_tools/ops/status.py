"""`proactive-delivery status`: backlog, states, failures, queues, the last evaluate run and other senders."""

from __future__ import annotations

from collections.abc import Sequence
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
    last_run = (
        None
        if last is None
        else {
            "finished_at": last["finished_at"].isoformat(),
            "age_seconds": round(float(last["age_seconds"]), 1),
            "sources": list(last["sources"]),
            "enqueued": int(last["enqueued"]),
            "stopped_early": bool(last["stopped_early"]),
        }
    )
    queues: dict[str, Any] | None = None
    if queue_url:
        found = find_queues(sqs, queue_url, None)
        queues = {
            "delivery": {"url": queue_url, **queue_depth(sqs, queue_url, "delivery queue")},
            "dlq": {"url": found.dlq_url, **queue_depth(sqs, found.dlq_url, "dead-letter queue")},
        }
    return {
        "backlog": backlog,
        "states": states,
        "failures_24h": failures,
        "queues": queues,
        "last_evaluate_run": last_run,
        "sent_by_others_24h": sent_by_others,
    }
