"""Twilio's request signature (the X-Twilio-Signature header), as Twilio documents it and
its own library (twilio.request_validator.RequestValidator) computes it:

    base64(HMAC-SHA1(auth token, URL + name1 + value1 + name2 + value2 ...))

over the full URL Twilio requested (scheme, host, path, query exactly as called) followed
by every POST parameter sorted by name (a repeated name: its distinct values, sorted).

Twilio does not always sign the URL the same way with respect to the port, so, as its
library does, a signature is accepted when it matches the URL without a port or with the
scheme's default one. Both candidates are always computed and compared in constant time.
No I/O: the caller passes the auth token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit, urlunsplit

FormParams = Mapping[str, Sequence[str]]


def compute_signature(url: str, params: FormParams, auth_token: str) -> str:
    """The signature Twilio sends for a POST of `params` to `url`."""
    signed = url + "".join(name + value for name in sorted(params) for value in sorted(set(params[name])))
    digest = hmac.new(auth_token.encode("utf-8"), signed.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def url_variants(url: str) -> tuple[str, str]:
    """(the URL without a port, the URL with one): the port as given, else the scheme's
    default (443 for https, 80 otherwise). ValueError for a port that is not a number."""
    parts = urlsplit(url)
    port = parts.port  # ValueError for a malformed port
    if port is None:
        default = 443 if parts.scheme == "https" else 80
        return url, urlunsplit(parts._replace(netloc=f"{parts.netloc}:{default}"))
    without = parts.netloc.rsplit(":", 1)[0]
    return urlunsplit(parts._replace(netloc=without)), url


def is_valid_signature(url: str, params: FormParams, signature: str, auth_token: str) -> bool:
    """Whether `signature` is Twilio's for this request, for the URL with or without its port."""
    try:
        candidates = url_variants(url)
    except ValueError:
        return False
    given = signature.encode("utf-8")
    valid = False
    for candidate in candidates:
        # Both are compared, whatever the first gave: the time taken says nothing.
        valid |= hmac.compare_digest(compute_signature(candidate, params, auth_token).encode("ascii"), given)
    return valid
