"""X-Twilio-Signature verification against signatures made by Twilio's own library
(twilio.request_validator.RequestValidator), never by the code under test."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from twilio.request_validator import RequestValidator, add_port, remove_port

from proactive_delivery.core.twilio_signature import compute_signature, is_valid_signature, url_variants

TOKEN = "f00dfeedf00dfeedf00dfeedf00dfeed"
URL = "https://abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws/twilio/inbound"
PARAMS = {
    "MessageSid": "SM" + "a1" * 16,
    "From": "+13125550142",
    "To": "+13125550100",
    "Body": "Yes \N{THUMBS UP SIGN} see you Thursday & bring the quote",
    "NumMedia": "0",
}


def as_form(params: dict[str, str]) -> dict[str, list[str]]:
    return {name: [value] for name, value in params.items()}


def twilio_signs(url: str, params: dict[str, str], token: str = TOKEN) -> str:
    return str(RequestValidator(token).compute_signature(url, params))


@pytest.mark.parametrize(
    "url",
    [
        URL,
        URL + "?tenant=power100&v=2",
        URL + "?q=a%20b&empty=",
        "https://hooks.example.com/sms/twilio/inbound",
        "http://127.0.0.1:3000/twilio/inbound",
    ],
)
def test_a_signature_twilio_makes_is_valid(url: str) -> None:
    # GIVEN a request signed by Twilio's validator for this URL
    signature = twilio_signs(url, PARAMS)
    # THEN ours computes the same signature and accepts it
    assert compute_signature(url, as_form(PARAMS), TOKEN) == signature
    assert is_valid_signature(url, as_form(PARAMS), signature, TOKEN)
    # AND Twilio's validator agrees (the test's own reference point)
    assert RequestValidator(TOKEN).validate(url, PARAMS, signature)


def test_a_forged_signature_is_refused() -> None:
    # GIVEN the genuine signature, and the same request with one parameter changed
    signature = twilio_signs(URL, PARAMS)
    forged = {**PARAMS, "From": "+13125550199"}
    # THEN the changed request does not verify, nor a signature of a few flipped characters
    assert not is_valid_signature(URL, as_form(forged), signature, TOKEN)
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert not is_valid_signature(URL, as_form(PARAMS), flipped, TOKEN)
    assert not is_valid_signature(URL, as_form(PARAMS), "", TOKEN)


def test_a_signature_made_with_another_token_is_refused() -> None:
    signature = twilio_signs(URL, PARAMS, token="0badc0de0badc0de0badc0de0badc0de")
    assert not is_valid_signature(URL, as_form(PARAMS), signature, TOKEN)


def test_the_url_is_part_of_the_signature() -> None:
    signature = twilio_signs(URL + "?a=1", PARAMS)
    assert not is_valid_signature(URL + "?a=2", as_form(PARAMS), signature, TOKEN)
    assert not is_valid_signature(
        URL.replace("/inbound", "/status") + "?a=1", as_form(PARAMS), signature, TOKEN
    )
    assert not is_valid_signature(
        URL.replace("https://", "http://") + "?a=1", as_form(PARAMS), signature, TOKEN
    )


@pytest.mark.parametrize(
    ("signed", "received"),
    [
        (URL.replace(".aws/", ".aws:443/"), URL),  # Twilio signed with the port, we see none
        (URL, URL.replace(".aws/", ".aws:443/")),  # and the other way round
        ("http://example.com:80/twilio/inbound", "http://example.com/twilio/inbound"),
    ],
)
def test_url_with_and_without_its_default_port(signed: str, received: str) -> None:
    # GIVEN Twilio signed one form of the URL and the request shows the other
    signature = twilio_signs(signed, PARAMS)
    # THEN it is valid, as Twilio's validator says too
    assert RequestValidator(TOKEN).validate(received, PARAMS, signature)
    assert is_valid_signature(received, as_form(PARAMS), signature, TOKEN)


def test_url_variants_are_the_ones_twilios_validator_tries() -> None:
    for url in (URL, URL.replace(".aws/", ".aws:443/"), "http://h:8080/p?x=1", "http://h/p"):
        parsed = urlsplit(url)
        assert url_variants(url) == (remove_port(parsed), add_port(parsed)), url


def test_repeated_parameters_are_signed_as_twilio_signs_them() -> None:
    # GIVEN a parameter Twilio may repeat (several values, out of order and duplicated)
    params = {"MessageSid": ["SM" + "b2" * 16], "MediaUrl": ["https://m/2", "https://m/1", "https://m/1"]}

    class MultiDict(dict[str, list[str]]):
        def getall(self, name: str) -> list[str]:
            return self[name]

    signature = twilio_signs(URL, MultiDict(params))  # type: ignore[arg-type]
    # THEN the same request verifies, and one with a value missing does not
    assert is_valid_signature(URL, params, signature, TOKEN)
    assert not is_valid_signature(URL, {**params, "MediaUrl": ["https://m/2"]}, signature, TOKEN)


def test_a_url_with_a_port_that_is_not_a_number_verifies_nothing() -> None:
    signature = twilio_signs(URL, PARAMS)
    assert not is_valid_signature("https://host:notaport/twilio/inbound", as_form(PARAMS), signature, TOKEN)
