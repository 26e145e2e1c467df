"""Versioned, additive, re-runnable migrations for this project's own schema.

Files in sql/migrations are applied in name order, each in its own transaction together
with its ledger row. A transaction-level advisory lock serialises concurrent runners (two
deploys, a deploy and a test): the second waits, then finds every version recorded and
applies nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

import psycopg

from proactive_delivery.adapters.postgres.database import describe_connect_error
from proactive_delivery.core.errors import DeliveryError, StoreUnavailableError

# An arbitrary constant that names "proactive-delivery migrations" among advisory locks.
ADVISORY_LOCK_KEY = 0x70D5_11E7

LEDGER = """
CREATE SCHEMA IF NOT EXISTS delivery;
CREATE TABLE IF NOT EXISTS delivery.schema_migrations (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    folder = resources.files("proactive_delivery_tools.schema").joinpath("migrations")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [Migration(version=f.name.removesuffix(".sql"), sql=f.read_text(encoding="utf-8")) for f in files]


def reference_schema_sql() -> str:
    return (
        resources.files("proactive_delivery_tools.schema")
        .joinpath("reference/platform.sql")
        .read_text(encoding="utf-8")
    )


class MigrationError(DeliveryError):
    """A migration cannot be applied (changed after it was applied, or its SQL failed)."""


def apply_migrations(conninfo: str, *, reference_schema: bool = False) -> list[str]:
    """Apply every migration not yet in the ledger; return the versions applied."""
    applied: list[str] = []
    try:
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise StoreUnavailableError(f"cannot apply migrations: {describe_connect_error(exc)}") from exc
    current = "the reference schema"
    try:
        with conn:
            if reference_schema:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
                    conn.execute(reference_schema_sql())
            for migration in available_migrations():
                current = f"migration {migration.version}"
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
                    conn.execute(LEDGER)
                    row = conn.execute(
                        "SELECT checksum FROM delivery.schema_migrations WHERE version = %s",
                        (migration.version,),
                    ).fetchone()
                    if row is not None:
                        if row[0] != migration.checksum:
                            raise MigrationError(
                                f"migration {migration.version} was changed after it was applied; "
                                "add a new migration instead of editing an applied one"
                            )
                        continue
                    conn.execute(migration.sql)
                    conn.execute(
                        "INSERT INTO delivery.schema_migrations (version, checksum) VALUES (%s, %s)",
                        (migration.version, migration.checksum),
                    )
                    applied.append(migration.version)
    except psycopg.OperationalError as exc:
        if conn.broken:
            raise StoreUnavailableError(f"the connection broke while applying {current}") from exc
        raise MigrationError(f"{current} failed: {_statement_error(exc)}") from exc
    except psycopg.Error as exc:
        # Each migration runs in its own transaction: this one rolled back, those before it stay.
        raise MigrationError(f"{current} failed: {_statement_error(exc)}") from exc
    return applied


def _statement_error(exc: psycopg.Error) -> str:
    message = (exc.diag.message_primary or str(exc)).strip().splitlines()[0]
    return f"{message} (SQLSTATE {exc.sqlstate})" if exc.sqlstate else message
