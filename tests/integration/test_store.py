"""The PostgreSQL store: the claim is one conditional statement with a lease, safe under
racing deliverers; outcomes are recorded only by the lease holder."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from proactive_delivery.adapters.postgres.database import Database, load_queries, parse_named_queries
from proactive_delivery.adapters.postgres.store import PostgresStore
from proactive_delivery.core.errors import StoreUnavailableError
from proactive_delivery.core.models import MessageKey, Outcome
from tests.support.db import state_row

_OPEN: list[Database] = []


@pytest.fixture(autouse=True)
def _close_stores() -> Any:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _store(url: str) -> PostgresStore:
    db = Database(lambda: url)
    _OPEN.append(db)
    return PostgresStore(db)


def _queue_all(store: PostgresStore) -> list[int]:
    page = store.enqueue_new(
        "proactive",
        store.start_evaluate_run(["proactive"], lease_seconds=300),
        after_id=0,
        page_size=10_000,
    )
    return page.queued_ids


def test_every_named_query_parses() -> None:
    queries = load_queries()
    assert {
        "enqueue_new_proactive",
        "requeue_stranded",
        "return_to_pending",
        "claim_batch",
        "record_outcomes",
    } <= set(queries)
    with pytest.raises(ValueError, match="duplicate"):
        parse_named_queries("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;")


def test_two_racing_claims_never_share_a_message(
    database_url: str, make_messages: Callable[[int], list[int]]
) -> None:
    # GIVEN 200 queued messages and two deliverers asking for all of them at the same moment
    ids = make_messages(200)
    _queue_all(_store(database_url))
    keys = [MessageKey("proactive", i) for i in ids]
    barrier = threading.Barrier(2)
    claimed: dict[str, set[int]] = {}

    def claim(name: str) -> None:
        store = _store(database_url)
        barrier.wait()
        rows = store.claim_batch(keys, claim_token=uuid.uuid4(), lease_seconds=60)
        claimed[name] = {r.key.source_id for r in rows if r.claimed}

    threads = [threading.Thread(target=claim, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    # THEN every message was claimed by exactly one of them
    assert claimed["a"].isdisjoint(claimed["b"])
    assert claimed["a"] | claimed["b"] == set(ids)


def test_claim_reports_state_of_unclaimable_and_unknown(database_url: str, make_messages: Any) -> None:
    # GIVEN one queued message, one already claimed by someone else, and an id we never saw
    free, held = make_messages(2)
    store = _store(database_url)
    _queue_all(store)
    store.claim_batch([MessageKey("proactive", held)], claim_token=uuid.uuid4(), lease_seconds=60)

    # WHEN a deliverer claims all three
    rows = {
        r.key.source_id: r
        for r in store.claim_batch(
            [MessageKey("proactive", i) for i in (free, held, 424242)],
            claim_token=uuid.uuid4(),
            lease_seconds=60,
        )
    }

    # THEN it gets the free one with its content, sees the held one as sending, the unknown as unknown
    facts = rows[free].facts
    assert rows[free].claimed and facts is not None and facts.body and facts.phone
    assert not rows[held].claimed and rows[held].previous_state == "sending"
    assert rows[424242].delivery_id is None


def test_expired_lease_can_be_reclaimed_and_the_old_holder_cannot_record(
    database_url: str, make_message: Any, conn: psycopg.Connection[Any]
) -> None:
    # GIVEN a message claimed by a deliverer whose lease has expired
    message = make_message()
    store = _store(database_url)
    _queue_all(store)
    old_token = uuid.uuid4()
    (row,) = store.claim_batch([MessageKey("proactive", message)], claim_token=old_token, lease_seconds=60)
    conn.execute("UPDATE delivery.message_state SET lease_expires_at = now() - interval '1 second'")

    # WHEN another deliverer claims it
    new_token = uuid.uuid4()
    (again,) = store.claim_batch([MessageKey("proactive", message)], claim_token=new_token, lease_seconds=60)

    # THEN it gets it, and the old holder's outcome is ignored while the new holder's lands
    assert again.claimed
    assert row.delivery_id is not None
    sent = Outcome(row.delivery_id, "sent", "delivered", attempted=True, http_status=200)
    assert store.record_outcomes([sent], claim_token=old_token) == set()
    assert state_row(conn, message)["state"] == "sending"
    assert store.record_outcomes([sent], claim_token=new_token) == {sent.delivery_id}
    assert state_row(conn, message)["state"] == "sent"


def test_claim_retried_with_same_token_is_idempotent(database_url: str, make_message: Any) -> None:
    # GIVEN a claim that committed but whose answer was lost (the connection dropped)
    message = make_message()
    store = _store(database_url)
    _queue_all(store)
    token = uuid.uuid4()
    store.claim_batch([MessageKey("proactive", message)], claim_token=token, lease_seconds=60)

    # WHEN the same claim is sent again THEN the message is still ours
    (row,) = store.claim_batch([MessageKey("proactive", message)], claim_token=token, lease_seconds=60)
    assert row.claimed


def test_record_outcomes_sets_platform_sent_at_and_logs_attempts(
    database_url: str, make_message: Any, conn: psycopg.Connection[Any]
) -> None:
    # GIVEN a claimed message
    message = make_message()
    store = _store(database_url)
    _queue_all(store)
    token = uuid.uuid4()
    (row,) = store.claim_batch([MessageKey("proactive", message)], claim_token=token, lease_seconds=60)
    assert row.delivery_id is not None

    # WHEN its delivery is recorded
    store.record_outcomes(
        [
            Outcome(
                row.delivery_id,
                "sent",
                "delivered",
                attempted=True,
                channel="sms",
                http_status=200,
                latency_ms=12,
            )
        ],
        claim_token=token,
    )

    # THEN our state, the attempt log and the platform's sent_at/updated_at agree
    state = state_row(conn, message)
    platform = conn.execute(
        "SELECT sent_at, updated_at > created_at FROM ai_proactive_messages WHERE id = %s", (message,)
    ).fetchone()
    assert platform is not None
    assert state["state"] == "sent" and state["attempts"] == 1
    assert platform[0] == state["sent_at"]
    assert platform[1] is True
    log = conn.execute(
        "SELECT attempt, outcome, http_status, latency_ms FROM delivery.attempt_log"
    ).fetchall()
    assert log == [(1, "delivered", 200, 12)]


def test_statements_per_batch_do_not_grow_with_batch_size(database_url: str, make_messages: Any) -> None:
    # GIVEN batches of 1 and of 10 queued messages
    ids = make_messages(11)
    store = _store(database_url)
    _queue_all(store)
    for batch in ([ids[0]], ids[1:]):
        before = store.db.statements
        token = uuid.uuid4()
        rows = store.claim_batch(
            [MessageKey("proactive", i) for i in batch], claim_token=token, lease_seconds=60
        )
        store.record_outcomes(
            [Outcome(r.delivery_id, "sent", "delivered", attempted=True) for r in rows if r.delivery_id],
            claim_token=token,
        )
        # THEN a whole batch costs two statements, whatever its size
        assert store.db.statements - before == 2


def test_unreachable_database_raises_store_unavailable() -> None:
    store = _store("postgresql://postgres@127.0.0.1:1/nowhere")
    with pytest.raises(StoreUnavailableError, match="cannot connect"):
        store.claim_batch([MessageKey("proactive", 1)], claim_token=uuid.uuid4(), lease_seconds=60)


def test_dropped_connection_is_reopened_once(database_url: str, make_message: Any) -> None:
    # GIVEN a store whose connection the server has just terminated
    make_message()
    store = _store(database_url)
    _queue_all(store)
    pid = store.db.connection().info.backend_pid
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    # WHEN the next statement runs THEN it succeeds on a new connection
    assert (
        store.requeue_stranded(
            "proactive",
            store.start_evaluate_run(["proactive"], lease_seconds=300),
            after_id=0,
            page_size=10,
            reconcile_after_seconds=3600,
        )
        == []
    )
    assert store.db.connection().info.backend_pid != pid
