"""Each provider's pace in PostgreSQL (migrations 0006 and 0009), through the store's two
calls: the token buckets that every deliver invocation shares (the slots held messages
reserve, the sends), a 429's Retry-After, and the circuit breaker."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest

from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.adapters.postgres.store import PostgresStore
from proactive_delivery.core.models import SlotRequest
from proactive_delivery.core.pace import CircuitPolicy, PacePolicy, RateLimit


def store_for(database_url: str, **limits: float) -> PostgresStore:
    pace = PacePolicy(
        limits={p: RateLimit.of(rate) for p, rate in limits.items()},
        circuit=CircuitPolicy(window=10, min_attempts=4, failure_share=0.5, cool_off_seconds=1),
    )
    return PostgresStore(Database(lambda: database_url), pace=pace)


@pytest.fixture
def store(database_url: str) -> Iterator[PostgresStore]:
    s = store_for(database_url, n8n=10)
    yield s
    s.db.close()


def ask(store: PostgresStore, n: int, provider: str = "n8n", cost: float = 1.0) -> list[Any]:
    return store.take_slots([SlotRequest(provider, cost)] * n)


def note(store: PostgresStore, results: list[bool], retry_after: float | None = None) -> None:
    """Report attempts as the outcome statement does (only its pace part)."""
    attempts = [{"provider": "n8n", "failed": failed, "retry_after": retry_after} for failed in results]
    store.db.fetch_all(
        "SELECT delivery.note_provider_attempts(%(a)s::jsonb, %(p)s::jsonb)",
        {"a": json.dumps(attempts), "p": store._circuit},
    )


def pace_row(conn: Any, provider: str = "n8n") -> dict[str, Any]:
    with conn.cursor(row_factory=__import__("psycopg").rows.dict_row) as cur:
        row = cur.execute("SELECT * FROM delivery.provider_pace WHERE provider = %s", (provider,)).fetchone()
    assert row is not None
    return row


def test_a_burst_then_reserved_slots_one_interval_apart(store: PostgresStore) -> None:
    # GIVEN 10/s with a burst of a second's worth (10 tokens) WHEN 13 messages ask at once
    slots = ask(store, 13)
    # THEN ten go now and the next three hold the next slots, a tenth of a second apart
    assert [s.action for s in slots] == ["send"] * 10 + ["reserve"] * 3
    waits = [s.wait_seconds for s in slots[10:]]
    assert waits == pytest.approx([0.1, 0.2, 0.3], abs=0.02)
    assert {s.reason for s in slots[10:]} == {"rate_limited"}


def test_slots_are_shared_by_every_caller(store: PostgresStore, database_url: str) -> None:
    # GIVEN eight deliverers asking for ten slots each at the same moment (their own connections)
    stores = [store_for(database_url, n8n=10) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    answers: list[list[Any]] = []
    lock = threading.Lock()

    def run(s: PostgresStore) -> None:
        barrier.wait()
        got = ask(s, 10)
        with lock:
            answers.append(got)

    for s in stores:
        s.db.connection()  # connected before the clock starts
    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    wall = time.monotonic() - started
    for s in stores:
        s.db.close()
    # THEN together they got the burst (10) now, plus what refilled while they asked (10 a
    # second of `wall`), and every other message a slot: 80 tokens taken in all, none twice,
    # the last slot where 80 tokens at 10/s put it, less what refilled meanwhile
    slots = [s for got in answers for s in got]
    sends = sum(s.action == "send" for s in slots)
    waits = [s.wait_seconds for s in slots if s.action == "reserve"]
    assert sends + len(waits) == 80
    assert 10 <= sends <= 10 + 10 * wall + 1
    assert 7.0 - wall - 0.1 <= max(waits) <= 7.0 + 0.01
    tokens = pace_row(store.db.connection())["tokens"]
    assert -70 <= tokens <= -70 + 10 * wall + 0.01


def test_beyond_the_horizon_a_message_waits_without_a_slot(database_url: str) -> None:
    # GIVEN 1 per minute: the fifteen-minute horizon holds 15 slots
    s = store_for(database_url, twilio=1 / 60)
    slots = ask(s, 20, provider="twilio")
    # THEN one goes now, 15 reserve, 4 wait without a slot (and took no token)
    assert [x.action for x in slots].count("send") == 1
    assert [x.action for x in slots].count("reserve") == 15
    assert [x.action for x in slots].count("wait") == 4
    with closing(s.db):
        assert pace_row(s.db.connection(), "twilio")["tokens"] == pytest.approx(-15, abs=0.01)


def test_a_message_holding_a_slot_takes_no_second_slot(store: PostgresStore) -> None:
    # GIVEN 5 of the burst's 10 slots taken
    ask(store, 5)
    # WHEN a message that holds a slot and a new one ask
    slots = store.take_slots([SlotRequest("n8n", 1.0, reserved=True), SlotRequest("n8n", 1.0)])
    # THEN both go; only the new one took a slot (4 left, less nothing refilled), both took
    # send tokens (3 left)
    assert [s.action for s in slots] == ["send", "send"]
    row = pace_row(store.db.connection())
    assert 4 <= row["tokens"] < 4.5
    assert 3 <= row["send_tokens"] < 3.5


def test_messages_back_after_their_slots_go_no_faster_than_the_rate(store: PostgresStore) -> None:
    # GIVEN the burst spent now (10 sent), and 25 messages whose reserved slots have all
    # passed (a queue behind its schedule brings them back together)
    ask(store, 10)
    slots = store.take_slots([SlotRequest("n8n", 1.0, reserved=True)] * 25)
    # THEN they do not all go at once: only what the send bucket refilled meanwhile goes,
    # the others wait a moment for it, keeping their slots (no slot taken again)
    sent = [s for s in slots if s.action == "send"]
    waiting = [s for s in slots if s.action == "wait"]
    assert len(sent) + len(waiting) == 25
    assert len(sent) <= 2
    assert {(s.reason) for s in waiting} == {"rate_limited"}
    assert all(0 < s.wait_seconds <= 0.11 for s in waiting)
    assert pace_row(store.db.connection())["tokens"] < 1.5


def test_a_message_dearer_than_the_burst_goes_when_the_sends_are_full(database_url: str) -> None:
    # GIVEN Twilio at 1 segment a second (a burst of 1) and a 3-segment SMS
    s = store_for(database_url, twilio=1)
    with closing(s.db):
        # WHEN it asks on a full bucket THEN it goes (not held forever for three tokens a
        # bucket of one never holds), leaving both buckets in debt
        [slot] = ask(s, 1, provider="twilio", cost=3)
        assert slot.action == "send"
        # AND the next message, new or back on a slot it held, waits three seconds for them
        [new] = ask(s, 1, provider="twilio")
        assert new.action == "reserve" and 2.9 < new.wait_seconds <= 3.01
        [held] = s.take_slots([SlotRequest("twilio", 1.0, reserved=True)])
        assert held.action == "wait" and 2.9 < held.wait_seconds <= 3.01


def test_an_unlimited_provider_sends_at_once(store: PostgresStore) -> None:
    assert {s.action for s in ask(store, 50, provider="web_chat")} == {"send"}


def test_a_429s_retry_after_holds_the_provider_for_everyone(store: PostgresStore) -> None:
    # GIVEN a provider that answered 429 with Retry-After: 2
    note(store, [True], retry_after=2)
    # WHEN anyone asks THEN they wait about two seconds, for the provider, with no token taken
    slots = ask(store, 3)
    assert {(s.action, s.reason) for s in slots} == {("wait", "provider_throttled")}
    assert all(1.5 < s.wait_seconds <= 2.01 for s in slots)
    row = pace_row(store.db.connection())
    assert row["tokens"] <= 0 and row["send_tokens"] <= 0


def test_the_circuit_opens_probes_and_closes(store: PostgresStore) -> None:
    # GIVEN four transient failures in a row (min 4 attempts, half of them failed)
    note(store, [True, True, False, True])
    row = pace_row(store.db.connection())
    assert (row["circuit"], row["opens"]) == ("open", 1)
    # WHEN messages ask during the cool-off THEN they wait for it, no attempt
    assert {(s.action, s.reason) for s in ask(store, 3)} == {("wait", "circuit_open")}
    # WHEN the cool-off (1 s) is over THEN exactly one probe goes, the rest wait for its answer
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        slots = ask(store, 3)
        if slots[0].action != "wait":
            break
        time.sleep(0.05)
    assert [s.action for s in slots] == ["probe", "wait", "wait"]
    assert pace_row(store.db.connection())["circuit"] == "half_open"
    assert {s.action for s in ask(store, 2)} == {"wait"}
    # WHEN the probe succeeds THEN the circuit closes and sending resumes at the rate
    note(store, [False])
    assert pace_row(store.db.connection())["circuit"] == "closed"
    assert ask(store, 1)[0].action in ("send", "reserve")


def test_a_failed_probe_opens_the_circuit_for_twice_as_long(store: PostgresStore) -> None:
    note(store, [True] * 4)
    store.db.fetch_all(
        "UPDATE delivery.provider_pace SET circuit = 'half_open', probe_until = now() WHERE provider = 'n8n'",
        {},
    )
    note(store, [True])
    row = pace_row(store.db.connection())
    assert (row["circuit"], row["opens"]) == ("open", 2)
    seconds = store.db.fetch_all(
        "SELECT extract(epoch FROM open_until - now())::float8 AS s FROM delivery.provider_pace", {}
    )[0]["s"]
    assert 1.5 < seconds <= 2.01


def test_few_or_rare_failures_keep_it_closed(store: PostgresStore) -> None:
    note(store, [True, True, True])  # fewer than min_attempts
    assert pace_row(store.db.connection())["circuit"] == "closed"
    note(store, [False] * 7)  # 3 of the last 10 failed
    assert pace_row(store.db.connection())["circuit"] == "closed"


def test_status_shows_each_providers_limit_circuit_and_rate(
    store: PostgresStore, database_url: str, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from proactive_delivery_tools import cli

    monkeypatch.delenv("DELIVERY_QUEUE_URL", raising=False)
    # GIVEN a deliverer that applied n8n's limit of 10/s and whose attempts opened the circuit
    ask(store, 3)
    note(store, [True] * 4)
    # WHEN status runs
    assert cli.main(["--database-url", database_url, "status", "--json"]) == 0
    [n8n] = json.loads(capsys.readouterr().out)["providers"]
    # THEN it shows the limit the function applied and the open circuit
    assert (n8n["provider"], n8n["rate_limit_per_second"], n8n["circuit"]) == ("n8n", 10.0, "open")
    assert n8n["open_until"] is not None
    assert cli.main(["--database-url", database_url, "status"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("n8n"))
    assert "limit 10/s" in line and "OPEN since" in line
