"""What adding a channel costs: one declaration. A stand-in channel registered in one place
(the registry handed to bootstrap) is chosen by the queue-time gate and sent by the
deliverer, through the real handlers, SQS (moto) and PostgreSQL."""

from __future__ import annotations

import threading
from typing import Any

from proactive_delivery.channels import CHANNELS, ChannelDeclaration
from proactive_delivery.core.models import OutboundMessage, SendResult
from tests.support.db import state_row


class StandInChannel:
    """A WhatsApp-like channel: reaches a contractor by phone, records what it sends."""

    name = "whatsapp"
    provider = "stand-in"

    def __init__(self) -> None:
        self.sent: list[OutboundMessage] = []
        self._lock = threading.Lock()

    def send(self, message: OutboundMessage) -> SendResult:
        with self._lock:
            self.sent.append(message)
        return SendResult(http_status=200, provider_ref=f"wa-{message.key.source_id}")


def prefer(conn: Any, contractor_id: int, *channels: str) -> None:
    conn.execute(
        "INSERT INTO delivery.contractor_preferences (contractor_id, channels) VALUES (%s, %s)",
        (contractor_id, list(channels)),
    )


def test_a_channel_registered_in_one_place_is_used_by_the_gate_and_the_deliverer(
    pipeline: Any, make_contractor: Any, make_message: Any
) -> None:
    # GIVEN the default registry plus one declaration, and contractors who prefer it
    stand_in = StandInChannel()
    pipeline.use(
        channels=CHANNELS.with_channel(
            ChannelDeclaration(
                name="whatsapp",
                contact="phone",
                enabled_by="always (a test's stand-in)",
                enabled=lambda settings: True,
                provider=lambda settings: "stand-in",
                build=lambda wiring: stand_in,
                receipts=lambda settings: False,
            )
        )
    )
    texted = make_contractor()
    prefer(pipeline.conn, texted, "whatsapp", "sms")
    unreachable = make_contractor(phone=None)
    prefer(pipeline.conn, unreachable, "whatsapp")
    by_default = make_contractor()
    first, second, third = make_message(texted), make_message(unreachable), make_message(by_default)

    # WHEN evaluate and deliver run
    report = pipeline.evaluate()
    pipeline.drain(timeout=60)

    # THEN the gate judged the new channel by the contact detail it declared (no phone: held
    # at queue time as no_contact, not failed as an unknown channel) ...
    assert report["sources"]["proactive"]["held_reasons"] == {"skipped:no_contact": 1}
    assert (state_row(pipeline.conn, second)["state"], state_row(pipeline.conn, second)["reason"]) == (
        "skipped",
        "no_contact",
    )
    # ... the deliverer sent through it, and recorded it as the channel
    assert [m.key.source_id for m in stand_in.sent] == [first]
    row = state_row(pipeline.conn, first)
    assert (row["state"], row["channel"], row["provider_ref"]) == ("sent", "whatsapp", f"wa-{first}")
    # ... and everyone else still goes the default way
    assert [r.webhook_id for r in pipeline.receiver.requests] == [f"proactive-{third}"]
