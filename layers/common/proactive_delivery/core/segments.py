"""How many SMS segments a text takes, and in which encoding. Pure, no I/O.

A segment holds 160 GSM-7 characters (153 when the message is split, the rest of each
segment carrying the concatenation header), or 70 UCS-2 code units (67 when split) as soon
as one character is outside GSM-7: an emoji, a curly quote, an en dash. Carriers, providers'
rate limits (a 10DLC number sends about one segment a second) and prices count segments.
The GSM-7 extension table's characters ({ } [ ] ~ | ^ € \\ and form feed) take two septets
each and a split never separates the two; a UCS-2 split never separates a surrogate pair.
The text itself is never altered here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

# 3GPP TS 23.038, the GSM 7-bit default alphabet and its extension table.
GSM7_BASIC: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION: Final = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE: Final = 160
GSM7_PART: Final = 153
UCS2_SINGLE: Final = 70
UCS2_PART: Final = 67

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True, slots=True)
class SmsSize:
    segments: int
    encoding: Encoding


def sms_size(text: str) -> SmsSize:
    """The segments `text` takes as one SMS (an empty text is one segment)."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        units = [2 if c in GSM7_EXTENSION else 1 for c in text]
        return SmsSize(_segments(units, GSM7_SINGLE, GSM7_PART), "GSM-7")
    # UTF-16 code units: a character beyond the Basic Multilingual Plane (most emoji) is two,
    # which a split keeps together.
    units = [2 if ord(c) > 0xFFFF else 1 for c in text]
    return SmsSize(_segments(units, UCS2_SINGLE, UCS2_PART), "UCS-2")


def _segments(units: list[int], single: int, part: int) -> int:
    if sum(units) <= single:
        return 1
    segments, used = 1, 0
    for size in units:
        if used + size > part:
            segments, used = segments + 1, 0
        used += size
    return segments
