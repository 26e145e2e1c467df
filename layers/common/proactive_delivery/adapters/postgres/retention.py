"""The retention purge's store (app/ports.py RetentionStore): every batch is one named
statement of sql/retention.sql, rendered for this database's platform schema."""

from __future__ import annotations

from datetime import datetime

from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.core.models import PurgeCursor, PurgePage

RETENTION_SQL = "retention.sql"


class PostgresRetentionStore:
    def __init__(self, db: Database, *, dry_run: bool = False) -> None:
        self.db = db
        # A dry run runs the very statements of a purge, each in a transaction that is rolled
        # back: it reports what a purge would delete now, and changes nothing.
        self.dry_run = dry_run

    def purge_page(
        self, statement: str, *, horizon: datetime, after: PurgeCursor, batch_size: int
    ) -> PurgePage:
        if horizon.tzinfo is None:
            raise TypeError("a naive horizon cannot be compared: its zone would be the session's")
        sql = self.db.sql(statement, RETENTION_SQL)
        params = {"horizon": horizon, "after_at": after.at, "after_id": after.id, "batch_size": batch_size}
        run = self.db.fetch_all_rolled_back if self.dry_run else self.db.fetch_all
        [row] = run(sql, params)
        scanned = int(row["scanned"])
        cursor = PurgeCursor(row["last_at"], int(row["last_id"])) if scanned else after
        return PurgePage(
            scanned=scanned, cursor=cursor, deleted={str(k): int(v) for k, v in row["deleted"].items()}
        )
