"""The queue-time check registers the page's numbers before its verdict (app/gate.py): one call
a page with each contractor's number once, as its keyed hash; the facts of a contractor an
unmatched opt-out was just applied to are read again, so the verdict skips them `opted_out`;
nothing registered where no configured channel texts a phone, or for a number that is not
one. The SQL itself runs on PostgreSQL in tests/integration/test_stop_before_first_text.py."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from proactive_delivery.app.gate import EVALUATE_PHONE_SOURCE, QueueGate
from proactive_delivery.core.models import (
    MessageFacts,
    MessageKey,
    PhonePair,
    PhonesRegistered,
    QueueDecision,
)
from proactive_delivery.core.phone_hash import PhoneHasher
from proactive_delivery.core.policy import StoredPreferences
from tests.support.policy import SENDABLE_ANY_TIME, configured

HASHER = PhoneHasher(b"k" * 32, "US")
NOW = datetime(2025, 6, 2, 15, 0, tzinfo=UTC)


@dataclass
class Store:
    """Contractor id == source id; `phones` by contractor; `opted_out` contractors' facts
    carry an SMS opt-out once `register_phones` applied it."""

    phones: dict[int, str | None]
    unmatched_stop: set[int] = field(default_factory=set)
    applied: set[int] = field(default_factory=set)
    calls: list[tuple[list[PhonePair] | None, str, bool]] = field(default_factory=list)
    inputs_calls: list[list[int]] = field(default_factory=list)
    decisions: list[QueueDecision] = field(default_factory=list)

    def policy_inputs(self, source: str, source_ids: Sequence[int]) -> list[MessageFacts]:
        self.inputs_calls.append(list(source_ids))
        return [
            MessageFacts(
                key=MessageKey(source, i),
                contractor_id=i,
                message_type="check_in",
                body="Hi Ana",
                phone=self.phones[i],
                preferences=StoredPreferences(opted_out_channels=("sms",)) if i in self.applied else None,
            )
            for i in source_ids
        ]

    def apply_queue_decisions(self, source: str, decisions: Sequence[QueueDecision]) -> int:
        self.decisions.extend(decisions)
        return len(decisions)

    def register_phones(
        self, pairs: Sequence[PhonePair] | None, *, source: str, write_sms_opt_in: bool
    ) -> PhonesRegistered:
        self.calls.append((None if pairs is None else list(pairs), source, write_sms_opt_in))
        hit = {p.contractor_id for p in pairs or ()} & self.unmatched_stop
        self.applied |= hit
        return PhonesRegistered(registered=len(pairs or ()), opted_out=frozenset(hit))


def gate(store: Store, *channels: str, write_sms_opt_in: bool = True) -> QueueGate:
    return QueueGate(
        store,
        SENDABLE_ANY_TIME,
        configured(*channels),
        clock=lambda: NOW,
        phone_hash=HASHER.of_e164,
        directory=store,
        write_sms_opt_in=write_sms_opt_in,
    )


def test_a_page_registers_each_number_once_as_its_hash_in_one_call() -> None:
    store = Store({1: "(312) 555-0142", 2: "+1 312 555 0143", 3: "not a number", 4: None})
    result = gate(store, "sms").check("proactive", [1, 2, 3, 4])
    [(pairs, source, write)] = store.calls
    assert pairs == [PhonePair(1, HASHER("+13125550142") or ""), PhonePair(2, HASHER("3125550143") or "")]
    assert (source, write) == (EVALUATE_PHONE_SOURCE, True)
    assert all("555" not in p.phone_hash for p in pairs or ())
    # Nothing was opted out: the facts are read once
    assert store.inputs_calls == [[1, 2, 3, 4]]
    assert result.send_now == [1, 2]


def test_an_opt_out_applied_by_the_registration_is_read_again_and_skips_the_message() -> None:
    store = Store({1: "(312) 555-0142", 2: "(312) 555-0143"}, unmatched_stop={2})
    result = gate(store, "sms", write_sms_opt_in=False).check("proactive", [1, 2])
    assert store.calls[0][2] is False
    assert store.inputs_calls == [[1, 2], [2]]
    assert result.send_now == [1]
    assert [(d.source_id, d.state, d.reason) for d in store.decisions] == [(2, "skipped", "opted_out")]


def test_nothing_is_registered_without_a_channel_that_texts_a_phone() -> None:
    store = Store({1: "(312) 555-0142"})
    gate(store, "email", "web_chat").check("proactive", [1])
    assert store.calls == []


def test_a_page_without_a_valid_number_makes_no_call() -> None:
    store = Store({1: "call my office", 2: None})
    gate(store, "sms").check("proactive", [1, 2])
    assert store.calls == []


def test_a_warm_gate_sends_only_numbers_it_has_not_registered_and_a_changed_one_again() -> None:
    # GIVEN a gate that registered the numbers of contractors 1 and 2 on an earlier page
    store = Store({1: "(312) 555-0101", 2: "(312) 555-0102", 3: "(312) 555-0103"})
    g = gate(store, "sms")
    g.check("proactive", [1, 2])
    # WHEN a later page has both again, contractor 3 new, and contractor 2's phone changed
    store.phones[2] = "(312) 555-0199"
    g.check("proactive", [1, 2, 3])
    # THEN that page registers only contractor 3's number and contractor 2's new one
    [(pairs, _, _)] = store.calls[1:]
    assert pairs is not None
    assert sorted((p.contractor_id, p.phone_hash) for p in pairs) == [
        (2, HASHER.of_e164("+13125550199")),
        (3, HASHER.of_e164("+13125550103")),
    ]
    # AND a page of numbers all registered before makes no call at all
    g.check("proactive", [1, 2, 3])
    assert len(store.calls) == 2
