"""PostgreSQL adapter: named SQL, one connection per execution environment, and the store
the use cases talk to. psycopg errors are translated into StoreUnavailableError here."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg.rows import dict_row

from proactive_delivery.errors import StoreUnavailableError
from proactive_delivery.models import (
    ClaimedRow,
    EnqueuePage,
    MessageFacts,
    MessageKey,
    Outcome,
    QueueDecision,
)
from proactive_delivery.platform_sql import ALIASES, CATALOG_SQL, PlatformSchema
from proactive_delivery.tracing import subsegment

T = TypeVar("T")

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse_named_queries(text: str) -> dict[str, str]:
    """Split a .sql file into blocks headed by `-- name: <name>`."""
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"duplicate query name {name!r}")
        queries[name] = body.strip()
    return queries


@cache
def load_queries(filename: str = "queries.sql") -> dict[str, str]:
    text = resources.files("proactive_delivery.sql").joinpath(filename).read_text(encoding="utf-8")
    return parse_named_queries(text)


_PARTIAL = re.compile(r"\{\{>\s*(\w+)\s*\}\}")


def raw_query(name: str, filename: str = "queries.sql") -> str:
    """A named query with its `{{> other}}` includes expanded (same file), not yet rendered
    for a platform schema."""
    queries = load_queries(filename)
    if name not in queries:
        raise KeyError(f"no query {name!r} in {filename}")
    return _PARTIAL.sub(lambda m: raw_query(m.group(1), filename), queries[name])


# What libpq says when a connection cannot be made, by cause. psycopg gives no SQLSTATE for
# a failed connection attempt (there is no server result yet), so the cause is read from
# libpq's message, whose wording is stable across the versions psycopg[binary] ships.
_SERVER = re.compile(r'connection to server (?:at "([^"]+)"(?: \([^)]*\))?, port (\d+)|on socket "([^"]+)")')
_REFUSED = "connection refused (is PostgreSQL running there?)"
_AUTHENTICATION = "authentication failed"
_NO_DATABASE = "the database does not exist"
_CONNECT_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Connection refused|No such file or directory", re.I), _REFUSED),
    (
        re.compile(
            r"authentication failed|no password supplied|no pg_hba\.conf entry|fe_sendauth"
            r'|role "[^"]*" does not exist',
            re.I,
        ),
        _AUTHENTICATION,
    ),
    (re.compile(r'database "[^"]*" does not exist', re.I), _NO_DATABASE),
    (
        re.compile(r"could not translate host name|Name or service not known", re.I),
        "the host name does not resolve",
    ),
    (re.compile(r"timeout expired|timed out", re.I), "the connection timed out"),
    (
        re.compile(r"too many connections|remaining connection slots", re.I),
        "the server has no free connection slots",
    ),
    (re.compile(r"the database system is", re.I), "the server is starting up or shutting down"),
    (re.compile(r"SSL", re.I), "the TLS negotiation failed (sslmode)"),
)
_OPTION = re.compile(r'for connection option "(\w+)"')


def _invalid_url(first_line: str) -> str:
    # libpq could not parse the connection string. The quoted token it names may be part of
    # a password, so only the kind of mistake (and the option's name) is repeated.
    if '"=" after' in first_line:
        return "the database URL is invalid: not a postgresql:// URL (nor a key=value connection string)"
    kind = first_line.split(":", maxsplit=1)[0].split(' "', maxsplit=1)[0]
    option = _OPTION.search(first_line)
    return f"the database URL is invalid: {kind}" + (f" for {option.group(1)}" if option else "")


def describe_connect_error(exc: psycopg.Error) -> str:
    """One line naming why a connection could not be made, e.g. "cannot connect to PostgreSQL
    at db.internal:5432: authentication failed (role "app" does not exist)". Never the
    password: libpq only echoes the connection string when it cannot parse it, and then
    only the kind of mistake is kept."""
    text = str(exc).strip()
    first = text.split("\n")[0].strip().removeprefix("connection is bad:").strip()
    if isinstance(exc, psycopg.ProgrammingError) or first.startswith("invalid "):
        return _invalid_url(first)
    server = _SERVER.search(text)
    where = ""
    if server:
        host, port, socket_path = server.groups()
        where = f" at {host}:{port}" if host else f" on socket {socket_path}"
    # The server's own words follow the last "failed:" (FATAL:  database "x" does not exist).
    detail = text.rsplit("failed:", 1)[-1].strip().split("\n")[0].replace("FATAL:", "").strip()
    for pattern, cause in _CONNECT_CAUSES:
        if pattern.search(text):
            named = cause
            if cause == _NO_DATABASE and detail:
                named = detail  # database "x" does not exist
            elif cause == _AUTHENTICATION and detail:
                named = f"{cause} ({detail})"
            return f"cannot connect to PostgreSQL{where}: {named}"
    return f"cannot connect to PostgreSQL{where}: {detail or type(exc).__name__}"


def connect(conninfo: str, *, autocommit: bool = True, connect_timeout: int = 10) -> psycopg.Connection[Any]:
    """psycopg.connect (tuple rows) for the operator's commands, with a failure translated
    into StoreUnavailableError naming its cause (refused, authentication, no such database,
    bad URL, ...)."""
    try:
        return psycopg.connect(
            conninfo,
            autocommit=autocommit,
            connect_timeout=connect_timeout,
            application_name="proactive-delivery-cli",
        )
    except psycopg.Error as exc:
        raise StoreUnavailableError(describe_connect_error(exc)) from exc


class Database:
    """A single autocommit connection, opened lazily and reopened after it breaks.

    Each statement of the pipeline is a complete transaction on its own (a claim, a batch
    of outcomes, an enqueue page), so autocommit is the honest mode: there is never a
    half-done transaction to lose when Lambda freezes or kills the environment.
    """

    def __init__(
        self,
        conninfo_factory: Callable[[], str],
        *,
        connect_timeout: int = 5,
        platform_timezone: str = "UTC",
    ) -> None:
        self._conninfo_factory = conninfo_factory
        self._connect_timeout = connect_timeout
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        # Lambda runs one invocation at a time per environment; the local runtime and tests
        # may share one environment between threads, and psycopg connections are
        # thread-safe, so only opening the connection needs a lock.
        self._lock = threading.Lock()
        self.statements = 0
        self._platform_timezone = platform_timezone
        self._schema: PlatformSchema | None = None
        self._rendered: dict[tuple[str, str], str] = {}

    # -- the platform's schema and the queries rendered for it ------------------------------
    def platform_schema(self) -> PlatformSchema:
        """The platform's tables as found in this database: read once per execution
        environment (one catalog query), then kept."""
        if self._schema is None:
            rows = self.fetch_all(CATALOG_SQL, {"tables": [*ALIASES.values()]})
            schema = PlatformSchema.from_rows(rows, zone=self._platform_timezone)
            with self._lock:
                self._schema = self._schema or schema
        return self._schema

    def sql(self, name: str, filename: str = "queries.sql") -> LiteralString:
        """A named query rendered for this database's platform schema."""
        key = (filename, name)
        text = self._rendered.get(key)
        if text is None:
            text = self.platform_schema().render(raw_query(name, filename))
            self._rendered[key] = text
        # The text comes from the package's own .sql files and the catalog, never from input.
        return text

    def connection(self) -> psycopg.Connection[dict[str, Any]]:
        with self._lock:
            return self._open()

    def _open(self) -> psycopg.Connection[dict[str, Any]]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                self._conn = psycopg.connect(
                    self._conninfo_factory(),
                    autocommit=True,
                    row_factory=dict_row,
                    connect_timeout=self._connect_timeout,
                    application_name="proactive-delivery",
                )
            except psycopg.Error as exc:
                raise StoreUnavailableError(describe_connect_error(exc)) from exc
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def fetch_all(
        self, sql: LiteralString, params: dict[str, Any], *, retry: bool = True
    ) -> list[dict[str, Any]]:
        """Run one statement. Every statement the pipeline issues is safe to repeat, so after
        a dropped connection (failover, pg_terminate_backend, idle timeout) it is retried once
        on a fresh connection before giving up."""
        return self._with_retry(lambda conn: self._execute(conn, sql, params), retry=retry)

    def _execute(
        self, conn: psycopg.Connection[dict[str, Any]], sql: LiteralString, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        self.statements += 1
        with subsegment("postgres"), conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def _with_retry(self, action: Callable[[psycopg.Connection[dict[str, Any]]], T], *, retry: bool) -> T:
        attempts = 2 if retry else 1
        for attempt in range(1, attempts + 1):
            conn = self.connection()
            try:
                return action(conn)
            except psycopg.OperationalError as exc:
                if not conn.broken and not conn.closed:
                    raise StoreUnavailableError(f"database error: {type(exc).__name__}") from exc
                conn.close()
                if attempt == attempts:
                    raise StoreUnavailableError(f"database connection lost: {type(exc).__name__}") from exc
        raise AssertionError("unreachable")  # pragma: no cover


# Recorded with an opt-out the provider reported (Twilio error 21610).
OPT_OUT_SOURCE = "twilio"


class PostgresStore:
    """The delivery store: every method is one SQL statement from queries.sql."""

    def __init__(self, db: Database, *, followup_sent_by: str = "scheduler") -> None:
        self.db = db
        # What a sent follow-up's sent_by says (the platform's senders each wrote their name).
        self._followup_sent_by = followup_sent_by

    def sources(self) -> tuple[str, ...]:
        return self.db.platform_schema().sources

    # evaluate ---------------------------------------------------------------------------
    def enqueue_new(self, source: str, *, after_id: int, page_size: int) -> EnqueuePage:
        row = self.db.fetch_all(
            self.db.sql(f"enqueue_new_{source}"), {"after_id": after_id, "page_size": page_size}
        )[0]
        return EnqueuePage(last_id=row["last_id"], scanned=row["scanned"], queued_ids=list(row["queued_ids"]))

    def requeue_stranded(
        self,
        source: str,
        *,
        after_id: int,
        page_size: int,
        reconcile_after_seconds: int,
        run_lease_seconds: int,
    ) -> list[tuple[int, int]]:
        rows = self.db.fetch_all(
            self.db.sql("requeue_stranded"),
            {
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
