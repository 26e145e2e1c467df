"""The platform's tables as they are in this database, and the SQL written against them.

The platform owns its tables and they differ between deployments: its real schema
(docs/platform.md) stores every timestamp as `timestamp WITHOUT time zone` holding UTC and
has contractors.timezone / sms_opt_in and the follow-up columns for recurrence; the seed
document's older variant has timestamptz columns and none of those; a deployment may lack
the follow-up table altogether. So the named queries are written once, with a few
placeholders, and rendered for the schema found here, read once per execution environment
(one catalog query):

- `{{utc(m.created_at)}}`: the column as an absolute timestamptz. A naive column is read
  explicitly in PLATFORM_TIMEZONE (`m.created_at AT TIME ZONE 'UTC'`), never through the
  session's TimeZone, which we do not control.
- `{{now(m.sent_at)}}`: the current time in the column's own representation (naive UTC wall
  time, or now()), for comparisons that keep the column's index usable.
- `{{stored(m.sent_at, u.sent_at)}}`: a timestamptz expression converted for storing in
  the column.
- `{{opt(k.timezone, text)}}`: the column cast to the type, or a typed NULL where the column
  does not exist.
- `{{#flag}} ... {{/flag}}` keeps its text only when the flag holds, `{{^flag}} ... {{/flag}}`
  only when it does not. Flags: a source (`proactive`, `followup`), `both_sources`,
  `action_items`, `recurrence`, or a column written `alias.column` (`f.updated_at`); and a
  feature of this deployment's settings (FEATURES: `ignored_run`, IGNORED_RUN_PAUSE on), so
  a query carries no part that the settings leave unused (which the planner would plan on
  every execution).

Aliases are fixed across every .sql file: m = ai_proactive_messages, f =
contractor_followup_schedules, k = contractors, a = contractor_action_items. The rendered
text only ever contains column names and zone names from this module and the catalog,
never input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from proactive_delivery.core.errors import ConfigError

PROACTIVE_TABLE: Final = "ai_proactive_messages"
FOLLOWUP_TABLE: Final = "contractor_followup_schedules"
CONTRACTORS_TABLE: Final = "contractors"
ACTION_ITEMS_TABLE: Final = "contractor_action_items"

ALIASES: Final = {
    "m": PROACTIVE_TABLE,
    "f": FOLLOWUP_TABLE,
    "k": CONTRACTORS_TABLE,
    "a": ACTION_ITEMS_TABLE,
}
SOURCE_TABLES: Final = {"proactive": PROACTIVE_TABLE, "followup": FOLLOWUP_TABLE}

# What a source needs to be delivered at all; without these its table is treated as absent.
_REQUIRED: Final = {
    PROACTIVE_TABLE: ("id", "contractor_id", "message_type", "message_content", "sent_at"),
    FOLLOWUP_TABLE: (
        "id",
        "contractor_id",
        "scheduled_time",
        "followup_type",
        "message_template",
        "status",
        "sent_at",
    ),
    CONTRACTORS_TABLE: ("id", "first_name", "phone", "email"),
}
# A recurring follow-up's next occurrence copies these (the platform's own sender did).
RECURRENCE_COLUMNS: Final = (
    "contractor_id", "action_item_id", "event_id", "scheduled_time", "followup_type",
    "message_template", "message_tone", "ai_should_personalize", "ai_context_hints",
    "skip_if_completed", "is_recurring", "recurrence_interval_days", "next_occurrence_id",
    "status", "created_at", "updated_at",
)  # fmt: skip

# Features a deployment's settings switch on (Database(features=...)), usable as flags.
FEATURES: Final = frozenset({"ignored_run"})

NAIVE: Final = "timestamp without time zone"
AWARE: Final = "timestamp with time zone"

# Lists every column of the platform's tables, resolved through the search_path like the
# queries themselves resolve them.
CATALOG_SQL: Final = """
SELECT t.name AS table_name, a.attname AS column_name, format_type(a.atttypid, a.atttypmod) AS data_type
FROM unnest(%(tables)s::text[]) AS t(name)
JOIN pg_attribute a ON a.attrelid = to_regclass(t.name) AND a.attnum > 0 AND NOT a.attisdropped
"""

_ZONE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-/]{0,63}$")
_SECTION = re.compile(r"\{\{([#^])([\w.]+)\}\}(.*?)\{\{/\2\}\}", re.DOTALL)
_CALL = re.compile(r"\{\{(\w+)\(([^{}]*)\)\}\}")
_LEFTOVER = re.compile(r"\{\{.*?\}\}", re.DOTALL)


@dataclass(frozen=True)
class PlatformSchema:
    """Column name -> type of each platform table found, and the zone naive values are in."""

    columns: Mapping[str, Mapping[str, str]]
    zone: str = "UTC"
    features: frozenset[str] = frozenset()
    sources: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        unknown = self.features - FEATURES
        if unknown:
            raise ValueError(f"unknown SQL feature(s): {', '.join(sorted(unknown))}")
        if not _ZONE_NAME.match(self.zone):
            raise ConfigError(f"PLATFORM_TIMEZONE is not an IANA zone name: {self.zone!r}")
        present = tuple(s for s, table in SOURCE_TABLES.items() if self._complete(table))
        object.__setattr__(self, "sources", present)

    @classmethod
    def from_rows(
        cls, rows: Iterable[Mapping[str, str]], *, zone: str = "UTC", features: Iterable[str] = ()
    ) -> PlatformSchema:
        columns: dict[str, dict[str, str]] = {}
        for row in rows:
            columns.setdefault(row["table_name"], {})[row["column_name"]] = row["data_type"]
        schema = cls(columns, zone=zone, features=frozenset(features))
        missing = [c for c in _REQUIRED[CONTRACTORS_TABLE] if not schema.has(CONTRACTORS_TABLE, c)]
        if missing:
            raise ConfigError(
                f"the platform's {CONTRACTORS_TABLE} table is missing or lacks {', '.join(missing)}:"
                " is DATABASE_URL the platform's database?"
            )
        if not schema.sources:
            raise ConfigError(
                f"neither {PROACTIVE_TABLE} nor {FOLLOWUP_TABLE} was found:"
                " is DATABASE_URL the platform's database?"
            )
        return schema

    def _complete(self, table: str) -> bool:
        return all(self.has(table, c) for c in _REQUIRED[table])

    def has(self, table: str, column: str) -> bool:
        return column in self.columns.get(table, {})

    def type_of(self, table: str, column: str) -> str | None:
        return self.columns.get(table, {}).get(column)

    # -- flags ----------------------------------------------------------------------------
    def flag(self, name: str) -> bool:
        if name in FEATURES:
            return name in self.features
        if "." in name:
            alias, _, column = name.partition(".")
            return self.has(_table(alias), column)
        if name in SOURCE_TABLES:
            return name in self.sources
        if name == "both_sources":
            return len(self.sources) == len(SOURCE_TABLES)
        if name == "action_items":
            return (
                "followup" in self.sources
                and self.has(FOLLOWUP_TABLE, "skip_if_completed")
                and self.has(FOLLOWUP_TABLE, "action_item_id")
                and self.has(ACTION_ITEMS_TABLE, "status")
            )
        if name == "recurrence":
            return "followup" in self.sources and all(self.has(FOLLOWUP_TABLE, c) for c in RECURRENCE_COLUMNS)
        raise ValueError(f"unknown SQL flag {name!r}")

    # -- expressions ----------------------------------------------------------------------
    def _column(self, ref: str) -> tuple[str, str | None]:
        alias, _, column = ref.strip().partition(".")
        return ref.strip(), self.type_of(_table(alias), column)

    def _literal_zone(self) -> str:
        return "'" + self.zone + "'"

    def utc(self, ref: str) -> str:
        expr, kind = self._column(ref)
        if kind == NAIVE:
            return f"({expr} AT TIME ZONE {self._literal_zone()})"
        if kind == AWARE:
            return expr
        raise ValueError(f"{ref} is not a timestamp column here ({kind})")

    def now(self, ref: str) -> str:
        _, kind = self._column(ref)
        if kind == NAIVE:
            return f"(now() AT TIME ZONE {self._literal_zone()})"
        if kind == AWARE:
            return "now()"
        raise ValueError(f"{ref} is not a timestamp column here ({kind})")

    def stored(self, ref: str, value: str) -> str:
        _, kind = self._column(ref)
        if kind == NAIVE:
            return f"(({value.strip()}) AT TIME ZONE {self._literal_zone()})"
        if kind == AWARE:
            return f"({value.strip()})"
        raise ValueError(f"{ref} is not a timestamp column here ({kind})")

    def opt(self, ref: str, sql_type: str) -> str:
        expr, kind = self._column(ref)
        sql_type = sql_type.strip()
        if not re.fullmatch(r"[a-z ]+", sql_type):
            raise ValueError(f"not a type name: {sql_type!r}")
        return f"{expr}::{sql_type}" if kind is not None else f"NULL::{sql_type}"

    # -- rendering ------------------------------------------------------------------------
    def render(self, text: str) -> str:
        """The query for this schema. Raises ValueError on a placeholder it does not know,
        so a typo fails the first test that renders the query, not a deployment."""
        previous = None
        while previous != text:
            previous = text
            text = _SECTION.sub(self._section, text)
        text = _CALL.sub(self._call, text)
        leftover = _LEFTOVER.search(text)
        if leftover:
            raise ValueError(f"unrendered SQL placeholder {leftover.group(0)!r}")
        return text

    def _section(self, match: re.Match[str]) -> str:
        kind, name, body = match.groups()
        keep = self.flag(name)
        return body if keep == (kind == "#") else ""

    def _call(self, match: re.Match[str]) -> str:
        name, args = match.group(1), [a.strip() for a in match.group(2).split(",", 1)]
        if name == "utc" and len(args) == 1:
            return self.utc(args[0])
        if name == "now" and len(args) == 1:
            return self.now(args[0])
        if name == "stored" and len(args) == 2:
            return self.stored(args[0], args[1])
        if name == "opt" and len(args) == 2:
            return self.opt(args[0], args[1])
        raise ValueError(f"unknown SQL placeholder {match.group(0)!r}")


def _table(alias: str) -> str:
    try:
        return ALIASES[alias]
    except KeyError:
        raise ValueError(f"unknown table alias {alias!r} in a SQL placeholder") from None
