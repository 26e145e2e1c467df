"""What a person watches while the local runtime runs: queue and DLQ depth, invocations in
flight, the ledger's counts, the last deliveries as the contractor saw them (first name,
masked phone, text), and at the end a summary with where the run's data is.

A terminal gets a rich live view; anything else (a pipe, CI, --no-live) gets plain lines.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Protocol, TextIO

import psycopg

from proactive_delivery.adapters.redact import mask_phone
from proactive_delivery_tools.local.receiver import WebhookReceiver
from proactive_delivery_tools.local.twilio import FakeTwilio


class Watched(Protocol):
    """What the display reads of the runtime it watches (LocalRuntime)."""

    database_url: str
    receiver: WebhookReceiver | None
    twilio: FakeTwilio | None

    def view(self) -> dict[str, Any]:
        """Queues and DLQs (visible, in flight), mappings' in-flight count, invocations,
        schedules and the schedule clock, as they are now."""
        ...


STATES = ("sent", "deferred", "skipped", "failed", "queued", "sending", "pending")

# A message balances when it is sent (and the platform row says so), skipped or failed with
# a reason, or deferred with a time; anything else is unaccounted for at the end of a run.
_UNBALANCED_SQL = """
SELECT m.id, s.state
FROM ai_proactive_messages m
LEFT JOIN delivery.message_state s ON s.source = 'proactive' AND s.source_id = m.id
WHERE s.id IS NULL
   OR s.state NOT IN ('sent', 'skipped', 'failed', 'deferred')
   OR (s.state = 'sent' AND m.sent_at IS NULL)
   OR (s.state IN ('skipped', 'failed') AND coalesce(s.reason, s.last_error, '') = '')
   OR (s.state = 'deferred' AND s.next_attempt_at IS NULL)
UNION ALL
-- Follow-ups count once they are due (scheduled, their time come: the reference schema's
-- naive UTC, read explicitly) and not cancelled before anyone queued them.
SELECT f.id, s.state
FROM contractor_followup_schedules f
LEFT JOIN delivery.message_state s ON s.source = 'followup' AND s.source_id = f.id
WHERE (s.id IS NULL AND f.scheduled_time <= (now() AT TIME ZONE 'UTC') AND f.sent_at IS NULL
       AND f.status = 'scheduled')
   OR s.state NOT IN ('sent', 'skipped', 'failed', 'deferred')
   OR (s.state = 'sent' AND f.sent_at IS NULL)
   OR (s.state IN ('skipped', 'failed') AND coalesce(s.reason, s.last_error, '') = '')
   OR (s.state = 'deferred' AND s.next_attempt_at IS NULL)
ORDER BY 1
"""


def state_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT state, count(*) FROM delivery.message_state GROUP BY state").fetchall()
    return {str(r[0]): int(r[1]) for r in rows}


# Platform rows whose time has come that the pipeline has no state for, by why: a follow-up
# cancelled on the platform before it was queued is never sent (and needs nothing), one the
# platform marked sent itself needs nothing either; any other one is waiting for evaluate
# (unaccounted for). Naive UTC, read explicitly (the reference schema); a proactive row's
# only "due" signal is sent_at.
_NOT_QUEUED_SQL = """
SELECT CASE WHEN f.status = 'cancelled' THEN 'cancelled on the platform'
            WHEN f.sent_at IS NOT NULL OR f.status = 'sent' THEN 'sent by the platform'
            WHEN f.status IS DISTINCT FROM 'scheduled' THEN 'not scheduled on the platform'
            ELSE 'not queued yet' END, count(*)
FROM contractor_followup_schedules f
LEFT JOIN delivery.message_state s ON s.source = 'followup' AND s.source_id = f.id
WHERE s.id IS NULL AND f.scheduled_time <= (now() AT TIME ZONE 'UTC')
GROUP BY 1
UNION ALL
SELECT CASE WHEN m.sent_at IS NOT NULL THEN 'sent by the platform' ELSE 'not queued yet' END, count(*)
FROM ai_proactive_messages m
LEFT JOIN delivery.message_state s ON s.source = 'proactive' AND s.source_id = m.id
WHERE s.id IS NULL
GROUP BY 1
"""


# What came back, from the database: receipts on the messages (delivery_status), replies the
# processor linked, opt-outs it applied, channels it suppressed.
_RECEIPTS_SQL = """
SELECT CASE WHEN delivery_status IN ('delivered', 'read') THEN 'delivered'
            WHEN delivery_status IN ('undelivered', 'failed') THEN 'undelivered'
            ELSE 'no receipt' END,
       channel, coalesce(delivery_error_code, ''), count(*)
FROM delivery.message_state
WHERE state = 'sent'
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""

_REPLIES_SQL = """
SELECT count(*) FILTER (WHERE action = 'reply' AND outcome = 'linked'),
       count(DISTINCT delivery_id) FILTER (WHERE action = 'reply' AND outcome = 'linked'),
       count(*) FILTER (WHERE action = 'reply' AND outcome <> 'linked')
FROM delivery.inbound_event
"""

_OPT_OUTS_SQL = """
SELECT coalesce(e.keyword, e.provider, e.kind), count(DISTINCT c)
FROM delivery.inbound_event e, unnest(e.contractor_ids) AS c
WHERE e.action = 'opt_out' AND e.outcome = 'opted_out'
GROUP BY 1
ORDER BY 1
"""

_SUPPRESSED_SQL = """
SELECT s.key, s.value ->> 'reason', count(*)
FROM delivery.contractor_preferences p, jsonb_each(p.suppressed_channels) AS s
GROUP BY 1, 2
ORDER BY 1, 2
"""

# The platform's own response columns, where its schema has them.
_RESPONSE_COLUMNS = (
    ("ai_proactive_messages", "contractor_response"),
    ("contractor_followup_schedules", "response_text"),
)


def way_back_summary(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """Delivered, undelivered (by channel and code), replied (and the platform's response
    columns filled), opted out (by keyword or source), channels suppressed: read from the
    tables the inbound processor writes."""
    receipts: dict[str, list[dict[str, Any]]] = {"delivered": [], "undelivered": [], "no receipt": []}
    for bucket, channel, code, n in conn.execute(_RECEIPTS_SQL).fetchall():
        receipts[str(bucket)].append({"channel": str(channel), "code": str(code), "count": int(n)})
    replies = conn.execute(_REPLIES_SQL).fetchone()
    assert replies is not None
    filled = 0
    for table, column in _RESPONSE_COLUMNS:
        exists = conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = %s AND column_name = %s",
            (table, column),
        ).fetchone()
        if exists:
            row = conn.execute(
                psycopg.sql.SQL("SELECT count(*) FROM {} WHERE {} IS NOT NULL").format(
                    psycopg.sql.Identifier(table), psycopg.sql.Identifier(column)
                )
            ).fetchone()
            filled += int(row[0]) if row else 0
    return {
        "receipts": receipts,
        "replies_linked": int(replies[0]),
        "messages_replied": int(replies[1]),
        "replies_unlinked": int(replies[2]),
        "platform_responses": filled,
        "opted_out": [{"by": str(b), "count": int(n)} for b, n in conn.execute(_OPT_OUTS_SQL).fetchall()],
        "suppressed": [
            {"channel": str(ch), "reason": str(r), "count": int(n)}
            for ch, r, n in conn.execute(_SUPPRESSED_SQL).fetchall()
        ],
    }


def ledger_summary(conninfo: str) -> dict[str, Any]:
    """Every due message of the run, each in exactly one bucket: its delivery state, or why
    the pipeline has none. `messages` is the sum of the buckets, so the summary's lines add
    up by construction (tests/e2e/test_local_runtime.py parses them to check)."""
    with psycopg.connect(conninfo) as conn:
        states = state_counts(conn)
        not_queued: dict[str, int] = {}
        for bucket, n in conn.execute(_NOT_QUEUED_SQL).fetchall():
            not_queued[str(bucket)] = not_queued.get(str(bucket), 0) + int(n)
        reasons = conn.execute(
            "SELECT state, coalesce(reason, last_error), count(*) FROM delivery.message_state"
            " WHERE state IN ('skipped', 'failed', 'deferred') GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        channels = conn.execute(
            "SELECT source, channel, count(*) FROM delivery.message_state WHERE state = 'sent'"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
        deferred_until = conn.execute(
            "SELECT min(next_attempt_at), max(next_attempt_at) FROM delivery.message_state"
            " WHERE state = 'deferred'"
        ).fetchone()
        retries = conn.execute("SELECT count(*) FROM delivery.attempt_log WHERE outcome = 'retry'").fetchone()
        unbalanced = conn.execute(_UNBALANCED_SQL).fetchall()
        way_back = way_back_summary(conn)
    return {
        "way_back": way_back,
        "states": states,
        "not_queued": {k: v for k, v in not_queued.items() if v},
        "reasons": [{"state": s, "reason": r, "count": c} for s, r, c in reasons],
        "channels": [{"source": s, "channel": ch, "count": c} for s, ch, c in channels],
        "deferred_until": [str(v) for v in deferred_until] if deferred_until and deferred_until[0] else None,
        "retried_attempts": int(retries[0]) if retries else 0,
        "messages": sum(states.values()) + sum(not_queued.values()),
        "unbalanced": [{"id": int(i), "state": s} for i, s in unbalanced],
    }


class Display:
    def __init__(self, runtime: Watched, *, live: bool, out: TextIO) -> None:
        self.runtime = runtime
        self.out = out
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._last_plain = 0.0
        self._last_line = ""
        self._shown_posts = 0
        self._shown_sms = 0
        self._live: Any = None
        self._console: Any = None
        try:
            from rich.console import Console

            self._console = Console(file=out, highlight=False)
        except ImportError:  # rich is a dev extra; plain lines work without it
            self._console = None
        self.live = bool(live and self._console is not None and self._console.is_terminal)

    # Lines before and after the live view ---------------------------------------------------
    def say(self, line: str) -> None:
        with self._lock:
            if self._live is not None:
                self._live.console.print(line, markup=False)
            else:
                print(line, file=self.out, flush=True)

    def on_invoke(self, _batch: list[dict[str, Any]], _response: Any) -> None:
        """Called by the event source mapping after each invocation (nothing to do: the view
        reads the mapping's statistics when it refreshes)."""

    # Live view ----------------------------------------------------------------------------------
    def __enter__(self) -> Display:
        if self.live:
            from rich.live import Live

            self._live = Live(
                console=self._console, auto_refresh=False, redirect_stdout=False, redirect_stderr=False
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self.refresh()
            self._live.stop()
            self._live = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _states(self) -> dict[str, int]:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.runtime.database_url, autocommit=True, connect_timeout=5)
            return state_counts(self._conn)
        except psycopg.Error:
            self._conn = None
            return {}

    def snapshot(self) -> dict[str, Any]:
        receiver = self.runtime.receiver
        twilio = self.runtime.twilio
        return {
            **self.runtime.view(),
            "states": self._states(),
            "posts": len(receiver.requests) if receiver is not None else 0,
            "recent": [
                *(receiver.requests[-3:] if receiver is not None else []),
                *(_TwilioDelivery(r.form) for r in (twilio.delivered()[-3:] if twilio is not None else [])),
            ],
        }

    def refresh(self) -> None:
        snap = self.snapshot()
        if self._live is not None:
            self._live.update(self._render(snap), refresh=True)
            return
        line = self._plain_line(snap)
        now = time.monotonic()
        if line != self._last_line and now - self._last_plain >= 1.0:
            self._last_line, self._last_plain = line, now
            self._print_new_deliveries()
            self.say(line)

    def _print_new_deliveries(self, limit: int = 3) -> None:
        receiver = self.runtime.receiver
        if receiver is None:
            return
        accepted = receiver.accepted()
        new: list[Any] = accepted[self._shown_posts :]
        self._shown_posts = len(accepted)
        sms = self.runtime.twilio.delivered() if self.runtime.twilio is not None else []
        new += [_TwilioDelivery(r.form) for r in sms[self._shown_sms :]]
        self._shown_sms = len(sms)
        for request in new[:limit]:
            _status, name, phone, text = contractor_view(request.payload, request.status)
            self.say(f"  -> {name} ({phone}): {text}")
        if len(new) > limit:
            self.say(f"  ... and {len(new) - limit} more deliveries")

    @staticmethod
    def _plain_line(snap: dict[str, Any]) -> str:
        queue = " ".join(f"{q} {v}+{f}" for q, (v, f) in snap["queues"].items())
        dlq = " ".join(f"{q} {v + f}" for q, (v, f) in snap["dlqs"].items())
        states = " ".join(f"{s} {snap['states'][s]}" for s in STATES if snap["states"].get(s))
        in_flight = snap["in_flight"]
        return f"queue {queue or '-'} | dlq {dlq or '-'} | in flight {in_flight} | {states or 'no state yet'}"

    def _render(self, snap: dict[str, Any]) -> Any:
        from rich.console import Group
        from rich.table import Table

        top = Table(title="proactive-delivery local", show_header=True, expand=False)
        for column in ("queue (visible+in flight)", "DLQ", "invocations in flight", "webhook POSTs"):
            top.add_column(column, justify="right")
        top.add_row(
            ", ".join(f"{v}+{f}" for v, f in snap["queues"].values()) or "-",
            str(sum(v + f for v, f in snap["dlqs"].values())),
            str(snap["in_flight"]),
            str(snap["posts"]),
        )
        states = Table(title="ledger", show_header=True)
        for state in STATES:
            states.add_column(state, justify="right")
        states.add_row(*(str(snap["states"].get(s, 0)) for s in STATES))
        schedules = Table(
            title=f"schedules (scheduled time {snap['clock']:%H:%M:%S})" if snap["clock"] else ""
        )
        for column in ("function", "event", "expression", "fired", "next"):
            schedules.add_column(column)
        for function, name, expression, fired, next_fire in snap["schedules"]:
            schedules.add_row(function, name, expression, str(fired), f"{next_fire:%H:%M:%S}")
        recent = Table(title="last deliveries (what the contractor sees)")
        for column in ("status", "to", "phone", "message"):
            recent.add_column(column)
        for request in snap["recent"]:
            recent.add_row(*contractor_view(request.payload, request.status))
        invocations = ", ".join(f"{k} {v}" for k, v in snap["invocations"].items())
        return Group(top, states, schedules, recent, f"invocations: {invocations}")

    # The end ------------------------------------------------------------------------------------
    def final(self, summary: dict[str, Any]) -> None:
        """A table on a terminal; plain `label  value` lines elsewhere (a pipe, CI, a test),
        which a script can read: the indentation is the outline of summary_lines()."""
        lines = summary_lines(summary)
        if self._console is not None and self._console.is_terminal:
            from rich.table import Table

            table = Table(title="summary", show_header=False)
            table.add_column("what", no_wrap=True)
            table.add_column("value", justify="right", overflow="fold")
            for label, value in lines:
                table.add_row(label, value)
            self._console.print(table)
        else:
            print("summary", file=self.out)
            for label, value in lines:
                print(f"  {label:<40} {value}", file=self.out)
        self.out.flush()


class _TwilioDelivery:
    """A message the Twilio stand-in accepted, shaped as the display reads a receiver's."""

    status = 201

    def __init__(self, form: dict[str, str]) -> None:
        self.payload = {"to_name": "sms", "phone": form.get("To", ""), "body": form.get("Body", "")}


def contractor_view(payload: dict[str, Any], status: int) -> tuple[str, str, str, str]:
    """A delivery as the contractor would see it: never the full phone number. Reads the
    n8n `ghl` body ({send_via_ghl, metadata}), the flat one, and the e-mail/web chat ones."""
    ghl = payload.get("send_via_ghl")
    send: dict[str, Any] = ghl if isinstance(ghl, dict) else payload
    meta = payload.get("metadata")
    metadata: dict[str, Any] = meta if isinstance(meta, dict) else {}
    who = payload.get("first_name") or payload.get("to_name") or metadata.get("contractor_id") or "?"
    text = str(send.get("message") or payload.get("body") or "")
    return (
        str(status),
        str(who),
        mask_phone(str(send.get("phone") or "")) or "-",
        text if len(text) <= 70 else text[:67] + "...",
    )


def summary_lines(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The ledger as an outline that adds up: the total, then one line per state (and per
    reason a message has no state: cancelled on the platform, ...), which sum to the total;
    under a state, its breakdown (by channel for sent, by reason otherwise), which sums to
    that state's line. "unaccounted for" is a verdict over those lines, not one of them."""
    lines: list[tuple[str, str]] = [("messages in the ledger", str(summary["messages"]))]
    for state in STATES:
        count = summary["states"].get(state)
        if not count:
            continue
        lines.append((f"  {state}", str(count)))
        if state == "sent":
            for row in summary.get("channels", []):
                lines.append((f"    {row['source']} via {row['channel']}", str(row["count"])))
        else:
            for row in summary["reasons"]:
                if row["state"] == state:
                    lines.append((f"    {row['reason']}", str(row["count"])))
    for bucket, count in sorted(summary.get("not_queued", {}).items()):
        lines.append((f"  {bucket}", str(count)))
    lines.append(("unaccounted for", str(len(summary["unbalanced"]))))
    if summary.get("deferred_until"):
        lines.append(("deferred until", " .. ".join(summary["deferred_until"])))
    lines.append(("retried attempts", str(summary["retried_attempts"])))
    lines += way_back_lines(summary.get("way_back"))
    if "webhook_posts" in summary:
        lines += [
            ("webhook POSTs (accepted)", f"{summary['webhook_posts']} ({summary['webhook_accepted']})"),
            *_twilio_lines(summary),
            ("bad signatures", str(summary["signature_rejections"])),
            ("invocations", ", ".join(f"{k} {v}" for k, v in summary["invocations"].items())),
            ("function errors", ", ".join(f"{k} {v}" for k, v in summary["function_errors"].items())),
            ("schedule fires", str(summary["schedule_fires"])),
            ("peak concurrent invocations", str(summary["peak_concurrency"])),
            ("messages in the DLQ", str(summary["dlq_messages"])),
            ("wall time", f"{summary['elapsed_seconds']} s"),
            ("database", summary["database"] if summary["database_kept"] else "throwaway, removed"),
            ("function logs + metrics", summary["functions_log"]),
        ]
        if summary.get("pg_data_dir"):
            lines.append(("PostgreSQL data dir (stopped)", summary["pg_data_dir"]))
    return lines


def way_back_lines(way_back: dict[str, Any] | None) -> list[tuple[str, str]]:
    """What came back, as outline lines: the sent messages by receipt (delivered, undelivered
    by channel and code, no receipt), then replies and opt-outs."""
    if not way_back:
        return []
    lines: list[tuple[str, str]] = []
    for bucket in ("delivered", "undelivered", "no receipt"):
        rows = way_back["receipts"][bucket]
        label = "sent, no receipt" if bucket == "no receipt" else bucket
        lines.append((label, str(sum(r["count"] for r in rows))))
        by_channel: dict[str, int] = {}
        for row in rows:
            key = f"{row['channel']} {row['code']}" if row["code"] else row["channel"]
            by_channel[key] = by_channel.get(key, 0) + row["count"]
        lines += [(f"  {key}", str(n)) for key, n in by_channel.items()]
    suppressed = way_back["suppressed"]
    if suppressed:
        lines.append(("channels suppressed", str(sum(r["count"] for r in suppressed))))
        lines += [(f"  {r['channel']}: {r['reason']}", str(r["count"])) for r in suppressed]
    lines.append(("replied", str(way_back["messages_replied"])))
    lines.append(("  platform response columns filled", str(way_back["platform_responses"])))
    if way_back["replies_unlinked"]:
        lines.append(("  replies linked to no message", str(way_back["replies_unlinked"])))
    opted_out = way_back["opted_out"]
    lines.append(("opted out", str(sum(r["count"] for r in opted_out))))
    lines += [(f"  by {row['by']}", str(row["count"])) for row in opted_out]
    return lines


def _twilio_lines(summary: dict[str, Any]) -> list[tuple[str, str]]:
    if summary.get("twilio_requests") is None:
        return []
    callbacks = summary["callbacks"]
    return [
        ("Twilio API requests (accepted)", f"{summary['twilio_requests']} ({summary['twilio_accepted']})"),
        (
            "Twilio callbacks (answered 2xx)",
            f"{callbacks['status']} status, {callbacks['incoming']} incoming ({callbacks['answered_2xx']})",
        ),
    ]
