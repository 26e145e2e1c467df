"""The pipeline as the tests drive it: the real Lambda handlers (functions/*/app.py), SQS
faked by moto with the template's redrive, the emulated event source mapping, and a real
local webhook receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from moto import mock_aws

from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.adapters.postgres.store import PostgresStore
from proactive_delivery.app.evaluate import Enqueuer, Evaluator
from proactive_delivery.app.gate import QueueGate
from proactive_delivery.bootstrap import Services, build
from proactive_delivery.core.errors import StoreUnavailableError
from proactive_delivery.settings import Settings
from proactive_delivery_tools.local.esm import LambdaContext, SqsEventSourceMapping
from proactive_delivery_tools.local.receiver import WebhookReceiver
from proactive_delivery_tools.local.sqs import QueuePair, create_queues
from proactive_delivery_tools.queues import queue_depth
from tests.support.functions import load_function
from tests.support.policy import SENDABLE_ANY_TIME, configured

ROOT = Path(__file__).resolve().parent.parent


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
    """The functions' settings in the tests (what the template's environment gives them)."""
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
        # Nor on the providers' pace, unless a test sets it (tests/e2e/test_pace.py).
        "PROVIDER_RATE_LIMITS": "none",
    }


# What the process needs around the functions: moto's placeholder credentials and region.
PROCESS_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "POWERTOOLS_TRACE_DISABLED": "true",
}


class DiesBeforeItsFirstCommit(PostgresStore):
    """A delivery store whose first outcome statement never commits: the environment is
    killed between the provider's 2xx and the commit (docs/faults.md row 4)."""

    crashed = False

    def record_outcomes(self, outcomes: Any, *, claim_token: Any) -> set[int]:
        if not self.crashed:
            self.crashed = True
            raise StoreUnavailableError("environment killed between the send and the commit")
        return super().record_outcomes(outcomes, claim_token=claim_token)


@dataclass
class Pipeline:
    conn: psycopg.Connection[Any]
    sqs: Any
    queues: QueuePair
    receiver: WebhookReceiver
    env: dict[str, str]
    visibility_timeout: int
    max_receive_count: int
    overrides: dict[str, Any] = field(default_factory=dict)
    _services: Services | None = None
    _given: list[Database] = field(default_factory=list)
    # Tests invoke from several threads at once (overlapping runs): one environment is built.
    _build_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def services(self) -> Services:
        """The functions' services, built from `env` as the handlers build theirs from the
        environment, with moto's SQS (and any piece a test swapped in with `use`)."""
        with self._build_lock:
            if self._services is None:
                self._services = build(Settings.from_env(self.env), **{"sqs": self.sqs, **self.overrides})
            return self._services

    def rebuild(self) -> None:
        if self._services is not None:
            self._services.close()
        self._services = None

    def setenv(self, **values: str) -> None:
        """Change the functions' settings (as a redeploy with a new environment would)."""
        self.env.update(values)
        self.rebuild()

    def crash_before_the_first_commit(self) -> DiesBeforeItsFirstCommit:
        """Run deliver on a store that dies after the send, before its first outcome commits."""
        store = DiesBeforeItsFirstCommit(Database(lambda: self.env["DATABASE_URL"]))
        self.use(store=store)
        self._given.append(store.db)
        return store

    def use(self, **pieces: Any) -> None:
        """Run the functions on these pieces instead (an SQS client that fails on cue, a
        store that crashes between the send and the commit); None goes back to the real."""
        for name, piece in pieces.items():
            if piece is None:
                self.overrides.pop(name, None)
            else:
                self.overrides[name] = piece
        self.rebuild()

    @property
    def evaluate_handler(self) -> Callable[[dict[str, Any], Any], Any]:
        return load_function("evaluate").lambda_handler.with_services(self.services)  # type: ignore[no-any-return]

    @property
    def deliver_handler(self) -> Callable[[dict[str, Any], Any], Any]:
        return load_function("deliver").lambda_handler.with_services(self.services)  # type: ignore[no-any-return]

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
        return queue_depth(self.sqs, self.queues.queue_url).pair


# moto's in-process SQS is not thread-safe: two threads receiving at once can both take the
# same message (and one of them then deletes it under the other), or fail on a set changed
# during iteration. Real SQS hands a message to one receive at a time (an at-least-once
# duplicate is rare, and the reconciliation sweep of the next evaluate run repairs what a
# duplicate acknowledged under a failed send). The pipeline drives SQS from several threads,
# so its queue operations are made atomic, as SQS's are.
_SQS_OPERATIONS = (
    "send_message",
    "send_message_batch",
    "receive_message",
    "delete_message",
    "delete_message_batch",
    "change_message_visibility",
    "change_message_visibility_batch",
)


def serialize_moto_sqs(monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.sqs.models import SQSBackend

    lock = threading.RLock()
    for name in _SQS_OPERATIONS:
        original = getattr(SQSBackend, name)

        def atomic(
            self: Any, *args: Any, __original: Any = original, __name: str = name, **kwargs: Any
        ) -> Any:
            # A long poll (receive_message's third argument) waits outside the lock.
            if __name == "receive_message" and (args[2:3] or [kwargs.get("wait_seconds_timeout")])[0]:
                return __original(self, *args, **kwargs)
            with lock:
                return __original(self, *args, **kwargs)

        monkeypatch.setattr(SQSBackend, name, atomic)


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
        serialize_moto_sqs(monkeypatch)
        sqs = boto3.client("sqs", region_name="us-east-1")
        queues = create_queues(
            sqs, visibility_timeout=visibility_timeout, max_receive_count=max_receive_count
        )
        for key, value in PROCESS_ENV.items():
            monkeypatch.setenv(key, value)
        env = {
            **base_env(database_url, queues.queue_url, receiver.url, signing_secret),
            **retry_env(max_receive_count),
            "DEAD_LETTER_QUEUE_URL": queues.dlq_url,
        }
        pipeline = Pipeline(conn, sqs, queues, receiver, env, visibility_timeout, max_receive_count)
        try:
            yield pipeline
        finally:
            pipeline.rebuild()
            for db in pipeline._given:
                db.close()


_ENQUEUE_POOL = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-enqueue")


def make_evaluator(
    store: PostgresStore, queue: Any, executor: Executor = _ENQUEUE_POOL, **options: Any
) -> Evaluator:
    """The Evaluator bootstrap builds, over `store` and `queue`, for tests that drive the use
    case without the handler: one SendMessageBatch call in flight (on `executor`)."""
    settings: dict[str, Any] = {"page_size": 500, "reconcile_after_seconds": 1800}
    settings.update(options)
    enqueuer = Enqueuer(queue, concurrency=1, executor=executor)
    return Evaluator(store, QueueGate(store, SENDABLE_ANY_TIME, configured("sms")), enqueuer, **settings)
