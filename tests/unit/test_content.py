"""What a contractor receives: templates filled with the names the platform stores (with
its fallbacks), never a brace; phones as the platform stores them, normalised to E.164."""

from __future__ import annotations

import pytest

from proactive_delivery.core.content import Names, e164, render_message
from proactive_delivery.core.policy import PolicyInputError


# --- names and placeholders ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (Names("Ana", "Silva", "Ana Silva"), "Hi Ana Silva (Ana / Silva)"),
        # Some sign-up paths fill only `name`: first and last come from its words.
        (Names(None, None, "Ana Maria Silva"), "Hi Ana Maria Silva (Ana / Maria Silva)"),
        # No `name`: it is first and last together.
        (Names("Ana", "Silva", None), "Hi Ana Silva (Ana / Silva)"),
        # Blank values count as missing.
        (Names("  ", "Silva", "Ana Silva"), "Hi Ana Silva (Ana / Silva)"),
    ],
)
def test_first_last_and_full_name_are_filled_with_the_platforms_fallbacks(
    names: Names, expected: str
) -> None:
    assert render_message("Hi {name} ({first_name} / {last_name})", names) == expected


def test_a_contractor_without_any_name_is_greeted_as_there() -> None:
    # The platform's own fallback for a greeting.
    assert render_message("Hi {first_name}!", Names()) == "Hi there!"
    assert render_message("Hello {name}", Names()) == "Hello there"


def test_last_name_without_a_value_is_never_sent_half_filled() -> None:
    with pytest.raises(PolicyInputError) as info:
        render_message("Dear Mr {last_name}", Names("Ana"))
    assert info.value.reason == "unrenderable_template"


@pytest.mark.parametrize(
    "template",
    [
        "Hi {first_name}, {partner_name} will call at {demo_time}",
        "Take the survey: {survey_link}",
        "Your goal: {goal}",
        "Hi {first_name.__class__}",
        "Hi {0}",
        "Hi {}",
        "Hi {{first_name}}",
        "Hi {first_name",
        "Hi first_name}",
    ],
)
def test_any_other_placeholder_or_a_stray_brace_is_unrenderable(template: str) -> None:
    # GIVEN placeholders only the platform's AI personalisation filled, or broken braces
    # WHEN the message is rendered THEN it is refused: it would reach the contractor with braces
    with pytest.raises(PolicyInputError) as info:
        render_message(template, Names("Ana", "Silva"))
    assert info.value.reason == "unrenderable_template"


@pytest.mark.parametrize("text", ["", "   ", "\n\t", None])
def test_an_empty_message_is_refused(text: str | None) -> None:
    with pytest.raises(PolicyInputError) as info:
        render_message(text, Names("Ana"))
    assert info.value.reason == "empty_message"


def test_plain_text_is_sent_as_written() -> None:
    text = "Great week! Reply 1-5 & tell us about it :) $100% done"
    assert render_message(text, Names("Ana")) == text


def test_spaces_inside_a_placeholder_are_tolerated() -> None:
    assert render_message("Hi { first_name }", Names("Ana")) == "Hi Ana"


# --- phones --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "stored",
    ["(312) 555-0142", "312.555.0142", "+1 312 555 0142", "312-555-0142", "3125550142", "+13125550142"],
)
def test_phones_as_the_platform_stores_them_become_e164(stored: str) -> None:
    assert e164(stored, "US") == "+13125550142"


def test_a_number_with_its_own_country_code_keeps_it() -> None:
    assert e164("+44 20 7946 0958", "US") == "+442079460958"


def test_the_default_region_reads_national_numbers() -> None:
    assert e164("020 7946 0958", "GB") == "+442079460958"


@pytest.mark.parametrize("stored", ["555-0100", "12345", "not a phone", "+1 555 010 0001", "", "   ", None])
def test_what_is_not_a_valid_number_is_none(stored: str | None) -> None:
    assert e164(stored, "US") is None
