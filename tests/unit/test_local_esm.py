"""The local SQS event source mapping keeps polling when a queue call fails, as the deployed
mapping does: a failed ReceiveMessage or DeleteMessageBatch is counted, never the end of a
poller (moto's in-process SQS can fail a call made while another thread changes the queue)."""

from __future__ import annotations

import threading
from typing import Any

from proactive_delivery_tools.local.esm import SqsEventSourceMapping


class FlakyQueue:
    """Ten messages; its first ReceiveMessage and first DeleteMessageBatch raise."""

    def __init__(self) -> None:
        self.messages = [{"MessageId": f"m{i}", "ReceiptHandle": f"r{i}", "Body": "{}"} for i in range(10)]
        self.receive_calls = 0
        self.delete_calls = 0
        self.deleted: list[str] = []
        self.lock = threading.Lock()

    def receive_message(self, **_: Any) -> dict[str, Any]:
        with self.lock:
            self.receive_calls += 1
            if self.receive_calls == 1:
                raise RuntimeError("Set changed size during iteration")
            got, self.messages = self.messages[:2], self.messages[2:]
        return {"Messages": got}

    def delete_message_batch(self, **kwargs: Any) -> dict[str, Any]:
        with self.lock:
            self.delete_calls += 1
            if self.delete_calls == 1:
                raise RuntimeError("Set changed size during iteration")
            self.deleted.extend(e["ReceiptHandle"] for e in kwargs["Entries"])
        return {"Successful": []}


def test_a_poller_goes_on_after_a_failed_receive_and_a_failed_delete() -> None:
    # GIVEN a queue whose first receive and first delete fail
    queue = FlakyQueue()
    handled: list[str] = []

    def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
        handled.extend(r["messageId"] for r in event["Records"])
        return {"batchItemFailures": []}

    mapping = SqsEventSourceMapping(queue, "url", "arn", handler, batch_size=2, maximum_concurrency=1)
    stop = threading.Event()
    # WHEN its one poller runs until every message was handed to the function
    threads = mapping.run(stop, idle_sleep=0.01)
    try:
        done = threading.Event()
        for _ in range(500):
            if len(handled) == 10:
                done.set()
                break
            stop.wait(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    # THEN the poller survived both failures: every message reached the function, all but the
    # batch whose delete failed were deleted, and both failures were counted
    assert done.is_set(), handled
    assert sorted(handled) == sorted(f"m{i}" for i in range(10))
    assert len(queue.deleted) == 8
    assert mapping.stats.poll_errors == 2
    assert not any(t.is_alive() for t in threads)
