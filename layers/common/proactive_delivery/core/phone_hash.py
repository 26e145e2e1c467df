"""A phone number as the pipeline stores it: the keyed hash of its E.164 form, never the
number itself.

deliver records the hash of the number each SMS went to (delivery.message_state.phone_hash,
delivery.contractor_phone); the inbound processor hashes the number a reply or a STOP came
from the same way and finds the contractor and the message through an index. The platform
stores phones as typed ("(312) 555-0142", "+1 312 555 0142"), so both sides normalise to
E.164 first (phonenumbers, DEFAULT_PHONE_REGION for a number without a country code).

The hash is HMAC-SHA256 under PHONE_HASH_KEY (the deployed stack's own generated secret): a
copy of our tables does not give the numbers back, even to someone who tries every number
of a country, without the key. Changing the key makes every stored hash unmatchable (the
backfill command recomputes the directory; links of past messages are not recomputed).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from proactive_delivery.core.content import e164

# Bytes of the hash (SHA-256), stored as bytea, passed to SQL as 64 hex characters.
HASH_BYTES: Final = 32
# Where a local or test stage's key comes from when PHONE_HASH_KEY is not set (settings.py):
# derived from the outbound signing secret with this label, so two local runs with the same
# secret agree. Never used in a deployed stage.
LOCAL_KEY_LABEL: Final = b"proactive-delivery local phone hash key"


def derive_local_key(signing_secret: str) -> bytes:
    """The local stages' phone-hash key: HMAC-SHA256(signing secret, fixed label)."""
    return hmac.new(signing_secret.encode("utf-8"), LOCAL_KEY_LABEL, hashlib.sha256).digest()


class PhoneHasher:
    """Normalises a phone to E.164 and hashes it with the key. Thread-safe (no state but the
    key); a number that is not a valid phone number has no hash (None)."""

    def __init__(self, key: bytes, region: str) -> None:
        if len(key) < 16:
            raise ValueError("the phone hash key must be at least 16 bytes")
        self._key = key
        self._region = region

    def of_e164(self, number: str) -> str:
        """The hash (hex) of a number already in E.164 form. hmac.digest is the one-shot
        form (OpenSSL's, no Python object per call): the verdict hashes every message."""
        return hmac.digest(self._key, number.encode("ascii"), "sha256").hex()

    def __call__(self, raw: str | None) -> str | None:
        """The hash (hex) of a phone as stored or as a provider sent it, or None when it is
        not a valid number."""
        number = e164(raw, self._region)
        return None if number is None else self.of_e164(number)
