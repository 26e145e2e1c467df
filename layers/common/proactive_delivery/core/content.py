"""What a contractor receives: the message text with the contractor's names filled in, and
the phone number as a provider needs it (E.164). Pure functions, no I/O.

Templates. The platform's follow-up templates carry placeholders: {first_name}, {name} and
{last_name}, which we fill, and others ({partner_name}, {demo_time}, ...) that only the
platform's AI personalisation step could fill. We do not personalise (the text is sent as
rendered, as the platform's own sender did when personalisation failed), so a message with
any other placeholder, or any brace left over, is never sent: it would reach the contractor
as "{partner_name}". The same rules apply to proactive messages, which are plain text.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Final

import phonenumbers

from proactive_delivery.core.policy import PolicyInputError

# The platform's own fallback when it has no name for a greeting.
NAME_FALLBACK: Final = "there"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


@dataclass(frozen=True)
class Names:
    """The contractor's names as the platform stores them (some sign-up paths fill only
    `full_name`, the platform's contractors.name)."""

    first_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None

    @property
    def first(self) -> str | None:
        """first_name, else the first word of name."""
        words = (_clean(self.full_name) or "").split()
        return _clean(self.first_name) or (words[0] if words else None)

    @property
    def last(self) -> str | None:
        """last_name, else the words of name after the first."""
        words = (_clean(self.full_name) or "").split()
        return _clean(self.last_name) or (" ".join(words[1:]) if len(words) > 1 else None)

    @property
    def display_name(self) -> str | None:
        """name, else first and last: for an e-mail's To name."""
        return _clean(self.full_name) or " ".join(p for p in (self.first, self.last) if p) or None

    def fields(self) -> dict[str, str | None]:
        """The template fields; None where there is nothing to fill in."""
        return {
            "first_name": self.first or NAME_FALLBACK,
            # No fallback: "Hi Ana ," would be worse than not sending.
            "last_name": self.last,
            "name": self.display_name or NAME_FALLBACK,
        }


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def render_message(text: str | None, names: Names) -> str:
    """The text to send. Raises PolicyInputError with reason `empty_message` (nothing to
    send) or `unrenderable_template` (a placeholder we cannot fill, or a stray brace)."""
    if text is None or not text.strip():
        raise PolicyInputError("empty_message", "the message has no text")
    values = names.fields()

    def fill(match: re.Match[str]) -> str:
        field = match.group(1).strip()
        value = values.get(field)
        if value is None:
            raise PolicyInputError("unrenderable_template", f"cannot fill {{{field}}}")
        return value

    rendered = _PLACEHOLDER.sub(fill, text)
    if "{" in rendered or "}" in rendered:
        raise PolicyInputError("unrenderable_template", "unbalanced brace in the message")
    return rendered


# Parsing is most of the queue-time verdict's CPU (~0.1 ms a number) and a contractor's
# messages share one phone: the last 4,096 numbers (~0.7 MB) are kept per execution environment.
@functools.lru_cache(maxsize=4096)
def e164(raw: str | None, region: str) -> str | None:
    """A stored phone ("(312) 555-0142", "312.555.0142", "+1 312 555 0142") as E.164, read
    in `region` when it has no country code. None when it is not a valid number."""
    if raw is None or not raw.strip():
        return None
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def is_region(code: str) -> bool:
    return code.upper() in phonenumbers.SUPPORTED_REGIONS
