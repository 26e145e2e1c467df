"""The pipeline as the tests drive it: the real Lambda handlers (functions/*/app.py), SQS
faked by moto with the template's redrive, the emulated event source mapping, and a real
local webhook receiver."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws

from proactive_delivery import bootstrap
from proactive_delivery.local.esm import LambdaContext, SqsEventSourceMapping
from proactive_delivery.local.receiver import WebhookReceiver
from proactive_delivery.local.sqs import QueuePair, create_queues

ROOT = Path(__file__).resolve().parent.parent


_LOAD_LOCK = threading.Lock()


def load_function(name: str) -> ModuleType:
    """Import functions/<name>/app.py the way Lambda does, under a unique module name."""
    module_name = f"_function_{name}_app"
    with _LOAD_LOCK:
        if module_name in sys.modules:
            return sys.modules[module_name]
        spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / name / "app.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
        return module


def retry_env(max_receive_count: int) -> dict[str, str]:
    """Retries a second apart, as many attempts as the test queue's maxReceiveCount: a window
    of (n - 1) one-second steps gives n attempts, so the function's budget and the queue's
    redrive agree exactly, as the template makes them agree in a deployment."""
    return {
        "RETRY_SCHEDULE_SECONDS": "1",
        "RETRY_WINDOW_HOURS": repr((max_receive_count - 1) / 3600) if max_receive_count > 1 else "0.0001",
        "MAX_RECEIVE_COUNT": str(max_receive_count),
    }


def base_env(database_url: str, queue_url: str, webhook_url: str, secret: str) -> dict[str, str]:
    return {
        "STAGE": "test",
        "DATABASE_URL": database_url,
        "DELIVERY_QUEUE_URL": queue_url,
        "N8N_OUTBOUND_WEBHOOK_URL": webhook_url,
        "WEBHOOK_SIGNING_SECRET": secret,
        **retry_env(5),
        "HTTP_CONNECT_TIMEOUT_SECONDS": "1",
        "HTTP_READ_TIMEOUT_SECONDS": "2",
        # The delivery mechanics tests must not depend on the hour they run at: no quiet
        # hours and no practical cap unless a test sets them (tests/e2e/test_policy.py).
        "QUIET_HOURS": "none",
        "MAX_MESSAGES_PER_DAY": "1000",
        "POWERTOOLS_METRICS_NAMESPACE": "ProactiveDelivery",
        "POWERTOOLS_SERVICE_NAME": "proactive-delivery",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }


@dataclass
class Pipeline:
    conn: psycopg.Connection[Any]
    sqs: Any
    queues: QueuePair
    receiver: WebhookReceiver
    monkeypatch: pytest.MonkeyPatch
    visibility_timeout: int
    max_receive_count: int

    @property
    def evaluate_handler(self) -> Callable[[dict[str, Any], Any], Any]:
        return load_function("evaluate").lambda_handler  # type: ignore[no-any-return]

    @property
    def deliver_handler(self) -> Callable[[dict[str, Any], Any], Any]:
        return load_function("deliver").lambda_handler  # type: ignore[no-any-return]

    def setenv(self, **values: str) -> None:
        for key, value in values.items():
            self.monkeypatch.setenv(key, value)
        bootstrap.reset()

    def evaluate(self, event: dict[str, Any] | None = None, timeout: float = 300) -> dict[str, Any]:
        result = self.evaluate_handler(
            event if event is not None else {"sources": ["proactive"]},
            LambdaContext("EvaluateFunction", timeout),
        )
        return dict(result)

    def deliver(self, event: dict[str, Any], timeout: float = 60) -> Any:
        return self.deliver_handler(event, LambdaContext("DeliverFunction", timeout))

    def mapping(
        self, handler: Callable[[dict[str, Any], Any], Any] | None = None, **kwargs: Any
    ) -> SqsEventSourceMapping:
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queues.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        options: dict[str, Any] = {"batch_size": 10, "function_timeout": 60}
        options.update(kwargs)
        return SqsEventSourceMapping(
            self.sqs, self.queues.queue_url, arn, handler or self.deliver_handler, **options
        )

    def drain(self, timeout: float = 60, **kwargs: Any) -> SqsEventSourceMapping:
        mapping = self.mapping(**kwargs)
        mapping.drain(timeout=timeout)
        return mapping

    def send_raw(self, *bodies: str) -> None:
        for body in bodies:
            self.sqs.send_message(QueueUrl=self.queues.queue_url, MessageBody=body)

    def send_keys(self, *ids: int, source: str = "proactive") -> None:
        self.send_raw(*(json.dumps({"source": source, "id": i}) for i in ids))

    def receive(self, n: int = 10, wait: float = 0) -> list[dict[str, Any]]:
        return list(
            self.sqs.receive_message(
                QueueUrl=self.queues.queue_url,
                MaxNumberOfMessages=n,
                AttributeNames=["All"],
                WaitTimeSeconds=int(wait),
            ).get("Messages", [])
        )

    def dlq_bodies(self) -> list[str]:
        bodies: list[str] = []
        for _ in range(20):
            got = self.sqs.receive_message(
                QueueUrl=self.queues.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=60
            ).get("Messages", [])
            if not got:
                break
            bodies.extend(m["Body"] for m in got)
        return bodies

    def queue_depth(self) -> tuple[int, int]:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queues.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


@contextmanager
def running_pipeline(
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
    signing_secret: str,
    *,
    visibility_timeout: int = 2,
    max_receive_count: int = 5,
) -> Iterator[Pipeline]:
    with (
        mock_aws(),
        WebhookReceiver(signing_secret) as receiver,
        psycopg.connect(database_url, autocommit=True) as conn,
    ):
        sqs = boto3.client("sqs", region_name="us-east-1")
        queues = create_queues(
            sqs, visibility_timeout=visibility_timeout, max_receive_count=max_receive_count
        )
        for key, value in base_env(database_url, queues.queue_url, receiver.url, signing_secret).items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("DEAD_LETTER_QUEUE_URL", queues.dlq_url)
        for key, value in retry_env(max_receive_count).items():
            monkeypatch.setenv(key, value)
        bootstrap.reset()
        try:
            yield Pipeline(conn, sqs, queues, receiver, monkeypatch, visibility_timeout, max_receive_count)
        finally:
            bootstrap.use_sqs_client(None)
            bootstrap.reset()


def emf_blobs(output: str) -> list[dict[str, Any]]:
    """Every EMF blob printed by Powertools Metrics (one JSON object per line)."""
    blobs: list[dict[str, Any]] = []
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("{") and "_aws" in line:
            blobs.append(json.loads(line))
    return blobs


def emf_metrics(output: str, dimensions: frozenset[str] = frozenset({"service"})) -> dict[str, float]:
    """Sum the EMF metrics printed under exactly `dimensions` (default: the per-invocation
    totals, whose only dimension is service)."""
    totals: dict[str, float] = {}
    for blob in emf_blobs(output):
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            if not any(frozenset(d) == dimensions for d in directive["Dimensions"]):
                continue
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                values = value if isinstance(value, list) else [value]
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(values)
    return totals


@contextmanager
def captured_log_lines() -> Any:
    """Every line the package's loggers write, formatted exactly as in CloudWatch."""
    from proactive_delivery.handlers import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    root = logging.getLogger("proactive-delivery")
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
