"""Delivery rules and channel sets the tests share. No I/O, so unit tests may import it."""

from __future__ import annotations

import base64
from dataclasses import replace
from datetime import time, timedelta
from typing import Final

from proactive_delivery.core.policy import NO_QUIET_HOURS, ChannelCatalog, PolicyDefaults, QuietHours

SIGNING_SECRET: Final = "whsec_" + base64.b64encode(b"test-signing-secret-32-bytes!!!!").decode()

# The delivery mechanics do not depend on the hour: no quiet hours, no practical cap.
SENDABLE_ANY_TIME: Final = PolicyDefaults(
    channels=("sms",),
    timezone="UTC",
    quiet_hours=NO_QUIET_HOURS,
    max_per_day=1000,
    max_age=timedelta(hours=72),
    phone_region="US",
)

# The deployment defaults the policy tests judge against: New York, quiet 21:00-08:00, three
# a day, SMS first then e-mail.
NEW_YORK: Final = PolicyDefaults(
    channels=("sms", "email"),
    timezone="America/New_York",
    quiet_hours=QuietHours(time(21), time(8)),
    max_per_day=3,
    max_age=timedelta(hours=72),
    phone_region="US",
)

# The channels of channels.CHANNELS as the policy sees them, with every one configured.
ALL_CHANNELS: Final = ChannelCatalog(
    contacts={"sms": "phone", "email": "email", "web_chat": "contractor_id"},
    configured=frozenset({"sms", "email", "web_chat"}),
    sms_consent=frozenset({"sms"}),
    segmented=frozenset({"sms"}),
)


def configured(*names: str) -> ChannelCatalog:
    """ALL_CHANNELS with only `names` configured in the deployment."""
    return replace(ALL_CHANNELS, configured=frozenset(names))
