"""MessageKey.from_body: the queue record's body, and every way it can be wrong."""

from __future__ import annotations

import json

import pytest

from proactive_delivery.core.errors import MalformedRecordError
from proactive_delivery.core.models import MessageKey


def test_good_body_parses_to_a_key() -> None:
    # GIVEN the body evaluate puts on the queue
    body = '{"source":"proactive","id":42}'

    # WHEN it is parsed
    key = MessageKey.from_body(body)

    # THEN it is the message's identity, with a stable idempotency key
    assert key == MessageKey("proactive", 42)
    assert key.idempotency_key == "proactive-42"


def test_to_body_round_trips() -> None:
    # GIVEN a key
    key = MessageKey("proactive", 7)

    # WHEN it is written as a body and read back
    again = MessageKey.from_body(key.to_body())

    # THEN it is the same key, and the body is compact JSON
    assert again == key
    assert json.loads(key.to_body()) == {"source": "proactive", "id": 7}


def test_extra_fields_are_ignored() -> None:
    # GIVEN a body with fields a newer producer might add
    key = MessageKey.from_body('{"source":"proactive","id":3,"trace":"abc"}')

    # THEN only the identity matters
    assert key == MessageKey("proactive", 3)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (None, "empty_body"),
        ("", "empty_body"),
        ("{not json", "invalid_json"),
        ("proactive-42", "invalid_json"),
        ("[1, 2]", "not_an_object"),
        ('"proactive"', "not_an_object"),
        ("42", "not_an_object"),
        ("null", "not_an_object"),
        ('{"id": 42}', "unknown_source"),
        ('{"source": "reminder", "id": 42}', "unknown_source"),
        ('{"source": null, "id": 42}', "unknown_source"),
        ('{"source": ["proactive"], "id": 42}', "unknown_source"),
        ('{"source": "proactive"}', "invalid_id"),
        ('{"source": "proactive", "id": 0}', "invalid_id"),
        ('{"source": "proactive", "id": -3}', "invalid_id"),
        ('{"source": "proactive", "id": "42"}', "invalid_id"),
        ('{"source": "proactive", "id": true}', "invalid_id"),
        ('{"source": "proactive", "id": 4.0}', "invalid_id"),
        ('{"source": "proactive", "id": null}', "invalid_id"),
    ],
)
def test_malformed_bodies_raise_with_the_reason(body: str | None, reason: str) -> None:
    # GIVEN / WHEN a body that can never be processed
    with pytest.raises(MalformedRecordError) as excinfo:
        MessageKey.from_body(body)

    # THEN the error says what was wrong
    assert excinfo.value.reason == reason


def test_known_sources_can_be_widened() -> None:
    # GIVEN a caller that knows a second source
    key = MessageKey.from_body('{"source":"followup","id":9}', sources=("proactive", "followup"))

    # THEN that source is accepted
    assert key == MessageKey("followup", 9)


def test_detail_of_an_unknown_source_is_truncated() -> None:
    # GIVEN a huge unknown source value
    body = json.dumps({"source": "x" * 5000, "id": 1})

    # WHEN it is parsed
    with pytest.raises(MalformedRecordError) as excinfo:
        MessageKey.from_body(body)

    # THEN the error text stays short (it ends up in logs)
    assert excinfo.value.reason == "unknown_source"
    assert len(str(excinfo.value)) < 100


def test_keys_order_and_hash_by_identity() -> None:
    # GIVEN equal keys built separately
    a, b = MessageKey("proactive", 2), MessageKey("proactive", 2)

    # THEN they are one dictionary key, and keys sort by (source, id)
    assert len({a: 1, b: 2}) == 1
    assert sorted([MessageKey("proactive", 10), MessageKey("proactive", 2)]) == [
        MessageKey("proactive", 2),
        MessageKey("proactive", 10),
    ]
