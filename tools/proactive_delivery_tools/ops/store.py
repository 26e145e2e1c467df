"""The operators' view of the database: backlog, recent failures, evaluate runs, one
message's history, and the one state change the operators make (resend). SQL in
sql/operations.sql of this package."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, LiteralString

from proactive_delivery.adapters.postgres import Database, PostgresStore
from proactive_delivery.core.models import MessageKey, UnsentBacklog

SQL_PACKAGE = "proactive_delivery_tools.ops.sql"


class OperationsStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._delivery = PostgresStore(db)

    def _sql(self, name: str) -> LiteralString:
        return self.db.sql(name, "operations.sql", package=SQL_PACKAGE)

    def sources(self) -> tuple[str, ...]:
        """The sources whose platform table exists in this database."""
        return self.db.platform_schema().sources

    def sent_by_others(self, source: str) -> dict[str, Any]:
        """Platform rows of `source` marked sent in the last 24 h that this pipeline did not send."""
        row = self.db.fetch_all(self._sql(f"sent_by_others_{source}"), {})[0]
        return {"messages": int(row["messages"]), "last_sent_at": row["last_sent_at"]}

    def unsent_backlog(self, source: str) -> UnsentBacklog:
        return self._delivery.unsent_backlog(source)

    def last_evaluate_run(self) -> dict[str, Any] | None:
        rows = self.db.fetch_all(self._sql("last_evaluate_run"), {})
        return rows[0] if rows else None

    def last_evaluate_run_by_source(self, sources: Sequence[str]) -> list[dict[str, Any]]:
        """One row per source, in the order given; its run's columns are NULL when none ran."""
        return self.db.fetch_all(self._sql("last_evaluate_run_by_source"), {"sources": list(sources)})

    def provider_pace(self) -> list[dict[str, Any]]:
        return self.db.fetch_all(self._sql("provider_pace"), {})

    def state_counts(self) -> list[dict[str, Any]]:
        return self.db.fetch_all(self._sql("state_counts"), {})

    def way_back(self) -> dict[str, Any]:
        """Receipts, replies and opt-outs the inbound processor applied in the last 24 h."""
        return self.db.fetch_all(self._sql("way_back_24h"), {})[0]

    def recent_failures(self) -> list[dict[str, Any]]:
        return self.db.fetch_all(self._sql("recent_failures"), {})

    def failed_since(self, since: datetime, reason: str | None) -> list[dict[str, Any]]:
        return self.db.fetch_all(self._sql("failed_since"), {"since": since, "reason": reason})

    def reset_failed(self, since: datetime, reason: str | None) -> list[MessageKey]:
        rows = self.db.fetch_all(self._sql("reset_failed"), {"since": since, "reason": reason}, retry=False)
        return sorted(MessageKey(r["source"], r["source_id"]) for r in rows)

    def message_detail(self, key: MessageKey) -> dict[str, Any] | None:
        rows = self.db.fetch_all(
            self._sql("message_detail"), {"source": key.source, "source_id": key.source_id}
        )
        return rows[0] if rows else None

    def platform_row(self, key: MessageKey) -> dict[str, Any] | None:
        rows = self.db.fetch_all(self._sql(f"platform_row_{key.source}"), {"source_id": key.source_id})
        return rows[0] if rows else None

    def attempt_history(self, delivery_id: int) -> list[dict[str, Any]]:
        return self.db.fetch_all(self._sql("attempt_history"), {"delivery_id": delivery_id})

    def inbound_events(self, delivery_id: int) -> list[dict[str, Any]]:
        """The replies and receipts the inbound processor linked to one message."""
        return self.db.fetch_all(self._sql("message_inbound_events"), {"delivery_id": delivery_id})

    def reply_text_column(self, table: str, column: str) -> str | None:
        """`table.column` when this platform's schema has it (where the processor writes a
        reply's text), else None."""
        return f"{table}.{column}" if self.db.platform_schema().has(table, column) else None
