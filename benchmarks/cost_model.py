"""What a million deliveries cost, from durations measured in the benchmark run and cited
prices. docs/cost.md explains every line; pipeline_bench/cost.py feeds it its measurements.

Prices: US East (N. Virginia), on-demand, without free tiers, as published on
  Lambda   https://aws.amazon.com/lambda/pricing/  (Arm: $0.0000133334 per GB-second for
           the first 7.5 billion GB-seconds a month; $0.20 per million requests)
  SQS      https://aws.amazon.com/sqs/pricing/     (standard queue: $0.40 per million
           requests; a batch call of up to 10 messages is one request)
  Logs     https://aws.amazon.com/cloudwatch/pricing/  (Logs ingestion, standard: $0.50 per GB)
  EC2      https://aws.amazon.com/ec2/pricing/on-demand/  (t4g.nano Linux: $0.0042 per hour)
  SMS      https://www.twilio.com/en-us/sms/pricing/us  (US long code, outbound: $0.0083 per
           segment, before the carriers' pass-through fees)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ARM_GB_SECOND = 0.0000133334
LAMBDA_PER_REQUEST = 0.20 / 1_000_000
SQS_PER_REQUEST = 0.40 / 1_000_000
LOGS_PER_GB = 0.50
# What the SMS provider charges a segment (Twilio, US long code, outbound, base rate): an SMS
# costs its segments, so a text that goes UCS-2 can cost twice what its GSM-7 twin does.
SMS_PER_SEGMENT = 0.0083
# The smallest always-on machine a worker process could have to itself.
ALWAYS_ON_PER_HOUR = 0.0042
HOURS_PER_MONTH = 730  # 8,760 hours a year / 12
MILLION = 1_000_000


@dataclass(frozen=True)
class Template:
    memory_mb: int
    batch_size: int
    schedules: dict[str, str]

    @property
    def memory_gb(self) -> float:
        return self.memory_mb / 1024


def read_template(path: Path) -> Template:
    """The figures the cost depends on, as template.yaml declares them (defaults)."""
    from proactive_delivery_tools.local.template import load_yaml

    data = load_yaml(path)
    parameters = data["Parameters"]
    return Template(
        memory_mb=int(data["Globals"]["Function"]["MemorySize"]),
        batch_size=int(parameters["DeliverBatchSize"]["Default"]),
        schedules={
            "proactive": str(parameters["ProactiveScheduleExpression"]["Default"]),
            "followup": str(parameters["FollowupScheduleExpression"]["Default"]),
        },
    )


def runs_per_month(expression: str) -> float:
    """How often an EventBridge schedule fires in an average month: rate(N minute(s)/
    hour(s)/day(s)), or a cron whose minute is fixed and whose other fields are `*`/`?`
    (hourly), or whose minute and hour are fixed (daily). Anything else is refused rather
    than guessed."""
    rate = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression.strip())
    if rate:
        value, unit = int(rate.group(1)), rate.group(2).rstrip("s")
        per_hour = {"minute": 60 / value, "hour": 1 / value, "day": 1 / (24 * value)}[unit]
        return per_hour * HOURS_PER_MONTH
    cron = re.fullmatch(r"cron\((\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\)", expression.strip())
    if cron:
        minute, hour, *rest = cron.groups()
        if minute.isdigit() and all(f in ("*", "?") for f in rest):
            if hour == "*":
                return float(HOURS_PER_MONTH)
            if hour.isdigit():
                return HOURS_PER_MONTH / 24
    raise ValueError(f"cannot count the runs of {expression!r}")


@dataclass(frozen=True)
class Measured:
    """What the benchmark measured in this run."""

    deliver_ms_per_batch: float  # wall time of one deliver invocation of a full batch
    deliver_cpu_ms_per_message: float
    evaluate_ms_per_message: float  # evaluate wall time per message queued (20 ms SQS calls)
    evaluate_idle_run_ms: float  # one scheduled run with nothing due
    send_calls_per_message: float  # SendMessageBatch calls evaluate made per message
    visibility_calls_per_message: float  # ChangeMessageVisibilityBatch calls per delivered message
    log_bytes_per_message: float  # log lines and metric (EMF) lines, both functions


@dataclass(frozen=True)
class Cost:
    deliver_gb_s: float
    evaluate_gb_s: float
    lambda_requests: float
    sqs_requests: float
    log_gb: float

    @property
    def lambda_duration_usd(self) -> float:
        return (self.deliver_gb_s + self.evaluate_gb_s) * ARM_GB_SECOND

    @property
    def lambda_requests_usd(self) -> float:
        return self.lambda_requests * LAMBDA_PER_REQUEST

    @property
    def sqs_usd(self) -> float:
        return self.sqs_requests * SQS_PER_REQUEST

    @property
    def logs_usd(self) -> float:
        return self.log_gb * LOGS_PER_GB

    @property
    def total_usd(self) -> float:
        return self.lambda_duration_usd + self.lambda_requests_usd + self.sqs_usd + self.logs_usd


def per_million(measured: Measured, template: Template, *, batch_size: int | None = None) -> Cost:
    """A million deliveries, in full batches of `batch_size` (the template's by default).
    SQS requests per message: evaluate's SendMessageBatch calls as measured, and the
    event source mapping's ReceiveMessage and DeleteMessageBatch, one each per batch
    (Lambda reads up to BatchSize messages per receive and deletes a batch in one call),
    plus the visibility changes measured."""
    size = batch_size or template.batch_size
    batches = MILLION / size
    sqs_per_message = measured.send_calls_per_message + 2 / size + measured.visibility_calls_per_message
    return Cost(
        deliver_gb_s=batches * measured.deliver_ms_per_batch / 1000 * template.memory_gb,
        evaluate_gb_s=MILLION * measured.evaluate_ms_per_message / 1000 * template.memory_gb,
        lambda_requests=batches,
        sqs_requests=MILLION * sqs_per_message,
        log_gb=MILLION * measured.log_bytes_per_message / 1e9,
    )


def idle_month(measured: Measured, template: Template) -> Cost:
    """A month of schedules with nothing due: what the pipeline costs standing still."""
    runs = sum(runs_per_month(e) for e in template.schedules.values())
    return Cost(
        deliver_gb_s=0.0,
        evaluate_gb_s=runs * measured.evaluate_idle_run_ms / 1000 * template.memory_gb,
        lambda_requests=runs,
        sqs_requests=0.0,
        log_gb=0.0,
    )


def always_on_month() -> float:
    return ALWAYS_ON_PER_HOUR * HOURS_PER_MONTH


def sms_per_million(segments_per_message: float) -> float:
    """The provider's charge for a million SMS of this many segments each, on average."""
    return MILLION * segments_per_message * SMS_PER_SEGMENT
