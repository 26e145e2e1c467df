"""The receiver-side verification that the README documents rejects forged and stale
requests and accepts what the sender signs: the Python function
(proactive_delivery_tools.verify.verify_webhook) directly, and the Node.js snippet with node
when it is installed."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from proactive_delivery.adapters.channels.webhook import sign_headers
from proactive_delivery_tools.verify import WebhookVerificationError, verify_webhook

SECRET = "whsec_" + base64.b64encode(b"receiver-side-verify-secret-32by").decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"an-attacker-guessed-this-secret!").decode()
BODY = json.dumps(
    {"phone": "+13125550142", "message": "Hi Ana \N{WAVING HAND SIGN}", "message_id": "proactive-42"},
    separators=(",", ":"),
    ensure_ascii=False,
)

# The Node.js snippet from the README, verbatim (keep the two in step).
NODE_SNIPPET = r"""
const crypto = require('crypto');
function verify(rawBody, headers, secret) {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const id = headers['webhook-id'], ts = headers['webhook-timestamp'];
  if (Math.abs(Date.now() / 1000 - Number(ts)) > 300) throw new Error('stale timestamp');
  const expected = crypto.createHmac('sha256', key).update(`${id}.${ts}.${rawBody}`).digest('base64');
  const ok = headers['webhook-signature'].split(' ').some(s => {
    const [v, sig] = s.split(',');
    return v === 'v1' && sig.length === expected.length &&
      crypto.timingSafeEqual(Buffer.from(sig), Buffer.from(expected));
  });
  if (!ok) throw new Error('bad signature');
  return JSON.parse(rawBody);   // {send_via_ghl: {phone, message, ...}, metadata: {...}}
}
"""
NODE_DRIVER = r"""
const fs = require('fs');
const req = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
try {
  const payload = verify(req.body, req.headers, req.secret);
  console.log(JSON.stringify({ok: true, message_id: payload.message_id}));
} catch (e) {
  console.log(JSON.stringify({ok: false, error: e.message}));
}
"""


def signed(at: datetime | None = None, secret: str = SECRET, body: str = BODY) -> dict[str, str]:
    """Headers exactly as the deliver function's channel signs them."""
    return sign_headers(Webhook(secret), msg_id="proactive-42", body=body, now=at or datetime.now(UTC))


def test_genuine_request_is_accepted() -> None:
    # GIVEN a request signed the way the deliver function signs it
    headers = signed()
    # WHEN the receiver verifies the raw body
    payload = verify_webhook(BODY.encode("utf-8"), headers, SECRET)
    # THEN the payload comes back parsed
    assert payload["message_id"] == "proactive-42"
    assert payload["message"] == "Hi Ana \N{WAVING HAND SIGN}"


def test_header_names_in_any_case_are_accepted() -> None:
    # GIVEN headers as some frameworks present them (Title-Case)
    headers = {name.title(): value for name, value in signed().items()}
    # WHEN verified THEN the request is still genuine
    assert verify_webhook(BODY, headers, SECRET)["message_id"] == "proactive-42"


# Headers are signed when the test runs, not when it is collected: a suite that takes longer
# than the receiver's five-minute tolerance would otherwise test a stale request instead.
Headers = Callable[[], dict[str, str]]


@pytest.mark.parametrize(
    ("case", "make_headers", "body"),
    [
        ("signed with another secret", lambda: signed(secret=OTHER_SECRET), BODY),
        ("body altered after signing", signed, BODY.replace("Ana", "Eve")),
        ("signature replaced", lambda: {**signed(), "webhook-signature": "v1,AAAA"}, BODY),
        ("id changed (replayed under a new id)", lambda: {**signed(), "webhook-id": "proactive-43"}, BODY),
        (
            "signature header missing",
            lambda: {k: v for k, v in signed().items() if k != "webhook-signature"},
            BODY,
        ),
    ],
)
def test_forged_request_is_rejected(case: str, make_headers: Headers, body: str) -> None:
    # GIVEN a forged or tampered request
    headers = make_headers()
    # WHEN the receiver verifies it THEN verification fails
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body.encode("utf-8"), headers, SECRET)


@pytest.mark.parametrize("offset_minutes", [-10, 10])
def test_stale_or_future_request_is_rejected(offset_minutes: int) -> None:
    # GIVEN a genuinely signed request whose timestamp is 10 minutes off (a replay)
    headers = signed(at=datetime.now(UTC) + timedelta(minutes=offset_minutes))
    # WHEN verified THEN it is refused although the signature matches
    with pytest.raises(WebhookVerificationError, match="timestamp"):
        verify_webhook(BODY.encode("utf-8"), headers, SECRET)


def test_readme_documents_the_node_snippet_that_is_tested() -> None:
    # GIVEN the README WHEN its Node.js verification snippet is compared with the one here
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    # THEN they are the same code (a README edit must update this test, and the other way)
    assert NODE_SNIPPET.strip() in readme


def run_node_snippet(tmp_path: Path, headers: dict[str, str], body: str) -> dict[str, object]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the README's Node.js snippet is not exercised")
    script = tmp_path / "verify.js"
    script.write_text(NODE_SNIPPET + NODE_DRIVER, encoding="utf-8")
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"body": body, "headers": headers, "secret": SECRET}), encoding="utf-8")
    proc = subprocess.run(
        [node, str(script), str(request)], capture_output=True, text=True, timeout=30, check=True
    )
    result = json.loads(proc.stdout)
    assert isinstance(result, dict)
    return result


def test_node_snippet_accepts_a_genuine_request(tmp_path: Path) -> None:
    # GIVEN a request signed by the deliver function's channel
    # WHEN the README's Node.js snippet verifies it
    result = run_node_snippet(tmp_path, signed(), BODY)
    # THEN it is accepted and parsed
    assert result == {"ok": True, "message_id": "proactive-42"}


@pytest.mark.parametrize(
    ("case", "make_headers", "body", "error"),
    [
        ("another secret", lambda: signed(secret=OTHER_SECRET), BODY, "bad signature"),
        ("altered body", signed, BODY.replace("Ana", "Eve"), "bad signature"),
        ("stale", lambda: signed(at=datetime.now(UTC) - timedelta(minutes=10)), BODY, "stale timestamp"),
    ],
)
def test_node_snippet_rejects_forged_and_stale_requests(
    tmp_path: Path, case: str, make_headers: Headers, body: str, error: str
) -> None:
    # GIVEN a forged or stale request WHEN the README's Node.js snippet verifies it
    result = run_node_snippet(tmp_path, make_headers(), body)
    # THEN it is rejected with the snippet's reason
    assert result == {"ok": False, "error": error}, case
