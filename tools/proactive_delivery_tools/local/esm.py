"""An emulated SQS event source mapping: what Lambda's poller does between a queue and a
function. It receives up to BatchSize messages (waiting up to the batching window to fill
a batch), builds the same event Lambda builds, invokes the handler with a context whose
deadline comes from the function's timeout, and deletes only the messages the handler
reports as processed (ReportBatchItemFailures). A handler that raises fails the whole
batch: nothing is deleted, every message comes back after its visibility timeout, and
SQS's own redrive moves it to the DLQ after maxReceiveCount receives."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from proactive_delivery_tools.local.sqs import LOCAL_REGION
from proactive_delivery_tools.queues import queue_depth

Handler = Callable[[dict[str, Any], Any], Any]


class LambdaContext:
    """The parts of Lambda's context object the handlers use."""

    def __init__(self, function_name: str, timeout_seconds: float, memory_mb: int = 512) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{LOCAL_REGION}:123456789012:function:{function_name}"
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass
class MappingStats:
    invocations: int = 0
    received: int = 0
    deleted: int = 0
    reported_failed: int = 0
    handler_errors: int = 0
    errors: list[str] = field(default_factory=list)
    # One entry per invocation, in order: what a test of the template's BatchSize sees.
    batch_sizes: list[int] = field(default_factory=list)
    in_flight: int = 0
    peak_concurrency: int = 0
    # Queue calls (ReceiveMessage, DeleteMessageBatch) that failed; the poller went on, as
    # the deployed mapping does.
    poll_errors: int = 0


class SqsEventSourceMapping:
    def __init__(
        self,
        client: Any,
        queue_url: str,
        queue_arn: str,
        handler: Handler,
        *,
        function_name: str = "DeliverFunction",
        function_timeout: float = 60,
        batch_size: int = 10,
        batching_window: float = 0,
        maximum_concurrency: int = 1,
        report_batch_item_failures: bool = True,
        context_factory: Callable[[str, float], Any] | None = None,
        on_invoke: Callable[[list[dict[str, Any]], Any], None] | None = None,
    ) -> None:
        self._client = client
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self._handler = handler
        self.function_name = function_name
        self.function_timeout = function_timeout
        self.batch_size = batch_size
        self.batching_window = batching_window
        self.maximum_concurrency = maximum_concurrency
        self.report_batch_item_failures = report_batch_item_failures
        self._context_factory = context_factory or LambdaContext
        self.stats = MappingStats()
        self._stats_lock = threading.Lock()
        # Called after every invocation with the batch and the handler's response (or the
        # exception it raised): the live display listens here.
        self._on_invoke = on_invoke

    # One poll -> one invocation -------------------------------------------------------
    def receive_batch(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.batching_window
        while len(messages) < self.batch_size:
            try:
                response = self._client.receive_message(
                    QueueUrl=self.queue_url,
                    MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                    WaitTimeSeconds=0,
                )
            except Exception:
                # The deployed mapping never stops on a failed poll: it polls again. What the
                # failed call may have received comes back after the visibility timeout.
                with self._stats_lock:
                    self.stats.poll_errors += 1
                break
            got = response.get("Messages", [])
            messages.extend(got)
            if time.monotonic() >= deadline:
                break
            if not got:
                # Within the batching window Lambda keeps polling to fill the batch.
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
        return messages

    def to_event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "messageAttributes": m.get("MessageAttributes", {}),
                    "md5OfBody": m.get("MD5OfBody", ""),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": self.queue_arn,
                    "awsRegion": LOCAL_REGION,
                }
                for m in messages
            ]
        }

    def invoke(self, messages: list[dict[str, Any]]) -> None:
        event = self.to_event(messages)
        with self._stats_lock:
            self.stats.invocations += 1
            self.stats.received += len(messages)
            self.stats.batch_sizes.append(len(messages))
            self.stats.in_flight += 1
            self.stats.peak_concurrency = max(self.stats.peak_concurrency, self.stats.in_flight)
        context = self._context_factory(self.function_name, self.function_timeout)
        try:
            response = self._handler(event, context)
        except Exception as exc:
            # What Lambda does with a function error: nothing is deleted, the whole batch
            # comes back after the visibility timeout.
            with self._stats_lock:
                self.stats.handler_errors += 1
                self.stats.errors.append(f"{type(exc).__name__}: {exc}")
                self.stats.in_flight -= 1
            if self._on_invoke:
                self._on_invoke(messages, exc)
            return
        with self._stats_lock:
            self.stats.in_flight -= 1
        if self._on_invoke:
            self._on_invoke(messages, response)
        failed_ids: set[str] = set()
        if self.report_batch_item_failures and isinstance(response, dict):
            failed_ids = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        with self._stats_lock:
            self.stats.reported_failed += len(failed_ids)
        done = [m for m in messages if m["MessageId"] not in failed_ids]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            self._client.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
            with self._stats_lock:
                self.stats.deleted += len(chunk)

    def poll_once(self) -> int:
        """Run up to MaximumConcurrency invocations side by side; return messages handled."""
        batches = []
        for _ in range(self.maximum_concurrency):
            batch = self.receive_batch()
            if not batch:
                break
            batches.append(batch)
        if len(batches) <= 1:
            for batch in batches:
                self.invoke(batch)
        else:
            with ThreadPoolExecutor(max_workers=len(batches)) as pool:
                list(pool.map(self.invoke, batches))
        return sum(len(b) for b in batches)

    def depth(self) -> tuple[int, int]:
        return queue_depth(self._client, self.queue_url).pair

    def drain(
        self, *, timeout: float = 120, idle_sleep: float = 0.05, until: Callable[[], bool] | None = None
    ) -> None:
        """Poll until the queue holds nothing visible or in flight, or, when `until` is
        given, until `until()` is true (the queue may look empty before that: a message
        waiting out a backoff is in flight).

        "Empty" must be read twice in a row: GetQueueAttributes counts visible and in-flight
        messages one after the other, so a message whose visibility timeout ends between
        the two counts is in neither (moto reads the clock for each). The second reading,
        later, sees it."""
        end = time.monotonic() + timeout
        empty_reads = 0
        while time.monotonic() < end:
            handled = self.poll_once()
            if until is not None:
                if until():
                    return
                if not handled:
                    time.sleep(idle_sleep)
                continue
            if handled:
                empty_reads = 0
                continue
            empty_reads = empty_reads + 1 if self.depth() == (0, 0) else 0
            if empty_reads >= 2:
                return
            time.sleep(idle_sleep)
        raise TimeoutError(f"queue not drained within {timeout}s")

    def run(self, stop: threading.Event, *, idle_sleep: float = 0.2) -> list[threading.Thread]:
        """Poll continuously, as the deployed mapping does: MaximumConcurrency pollers, each
        receiving a batch and invoking the function, independently of the others. Returns
        the threads; set `stop` and join them to end."""

        def poller() -> None:
            while not stop.is_set():
                batch = self.receive_batch()
                if not batch:
                    stop.wait(idle_sleep)
                    continue
                try:
                    self.invoke(batch)
                except Exception:
                    # A delete that failed after the function ran: those messages come back
                    # after the visibility timeout, as in AWS; the poller goes on.
                    with self._stats_lock:
                        self.stats.poll_errors += 1

        threads = [
            threading.Thread(target=poller, name=f"esm-{self.function_name}-{i}", daemon=True)
            for i in range(self.maximum_concurrency)
        ]
        for thread in threads:
            thread.start()
        return threads
