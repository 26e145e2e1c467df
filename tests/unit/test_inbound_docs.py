"""The n8n signing snippet docs/inbound.md gives, run with node: the edge accepts what it
signs, and refuses it when the body or the secret is not the one signed with."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from proactive_delivery_tools.fakes import InMemoryInboundQueue
from tests.support.inbound import (
    EVENTS_SECRET,
    OTHER_SECRET,
    events_body,
    function_url_event,
    inbound_env,
    inbound_handler,
    invoke,
    services_for,
)

ROOT = Path(__file__).resolve().parents[2]

# The snippet in docs/inbound.md, verbatim (keep the two in step).
SIGN_SNIPPET = r"""
const crypto = require('crypto');
function signInbound(body, secret, id) {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  const ts = Math.floor(Date.now() / 1000).toString();
  const mac = crypto.createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest('base64');
  return {'webhook-id': id, 'webhook-timestamp': ts, 'webhook-signature': `v1,${mac}`};
}
"""
DRIVER = r"""
const fs = require('fs');
const req = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
console.log(JSON.stringify(signInbound(req.body, req.secret, req.id)));
"""


def test_the_docs_give_the_snippet_that_is_tested() -> None:
    docs = (ROOT / "docs" / "inbound.md").read_text(encoding="utf-8")
    assert SIGN_SNIPPET.strip() in docs


def node_signs(tmp_path: Path, body: str, secret: str, msg_id: str) -> dict[str, str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the docs' signing snippet is not exercised")
    script = tmp_path / "sign.js"
    script.write_text(SIGN_SNIPPET + DRIVER, encoding="utf-8")
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"body": body, "secret": secret, "id": msg_id}), encoding="utf-8")
    proc = subprocess.run(
        [node, str(script), str(request)], capture_output=True, text=True, timeout=30, check=True
    )
    headers: dict[str, str] = json.loads(proc.stdout)
    return headers


@pytest.mark.parametrize(
    ("signed_with", "sent", "status"),
    [
        (EVENTS_SECRET, "as signed", 202),
        (EVENTS_SECRET, "changed", 401),
        (OTHER_SECRET, "as signed", 401),
    ],
)
def test_what_the_snippet_signs_is_what_the_edge_accepts(
    tmp_path: Path, signed_with: str, sent: str, status: int
) -> None:
    # GIVEN a GHL inbound SMS signed by the docs' snippet in node
    body = events_body(message_content="Yes \N{THUMBS UP SIGN} Thursday")
    headers = node_signs(tmp_path, body, signed_with, "ghl-msg-mG7hR2pZ")
    if sent == "changed":
        body = events_body(message_content="Yes \N{THUMBS UP SIGN} Friday")
    event: dict[str, Any] = function_url_event(
        "/events", body, headers={"content-type": "application/json", **headers}
    )
    queue = InMemoryInboundQueue()
    # WHEN the edge receives it
    result, _ = invoke(inbound_handler(services_for(inbound_env(), queue)), event)
    # THEN it is stored only when the body and the key are the ones signed with
    assert result["statusCode"] == status
    assert [e.id for e in queue.events] == (["events:ghl-msg-mG7hR2pZ"] if status == 202 else [])
