"""The queue-time policy check: evaluate asks it about freshly queued (or re-queued)
messages before putting them on the queue. Messages the policy holds are recorded in one
statement (deferred / skipped / failed with the reason); short deferrals stay queued and go
on the queue with a DelaySeconds that opens with the window.

Every message passes this check before it first reaches the delivery queue (resend and
replay-dlq put back messages that passed it already), and it is where the contractor's phone
is first read on the way to a send: so it is here that the number is
registered in the contractor <-> number directory (one statement a page, before the
verdict), and that a STOP recorded `unmatched` from that number before anyone knew it is
applied, so the verdict already skips the message `opted_out`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from aws_lambda_powertools import Logger

from proactive_delivery import SERVICE
from proactive_delivery.app.ports import GateStore, PhoneDirectory
from proactive_delivery.app.verdict import judge
from proactive_delivery.core.content import e164
from proactive_delivery.core.models import MessageFacts, PhonePair, QueueDecision
from proactive_delivery.core.policy import ChannelCatalog, PolicyDefaults
from proactive_delivery.core.states import State

logger = Logger(service=SERVICE, child=True)

# Contractors whose registered number an execution environment remembers (~100 bytes each).
REGISTERED_MEMO_SIZE: Final = 50_000
# delivery.contractor_phone.source of a number evaluate registered before the first text.
EVALUATE_PHONE_SOURCE: Final = "evaluate"


@dataclass
class GateResult:
    send_now: list[int] = field(default_factory=list)
    # DelaySeconds -> ids, for deferrals short enough for SQS to hold.
    delayed: dict[int, list[int]] = field(default_factory=dict)
    deferred: int = 0
    held: int = 0
    # "state:reason" -> count, for metrics (deferred counts short deferrals too).
    reasons: dict[str, int] = field(default_factory=dict)

    def note(self, state: str, reason: str | None) -> None:
        key = f"{state}:{reason or 'unknown'}"
        self.reasons[key] = self.reasons.get(key, 0) + 1


class QueueGate:
    def __init__(
        self,
        store: GateStore,
        defaults: PolicyDefaults,
        channels: ChannelCatalog,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        phone_hash: Callable[[str], str] | None = None,
        directory: PhoneDirectory | None = None,
        write_sms_opt_in: bool = True,
    ) -> None:
        self._store = store
        self._defaults = defaults
        self._channels = channels
        self._clock = clock
        # Hashes an E.164 number: a suppression holds only for the number that failed.
        self._phone_hash = phone_hash
        # Where the contractors' numbers are registered before they are texted (with the
        # hash, and only where a configured channel texts a phone).
        self._directory = (
            directory
            if phone_hash is not None
            and any(channels.contacts.get(c) == "phone" for c in channels.configured)
            else None
        )
        self._write_sms_opt_in = write_sms_opt_in
        # The number this execution environment registered for each contractor: the next
        # pages (evaluate runs every few minutes in a warm one) send only what changed. A
        # contractor whose stored phone changed is registered again. Bounded: forgotten whole
        # past REGISTERED_MEMO_SIZE, which only costs a statement that writes nothing.
        self._registered: dict[int, str] = {}

    def check(self, source: str, source_ids: Sequence[int]) -> GateResult:
        result = GateResult()
        if not source_ids:
            return result
        now = self._clock()
        decisions: list[QueueDecision] = []
        seen: set[int] = set()
        # Messages already let through in this page count toward the contractor's cap.
        planned: dict[int, int] = {}
        for facts in self._register_phones(source, self._store.policy_inputs(source, source_ids)):
            source_id = facts.key.source_id
            seen.add(source_id)
            contractor = facts.contractor_id
            decision = judge(
                facts,
                now=now,
                defaults=self._defaults,
                channels=self._channels,
                planned=planned.get(contractor, 0) if contractor is not None else 0,
                phone_hash=self._phone_hash,
            ).decision
            if decision.action == "send":
                result.send_now.append(source_id)
                if contractor is not None:
                    planned[contractor] = planned.get(contractor, 0) + 1
                continue
            # One line per held message, with its identity, as deliver logs its outcomes.
            logger.info(
                "message held by policy at queue time",
                message_id=f"{source}-{source_id}",
                action=decision.action,
                reason=decision.reason,
                not_before=decision.not_before.isoformat() if decision.not_before else None,
            )
            if decision.action == "defer":
                result.deferred += 1
                result.note("deferred", decision.reason)
                delay = decision.queue_delay(now)
                if delay is not None:
                    decisions.append(
                        QueueDecision(source_id, State.QUEUED, decision.reason, decision.not_before)
                    )
                    result.delayed.setdefault(delay, []).append(source_id)
                    continue
                decisions.append(
                    QueueDecision(source_id, State.DEFERRED, decision.reason, decision.not_before)
                )
            else:
                state = State.SKIPPED if decision.action == "skip" else State.FAILED
                result.note(state, decision.reason)
                decisions.append(QueueDecision(source_id, state, decision.reason))
            result.held += 1
        # Ids the inputs query did not return (cannot happen for rows we just queued) go on
        # the queue unchanged: the send-time check still applies there.
        result.send_now.extend(i for i in source_ids if i not in seen)
        self._store.apply_queue_decisions(source, decisions)
        return result

    def _register_phones(self, source: str, found: list[MessageFacts]) -> list[MessageFacts]:
        """The page's contractors' numbers into the directory (one statement, whatever the
        page's size), with the unmatched opt-outs of the numbers it did not know applied.
        The facts of a contractor opted out that way are read again (one more statement, only
        then), so the verdict sees the opt-out. No number is logged, only counts and ids."""
        if self._directory is None or self._phone_hash is None:
            return found
        hashes: dict[str, str] = {}
        pairs: dict[tuple[int, str], PhonePair] = {}
        for facts in found:
            number = e164(facts.phone, self._defaults.phone_region) if facts.contractor_id else None
            if number is None or facts.contractor_id is None:
                continue
            digest = hashes.get(number)
            if digest is None:
                digest = hashes[number] = self._phone_hash(number)
            if self._registered.get(facts.contractor_id) == digest:
                continue
            pairs.setdefault((facts.contractor_id, digest), PhonePair(facts.contractor_id, digest))
        if not pairs:
            return found
        done = self._directory.register_phones(
            list(pairs.values()), source=EVALUATE_PHONE_SOURCE, write_sms_opt_in=self._write_sms_opt_in
        )
        if len(self._registered) + len(pairs) > REGISTERED_MEMO_SIZE:
            self._registered.clear()
        self._registered.update(pairs.keys())
        if not done.opted_out:
            return found
        logger.info(
            "opt-outs recorded unmatched applied to numbers registered at queue time",
            source=source,
            registered=done.registered,
            contractor_ids=sorted(done.opted_out),
        )
        again = [f.key.source_id for f in found if f.contractor_id in done.opted_out]
        fresh = {f.key.source_id: f for f in self._store.policy_inputs(source, again)}
        return [fresh.get(f.key.source_id, f) for f in found]
