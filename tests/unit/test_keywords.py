"""What an inbound SMS asks for (core/keywords.py): STOP and its synonyms, START, HELP, or a
reply, after trimming spaces and punctuation and ignoring case; Twilio's OptOutType wins."""

from __future__ import annotations

import pytest

from proactive_delivery.core.keywords import OPT_OUT_WORDS, classify, normalise

# The list, word for word: each revokes consent on its own.
REVOCATION_WORDS = (
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
    "OPT OUT",
    "OPT-OUT",
)


def test_the_opt_out_words_are_exactly_the_listed_ones() -> None:
    assert frozenset(REVOCATION_WORDS) == OPT_OUT_WORDS


@pytest.mark.parametrize("word", REVOCATION_WORDS)
@pytest.mark.parametrize("written", ["{w}", "{l}", " {w} ", "{t}!", "{l}.", "  {t}?! ", '"{w}"', "{w} 🛑"])
def test_each_revocation_word_opts_out_however_it_is_written(word: str, written: str) -> None:
    # GIVEN a message that is one of the words, in any case, with spaces and punctuation around
    text = written.format(w=word, l=word.lower(), t=word.title())
    # WHEN it is classified
    asks = classify(text)
    # THEN it opts out of SMS, is not a reply, and names the word
    assert (asks.consent, asks.reply, asks.keyword, asks.action) == ("out", False, word, "opt_out")


@pytest.mark.parametrize("text", ["opt   out", "Opt\tOut", "OPT\n OUT"])
def test_inner_spaces_collapse(text: str) -> None:
    assert classify(text).consent == "out"
    assert normalise(text) == "OPT OUT"


@pytest.mark.parametrize(
    "text",
    [
        "please stop",
        "stop texting me at work",
        "Can we end the call early",
        "I quit my job!",
        "stops",
        "STOP STOP",
        "",
        "   ",
        "🛑",
    ],
)
def test_a_keyword_inside_a_sentence_is_a_reply(text: str) -> None:
    # GIVEN a message that contains a keyword among other words (or none at all)
    asks = classify(text)
    # THEN it is a reply: no consent change
    assert asks.consent is None and asks.reply and asks.action == "reply" and asks.keyword is None


@pytest.mark.parametrize("text", ["START", "start", " Unstop! ", "unstop."])
def test_start_and_unstop_opt_back_in_and_are_not_replies(text: str) -> None:
    asks = classify(text)
    assert (asks.consent, asks.reply, asks.action) == ("in", False, "opt_in")


@pytest.mark.parametrize("text", ["HELP", "help?", " Help. "])
def test_help_is_recorded_and_changes_nothing(text: str) -> None:
    asks = classify(text)
    assert (asks.consent, asks.help, asks.reply, asks.action, asks.keyword) == (
        None,
        True,
        False,
        "help",
        "HELP",
    )


def test_twilio_opt_out_type_wins_over_the_text() -> None:
    # Twilio's Advanced Opt-Out matched one of its own (configurable) keywords
    assert classify("Arrêtez", "STOP").consent == "out"
    assert classify("Arrêtez", "STOP").keyword == "STOP"
    assert classify("info", "HELP").action == "help"
    # A START mark on a word that is not START/UNSTOP (Twilio's list has YES): an opt-in
    # that also answers the message it replies to
    yes = classify("Yes", "START")
    assert (yes.consent, yes.reply, yes.action) == ("in", True, "opt_in")
    # A STOP word stays a STOP whatever Twilio marked
    assert classify("STOP", "HELP").consent == "out"
