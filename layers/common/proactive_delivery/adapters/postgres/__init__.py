"""PostgreSQL adapter: the connection and named SQL (database), the delivery store (store),
the platform's schema as found (platform_sql)."""

from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.adapters.postgres.store import PostgresStore

__all__ = ["Database", "PostgresStore"]
