"""PostgreSQL: named SQL rendered for the platform's schema, and one connection per
execution environment. psycopg errors are translated into StoreUnavailableError here."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from typing import Any, LiteralString, TypeVar

import psycopg
from psycopg.rows import dict_row

from proactive_delivery.adapters.postgres.platform_sql import ALIASES, CATALOG_SQL, PlatformSchema
from proactive_delivery.adapters.tracing import subsegment
from proactive_delivery.core.errors import StoreUnavailableError

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


# The runtime's named queries; the operator's commands keep theirs in their own package.
RUNTIME_SQL = "proactive_delivery.adapters.postgres.sql"


@cache
def load_queries(filename: str = "queries.sql", package: str = RUNTIME_SQL) -> dict[str, str]:
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    return parse_named_queries(text)


_PARTIAL = re.compile(r"\{\{>\s*(\w+)\s*\}\}")


def raw_query(name: str, filename: str = "queries.sql", package: str = RUNTIME_SQL) -> str:
    """A named query with its `{{> other}}` includes expanded (same file), not yet rendered
    for a platform schema."""
    queries = load_queries(filename, package)
    if name not in queries:
        raise KeyError(f"no query {name!r} in {filename}")
    return _PARTIAL.sub(lambda m: raw_query(m.group(1), filename, package), queries[name])


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
        features: Iterable[str] = (),
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
        # Parts of the named queries the settings switch on (platform_sql.FEATURES).
        self._features = frozenset(features)
        self._schema: PlatformSchema | None = None
        self._rendered: dict[tuple[str, str, str], str] = {}

    # -- the platform's schema and the queries rendered for it ------------------------------
    def platform_schema(self) -> PlatformSchema:
        """The platform's tables as found in this database: read once per execution
        environment (one catalog query), then kept."""
        if self._schema is None:
            rows = self.fetch_all(CATALOG_SQL, {"tables": [*ALIASES.values()]})
            schema = PlatformSchema.from_rows(rows, zone=self._platform_timezone, features=self._features)
            with self._lock:
                self._schema = self._schema or schema
        return self._schema

    def sql(self, name: str, filename: str = "queries.sql", *, package: str = RUNTIME_SQL) -> LiteralString:
        """A named query rendered for this database's platform schema."""
        key = (package, filename, name)
        text = self._rendered.get(key)
        if text is None:
            text = self.platform_schema().render(raw_query(name, filename, package))
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

    def fetch_all_rolled_back(self, sql: LiteralString, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run one statement in a transaction that is then rolled back: what it returns, with
        nothing changed (a dry run of a statement that deletes)."""

        def rolled_back(conn: psycopg.Connection[dict[str, Any]]) -> list[dict[str, Any]]:
            with conn.transaction(force_rollback=True):
                return self._execute(conn, sql, params)

        return self._with_retry(rolled_back, retry=True)

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
