"""`proactive-delivery replay-dlq`: dead-lettered messages back to the delivery queue.

Replay safety (docs/faults.md row 15). Every queue message carries only a message's identity,
and the deliverer's claim is the one-send gate: a replayed copy of a message that was
already sent (or already failed or skipped) is acknowledged without a send. The manual
path re-sends a batch to the delivery queue *before* deleting it from the DLQ, so a replay
killed between the two leaves a duplicate (harmless) and never a loss; running it again
moves what is left.

Replay does not touch the database. A dead-lettered message whose row is `failed` is
therefore acknowledged without a send when replayed: bringing failed messages back is
`resend`, which resets them to queued in one conditional UPDATE and queues them again.

Malformed messages (a body the deliverer cannot read as a message key: MessageKey.from_body)
stay in the DLQ unless `include_malformed` asks for them: moved back, they would only fail
again, return to the DLQ and raise its alarm once more. A message move task moves every
message, so it is started only when the DLQ holds no malformed one (or they are included);
otherwise the receive / re-send / delete path moves the others and leaves those."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from proactive_delivery.adapters.aws import error_code, http_status
from proactive_delivery.app.ports import QUEUE_BATCH_LIMIT as SQS_BATCH_LIMIT
from proactive_delivery.core.errors import MalformedRecordError
from proactive_delivery.core.models import MessageKey
from proactive_delivery_tools.ops.errors import OperationsError, call_aws, describe_aws_error
from proactive_delivery_tools.ops.queues import Queues, queue_depth

_MOVE_TASK_UNAVAILABLE = frozenset(
    {"UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", "InvalidAction", "NotImplemented"}
)
_MOVE_TASK_DONE = frozenset({"COMPLETED", "CANCELLED", "FAILED"})


def _move_tasks_unavailable(exc: ClientError) -> bool:
    """The endpoint has no message move tasks (local SQS, an old region), or failed at them
    (5xx: moto's server answers ListMessageMoveTasks with a 500). Either way the manual
    receive/re-send/delete path can still do the replay."""
    return error_code(exc) in _MOVE_TASK_UNAVAILABLE or (http_status(exc) or 0) >= 500


class Progress(Protocol):
    def advance(self, n: int) -> None: ...


class _NoProgress:
    def advance(self, n: int) -> None:
        pass


@dataclass
class ReplayOptions:
    dry_run: bool = False
    max_messages: int | None = None
    source: str | None = None
    rate: float = 10.0
    # Move malformed messages too (they can never be delivered; left in the DLQ otherwise).
    include_malformed: bool = False
    # How long a received DLQ message stays hidden while it is being moved.
    visibility_timeout: int = 60
    poll_seconds: float = 2.0


@dataclass
class ReplayReport:
    method: str
    moved: int = 0
    left: int = 0
    listed: list[dict[str, Any]] = field(default_factory=list)
    task_handle: str | None = None
    task_status: str | None = None
    # SQS ids of the malformed messages seen and left in the DLQ (never their bodies).
    malformed_kept: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "moved": self.moved,
            "left_in_dlq": self.left,
            "listed": self.listed,
            "malformed_kept": self.malformed_kept,
            "task_handle": self.task_handle,
            "task_status": self.task_status,
        }


def _key_of(body: str | None) -> MessageKey | None:
    """The identity in a DLQ message body, or None for a malformed one: read as the
    deliverer reads it (MessageKey.from_body), so what replay calls malformed is what the
    deliverer would send back to the DLQ."""
    try:
        return MessageKey.from_body(body)
    except MalformedRecordError:
        return None


def replay_dlq(
    sqs: Any,
    queues: Queues,
    options: ReplayOptions,
    *,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayReport:
    if queues.queue_url is None or queues.queue_arn is None:
        raise OperationsError("DELIVERY_QUEUE_URL is required: where should replayed messages go?")
    if options.rate <= 0:
        raise OperationsError("--rate must be > 0")
    if options.max_messages is not None and options.max_messages <= 0:
        raise OperationsError("--max must be > 0")
    if options.dry_run:
        return _list_dlq(sqs, queues, options)
    # A move task moves every message: no filter can be applied to it.
    filtered = options.source is not None or options.max_messages is not None
    if not filtered:
        report = _move_task(sqs, queues, options, sleep)
        if report is not None:
            return report
    return _receive_resend_delete(sqs, queues, options, progress or _NoProgress(), sleep=sleep, clock=clock)


def _move_task(
    sqs: Any, queues: Queues, options: ReplayOptions, sleep: Callable[[float], None]
) -> ReplayReport | None:
    """StartMessageMoveTask back to the delivery queue, then ListMessageMoveTasks until it
    ends. None when the endpoint has no move tasks (the caller falls back)."""
    report = ReplayReport(method="StartMessageMoveTask")
    try:
        running = _latest_task(sqs, queues)
    except _MoveTasksUnavailable:
        return None
    if running is not None and running.get("Status") == "RUNNING":
        # A replay started earlier (and killed, or still going): follow it, do not stack a second.
        report.task_handle = running.get("TaskHandle")
    elif not options.include_malformed and _holds_malformed(sqs, queues, options):
        # The task would move them too: the manual path leaves them where they are.
        return None
    else:
        started = _start_task(sqs, queues, options)
        if started is None:
            return None
        report.task_handle = started.get("TaskHandle")
    while True:
        try:
            task = _latest_task(sqs, queues)
        except _MoveTasksUnavailable as exc:
            # The task was started, so it is moving messages; only following it failed.
            raise OperationsError(
                "StartMessageMoveTask was accepted but ListMessageMoveTasks fails: follow the task in the "
                f"SQS console (handle {report.task_handle}); running replay-dlq again is safe"
            ) from exc
        if task is None:
            raise OperationsError("StartMessageMoveTask was accepted but ListMessageMoveTasks shows no task")
        report.task_status = str(task.get("Status"))
        report.moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        if report.task_status in _MOVE_TASK_DONE:
            break
        sleep(options.poll_seconds)
    if report.task_status == "FAILED":
        raise OperationsError(f"the move task failed: {task.get('FailureReason', 'no reason given')}")
    report.left = queue_depth(sqs, queues.dlq_url, "dead-letter queue")["visible"]
    return report


def _start_task(sqs: Any, queues: Queues, options: ReplayOptions) -> dict[str, Any] | None:
    """StartMessageMoveTask's answer, or None when the endpoint has no move tasks."""
    try:
        return dict(
            sqs.start_message_move_task(
                SourceArn=queues.dlq_arn,
                DestinationArn=queues.queue_arn,
                MaxNumberOfMessagesPerSecond=max(1, min(500, int(options.rate))),
            )
        )
    except NotImplementedError:
        return None
    except ClientError as exc:
        if _move_tasks_unavailable(exc):
            return None
        raise describe_aws_error(exc, "StartMessageMoveTask") from exc
    except BotoCoreError as exc:
        raise describe_aws_error(exc, "StartMessageMoveTask") from exc


class _MoveTasksUnavailable(Exception):
    """ListMessageMoveTasks is missing or failing at this endpoint."""


def _latest_task(sqs: Any, queues: Queues) -> dict[str, Any] | None:
    try:
        results = sqs.list_message_move_tasks(SourceArn=queues.dlq_arn, MaxResults=1).get("Results", [])
    except NotImplementedError as exc:
        raise _MoveTasksUnavailable() from exc
    except ClientError as exc:
        if _move_tasks_unavailable(exc):
            raise _MoveTasksUnavailable() from exc
        raise describe_aws_error(exc, "ListMessageMoveTasks") from exc
    except BotoCoreError as exc:
        raise describe_aws_error(exc, "ListMessageMoveTasks") from exc
    return results[0] if results else None


def _receive(sqs: Any, queues: Queues, n: int, visibility: int) -> list[dict[str, Any]]:
    response = call_aws(
        "dead-letter queue",
        sqs.receive_message,
        QueueUrl=queues.dlq_url,
        MaxNumberOfMessages=max(1, min(SQS_BATCH_LIMIT, n)),
        VisibilityTimeout=visibility,
        WaitTimeSeconds=1,
        AttributeNames=["All"],
    )
    return list(response.get("Messages", []))


def _release(sqs: Any, queues: Queues, messages: Sequence[dict[str, Any]]) -> None:
    """Make messages we will not move visible again at once."""
    for start in range(0, len(messages), SQS_BATCH_LIMIT):
        chunk = messages[start : start + SQS_BATCH_LIMIT]
        call_aws(
            "dead-letter queue",
            sqs.change_message_visibility_batch,
            QueueUrl=queues.dlq_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)
            ],
        )


def _holds_malformed(sqs: Any, queues: Queues, options: ReplayOptions) -> bool:
    """Whether the DLQ holds a malformed message. Reads the messages (each hidden while it
    is read, all visible again at the end) until the first malformed one or the end. A
    malformed message that arrives between this look and the task's start is moved by the
    task: seconds, where before every malformed message was."""
    seen: set[str] = set()
    held: list[dict[str, Any]] = []
    try:
        while True:
            got = _receive(sqs, queues, SQS_BATCH_LIMIT, options.visibility_timeout)
            held.extend(got)
            fresh = [m for m in got if m["MessageId"] not in seen]
            if not fresh:
                return False
            seen.update(m["MessageId"] for m in fresh)
            if any(_key_of(m.get("Body")) is None for m in fresh):
                return True
    finally:
        if held:
            _release(sqs, queues, held)


def _wanted(message: dict[str, Any], options: ReplayOptions) -> bool:
    """Whether the filters take this message. A malformed one has no source: it is taken
    only when malformed messages are included and no source is asked for."""
    key = _key_of(message.get("Body"))
    if key is None:
        return options.include_malformed and options.source is None
    return options.source is None or key.source == options.source


def _walk_dlq(
    sqs: Any, queues: Queues, options: ReplayOptions, report: ReplayReport
) -> Iterator[list[dict[str, Any]]]:
    """Batches of DLQ messages that match the filters, each hidden while it is handled;
    the ones that do not match are made visible again when the walk ends. The malformed
    ones left are noted in the report."""
    seen: set[str] = set()
    skipped: list[dict[str, Any]] = []
    taken = 0
    try:
        while options.max_messages is None or taken < options.max_messages:
            want = SQS_BATCH_LIMIT if options.max_messages is None else options.max_messages - taken
            got = _receive(sqs, queues, want, options.visibility_timeout)
            fresh = [m for m in got if m["MessageId"] not in seen]
            # A message seen before came back (released, or a duplicate): hide it no longer.
            skipped.extend(m for m in got if m["MessageId"] in seen)
            if not fresh:
                break
            seen.update(m["MessageId"] for m in fresh)
            batch = [m for m in fresh if _wanted(m, options)][:want]
            left = [m for m in fresh if m not in batch]
            skipped.extend(left)
            report.malformed_kept.extend(m["MessageId"] for m in left if _key_of(m.get("Body")) is None)
            if batch:
                taken += len(batch)
                yield batch
    finally:
        if skipped:
            _release(sqs, queues, skipped)


def _list_dlq(sqs: Any, queues: Queues, options: ReplayOptions) -> ReplayReport:
    report = ReplayReport(method="dry-run")
    held: list[dict[str, Any]] = []
    for batch in _walk_dlq(sqs, queues, options, report):
        # Kept hidden until the walk ends, so no message is listed twice; then released.
        held.extend(batch)
        for m in batch:
            key = _key_of(m.get("Body"))
            report.listed.append(
                {
                    "sqs_message_id": m["MessageId"],
                    "message_id": key.idempotency_key if key else None,
                    "receive_count": int(m.get("Attributes", {}).get("ApproximateReceiveCount", 0)),
                }
            )
    _release(sqs, queues, held)
    report.left = queue_depth(sqs, queues.dlq_url, "dead-letter queue")["visible"]
    return report


def _receive_resend_delete(
    sqs: Any,
    queues: Queues,
    options: ReplayOptions,
    progress: Progress,
    *,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> ReplayReport:
    report = ReplayReport(method="receive-resend-delete")
    started = clock()
    for batch in _walk_dlq(sqs, queues, options, report):
        # At most `rate` messages per second since the start.
        ahead = (report.moved + len(batch)) / options.rate - (clock() - started)
        if ahead > 0:
            sleep(ahead)
        # Re-send first, then delete: a kill between the two leaves a duplicate on the
        # delivery queue (the claim acknowledges it without a send), never a loss.
        entries = [{"Id": str(i), "MessageBody": m["Body"], **_attributes(m)} for i, m in enumerate(batch)]
        sent = call_aws("delivery queue", sqs.send_message_batch, QueueUrl=queues.queue_url, Entries=entries)
        ok = {int(e["Id"]) for e in sent.get("Successful", [])}
        delete = [batch[i] for i in sorted(ok)]
        if delete:
            call_aws(
                "dead-letter queue",
                sqs.delete_message_batch,
                QueueUrl=queues.dlq_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(delete)],
            )
        not_sent = [m for i, m in enumerate(batch) if i not in ok]
        if not_sent:
            _release(sqs, queues, not_sent)
        report.moved += len(delete)
        progress.advance(len(delete))
    report.left = queue_depth(sqs, queues.dlq_url, "dead-letter queue")["visible"]
    return report


def _attributes(message: dict[str, Any]) -> dict[str, Any]:
    attrs = message.get("MessageAttributes")
    return {"MessageAttributes": attrs} if attrs else {}
