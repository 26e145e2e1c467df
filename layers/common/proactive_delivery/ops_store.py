"""The operators' view of the database: backlog, recent failures, evaluate runs, and the
one state change the operators make (resend). SQL in sql/operations.sql."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, LiteralString

from proactive_delivery.db import Database, load_queries
from proactive_delivery.errors import ConfigError
from proactive_delivery.models import MessageKey, UnsentBacklog


def ops_query(name: str) -> LiteralString:
    # The text comes from the package's own .sql file, never from input.
    queries = load_queries("operations.sql")
    if name not in queries:
        raise ConfigError(f"no query {name!r} in operations.sql")
    return queries[name]


class OperationsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def unsent_backlog(self, source: str) -> UnsentBacklog:
        row = self.db.fetch_all(ops_query(f"unsent_backlog_{source}"), {})[0]
        return UnsentBacklog(count=int(row["backlog"]), oldest_age_seconds=float(row["oldest_age_seconds"]))

    def record_evaluate_run(
        self, sources: Sequence[str], *, enqueued: int, stopped_early: bool, report: dict[str, Any]
    ) -> None:
        self.db.fetch_all(
            ops_query("record_evaluate_run"),
            {
                "sources": list(sources),
                "enqueued": enqueued,
                "stopped_early": stopped_early,
                "report": json.dumps(report, default=str),
            },
        )

    def last_evaluate_run(self) -> dict[str, Any] | None:
        rows = self.db.fetch_all(ops_query("last_evaluate_run"), {})
        return rows[0] if rows else None

    def state_counts(self) -> list[dict[str, Any]]:
        return self.db.fetch_all(ops_query("state_counts"), {})

    def recent_failures(self) -> list[dict[str, Any]]:
        return self.db.fetch_all(ops_query("recent_failures"), {})

    def failed_since(self, since: datetime, reason: str | None) -> list[dict[str, Any]]:
        return self.db.fetch_all(ops_query("failed_since"), {"since": since, "reason": reason})

    def reset_failed(self, since: datetime, reason: str | None) -> list[MessageKey]:
        rows = self.db.fetch_all(ops_query("reset_failed"), {"since": since, "reason": reason}, retry=False)
        return sorted(MessageKey(r["source"], r["source_id"]) for r in rows)

    def message_detail(self, key: MessageKey) -> dict[str, Any] | None:
        rows = self.db.fetch_all(
            ops_query("message_detail"), {"source": key.source, "source_id": key.source_id}
        )
        return rows[0] if rows else None

    def platform_row(self, key: MessageKey) -> dict[str, Any] | None:
        rows = self.db.fetch_all(ops_query(f"platform_row_{key.source}"), {"source_id": key.source_id})
        return rows[0] if rows else None

    def attempt_history(self, delivery_id: int) -> list[dict[str, Any]]:
        return self.db.fetch_all(ops_query("attempt_history"), {"delivery_id": delivery_id})
