"""An in-memory SQS queue for the pace benchmark, served to the deliver worker processes.

moto's SQS slows down as a queue grows (every receive walks the queue), and the pace
benchmark keeps 10,000 messages on one queue that five processes share. This stand-in keeps
what matters to the deliver function and its event source mapping, and answers in constant
time at that depth:

- a receive hands out up to 10 visible messages, oldest first (SQS's best-effort order),
  each with its receive count raised, a new receipt handle and the queue's visibility
  timeout; a message received maxReceiveCount times already goes to the dead-letter list
  instead (SQS's redrive);
- DelaySeconds on send (the deliver edge's re-queued holds, evaluate's short deferrals);
- ChangeMessageVisibility and DeleteMessage by receipt handle (an outdated handle fails);
- a receive waits up to `wait_seconds` for a message to become visible (long polling).

It imports nothing of the project's, so the unit tests load it alone. `serve()` runs it in
a process of its own behind a multiprocessing manager; `connect()` returns a proxy whose
calls are the methods below, and `StandInQueue` wraps the proxy as the delivery queue that
`bootstrap.build(settings, queue=...)` takes (what adapters/sqs.py SqsDeliveryQueue does on
SQS).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.managers import BaseManager
from typing import Any

# SQS's limits: DelaySeconds and a visibility timeout of at most 15 minutes and 12 hours.
MAX_DELAY_SECONDS = 900
MAX_VISIBILITY_SECONDS = 43200
RECEIVE_LIMIT = 10


@dataclass
class _Message:
    message_id: str
    body: str
    sent_at: float
    visible_at: float
    receive_count: int = 0
    receipt: str | None = None  # the handle of the latest receive; None before the first
    version: int = 0  # which heap entry is current (earlier ones are skipped)


class SqsStandIn:
    """One SQS standard queue and its dead-letter queue, in memory. Thread-safe: the manager
    serves each worker connection on a thread of its own."""

    def __init__(
        self,
        *,
        visibility_timeout: int,
        max_receive_count: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.visibility_timeout = visibility_timeout
        self.max_receive_count = max_receive_count
        self._clock = clock
        self._cond = threading.Condition()
        self._messages: dict[str, _Message] = {}
        # (visible_at, sequence, message id, version): the next message to become visible.
        self._heap: list[tuple[float, int, str, int]] = []
        self._sequence = itertools.count()
        self._dead: list[tuple[str, str]] = []  # (body, reason)
        self._counts: Counter[str] = Counter()
        self._stopped = False
        self._ready = 0
        self._started_at: float | None = None

    # -- SQS -------------------------------------------------------------------------------
    def send(self, entries: Sequence[tuple[str, int]], *, kind: str = "sent") -> list[int]:
        """SendMessageBatch: (body, DelaySeconds) each; returns the indexes refused (a
        DelaySeconds outside 0-900, as SQS refuses it)."""
        refused: list[int] = []
        with self._cond:
            now = self._clock()
            for index, (body, delay) in enumerate(entries):
                if not 0 <= delay <= MAX_DELAY_SECONDS:
                    refused.append(index)
                    continue
                message_id = f"m{next(self._sequence)}"
                message = _Message(message_id, body, sent_at=now, visible_at=now + delay)
                self._messages[message_id] = message
                self._push(message)
                self._counts[kind] += 1
            self._cond.notify_all()
        return refused

    def requeue(self, entries: Sequence[tuple[str, int]]) -> list[int]:
        """The deliver edge's re-queued holds: new messages, counted apart."""
        return self.send(entries, kind="requeued")

    def receive(
        self, max_messages: int = RECEIVE_LIMIT, wait_seconds: float = 0.0
    ) -> list[dict[str, Any]] | None:
        """ReceiveMessage: up to `max_messages` (at most 10) visible messages, waiting up to
        `wait_seconds` for one; None once the queue is stopped (the workers' signal to end)."""
        max_messages = max(1, min(max_messages, RECEIVE_LIMIT))
        with self._cond:
            deadline = self._clock() + wait_seconds
            while True:
                if self._stopped:
                    return None
                got = self._take(max_messages)
                if got:
                    self._counts["receives"] += 1
                    self._counts["received"] += len(got)
                    return got
                now = self._clock()
                if now >= deadline:
                    return []
                next_visible = self._heap[0][0] if self._heap else deadline
                self._cond.wait(max(0.001, min(deadline, next_visible) - now))

    def change_visibility(self, receipts: Sequence[tuple[str, int]]) -> list[str]:
        """ChangeMessageVisibilityBatch: (receipt handle, seconds) each; returns the handles
        refused (not the message's latest receive, or no longer on the queue)."""
        refused: list[str] = []
        with self._cond:
            now = self._clock()
            for handle, seconds in receipts:
                message = self._by_receipt(handle)
                if message is None or not 0 <= seconds <= MAX_VISIBILITY_SECONDS:
                    refused.append(handle)
                    continue
                message.visible_at = now + seconds
                self._push(message)
                self._counts["visibility_changes"] += 1
            self._cond.notify_all()
        return refused

    def delete(self, handles: Sequence[str]) -> list[str]:
        """DeleteMessageBatch; returns the handles refused."""
        refused: list[str] = []
        with self._cond:
            for handle in handles:
                message = self._by_receipt(handle)
                if message is None:
                    refused.append(handle)
                    continue
                del self._messages[message.message_id]
                self._counts["deleted"] += 1
        return refused

    def dead_letter(self, letters: Sequence[tuple[str, str]]) -> list[int]:
        """The deliver edge's own move to the dead-letter queue: (body, reason) each."""
        with self._cond:
            self._dead.extend((body, reason) for body, reason in letters)
            self._counts["dead_lettered"] += len(letters)
        return []

    # -- what the benchmark reads and drives ------------------------------------------------
    def depth(self) -> dict[str, int]:
        """Messages visible now, received and not yet back (in flight), and not yet visible
        after a delay or a visibility change (delayed)."""
        with self._cond:
            now = self._clock()
            visible = in_flight = delayed = 0
            for message in self._messages.values():
                if message.visible_at <= now:
                    visible += 1
                elif message.receipt is not None and message.visible_at - now <= self.visibility_timeout:
                    in_flight += 1
                else:
                    delayed += 1
            return {"visible": visible, "in_flight": in_flight, "delayed": delayed}

    def size(self) -> int:
        with self._cond:
            return len(self._messages)

    def dead_letters(self) -> list[tuple[str, str]]:
        with self._cond:
            return list(self._dead)

    def counts(self) -> dict[str, int]:
        with self._cond:
            return dict(self._counts)

    def note(self, kind: str, n: int = 1) -> None:
        """A worker's count (invocations, handler errors), kept with the queue's."""
        with self._cond:
            self._counts[kind] += n

    def ready(self) -> None:
        """A worker is built and waiting for the start."""
        with self._cond:
            self._ready += 1
            self._cond.notify_all()

    def ready_workers(self) -> int:
        with self._cond:
            return self._ready

    def start(self) -> float:
        """Lets the waiting workers go; returns the time (time.time()) they were let go."""
        with self._cond:
            self._started_at = time.time()
            self._cond.notify_all()
            return self._started_at

    def wait_for_start(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._started_at is not None or self._stopped, timeout)

    def stop(self) -> None:
        """Every receive from now on returns None: the workers finish their invocation and end."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    # -- internals --------------------------------------------------------------------------
    def _push(self, message: _Message) -> None:
        message.version += 1
        heapq.heappush(
            self._heap, (message.visible_at, next(self._sequence), message.message_id, message.version)
        )

    def _take(self, max_messages: int) -> list[dict[str, Any]]:
        now = self._clock()
        got: list[dict[str, Any]] = []
        while self._heap and self._heap[0][0] <= now and len(got) < max_messages:
            _, _, message_id, version = heapq.heappop(self._heap)
            message = self._messages.get(message_id)
            if message is None or message.version != version:
                continue  # deleted, or its visibility changed since this entry
            if message.receive_count >= self.max_receive_count:
                # SQS's redrive: received maxReceiveCount times and back again.
                del self._messages[message_id]
                self._dead.append((message.body, "max_receive_count"))
                self._counts["redriven"] += 1
                continue
            message.receive_count += 1
            message.receipt = f"{message_id}:{message.receive_count}"
            message.visible_at = now + self.visibility_timeout
            self._push(message)
            got.append(
                {
                    "message_id": message_id,
                    "receipt": message.receipt,
                    "body": message.body,
                    "receive_count": message.receive_count,
                    "sent_at": message.sent_at,
                }
            )
        return got

    def _by_receipt(self, handle: str) -> _Message | None:
        message = self._messages.get(handle.split(":", 1)[0])
        return message if message is not None and message.receipt == handle else None


# --------------------------------------------------------------------------------------
# Served to other processes
# --------------------------------------------------------------------------------------
class QueueManager(BaseManager):
    pass


def serve(port: int, authkey: bytes, *, visibility_timeout: int, max_receive_count: int) -> None:
    """Serves one SqsStandIn on 127.0.0.1:port until the process is ended."""
    queue = SqsStandIn(visibility_timeout=visibility_timeout, max_receive_count=max_receive_count)
    QueueManager.register("queue", callable=lambda: queue)
    manager = QueueManager(address=("127.0.0.1", port), authkey=authkey)
    manager.get_server().serve_forever()


def connect(port: int, authkey: bytes) -> Any:
    """A proxy of the queue served on `port`: its calls are SqsStandIn's methods. A proxy
    opens one connection per thread that uses it."""
    QueueManager.register("queue")
    manager = QueueManager(address=("127.0.0.1", port), authkey=authkey)
    manager.connect()
    return manager.queue()  # type: ignore[attr-defined]


class StandInQueue:
    """The delivery queue as `bootstrap.build(settings, queue=...)` takes it: the methods of
    adapters/sqs.py SqsDeliveryQueue that evaluate (send_keys) and the deliver edge
    (change_visibility, dead_letter, requeue) call, on the stand-in."""

    def __init__(self, proxy: Any) -> None:
        self._proxy = proxy

    def send_keys(self, keys: Sequence[Any], *, delay_seconds: int = 0) -> list[Any]:
        if len(keys) > RECEIVE_LIMIT:
            raise ValueError("SendMessageBatch takes at most 10 entries")
        refused = set(self._proxy.send([(key.to_body(), delay_seconds) for key in keys]))
        return [key for index, key in enumerate(keys) if index in refused]

    def change_visibility(self, receipts: Sequence[tuple[str, int]]) -> list[str]:
        return list(self._proxy.change_visibility(list(receipts)))

    def dead_letter(self, letters: Sequence[tuple[str, str]]) -> list[int]:
        return list(self._proxy.dead_letter(list(letters)))

    def requeue(self, messages: Sequence[tuple[str, int]]) -> list[int]:
        return list(self._proxy.requeue(list(messages)))
