"""A phone number is matched by the keyed hash of its E.164 form (core/phone_hash.py), whatever
format the platform stored it in; the key matters; an invalid number has no hash."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from proactive_delivery.core.phone_hash import PhoneHasher, derive_local_key

KEY = b"0123456789abcdef0123456789abcdef"
# The same fictional number (555-01xx) as the platform may store it, and as Twilio sends it.
FORMATS = ("(312) 555-0142", "312.555.0142", "+1 312 555 0142", "312-555-0142", "3125550142", "+13125550142")


def test_every_format_of_a_number_hashes_the_same() -> None:
    hasher = PhoneHasher(KEY, "US")
    hashes = {hasher(f) for f in FORMATS}
    # THEN one hash, and it is HMAC-SHA256 of the E.164 form under the key (not our own mix)
    assert hashes == {hmac.new(KEY, b"+13125550142", hashlib.sha256).hexdigest()}
    assert hasher.of_e164("+13125550142") in hashes


def test_another_key_gives_another_hash_and_the_number_is_not_in_it() -> None:
    one, other = PhoneHasher(KEY, "US"), PhoneHasher(b"f" * 32, "US")
    assert one("+13125550142") != other("+13125550142")
    digest = one("+13125550142")
    assert digest is not None and "3125550142" not in digest and len(digest) == 64


@pytest.mark.parametrize("raw", [None, "", "   ", "not a number", "555", "+1 000 000 0000"])
def test_what_is_not_a_valid_number_has_no_hash(raw: str | None) -> None:
    assert PhoneHasher(KEY, "US")(raw) is None


def test_a_number_without_country_code_is_read_in_the_default_region() -> None:
    # A London number written nationally is a number in GB and none in the US
    assert PhoneHasher(KEY, "US")("020 7946 0958") is None
    assert PhoneHasher(KEY, "GB")("020 7946 0958") == PhoneHasher(KEY, "US")("+44 20 7946 0958") is not None


def test_a_short_key_is_refused_and_the_local_key_is_derived_from_the_signing_secret() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        PhoneHasher(b"short", "US")
    derived = derive_local_key("whsec_a")
    assert derived == derive_local_key("whsec_a") != derive_local_key("whsec_b")
    assert len(derived) == 32
