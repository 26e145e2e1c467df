"""The delivery queue on SQS: evaluate's SendMessageBatch (the DeliveryQueue port of
app/ports.py), and the visibility changes and dead letters of the deliver function's edge
(adapters/sqs_batch.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from proactive_delivery.adapters.aws import error_code
from proactive_delivery.adapters.tracing import subsegment
from proactive_delivery.app.ports import QUEUE_BATCH_LIMIT
from proactive_delivery.core.errors import QueueError
from proactive_delivery.core.inbound import InboundEvent
from proactive_delivery.core.models import MessageKey


def entry_id(key: MessageKey) -> str:
    # SendMessageBatch entry ids allow [A-Za-z0-9_-], up to 80 characters.
    return key.idempotency_key


class SqsDeliveryQueue:
    def __init__(self, client: Any, queue_url: str, *, dead_letter_url: str | None = None) -> None:
        self._client = client
        self.queue_url = queue_url
        self.dead_letter_url = dead_letter_url

    def dead_letter(self, letters: Sequence[tuple[str, str]]) -> list[int]:
        if self.dead_letter_url is None:
            return list(range(len(letters)))
        entries = [
            {
                "MessageBody": body,
                "MessageAttributes": {"reason": {"DataType": "String", "StringValue": reason}},
            }
            for body, reason in letters
        ]
        return self._send_all(self.dead_letter_url, entries)

    def requeue(self, messages: Sequence[tuple[str, int]]) -> list[int]:
        entries = [{"MessageBody": body, "DelaySeconds": max(0, min(delay, 900))} for body, delay in messages]
        return self._send_all(self.queue_url, entries)

    def _send_all(self, url: str, entries: Sequence[dict[str, Any]]) -> list[int]:
        """SendMessageBatch calls of 10 entries; the indexes of the entries that failed (a
        whole call refused counts every entry of it)."""
        failed: list[int] = []
        for start in range(0, len(entries), QUEUE_BATCH_LIMIT):
            chunk = [
                {"Id": str(start + i), **e} for i, e in enumerate(entries[start : start + QUEUE_BATCH_LIMIT])
            ]
            try:
                with subsegment("sqs.SendMessageBatch"):
                    response = self._client.send_message_batch(QueueUrl=url, Entries=chunk)
            except (ClientError, BotoCoreError):
                failed.extend(range(start, start + len(chunk)))
                continue
            failed.extend(int(f["Id"]) for f in response.get("Failed", []))
        return failed

    def send_keys(self, keys: Sequence[MessageKey], *, delay_seconds: int = 0) -> list[MessageKey]:
        if not keys:
            return []
        if len(keys) > QUEUE_BATCH_LIMIT:
            raise ValueError("SendMessageBatch takes at most 10 entries")
        by_id = {entry_id(k): k for k in keys}
        entries = [
            {
                "Id": eid,
                "MessageBody": key.to_body(),
                **({"DelaySeconds": delay_seconds} if delay_seconds else {}),
            }
            for eid, key in by_id.items()
        ]
        try:
            with subsegment("sqs.SendMessageBatch"):
                response = self._client.send_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            raise QueueError(f"SendMessageBatch failed: {error_code(exc, type(exc).__name__)}") from exc
        return [by_id[f["Id"]] for f in response.get("Failed", [])]

    def change_visibility(self, receipts: Sequence[tuple[str, int]]) -> list[str]:
        failed: list[str] = []
        for start in range(0, len(receipts), QUEUE_BATCH_LIMIT):
            chunk = receipts[start : start + QUEUE_BATCH_LIMIT]
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": seconds}
                for i, (handle, seconds) in enumerate(chunk)
            ]
            try:
                with subsegment("sqs.ChangeMessageVisibilityBatch"):
                    response = self._client.change_message_visibility_batch(
                        QueueUrl=self.queue_url, Entries=entries
                    )
            except (ClientError, BotoCoreError):
                failed.extend(handle for handle, _ in chunk)
                continue
            failed.extend(chunk[int(f["Id"])][0] for f in response.get("Failed", []))
        return failed


class SqsInboundQueue:
    """The inbound queue (the InboundQueue port): one SendMessage per verified event. Any
    refusal, SQS's or the connection's, is a QueueError, so the edge answers 503 and the
    sender tries again; the client's standard retries have already run by then."""

    def __init__(self, client: Any, queue_url: str) -> None:
        self._client = client
        self.queue_url = queue_url

    def put(self, event: InboundEvent) -> None:
        try:
            with subsegment("sqs.SendMessage", kind=str(event.kind)):
                self._client.send_message(
                    QueueUrl=self.queue_url,
                    MessageBody=event.to_body(),
                    # The processor can route without parsing; no contact detail in here.
                    MessageAttributes={"kind": {"DataType": "String", "StringValue": str(event.kind)}},
                )
        except (ClientError, BotoCoreError) as exc:
            raise QueueError(f"SendMessage failed: {error_code(exc, type(exc).__name__)}") from exc
