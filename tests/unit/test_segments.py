"""SMS segments: GSM-7 up to 160 characters (153 a part once split), UCS-2 up to 70 (67),
the extension table's characters taking two septets, splits keeping escapes and surrogate
pairs whole."""

from __future__ import annotations

import pytest

from proactive_delivery.core.segments import sms_size

# A right single quotation mark: what AI-written text puts in "it's".
CURLY = "\u2019"


@pytest.mark.parametrize(
    ("text", "segments", "encoding"),
    [
        ("", 1, "GSM-7"),
        ("Hi Ana, how did this week's bids go?", 1, "GSM-7"),
        ("a" * 160, 1, "GSM-7"),
        ("a" * 161, 2, "GSM-7"),
        ("a" * 306, 2, "GSM-7"),
        ("a" * 307, 3, "GSM-7"),
        # the extension table: each of these takes two septets
        ("{" * 80, 1, "GSM-7"),
        ("{" * 81, 2, "GSM-7"),
        ("€" * 80, 1, "GSM-7"),
        # one curly quote or emoji and the whole text is UCS-2
        ("It" + CURLY + "s time", 1, "UCS-2"),
        ("a" * 69 + CURLY, 1, "UCS-2"),
        ("a" * 70 + CURLY, 2, "UCS-2"),
        ("a" * 133 + CURLY, 2, "UCS-2"),
        ("a" * 134 + CURLY, 3, "UCS-2"),
        # an emoji is two UTF-16 code units
        ("👍" * 35, 1, "UCS-2"),
        ("👍" * 36, 2, "UCS-2"),
    ],
)
def test_segments_and_encoding(text: str, segments: int, encoding: str) -> None:
    size = sms_size(text)
    assert (size.segments, size.encoding) == (segments, encoding)


def test_a_split_never_separates_an_escape_or_a_surrogate_pair() -> None:
    # 152 plain septets then an escape: the escape's two septets would straddle the first
    # part's 153rd position, so they open the second part instead
    assert sms_size("a" * 152 + "{" + "a" * 152).segments == 3
    assert sms_size("a" * 152 + "b" + "a" * 152).segments == 2
    # 66 units then an emoji (2 units): it cannot start at unit 67 of the first part
    assert sms_size(CURLY + "a" * 65 + "👍" + "a" * 66).segments == 3
    assert sms_size(CURLY + "a" * 65 + "b" + "a" * 67).segments == 2
