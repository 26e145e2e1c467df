"""What an inbound SMS asks for: to stop (opt out of SMS), to start again, help, or nothing
(a reply). Pure functions.

A message is a keyword when, after trimming spaces, punctuation and symbols at both ends,
collapsing the spaces inside and ignoring case, it is exactly one of the words below: the
FCC's 2024 revocation words (stop, quit, end, revoke, opt out, cancel, unsubscribe) and the
carriers' STOPALL / OPTOUT / OPT-OUT; START and UNSTOP to opt back in; HELP. "Stop!" and
" stop " are STOP; "please stop texting" is a reply (the words must stand alone).

Twilio's Advanced Opt-Out marks a message it matched with OptOutType (STOP, START, HELP),
using its own keyword lists, which an account can extend: the mark wins over the text. A
message Twilio marks START whose text is not START or UNSTOP (Twilio's list includes YES by
default) is both an opt-in and a reply, so "Yes" still answers the check-in it replies to.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final, Literal

OPT_OUT_WORDS: Final = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "OPT OUT", "OPT-OUT"}
)
OPT_IN_WORDS: Final = frozenset({"START", "UNSTOP"})
HELP_WORDS: Final = frozenset({"HELP"})

Consent = Literal["out", "in"]


@dataclass(frozen=True)
class Keyword:
    """What a message asks for. `keyword` is the word as matched (STOP, OPT OUT...), or
    Twilio's OptOutType when only the mark says so."""

    consent: Consent | None = None
    help: bool = False
    # A reply to link to the message it answers (not a keyword, or a START that is a word).
    reply: bool = True
    keyword: str | None = None

    @property
    def action(self) -> str:
        """What delivery.inbound_event.action records: opt_out, opt_in, help or reply."""
        if self.consent == "out":
            return "opt_out"
        if self.consent == "in":
            return "opt_in"
        return "help" if self.help else "reply"


REPLY: Final = Keyword()


def _edge(ch: str) -> bool:
    """A character trimmed from either end: space, punctuation or a symbol (an emoji)."""
    return ch.isspace() or unicodedata.category(ch)[0] in "PSZC"


def normalise(text: str) -> str:
    """The text as keywords are compared: ends trimmed, inner spaces collapsed, upper case."""
    start, end = 0, len(text)
    while start < end and _edge(text[start]):
        start += 1
    while end > start and _edge(text[end - 1]):
        end -= 1
    return " ".join(text[start:end].split()).upper()


def classify(text: str, opt_out_type: str | None = None) -> Keyword:
    """What an inbound SMS asks for (its text, and Twilio's OptOutType when it set one)."""
    word = normalise(text)
    if opt_out_type == "STOP" or word in OPT_OUT_WORDS:
        return Keyword(consent="out", reply=False, keyword=word if word in OPT_OUT_WORDS else "STOP")
    if word in OPT_IN_WORDS:
        return Keyword(consent="in", reply=False, keyword=word)
    if opt_out_type == "START":
        # Twilio matched one of its own opt-in words ("YES" by default): an answer too.
        return Keyword(consent="in", reply=True, keyword="START")
    if opt_out_type == "HELP" or word in HELP_WORDS:
        return Keyword(help=True, reply=False, keyword=word if word in HELP_WORDS else "HELP")
    return REPLY
