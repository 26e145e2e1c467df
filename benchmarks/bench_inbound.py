"""What one request to the inbound edge costs in-process: the median and p99 time per
request for requests the edge refuses (a flood of forged ones) and for ones it accepts.

    .venv/bin/python benchmarks/bench_inbound.py [--requests 2000]

The handler is the inbound function as Lambda runs it (handlers.InboundFunction: logger
context, tracing, metrics flushed per invocation) on the services bootstrap.build_inbound
makes from its settings, with the secrets given as values (Powertools' cache serves them
in Lambda after the first read) and an InMemoryInboundQueue as the inbound queue: an
accepted request here costs what the edge itself does, without SQS's round trip (a
SendMessage adds the network's 10-30 ms in Lambda). Its log and EMF lines are written (the
formatting cost is paid) to a sink that counts their characters. Requests are signed before
the timed loop, by Twilio's RequestValidator and the standardwebhooks library; every answer
is checked against the status it must have, so a figure never describes a wrong answer.

The last rows price a million requests of each kind with benchmarks/cost_model.py's prices
(Lambda requests, duration billed per whole millisecond at the template's memory, the log
and EMF bytes' ingestion); Lambda's own per-invocation overhead is not in the in-process
time, so the duration share is a floor.

No figure is a pass or fail: they depend on the machine (the header line prints its load).
The exit status is 1 only when an answer had the wrong status.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import io
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from standardwebhooks.webhooks import Webhook
from twilio.request_validator import RequestValidator

from proactive_delivery import handlers
from proactive_delivery.bootstrap import build_inbound
from proactive_delivery.settings import InboundSettings
from proactive_delivery_tools.fakes import InMemoryInboundQueue
from proactive_delivery_tools.local.esm import LambdaContext

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cost_model

ROOT = Path(__file__).resolve().parent.parent
HOST = "abcdefghijklmnopqrstuvwxyz012345.lambda-url.us-east-1.on.aws"
TOKEN = "f00dfeedf00dfeedf00dfeedf00dfeed"
SECRET = "whsec_" + base64.b64encode(b"inbound-benchmark-signing-key-32").decode()
FORGED_SECRET = "whsec_" + base64.b64encode(b"what-a-forger-would-sign-with-32").decode()
PHONE = "+13125550142"
TEXT = "Yes, Thursday at 4 works. See you at the Oak St job."


class ByteCount(io.TextIOBase):
    """A text sink that keeps only how many characters were written."""

    def __init__(self) -> None:
        self.chars = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.chars += len(text)
        return len(text)


def function_url_event(path: str, body: str, headers: dict[str, str], *, base64_body: bool) -> dict[str, Any]:
    return {
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": HOST, **headers},
        "requestContext": {"domainName": HOST, "http": {"method": "POST", "path": path}},
        "body": base64.b64encode(body.encode()).decode() if base64_body else body,
        "isBase64Encoded": base64_body,
    }


def twilio_request(i: int, token: str) -> dict[str, Any]:
    params = {"MessageSid": f"SM{i:032x}", "From": PHONE, "To": "+13125550100", "Body": TEXT, "NumMedia": "0"}
    signature = RequestValidator(token).compute_signature(f"https://{HOST}/twilio/inbound", params)
    headers = {"content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature}
    return function_url_event("/twilio/inbound", urlencode(params), headers, base64_body=True)


def events_request(i: int, secret: str, at: datetime) -> dict[str, Any]:
    body = json.dumps({"type": "sms.received", "data": {"phone": PHONE, "message_content": TEXT}})
    msg_id = f"msg_bench_{i}"
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=body),
    }
    return function_url_event("/events", body, headers, base64_body=False)


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    make: Callable[[int], dict[str, Any]]


def cases() -> list[Case]:
    now = datetime.now(UTC)
    stale = datetime.fromtimestamp(now.timestamp() - 3600, UTC)

    def unsigned(i: int) -> dict[str, Any]:
        event = twilio_request(i, TOKEN)
        del event["headers"]["x-twilio-signature"]
        return event

    return [
        Case(
            "refused: unknown route",
            404,
            lambda i: function_url_event("/wp-login.php", "x", {}, base64_body=False),
        ),
        Case("refused: no signature (twilio)", 401, unsigned),
        Case("refused: stale timestamp (events)", 401, lambda i: events_request(i, SECRET, stale)),
        Case("refused: forged signature (twilio)", 401, lambda i: twilio_request(i, "0" * 32)),
        Case("refused: forged signature (events)", 401, lambda i: events_request(i, FORGED_SECRET, now)),
        Case("accepted: twilio message", 200, lambda i: twilio_request(i, TOKEN)),
        Case("accepted: events sms", 202, lambda i: events_request(i, SECRET, now)),
    ]


def load_handler() -> Any:
    spec = importlib.util.spec_from_file_location(
        "_bench_inbound_app", ROOT / "functions" / "inbound" / "app.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.lambda_handler


def million_cost(median_us: float, bytes_per_request: float, memory_gb: float) -> float:
    """Dollars for a million such requests: requests, duration billed per started
    millisecond, log and EMF ingestion."""
    billed_seconds = math.ceil(median_us / 1000) / 1000
    duration = cost_model.MILLION * billed_seconds * memory_gb * cost_model.ARM_GB_SECOND
    logs = cost_model.MILLION * bytes_per_request / 1e9 * cost_model.LOGS_PER_GB
    return cost_model.MILLION * cost_model.LAMBDA_PER_REQUEST + duration + logs


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(requests: int) -> int:
    settings = InboundSettings.from_env(
        {
            "STAGE": "bench",
            "INBOUND_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/bench-InboundQueue",
            "TWILIO_AUTH_TOKEN": TOKEN,
            "INBOUND_SIGNING_SECRET": SECRET,
        }
    )
    queue = InMemoryInboundQueue(keep=False)
    function = load_handler().with_services(build_inbound(settings, queue=queue))
    sink = ByteCount()
    for handler in handlers.logger._logger.handlers:  # the one StreamHandler to stdout
        if hasattr(handler, "setStream"):
            handler.setStream(sink)
    context = LambdaContext("InboundFunction", 10)
    memory_gb = cost_model.read_template(ROOT / "template.yaml").memory_gb
    priced: list[tuple[str, float]] = []
    wrong = 0
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    python = sys.version.split()[0]
    print(f"inbound edge, in-process, {requests} requests per row; load average {load}; python {python}")
    print(f"{'request':<38} {'status':>6} {'median µs':>10} {'p99 µs':>10} {'log+EMF B/req':>14}")
    with contextlib.redirect_stdout(sink):
        function(cases()[0].make(0), context)  # the cold start (imports on first use) is not timed
    for case in cases():
        events = [case.make(i) for i in range(requests)]
        timings: list[float] = []
        before = sink.chars
        with contextlib.redirect_stdout(sink):
            for event in events:
                started = time.perf_counter_ns()
                result = function(event, context)
                timings.append((time.perf_counter_ns() - started) / 1000)
                wrong += result["statusCode"] != case.status
        per_request = (sink.chars - before) / requests
        median = statistics.median(timings)
        priced.append((case.name, million_cost(median, per_request, memory_gb)))
        p99 = percentile(timings, 0.99)
        print(f"{case.name:<38} {case.status:>6} {median:>10.0f} {p99:>10.0f} {per_request:>14.0f}")
    memory_mb = memory_gb * 1024
    print(f"\nper million requests at {memory_mb:.0f} MB (cost_model.py's prices; duration billed per ms):")
    for name, dollars in priced:
        print(f"  {name:<36} ${dollars:.2f}")
    if wrong:
        print(f"result: {wrong} answers had the wrong status", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per row (default 2000)")
    args = parser.parse_args()
    return run(max(1, args.requests))


if __name__ == "__main__":
    sys.exit(main())
