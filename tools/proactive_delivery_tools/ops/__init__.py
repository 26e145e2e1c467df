"""What the on-call person runs: status, DLQ replay and resend of failed messages.

Replay safety (FAULTS.md row 15). Every queue message carries only a message's identity,
and the deliverer's claim is the one-send gate: a replayed copy of a message that was
already sent (or already failed or skipped) is acknowledged without a send. The manual
path re-sends a batch to the delivery queue *before* deleting it from the DLQ, so a replay
killed between the two leaves a duplicate (harmless) and never a loss; running it again
moves what is left.

Replay does not touch the database. A dead-lettered message whose row is `failed` is
therefore acknowledged without a send when replayed: bringing failed messages back is
`resend`, which resets them to queued in one conditional UPDATE and queues them again.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from proactive_delivery.app.evaluate import Enqueuer
from proactive_delivery.app.ports import QUEUE_BATCH_LIMIT as SQS_BATCH_LIMIT
from proactive_delivery.core.errors import DeliveryError
from proactive_delivery.core.models import MessageKey
from proactive_delivery_tools.ops.store import OperationsStore

_MISSING_QUEUE = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
_BAD_CREDENTIALS = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "AccessDenied",
        "AccessDeniedException",
        "AuthFailure",
    }
)
_MOVE_TASK_UNAVAILABLE = frozenset(
    {"UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", "InvalidAction", "NotImplemented"}
)
_MOVE_TASK_DONE = frozenset({"COMPLETED", "CANCELLED", "FAILED"})


class OperationsError(DeliveryError):
    """An operator command cannot go on; the message is the one line to print."""


def describe_aws_error(exc: Exception, what: str, *, service: str = "SQS") -> OperationsError:
    """One line an operator can act on, for an AWS error."""
    if isinstance(exc, NoRegionError):
        return OperationsError("no AWS region: set AWS_REGION or AWS_DEFAULT_REGION")
    if isinstance(exc, NoCredentialsError):
        return OperationsError(f"{what}: no AWS credentials found (set AWS_PROFILE or log in)")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", "ClientError"))
        if code in _MISSING_QUEUE:
            return OperationsError(f"{what}: the queue does not exist ({code})")
        if code in _BAD_CREDENTIALS:
            return OperationsError(f"{what}: AWS refused the credentials ({code}); refresh them and retry")
        status = _http_status(exc)
        return OperationsError(
            f"{what}: {service} error {code}" + (f" (HTTP {status})" if status >= 500 else "")
        )
    return OperationsError(f"{what}: {type(exc).__name__}")


def _http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def _move_tasks_unavailable(exc: ClientError) -> bool:
    """The endpoint has no message move tasks (local SQS, an old region), or failed at them
    (5xx: moto's server answers ListMessageMoveTasks with a 500). Either way the manual
    receive/re-send/delete path can still do the replay."""
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in _MOVE_TASK_UNAVAILABLE or _http_status(exc) >= 500


def _call(what: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return fn(**kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise describe_aws_error(exc, what) from exc


def parse_timestamp(text: str) -> datetime:
    """ISO 8601 (2026-05-01, 2026-05-01T12:00, ...Z, ...+02:00); naive means UTC."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise OperationsError(
            f"--failed-since {text!r} is not a timestamp (use ISO 8601, e.g. 2026-05-01T12:00:00Z)"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --------------------------------------------------------------------------------------- #
# Queues                                                                                  #
# --------------------------------------------------------------------------------------- #


@dataclass(frozen=True)
class Queues:
    queue_url: str | None
    queue_arn: str | None
    dlq_url: str
    dlq_arn: str


def _arn_of(sqs: Any, url: str, what: str) -> str:
    attrs = _call(what, sqs.get_queue_attributes, QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attrs["Attributes"]["QueueArn"])


def find_queues(sqs: Any, queue_url: str | None, dlq_url: str | None) -> Queues:
    """The DLQ is the delivery queue's redrive target unless --dlq-url names one. A
    delivery queue always has a redrive policy: a queue without one (the DLQ's URL given as
    DELIVERY_QUEUE_URL, by a slip of the copy and paste) is refused, so that a replay never
    moves the DLQ into itself."""
    queue_arn = _arn_of(sqs, queue_url, f"delivery queue {queue_url}") if queue_url else None
    if queue_url is not None and dlq_url is not None:
        _redrive_target(sqs, queue_url)
    if dlq_url is None:
        if queue_url is None:
            raise OperationsError("DELIVERY_QUEUE_URL is not set and no --dlq-url was given")
        target = _redrive_target(sqs, queue_url)
        _, _, _, _, account, name = target.split(":", 5)
        dlq_url = str(
            _call(
                f"dead-letter queue {name}",
                sqs.get_queue_url,
                QueueName=name,
                QueueOwnerAWSAccountId=account,
            )["QueueUrl"]
        )
    dlq_arn = _arn_of(sqs, dlq_url, f"dead-letter queue {dlq_url}")
    if dlq_arn == queue_arn:
        raise OperationsError(f"the dead-letter queue {dlq_url} is the delivery queue itself")
    return Queues(queue_url, queue_arn, dlq_url, dlq_arn)


def _redrive_target(sqs: Any, queue_url: str) -> str:
    """The ARN of the queue's dead-letter queue."""
    response = _call(
        f"delivery queue {queue_url}",
        sqs.get_queue_attributes,
        QueueUrl=queue_url,
        AttributeNames=["RedrivePolicy"],
    )
    # SQS leaves "Attributes" out altogether when none of the names asked for is set.
    policy = response.get("Attributes", {}).get("RedrivePolicy")
    if not policy:
        raise OperationsError(
            f"DELIVERY_QUEUE_URL {queue_url} is not a delivery queue: it has no redrive policy "
            "(is it the dead-letter queue's URL?)"
        )
    try:
        return str(json.loads(policy)["deadLetterTargetArn"])
    except (ValueError, KeyError, TypeError):
        raise OperationsError(f"delivery queue {queue_url} has a redrive policy without a target") from None


def queue_depth(sqs: Any, url: str, what: str) -> dict[str, int]:
    attrs = _call(
        what,
        sqs.get_queue_attributes,
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return {
        "visible": int(attrs.get("ApproximateNumberOfMessages", 0)),
        "in_flight": int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        "delayed": int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
    }


# --------------------------------------------------------------------------------------- #
# status                                                                                  #
# --------------------------------------------------------------------------------------- #


def collect_status(
    store: OperationsStore, sqs: Any, queue_url: str | None, sources: Sequence[str]
) -> dict[str, Any]:
    backlog = {}
    sent_by_others = {}
    present = store.sources()
    for source in (s for s in sources if s in present):
        b = store.unsent_backlog(source)
        backlog[source] = {"unsent": b.count, "oldest_unsent_age_seconds": round(b.oldest_age_seconds, 1)}
        others = store.sent_by_others(source)
        last = others["last_sent_at"]
        sent_by_others[source] = {
            "messages": others["messages"],
            "last_sent_at": last.isoformat() if last is not None else None,
        }
    states: dict[str, dict[str, int]] = {}
    for row in store.state_counts():
        states.setdefault(row["source"], {})[row["state"]] = int(row["messages"])
    failures = [
        {"source": r["source"], "reason": r["reason"], "messages": int(r["messages"])}
        for r in store.recent_failures()
    ]
    last = store.last_evaluate_run()
    last_run = (
        None
        if last is None
        else {
            "finished_at": last["finished_at"].isoformat(),
            "age_seconds": round(float(last["age_seconds"]), 1),
            "sources": list(last["sources"]),
            "enqueued": int(last["enqueued"]),
            "stopped_early": bool(last["stopped_early"]),
        }
    )
    queues: dict[str, Any] | None = None
    if queue_url:
        found = find_queues(sqs, queue_url, None)
        queues = {
            "delivery": {"url": queue_url, **queue_depth(sqs, queue_url, "delivery queue")},
            "dlq": {"url": found.dlq_url, **queue_depth(sqs, found.dlq_url, "dead-letter queue")},
        }
    return {
        "backlog": backlog,
        "states": states,
        "failures_24h": failures,
        "queues": queues,
        "last_evaluate_run": last_run,
        "sent_by_others_24h": sent_by_others,
    }


def render_status(status: dict[str, Any]) -> str:
    lines: list[str] = []
    others = {s: o for s, o in status.get("sent_by_others_24h", {}).items() if o["messages"]}
    if others:
        what = ", ".join(f"{n['messages']} {s} (last {n['last_sent_at']})" for s, n in others.items())
        lines.append(
            f"WARNING: another sender is still running: the platform shows {what} sent in the"
            " last 24 h that this pipeline did not send (docs/cutover.md)"
        )
    lines.append("Unsent backlog (due and waiting: not sent, skipped, failed or deferred to later)")
    for source, b in status["backlog"].items():
        lines.append(f"  {source:<12} {b['unsent']:>8}   oldest {_age(b['oldest_unsent_age_seconds'])}")
    lines.append("Messages by state (open: all; final: last 24 h)")
    if not status["states"]:
        lines.append("  (none)")
    for source, counts in status["states"].items():
        lines.append(f"  {source:<12} " + "  ".join(f"{s}={n}" for s, n in sorted(counts.items())))
    lines.append("Failures in the last 24 h by reason")
    if not status["failures_24h"]:
        lines.append("  (none)")
    for f in status["failures_24h"]:
        lines.append(f"  {f['source']:<12} {f['reason']:<28} {f['messages']:>6}")
    lines.append("Queues (visible / in flight / delayed)")
    if status["queues"] is None:
        lines.append("  DELIVERY_QUEUE_URL is not set")
    else:
        for name, q in status["queues"].items():
            lines.append(f"  {name:<12} {q['visible']:>6} / {q['in_flight']:>6} / {q['delayed']:>6}")
    run = status["last_evaluate_run"]
    lines.append("Last evaluate run")
    if run is None:
        lines.append("  never")
    else:
        lines.append(
            f"  {run['finished_at']} ({_age(run['age_seconds'])} ago): {','.join(run['sources'])}, "
            f"enqueued {run['enqueued']}{', stopped early' if run['stopped_early'] else ''}"
        )
    return "\n".join(lines)


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


# --------------------------------------------------------------------------------------- #
# replay-dlq                                                                              #
# --------------------------------------------------------------------------------------- #


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "moved": self.moved,
            "left_in_dlq": self.left,
            "listed": self.listed,
            "task_handle": self.task_handle,
            "task_status": self.task_status,
        }


def _key_of(body: str | None) -> MessageKey | None:
    """The identity in a DLQ message body, for any source name: a replay must not depend on
    this package knowing every source (the deliverer decides what is malformed)."""
    try:
        data = json.loads(body or "")
    except (json.JSONDecodeError, TypeError):
        return None
    if not isinstance(data, dict):
        return None
    source, source_id = data.get("source"), data.get("id")
    if (
        not isinstance(source, str)
        or not source
        or isinstance(source_id, bool)
        or not isinstance(source_id, int)
    ):
        return None
    return MessageKey(source, source_id)


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
    else:
        try:
            response = sqs.start_message_move_task(
                SourceArn=queues.dlq_arn,
                DestinationArn=queues.queue_arn,
                MaxNumberOfMessagesPerSecond=max(1, min(500, int(options.rate))),
            )
        except NotImplementedError:
            return None
        except ClientError as exc:
            if _move_tasks_unavailable(exc):
                return None
            raise describe_aws_error(exc, "StartMessageMoveTask") from exc
        except BotoCoreError as exc:
            raise describe_aws_error(exc, "StartMessageMoveTask") from exc
        report.task_handle = response.get("TaskHandle")
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
    response = _call(
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
        _call(
            "dead-letter queue",
            sqs.change_message_visibility_batch,
            QueueUrl=queues.dlq_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(chunk)
            ],
        )


def _matches(message: dict[str, Any], source: str | None) -> bool:
    if source is None:
        return True
    key = _key_of(message.get("Body"))
    return key is not None and key.source == source


def _walk_dlq(sqs: Any, queues: Queues, options: ReplayOptions) -> Iterator[list[dict[str, Any]]]:
    """Batches of DLQ messages that match the filters, each hidden while it is handled;
    the ones that do not match are made visible again when the walk ends."""
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
            batch = [m for m in fresh if _matches(m, options.source)][:want]
            skipped.extend(m for m in fresh if m not in batch)
            if batch:
                taken += len(batch)
                yield batch
    finally:
        if skipped:
            _release(sqs, queues, skipped)


def _list_dlq(sqs: Any, queues: Queues, options: ReplayOptions) -> ReplayReport:
    report = ReplayReport(method="dry-run")
    held: list[dict[str, Any]] = []
    for batch in _walk_dlq(sqs, queues, options):
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
    for batch in _walk_dlq(sqs, queues, options):
        # At most `rate` messages per second since the start.
        ahead = (report.moved + len(batch)) / options.rate - (clock() - started)
        if ahead > 0:
            sleep(ahead)
        # Re-send first, then delete: a kill between the two leaves a duplicate on the
        # delivery queue (the claim acknowledges it without a send), never a loss.
        entries = [{"Id": str(i), "MessageBody": m["Body"], **_attributes(m)} for i, m in enumerate(batch)]
        sent = _call("delivery queue", sqs.send_message_batch, QueueUrl=queues.queue_url, Entries=entries)
        ok = {int(e["Id"]) for e in sent.get("Successful", [])}
        delete = [batch[i] for i in sorted(ok)]
        if delete:
            _call(
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


# --------------------------------------------------------------------------------------- #
# resend                                                                                  #
# --------------------------------------------------------------------------------------- #


@dataclass
class ResendReport:
    dry_run: bool
    matched: int = 0
    queued: int = 0
    returned_to_pending: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return vars(self).copy()


class QueueMarks(Protocol):
    """What resend needs of the delivery store after the queue answered."""

    def return_to_pending(self, source: str, source_ids: Sequence[int]) -> int: ...

    def mark_enqueued(self, source: str, source_ids: Sequence[int]) -> int: ...


def resend_failed(
    store: OperationsStore,
    enqueuer: Enqueuer,
    marks: QueueMarks,
    *,
    since: datetime,
    reason: str | None,
    dry_run: bool,
) -> ResendReport:
    report = ResendReport(dry_run=dry_run)
    if dry_run:
        rows = store.failed_since(since, reason)
        report.matched = len(rows)
        for row in rows:
            key = row["reason"] or "unknown"
            report.by_reason[key] = report.by_reason.get(key, 0) + 1
        return report
    keys = store.reset_failed(since, reason)
    report.matched = len(keys)
    by_source: dict[str, list[int]] = {}
    for key in keys:
        by_source.setdefault(key.source, []).append(key.source_id)
    for source, ids in by_source.items():
        # The same sending as evaluate's: what SQS refuses or never got goes back to pending
        # (the next evaluate run takes it at once), so nothing is stranded.
        sent = enqueuer.send(source, [(0, ids)], stop=lambda: False)
        report.returned_to_pending += marks.return_to_pending(source, [*sent.refused, *sent.unsent])
        marks.mark_enqueued(source, sent.accepted)
        report.queued += len(sent.accepted)
        if sent.error is not None:
            raise sent.error
    return report


# --------------------------------------------------------------------------------------- #
# show                                                                                    #
# --------------------------------------------------------------------------------------- #


def parse_message_ref(text: str, sources: Sequence[str]) -> MessageKey:
    """`proactive:42` (also `proactive-42`, the webhook-id form the logs carry)."""
    source, sep, number = text.strip().replace("-", ":", 1).partition(":")
    if not sep or source not in sources or not number.isdigit() or int(number) <= 0:
        raise OperationsError(
            f"{text!r} is not a message: use SOURCE:ID, SOURCE one of {', '.join(sources)} (proactive:42)"
        )
    return MessageKey(source, int(number))


def _when(value: Any) -> str | None:
    return value.isoformat(timespec="milliseconds") if isinstance(value, datetime) else None


def _clean(value: Any) -> Any:
    """Errors are provider text: mask anything that looks like a phone or an email."""
    from proactive_delivery.adapters.redact import redact_value

    return redact_value(value) if isinstance(value, str) else value


def message_report(store: OperationsStore, key: MessageKey) -> dict[str, Any]:
    """One message's delivery state and its attempt history, for `show`. Never the text
    or the contractor's contact details."""
    state = store.message_detail(key)
    platform = store.platform_row(key)
    if state is None and platform is None:
        raise OperationsError(
            f"no message {key.source}:{key.source_id}: not in the platform's table nor in the delivery state"
        )
    report: dict[str, Any] = {
        "message_id": key.idempotency_key,
        "source": key.source,
        "source_id": key.source_id,
        "platform": None
        if platform is None
        else {
            "contractor_id": platform["contractor_id"],
            "due_at": _when(platform["due_at"]),
            "sent_at": _when(platform["sent_at"]),
            "status": platform["platform_status"],
        },
        "state": None,
        "attempts": [],
    }
    if state is not None:
        report["state"] = {
            "state": state["state"],
            "reason": _clean(state["reason"]),
            "attempts": int(state["attempts"]),
            "channel": state["channel"],
            "provider_ref": state["provider_ref"],
            "last_error": _clean(state["last_error"]),
            "queued_at": _when(state["queued_at"]),
            "sent_at": _when(state["sent_at"]),
            "next_attempt_at": _when(state["next_attempt_at"]),
            "lease_expires_at": _when(state["lease_expires_at"]),
            "updated_at": _when(state["updated_at"]),
        }
        report["attempts"] = [
            {
                "attempt": int(a["attempt"]),
                "channel": a["channel"],
                "outcome": a["outcome"],
                "http_status": a["http_status"],
                "latency_ms": a["latency_ms"],
                "error": _clean(a["error"]),
                "started_at": _when(a["started_at"]),
                "finished_at": _when(a["finished_at"]),
            }
            for a in store.attempt_history(int(state["delivery_id"]))
        ]
    return report


def render_message(report: dict[str, Any]) -> str:
    lines = [f"{report['source']}:{report['source_id']} (message id {report['message_id']})"]
    platform = report["platform"]
    if platform is None:
        lines.append("  platform row     gone (the platform deleted it)")
    else:
        status = f", status {platform['status']}" if platform["status"] else ""
        lines.append(f"  contractor       {platform['contractor_id']}")
        lines.append(f"  due at           {platform['due_at']}{status}")
    state = report["state"]
    if state is None:
        lines.append("  state            not seen by evaluate yet (the next run of its schedule queues it)")
        return "\n".join(lines)
    rows = [
        ("state", state["state"] + (f" ({state['reason']})" if state["reason"] else "")),
        ("attempts", str(state["attempts"])),
        ("channel", state["channel"]),
        ("provider ref", state["provider_ref"]),
        ("queued at", state["queued_at"]),
        ("sent at", state["sent_at"]),
        (
            "next attempt",
            state["next_attempt_at"] if state["state"] not in ("sent", "skipped", "failed") else None,
        ),
        ("lease until", state["lease_expires_at"] if state["state"] == "sending" else None),
        ("last error", state["last_error"]),
        ("updated at", state["updated_at"]),
    ]
    lines += [f"  {label:<16} {value}" for label, value in rows if value not in (None, "")]
    lines.append("Attempts" if report["attempts"] else "Attempts: none")
    for a in report["attempts"]:
        status = a["http_status"] if a["http_status"] is not None else "-"
        latency = f"{a['latency_ms']} ms" if a["latency_ms"] is not None else "-"
        lines.append(
            f"  #{a['attempt']:<3} {a['outcome']:<10} {a['channel'] or '-':<9} http {status:<4} {latency:>9}"
            f"  {a['started_at']} .. {a['finished_at']}" + (f"  {a['error']}" if a["error"] else "")
        )
    return "\n".join(lines)
