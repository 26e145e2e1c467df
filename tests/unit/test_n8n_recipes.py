"""The n8n recipes in docs/n8n: each file imports (valid JSON, wiring that names existing nodes
and outputs), listens where the senders post, answers every request (n8n 1.x answers a failed
execution with an empty 200, which the sender would take for a delivery), and, with node
installed, gives the answers docs/n8n/README.md promises: each workflow's own JavaScript and
expressions run in tests/unit/n8n_workflow_runner.js, and what they sign is verified with the
`standardwebhooks` library, as our /events edge verifies it."""

from __future__ import annotations

import base64
import copy
import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook

RECIPES = Path(__file__).resolve().parents[2] / "docs" / "n8n"
RUNNER = Path(__file__).with_name("n8n_workflow_runner.js")
NODE = shutil.which("node")
needs_node = pytest.mark.skipif(
    NODE is None, reason="node is not installed: the workflows' JavaScript and expressions cannot run"
)

BACKEND = "backend-to-ghl.json"
INBOUND = "ghl-inbound-to-backend.json"
DND = "ghl-contact-dnd.json"
FILES = (BACKEND, INBOUND, DND)

OUTBOUND_SECRET = "whsec_" + base64.b64encode(bytes(range(7, 39))).decode()  # random bytes, as deliver's
# The inbound secret's decoded key is printable ASCII: the Crypto node takes its key as text.
INBOUND_SECRET = "whsec_" + base64.b64encode(b"unitTestInboundKeyPrintableAscii0123456789A").decode()
ENV = {
    "GHL_API_BASE": "http://127.0.0.1:9/ghl/",
    "GHL_LOCATION_ID": "loc-1",
    "GHL_API_TOKEN": "pit-token",
    "PROACTIVE_WEBHOOK_SIGNING_SECRET": OUTBOUND_SECRET,
    "PROACTIVE_INBOUND_SIGNING_SECRET": INBOUND_SECRET,
    "PROACTIVE_EVENTS_URL": "http://127.0.0.1:9/events",
    "PLATFORM_INBOUND_URL": "http://127.0.0.1:9/api/sms/inbound",
    "PLATFORM_API_KEY": "platform-key",
}
HISTORY_FULL = "maximum history size"

Workflow = dict[str, Any]


def load(name: str) -> Workflow:
    data: Workflow = json.loads((RECIPES / name).read_text(encoding="utf-8"))
    return data


def nodes(wf: Workflow) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in wf["nodes"]}


def outputs_of(node: dict[str, Any]) -> int:
    """How many outputs n8n 1.123 gives the node (an error output is added last)."""
    # Remove Duplicates too has one output ("Kept"), whatever its outputNames say.
    switch = node["type"] == "n8n-nodes-base.switch"
    count = int(node["parameters"]["numberOutputs"]) if switch else 1
    return count + (1 if node.get("onError") == "continueErrorOutput" else 0)


def targets(wf: Workflow, name: str, output: int) -> list[str]:
    outs = wf["connections"].get(name, {}).get("main", [])
    return [t["node"] for t in outs[output]] if output < len(outs) else []


def reachable(wf: Workflow, start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for outs in wf["connections"].get(todo.pop(), {}).get("main", []):
            for t in outs or []:
                if t["node"] not in seen:
                    seen.add(t["node"])
                    todo.append(t["node"])
    return seen


# ---------------------------------------------------------------- the files, without n8n


@pytest.mark.parametrize("name", FILES)
def test_each_file_is_an_importable_workflow(name: str) -> None:
    # GIVEN a recipe file WHEN it is read as JSON
    wf = load(name)
    # THEN it has what n8n's import needs, with unique node names and ids
    assert set(wf) >= {"id", "name", "nodes", "connections", "settings"}
    assert len(wf["id"]) == 16 and wf["id"].isalnum()
    assert wf["active"] is False and wf["settings"]["executionOrder"] == "v1"
    names = [n["name"] for n in wf["nodes"]]
    assert len(names) == len(set(names))
    assert len({n["id"] for n in wf["nodes"]}) == len(names)
    for node in wf["nodes"]:
        assert node["type"].startswith("n8n-nodes-base.") and isinstance(node["typeVersion"], int | float)


@pytest.mark.parametrize("name", FILES)
def test_connections_name_existing_nodes_and_outputs(name: str) -> None:
    # GIVEN a recipe's wiring
    wf = load(name)
    by_name = nodes(wf)
    for source, kinds in wf["connections"].items():
        # THEN every connection leaves an existing node by an output it has, into input 0 of an
        # existing node (a Remove Duplicates node has no second output to hang anything on)
        assert source in by_name, source
        assert set(kinds) == {"main"}
        assert len(kinds["main"]) <= outputs_of(by_name[source]), source
        for outs in kinds["main"]:
            for t in outs or []:
                assert t["node"] in by_name and t["type"] == "main" and t["index"] == 0, (source, t)
    # AND every node is reachable from the workflow's Webhook node
    webhook = next(n["name"] for n in wf["nodes"] if n["type"] == "n8n-nodes-base.webhook")
    assert reachable(wf, webhook) == set(by_name)


@pytest.mark.parametrize(
    ("name", "path", "mode"),
    [
        (BACKEND, "backend-to-ghl", "responseNode"),
        (INBOUND, "ghl-inbound", "onReceived"),
        (DND, "ghl-contact-dnd", "onReceived"),
    ],
)
def test_webhook_listens_where_the_senders_post(name: str, path: str, mode: str) -> None:
    # GIVEN a recipe WHEN its Webhook node is read
    (webhook,) = [n for n in load(name)["nodes"] if n["type"] == "n8n-nodes-base.webhook"]
    # THEN it takes POSTs on the path the sender uses, answering as documented
    assert webhook["parameters"]["httpMethod"] == "POST"
    assert webhook["parameters"]["path"] == path
    assert webhook["parameters"]["responseMode"] == mode
    assert webhook["webhookId"]


def test_backend_to_ghl_keeps_the_raw_body_for_the_signature() -> None:
    # GIVEN backend-to-ghl's Webhook node THEN the raw body is kept (the signature covers its bytes)
    (webhook,) = [n for n in load(BACKEND)["nodes"] if n["type"] == "n8n-nodes-base.webhook"]
    assert webhook["parameters"]["options"]["rawBody"] is True


def test_a_signed_request_meets_remove_duplicates_on_its_webhook_id() -> None:
    # GIVEN backend-to-ghl
    wf = load(BACKEND)
    by_name = nodes(wf)
    # WHEN a checked request with a webhook-id leaves "Route request" (output 1)
    (first,) = targets(wf, "Route request", 1)
    node = by_name[first]
    # THEN its first stop is n8n's Remove Duplicates, keyed on the webhook-id header
    assert node["type"] == "n8n-nodes-base.removeDuplicates"
    params = node["parameters"]
    assert params["operation"] == "removeItemsSeenInPreviousExecutions"
    assert params["logic"] == "removeItemsWithAlreadySeenKeyValues"
    assert params["dedupeValue"] == '={{ $json.headers["webhook-id"] }}'
    # AND every Remove Duplicates node shares one workflow-wide history of one size
    dedupes = [n for n in wf["nodes"] if n["type"] == "n8n-nodes-base.removeDuplicates"]
    assert {n["parameters"]["options"]["scope"] for n in dedupes} == {"workflow"}
    checks = [n for n in dedupes if n["parameters"]["operation"] == "removeItemsSeenInPreviousExecutions"]
    assert len({n["parameters"]["options"]["historySize"] for n in checks}) == 1
    # AND the request reaches it only after "Check request" (which verifies the signature)
    assert targets(wf, "Webhook", 0) == ["Check request"]


def test_every_way_through_backend_to_ghl_ends_in_an_answer() -> None:
    # GIVEN backend-to-ghl (n8n 1.123 answers a failed execution with an empty 200)
    wf = load(BACKEND)
    by_name = nodes(wf)
    side_branch = {"Remember refusal", "Clear full dedupe history (refusal)"}
    for name, node in by_name.items():
        kind = node["type"].removeprefix("n8n-nodes-base.")
        if kind == "respondToWebhook":
            continue
        # THEN every node that can fail has its error output wired (to an answer)
        if kind in ("code", "httpRequest") or (
            kind == "removeDuplicates" and node["parameters"]["operation"] != "clearDeduplicationHistory"
        ):
            assert node.get("onError") == "continueErrorOutput", name
            assert targets(wf, name, outputs_of(node) - 1), name
        # AND no node but an answer or the refusal's side branch ends a path
        if name not in side_branch:
            connected = [i for i in range(outputs_of(node)) if targets(wf, name, i)]
            assert connected, name
        # AND a switch leaves unconnected only the output of a failed Remove Duplicates node,
        # whose error output answers instead
        if kind == "switch":
            for i in range(outputs_of(node)):
                if not targets(wf, name, i):
                    assert ".all(1).length" in node["parameters"]["output"], (name, i)
    # AND each answer sets its status code (a literal or from the item)
    for node in by_name.values():
        if node["type"] == "n8n-nodes-base.respondToWebhook":
            code = node["parameters"]["options"]["responseCode"]
            assert isinstance(code, int) or code == "={{ $json.status }}", node["name"]


# ---------------------------------------------------------------- running the workflows


def run(
    wf: Workflow, requests: list[dict[str, Any]], env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    assert NODE is not None
    payload = json.dumps({"workflow": wf, "env": ENV if env is None else env, "requests": requests})
    done = subprocess.run(
        [NODE, str(RUNNER)], input=payload, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def deliver_request(
    message_id: str = "proactive-123",
    *,
    phone: str = "+13125550142",
    secret: str = OUTBOUND_SECRET,
    at: datetime | None = None,
    stubs: dict[str, list[dict[str, Any]]] | None = None,
    signed: bool = True,
) -> dict[str, Any]:
    """What the deliver function POSTs, signed with the standardwebhooks library."""
    body = json.dumps(
        {
            "send_via_ghl": {
                "phone": phone,
                "message": "Hi Ana, how did this week's bids go? \N{WAVING HAND SIGN}",
                "from_name": "Power100 Concierge",
                "timestamp": "2026-12-01T21:00:00.000Z",
            },
            "metadata": {
                "contractor_id": 456,
                "message_type": "check_in",
                "message_id": 123,
                "source": "proactive",
                "idempotency_key": message_id,
            },
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )
    headers = {"content-type": "application/json"}
    if signed:
        now = (at or datetime.now(UTC)).replace(microsecond=0)
        headers |= {
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign(message_id, now, body),
        }
    return {"headers": headers, "raw": body, "stubs": copy.deepcopy(stubs or GHL_OK)}


CONTACT = {"statusCode": 201, "body": {"new": True, "contact": {"id": "c-1"}, "traceId": "t"}}
SENT = {"statusCode": 200, "body": {"conversationId": "conv-1", "messageId": "msg-1", "msg": "queued"}}
GHL_OK: dict[str, list[dict[str, Any]]] = {"Upsert contact": [CONTACT], "Send SMS": [SENT]}


def ghl_sends(result: dict[str, Any]) -> int:
    return sum(1 for c in result["calls"] if c["node"] == "Send SMS")


@needs_node
def test_a_sent_message_answers_with_ghls_ids() -> None:
    # GIVEN a signed request from deliver and a GHL that finds the contact and sends
    # WHEN backend-to-ghl runs it
    (result,) = run(load(BACKEND), [deliver_request()])
    # THEN it answers 200 with GHL's message id, also as x-request-id (deliver's provider reference)
    assert result["failed"] is None
    assert result["response"]["status"] == 200
    assert result["response"]["body"] == {"messageId": "msg-1", "conversationId": "conv-1"}
    assert result["response"]["headers"]["x-request-id"] == "msg-1"
    # AND it called GHL's API v2 as documented: upsert the contact by phone, then send an SMS to it
    upsert, send = result["calls"]
    assert upsert["url"] == "http://127.0.0.1:9/ghl/contacts/upsert"
    assert upsert["headers"] == {
        "Authorization": "Bearer pit-token",
        "Version": "2021-07-28",
        "Accept": "application/json",
    }
    assert json.loads(upsert["body"]) == {"locationId": "loc-1", "phone": "+13125550142"}
    assert send["url"] == "http://127.0.0.1:9/ghl/conversations/messages"
    assert (
        send["headers"]["Version"] == "2021-04-15" and send["headers"]["Authorization"] == "Bearer pit-token"
    )
    assert json.loads(send["body"]) == {
        "type": "SMS",
        "contactId": "c-1",
        "message": "Hi Ana, how did this week's bids go? \N{WAVING HAND SIGN}",
    }


def test_ghl_base_url_defaults_to_ghls_api() -> None:
    # GIVEN the GHL calls' URLs THEN without GHL_API_BASE they go to GHL's API v2 base
    by_name = nodes(load(BACKEND))
    for name, path in (("Upsert contact", "/contacts/upsert"), ("Send SMS", "/conversations/messages")):
        url = by_name[name]["parameters"]["url"]
        assert "$env.GHL_API_BASE || 'https://services.leadconnectorhq.com'" in url and url.endswith(path)


@needs_node
@pytest.mark.parametrize(
    ("case", "stubs", "status", "retry_after", "error"),
    [
        (
            "GHL 429 on send, Retry-After",
            {"Send SMS": [{"statusCode": 429, "headers": {"retry-after": "7"}}]},
            429,
            "7",
            "ghl_rate_limited",
        ),
        (
            "GHL 429 on send, burst interval only",
            {"Send SMS": [{"statusCode": 429, "headers": {"x-ratelimit-interval-milliseconds": "10000"}}]},
            429,
            "10",
            "ghl_rate_limited",
        ),
        (
            "GHL 429 on upsert, no headers",
            {"Upsert contact": [{"statusCode": 429}]},
            429,
            "10",
            "ghl_rate_limited",
        ),
        (
            "GHL 400 on send",
            {"Send SMS": [{"statusCode": 400, "body": {"message": "Bad Request"}}]},
            400,
            None,
            "ghl_rejected",
        ),
        ("GHL 404 on send", {"Send SMS": [{"statusCode": 404}]}, 404, None, "ghl_rejected"),
        (
            "GHL 422 on upsert",
            {"Upsert contact": [{"statusCode": 422, "body": {"message": ["phone"]}}]},
            422,
            None,
            "ghl_rejected",
        ),
        ("GHL 401: n8n's token", {"Upsert contact": [{"statusCode": 401}]}, 502, None, "ghl_auth"),
        ("GHL 403: n8n's token", {"Send SMS": [{"statusCode": 403}]}, 502, None, "ghl_auth"),
        ("GHL 500", {"Send SMS": [{"statusCode": 500}]}, 502, None, "ghl_unavailable"),
        ("GHL 503 on upsert", {"Upsert contact": [{"statusCode": 503}]}, 502, None, "ghl_unavailable"),
        (
            "GHL unreachable on upsert",
            {"Upsert contact": [{"error": "connect ECONNREFUSED"}]},
            502,
            None,
            "ghl_unreachable",
        ),
        (
            "no answer to send",
            {"Send SMS": [{"error": "timeout of 4000ms exceeded"}]},
            502,
            None,
            "ghl_unreachable",
        ),
        (
            "upsert 2xx without a contact",
            {"Upsert contact": [{"statusCode": 200, "body": {}}]},
            502,
            None,
            "ghl_unexpected_answer",
        ),
    ],
)
def test_a_ghl_refusal_becomes_a_status_the_sender_sees(
    case: str, stubs: dict[str, list[dict[str, Any]]], status: int, retry_after: str | None, error: str
) -> None:
    # GIVEN GHL refusing (or not answering) at one step
    plan = copy.deepcopy(GHL_OK) | stubs
    # WHEN backend-to-ghl runs deliver's request
    (result,) = run(load(BACKEND), [deliver_request(stubs=plan)])
    # THEN the answer carries the status deliver's retries act on, never a 2xx
    response = result["response"]
    assert result["failed"] is None, case
    assert (response["status"], response["body"]["error"]) == (status, error), case
    assert response["headers"].get("retry-after") == retry_after, case
    # AND nothing is sent when the contact step failed
    if "Upsert contact" in stubs:
        assert ghl_sends(result) == 0


@needs_node
def test_a_retried_request_is_dropped_and_still_answered() -> None:
    # GIVEN a message sent, then its request arriving twice more with the same webhook-id
    first, second, third = run(load(BACKEND), [deliver_request(), deliver_request(), deliver_request()])
    # THEN GHL sends it once; the repeats answer 2xx and say they were duplicates
    assert [ghl_sends(r) for r in (first, second, third)] == [1, 0, 0]
    assert first["response"]["body"]["messageId"] == "msg-1"
    for repeat in (second, third):
        assert repeat["response"]["status"] == 200
        assert repeat["response"]["body"] == {"duplicate": True, "webhookId": "proactive-123"}


@needs_node
def test_a_retry_after_a_refusal_is_sent() -> None:
    # GIVEN GHL refusing the first attempt (429) and the second (503), then sending
    refused = {
        "Upsert contact": [CONTACT],
        "Send SMS": [{"statusCode": 429, "headers": {"retry-after": "3"}}],
    }
    down = {"Upsert contact": [CONTACT], "Send SMS": [{"statusCode": 503}]}
    results = run(
        load(BACKEND),
        [
            deliver_request(stubs=refused),
            deliver_request(stubs=down),
            deliver_request(),
            deliver_request(),
            deliver_request(),
        ],
    )
    # THEN each retry after a refusal goes to GHL again; once sent, the repeats are duplicates
    assert [r["response"]["status"] for r in results] == [429, 502, 200, 200, 200]
    assert [ghl_sends(r) for r in results] == [1, 1, 1, 0, 0]
    assert results[2]["response"]["body"]["messageId"] == "msg-1"
    assert (
        results[3]["response"]["body"]["duplicate"] is True
        and results[4]["response"]["body"]["duplicate"] is True
    )


@needs_node
def test_a_request_that_may_have_been_sent_is_not_sent_again() -> None:
    # GIVEN GHL's contact step unreachable (nothing sent), then the send step unanswered (maybe sent)
    results = run(
        load(BACKEND),
        [
            deliver_request("proactive-1", stubs={"Upsert contact": [{"error": "socket hang up"}]}),
            deliver_request("proactive-1"),
            deliver_request(
                "proactive-2", stubs={"Upsert contact": [CONTACT], "Send SMS": [{"error": "socket hang up"}]}
            ),
            deliver_request("proactive-2"),
        ],
    )
    # THEN the retry of the first is sent, the retry of the second answers duplicate
    assert [r["response"]["status"] for r in results] == [502, 200, 502, 200]
    assert results[1]["response"]["body"]["messageId"] == "msg-1"
    assert results[3]["response"]["body"] == {"duplicate": True, "webhookId": "proactive-2"}
    assert ghl_sends(results[3]) == 0


@needs_node
def test_a_full_dedupe_history_is_cleared_and_answered_500() -> None:
    # GIVEN backend-to-ghl with a history of 3 ids (10,000 in the file)
    wf = load(BACKEND)
    for node in wf["nodes"]:
        if (
            node["type"] == "n8n-nodes-base.removeDuplicates"
            and "historySize" in node["parameters"]["options"]
        ):
            node["parameters"]["options"]["historySize"] = 3
    # WHEN five messages arrive, and the fifth is retried
    ids = [f"proactive-{n}" for n in range(1, 6)]
    results = run(wf, [deliver_request(i) for i in ids] + [deliver_request("proactive-5")])
    statuses = [r["response"]["status"] for r in results]
    # THEN the one that found the history full answers 500 (the sender retries) instead of n8n's
    # empty 200, the history is cleared, and the retry is sent
    assert statuses == [200, 200, 200, 500, 200, 200]
    assert results[3]["response"]["body"]["error"] == "n8n_failure"
    assert HISTORY_FULL in results[3]["response"]["body"]["detail"]
    assert "Clear full dedupe history" in results[3]["ran"]
    assert ghl_sends(results[3]) == 0 and ghl_sends(results[5]) == 0


@needs_node
@pytest.mark.parametrize(
    ("case", "make", "status", "error"),
    [
        (
            "body altered",
            lambda: {**deliver_request(), "raw": deliver_request()["raw"].replace("Ana", "Eve")},
            401,
            "bad webhook-signature",
        ),
        (
            "another secret",
            lambda: deliver_request(secret="whsec_" + base64.b64encode(b"x" * 32).decode()),
            401,
            "bad webhook-signature",
        ),
        (
            "timestamp 10 minutes old",
            lambda: deliver_request(at=datetime.now(UTC) - timedelta(minutes=10)),
            401,
            "missing or stale webhook-timestamp",
        ),
        (
            "no phone",
            lambda: deliver_request(phone=""),
            400,
            "send_via_ghl.phone and send_via_ghl.message are required",
        ),
    ],
)
def test_a_bad_request_is_refused_before_it_burns_an_id(
    case: str, make: Any, status: int, error: str
) -> None:
    # GIVEN a forged, stale or incomplete request for proactive-123, then the genuine one
    bad, genuine = run(load(BACKEND), [make(), deliver_request()])
    # THEN the bad one is refused without reaching GHL, and the genuine one is still sent
    assert (bad["response"]["status"], bad["response"]["body"]["error"]) == (status, error), case
    assert bad["calls"] == []
    assert genuine["response"]["body"]["messageId"] == "msg-1"


@needs_node
def test_requests_without_webhook_id_pass_as_before() -> None:
    # GIVEN one of the platform's own senders (no webhook-id, unsigned) posting twice
    env_without_check = {k: v for k, v in ENV.items() if k != "PROACTIVE_WEBHOOK_SIGNING_SECRET"}
    for env in (ENV, env_without_check):
        results = run(load(BACKEND), [deliver_request(signed=False), deliver_request(signed=False)], env)
        # THEN both are sent (nothing to de-duplicate on) and answered with GHL's ids
        assert [ghl_sends(r) for r in results] == [1, 1]
        assert all(r["response"]["body"]["messageId"] == "msg-1" for r in results)
    # AND without the secret a signed request is not checked: a wrong signature still sends
    (unchecked,) = run(
        load(BACKEND),
        [deliver_request(secret="whsec_" + base64.b64encode(b"y" * 32).decode())],
        env_without_check,
    )
    assert unchecked["response"]["status"] == 200


# ---------------------------------------------------------------- inbound events


def verified(call: dict[str, Any]) -> dict[str, Any]:
    """What our /events edge does with the request: standardwebhooks verification."""
    headers = {k.lower(): str(v) for k, v in call["headers"].items()}
    payload: dict[str, Any] = Webhook(INBOUND_SECRET).verify(call["body"], headers)
    return payload


def events_calls(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in result["calls"] if c["node"] == "POST /events"]


INBOUND_MESSAGE = {
    "type": "InboundMessage",
    "locationId": "loc-1",
    "contactId": "c-1",
    "conversationId": "conv-1",
    "messageId": "m-1",
    "body": "Yes, the bids went well \N{WAVING HAND SIGN}",
    "messageType": "SMS",
    "direction": "inbound",
    "dateAdded": "2026-12-01T21:00:00.000Z",
    "from": "+13125550142",
}
WORKFLOW_PAYLOAD = {  # GHL's workflow webhook, as the platform's "GHL Inbound to Backend" receives it
    "contact_id": "c-2",
    "phone": "+13125550143",
    "location": {"id": "loc-1"},
    "message": {"type": 2, "body": "STOP"},
    "workflow": {"name": "SMS Replies Sent To n8n-1"},
    "customData": {"Direction": "Inbound"},
}
OK = {
    "Forward to platform": [{"statusCode": 200, "body": {"success": True}}],
    "POST /events": [{"statusCode": 202, "body": {"accepted": True}}],
}


def ghl_request(
    payload: dict[str, Any], execution_id: str = "41", stubs: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "headers": {"content-type": "application/json"},
        "raw": json.dumps(payload),
        "executionId": execution_id,
        "stubs": copy.deepcopy(stubs or OK),
    }


@needs_node
def test_an_inbound_sms_reaches_the_platform_and_events_signed() -> None:
    # GIVEN GHL's InboundMessage, delivered twice (GHL retries the same message)
    results = run(load(INBOUND), [ghl_request(INBOUND_MESSAGE, "41"), ghl_request(INBOUND_MESSAGE, "42")])
    for result in results:
        assert result["failed"] is None and result["response"]["status"] == 200
        # THEN the platform gets its usual body, with its key
        (platform,) = [c for c in result["calls"] if c["node"] == "Forward to platform"]
        assert platform["url"] == "http://127.0.0.1:9/api/sms/inbound"
        assert platform["headers"] == {"x-api-key": "platform-key"}
        assert json.loads(platform["body"]) == {
            "phone": "+13125550142",
            "message_content": "Yes, the bids went well \N{WAVING HAND SIGN}",
            "ghl_contact_id": "c-1",
            "ghl_location_id": "loc-1",
            "ghl_conversation_id": "conv-1",
            "ghl_message_id": "m-1",
            "timestamp": "2026-12-01T21:00:00.000Z",
            "direction": "inbound",
            "raw_webhook_data": INBOUND_MESSAGE,
        }
        # AND /events gets sms.received, whose signature standardwebhooks accepts
        (events,) = events_calls(result)
        assert events["url"] == "http://127.0.0.1:9/events"
        assert verified(events) == {
            "type": "sms.received",
            "data": {
                "phone": "+13125550142",
                "message_content": "Yes, the bids went well \N{WAVING HAND SIGN}",
                "ghl_contact_id": "c-1",
                "ghl_location_id": "loc-1",
                "ghl_conversation_id": "conv-1",
                "ghl_message_id": "m-1",
                "timestamp": "2026-12-01T21:00:00.000Z",
            },
        }
    # AND both deliveries carry one webhook-id, so our edge keeps one event
    assert {events_calls(r)[0]["headers"]["webhook-id"] for r in results} == {"ghl-sms-m-1"}


@needs_node
def test_an_inbound_sms_without_a_ghl_message_id_is_named_by_its_execution() -> None:
    # GIVEN GHL's workflow webhook payload (no message id), a STOP
    (result,) = run(load(INBOUND), [ghl_request(WORKFLOW_PAYLOAD, "77")])
    # THEN it is forwarded, signed, under this execution's id
    (events,) = events_calls(result)
    assert events["headers"]["webhook-id"] == "ghl-sms-n8n-77"
    data = verified(events)["data"]
    assert (data["phone"], data["message_content"], data["ghl_contact_id"], data["ghl_message_id"]) == (
        "+13125550143",
        "STOP",
        "c-2",
        None,
    )


@needs_node
@pytest.mark.parametrize(
    ("case", "payload"),
    [
        ("an e-mail", INBOUND_MESSAGE | {"messageType": "Email"}),
        ("an outbound message", INBOUND_MESSAGE | {"direction": "outbound"}),
        ("no text", INBOUND_MESSAGE | {"body": ""}),
    ],
)
def test_what_is_not_an_inbound_sms_goes_to_the_platform_only(case: str, payload: dict[str, Any]) -> None:
    # GIVEN a GHL payload that is not an inbound SMS WHEN the inbound workflow runs it
    (result,) = run(load(INBOUND), [ghl_request(payload)])
    # THEN the platform still gets it and /events does not
    assert result["failed"] is None, case
    assert [c["node"] for c in result["calls"]] == ["Forward to platform"], case


@needs_node
@pytest.mark.parametrize(
    ("case", "secret", "reason"),
    [
        ("random bytes", "whsec_" + base64.b64encode(bytes(range(200, 232))).decode(), "not printable ASCII"),
        ("not whsec_", "supersecret", "not set to whsec_<base64>"),
        ("unset", None, "not set to whsec_<base64>"),
    ],
)
def test_an_unusable_signing_secret_stops_before_events(case: str, secret: str | None, reason: str) -> None:
    # GIVEN an inbound signing secret the Crypto node cannot use
    env = {k: v for k, v in ENV.items() if k != "PROACTIVE_INBOUND_SIGNING_SECRET"}
    if secret is not None:
        env["PROACTIVE_INBOUND_SIGNING_SECRET"] = secret
    (result,) = run(load(INBOUND), [ghl_request(INBOUND_MESSAGE)], env)
    # THEN the platform still gets the message, nothing goes to /events, the execution fails
    assert [c["node"] for c in result["calls"]] == ["Forward to platform"], case
    assert result["failed"] is not None and reason in result["failed"], case


@needs_node
def test_a_failed_forward_fails_the_execution_after_both_ran() -> None:
    # GIVEN /events unreachable (after n8n's own retries)
    stubs = {
        "Forward to platform": OK["Forward to platform"],
        "POST /events": [{"error": "connect ECONNREFUSED"}],
    }
    (result,) = run(load(INBOUND), [ghl_request(INBOUND_MESSAGE, stubs=stubs)])
    # THEN the platform got it, and the execution is marked failed (visible, retryable in n8n)
    assert [c["node"] for c in result["calls"]] == ["Forward to platform", "POST /events"]
    assert (
        result["failed"] is not None and "/events" in result["failed"] and "ECONNREFUSED" in result["failed"]
    )
    # AND the POST /events node retries before giving up
    node = nodes(load(INBOUND))["POST /events"]
    assert node["retryOnFail"] is True and node["maxTries"] >= 3


def test_the_crypto_node_signs_as_standard_webhooks_do() -> None:
    # GIVEN the Crypto nodes of the inbound and DND workflows
    for name in (INBOUND, DND):
        (crypto,) = [n for n in load(name)["nodes"] if n["type"] == "n8n-nodes-base.crypto"]
        p = crypto["parameters"]
        # THEN each is an HMAC-SHA256, base64, keyed with the decoded part of the whsec_ secret
        assert (p["action"], p["type"], p["encoding"]) == ("hmac", "SHA256", "base64")
        assert (
            p["secret"]
            == "={{ $env.PROACTIVE_INBOUND_SIGNING_SECRET.replace(/^whsec_/, '').base64Decode() }}"
        )
        headers = {
            h["name"]: h["value"]
            for h in nodes(load(name))["POST /events"]["parameters"]["headerParameters"]["parameters"]
        }
        assert headers["webhook-signature"] == "=v1,{{ $json.signature }}"


# ---------------------------------------------------------------- DND


DND_EVENT = {
    "type": "ContactDndUpdate",
    "locationId": "loc-1",
    "id": "c-1",
    "phone": "+13125550142",
    "dnd": False,
    "dndSettings": {"SMS": {"status": "active", "message": "", "code": ""}, "Email": {"status": "inactive"}},
    "webhookId": "wh-1",
}


@needs_node
@pytest.mark.parametrize(
    ("case", "changes", "sms", "webhook_id"),
    [
        ("SMS active", {}, "active", "ghl-dnd-wh-1"),
        ("SMS inactive", {"dndSettings": {"SMS": {"status": "inactive"}}}, "inactive", "ghl-dnd-wh-1"),
        (
            "SMS permanent, no webhookId",
            {"dndSettings": {"SMS": {"status": "permanent"}}, "webhookId": None},
            "permanent",
            "ghl-dnd-n8n-41",
        ),
        (
            "every channel (dnd true), no SMS status",
            {"dnd": True, "dndSettings": {}},
            "active",
            "ghl-dnd-wh-1",
        ),
        ("dnd false, no SMS status", {"dndSettings": {}}, None, None),
        ("another event", {"type": "ContactTagUpdate"}, None, None),
        ("no phone", {"phone": ""}, None, None),
    ],
)
def test_a_dnd_change_becomes_contact_dnd(
    case: str, changes: dict[str, Any], sms: str | None, webhook_id: str | None
) -> None:
    # GIVEN GHL's ContactDndUpdate (or something else) WHEN the DND workflow runs it
    payload = {k: v for k, v in (DND_EVENT | changes).items() if v is not None}
    (result,) = run(load(DND), [ghl_request(payload, stubs={"POST /events": OK["POST /events"]})])
    assert result["failed"] is None, case
    calls = events_calls(result)
    if sms is None:
        # THEN nothing that says nothing about SMS is forwarded
        assert calls == [], case
        return
    # THEN /events gets contact.dnd, signed so that standardwebhooks accepts it, under a stable id
    (call,) = calls
    assert verified(call) == {"type": "contact.dnd", "data": {"phone": "+13125550142", "sms": sms}}, case
    assert call["headers"]["webhook-id"] == webhook_id, case
