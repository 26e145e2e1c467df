"""`proactive-delivery local`: the deployed pipeline, as template.yaml declares it, on this
machine.

What comes from the template: the queues (visibility timeout, retention, redrive with
maxReceiveCount), every function's handler, timeout and environment (Globals + its own
Environment), its Schedule events (expression and Input) and its SQS events (BatchSize,
MaximumBatchingWindowInSeconds, ScalingConfig.MaximumConcurrency, FunctionResponseTypes).
What is local: SQS is moto's server on loopback, PostgreSQL is DATABASE_URL or a throwaway
cluster, the webhook is a signature-verifying receiver with injectable faults, SMS goes to a
Twilio stand-in that calls back (signed status callbacks, the contractors' replies), and a
function with a FunctionUrlConfig (the inbound edge) is served over HTTP on loopback.

Environment: both functions run in this one process, each on services built for it
(proactive_delivery.bootstrap.build) from its own environment (template + env file + the
runtime's endpoints), with AWS clients pointed at the local server. Nothing here changes
os.environ: each function's handler is its module's `lambda_handler.with_services(...)`.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

import httpx
import psycopg

from proactive_delivery.bootstrap import InboundServices, build
from proactive_delivery.channels import CHANNELS
from proactive_delivery.core.errors import ConfigError
from proactive_delivery.settings import InboundSettings, Settings
from proactive_delivery_tools.local.esm import LambdaContext, SqsEventSourceMapping
from proactive_delivery_tools.local.function_url import FunctionUrlServer
from proactive_delivery_tools.local.postgres import ThrowawayPostgres, url_from_params
from proactive_delivery_tools.local.receiver import FaultPlan, Reply, WebhookReceiver
from proactive_delivery_tools.local.schedule import (
    ScheduleClock,
    ScheduledTarget,
    ScheduleExpression,
    Scheduler,
)
from proactive_delivery_tools.local.sqs import LocalSqsServer, local_aws_environment, local_client
from proactive_delivery_tools.local.template import LocalTemplate, load_env_file
from proactive_delivery_tools.local.twilio import FakeTwilio, TwilioReply
from proactive_delivery_tools.queues import queue_depth

if TYPE_CHECKING:
    from proactive_delivery_tools.local.seed import SeedResult

LOCAL_DATABASE = "proactive_delivery_local"
Handler = Callable[[dict[str, Any], Any], Any]


@dataclass(frozen=True)
class RuntimeOptions:
    template: Path = Path("template.yaml")
    env_vars: Path | None = Path("events/env.local.json")
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    once: bool = False
    speed: float = 1.0
    count: int = 100
    fail_rate: float = 0.0
    latency: float = 0.0
    status: int = 503
    live: bool = True
    database_url: str | None = None
    run_for: float | None = None  # real seconds; None: until drained (--once) or Ctrl-C
    max_wait: float = 300.0
    keep_data: bool = False
    fault_seed: int | None = 11
    run_dir: Path = Path(".local-run")
    # Who sends SMS: the Twilio stand-in (which calls back) or n8n (the webhook receiver).
    sms_provider: str = "twilio"


# The sender the local SES accepts unless the env file names another.
LOCAL_EMAIL_SENDER = "coach@example.com"
# The Twilio stand-in's number the SMS come from (555-01xx: fiction).
LOCAL_TWILIO_NUMBER = "+14155550100"
SMS_PROVIDERS = ("twilio", "n8n")


def new_signing_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def fault_plan(fail_rate: float, status: int, latency: float, seed: int | None) -> FaultPlan:
    """Answer `status` to a share `fail_rate` of requests, every one after `latency` s. A 429
    carries Retry-After, as a rate-limiting provider's does."""
    import random

    if not 0.0 <= fail_rate <= 1.0:
        raise ConfigError("--fail-rate must be between 0 and 1")
    if not 100 <= status <= 599:
        raise ConfigError("--status must be an HTTP status code (100-599)")
    if latency < 0:
        raise ConfigError("--latency must be >= 0")
    rng = random.Random(seed)  # noqa: S311 - fault injection, not security  # nosec B311
    lock = threading.Lock()
    headers = {"Retry-After": "1"} if status == 429 else {}

    def plan(_webhook_id: str, _n: int) -> Reply:
        with lock:
            failing = rng.random() < fail_rate
        return Reply(status, delay=latency, headers=headers) if failing else Reply(200, delay=latency)

    return plan


def twilio_fault_plan(plan: FaultPlan) -> Callable[[str, int], TwilioReply]:
    """The same faults at the Twilio stand-in: a 429 carries Twilio's code 20429 and
    Retry-After; any other failing status is answered without a Twilio code."""

    def twilio_plan(to: str, n: int) -> TwilioReply:
        reply = plan(to, n)
        if reply.status < 300:
            return TwilioReply(201, delay=reply.delay)
        code = 20429 if reply.status == 429 else None
        return TwilioReply(reply.status, code=code, headers=tuple(reply.headers.items()), delay=reply.delay)

    return twilio_plan


def load_handler(module_file: Path, function_name: str, logical_id: str) -> Handler:
    """Import the function's module from its CodeUri, as Lambda does, under a unique name."""
    module_name = f"_local_{logical_id}_{module_file.stem}"
    module: ModuleType | None = sys.modules.get(module_name)
    if module is None or getattr(module, "__file__", None) != str(module_file):
        if not module_file.exists():
            raise ConfigError(f"{logical_id}: handler module {module_file} does not exist")
        spec = importlib.util.spec_from_file_location(module_name, module_file)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
    handler = getattr(module, function_name, None)
    if not callable(handler):
        raise ConfigError(f"{logical_id}: {module_file.name} has no function {function_name}")
    return handler  # type: ignore[no-any-return]


@dataclass
class LocalFunction:
    """One function of the template: its handler, bound to services built from its own
    environment, and its counters."""

    logical_id: str
    handler: Handler
    timeout: int
    memory_mb: int
    environment: dict[str, str]
    services: Any  # Services; InboundServices for the inbound edge
    invocations: int = 0
    errors: int = 0
    last_result: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __call__(self, event: dict[str, Any], context: Any) -> Any:
        with self._lock:
            self.invocations += 1
        try:
            self.last_result = self.handler(event, context)
        except Exception:
            with self._lock:
                self.errors += 1
            raise
        return self.last_result

    def context(self) -> LambdaContext:
        return LambdaContext(self.logical_id, self.timeout, self.memory_mb)


@dataclass
class RunResult:
    summary: dict[str, Any]
    exit_code: int


def _admin_url(url: str, dbname: str) -> str:
    info: dict[str, Any] = dict(psycopg.conninfo.conninfo_to_dict(url))
    info["dbname"] = dbname
    return url_from_params(info)


def redacted_url(url: str) -> str:
    return url_from_params(dict(psycopg.conninfo.conninfo_to_dict(url)), mask=True)


def prepare_database(
    server_url: str, count: int, *, contractors: int | None = None
) -> tuple[str, SeedResult | None]:
    """With a sample to seed: a fresh database of our own on that server (never the one
    DATABASE_URL names, whose tables may matter to someone), and what was seeded into it.
    Without: DATABASE_URL as is, and None."""
    from proactive_delivery_tools.local.seed import seed
    from proactive_delivery_tools.schema.migrate import apply_migrations

    if count <= 0:
        apply_migrations(server_url, reference_schema=True)
        return server_url, None
    try:
        with psycopg.connect(server_url, autocommit=True, connect_timeout=10) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{LOCAL_DATABASE}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{LOCAL_DATABASE}"')
    except psycopg.Error as exc:
        raise ConfigError(
            f"cannot create the sample database {LOCAL_DATABASE} on {redacted_url(server_url)}: "
            f"{str(exc).strip()} (run with --count 0 to use that database as it is)"
        ) from None
    url = _admin_url(server_url, LOCAL_DATABASE)
    apply_migrations(url, reference_schema=True)
    with psycopg.connect(url, autocommit=True) as conn:
        seeded = seed(
            conn,
            count=count,
            contractors=contractors or max(12, min(200, count // 5)),
            inbound_scenario=True,
        )
    return url, seeded


class LocalRuntime:
    def __init__(self, options: RuntimeOptions, out: TextIO | None = None) -> None:
        self.options = options
        self.out = out or sys.stdout
        overrides = dict(options.parameter_overrides)
        self.template = LocalTemplate(options.template, overrides)
        self.env_file = load_env_file(options.env_vars)
        unknown = sorted(set(self.env_file) - {"Parameters", *self.template.functions})
        if unknown:
            raise ConfigError(f"env file names function(s) not in the template: {', '.join(unknown)}")
        self.warnings: list[str] = []
        self.functions: dict[str, LocalFunction] = {}
        self.mappings: list[SqsEventSourceMapping] = []
        self._empty_reads = 0
        self.queue_urls: dict[str, str] = {}
        self.scheduler: Scheduler | None = None
        self.schedule_fires: list[tuple[str, str]] = []
        self.receiver: WebhookReceiver | None = None
        self.twilio: FakeTwilio | None = None
        # Functions with a FunctionUrlConfig, each served on loopback (logical id -> server).
        self.function_urls: dict[str, FunctionUrlServer] = {}
        self.next_messages = 0
        self.database_url = ""
        self.sqs_client: Any = None
        self.log_path: Path | None = None

    # Environment ----------------------------------------------------------------------------
    def function_environment(self, logical_id: str, runtime_env: dict[str, str]) -> dict[str, str]:
        """Template (Globals + Environment) < env file ("Parameters", then the function's own
        section; like `sam local invoke --env-vars`, only variables the template declares)
        < the runtime's own endpoints."""
        env = self.template.function_environment(logical_id)
        for section in ("Parameters", logical_id):
            for key, value in self.env_file.get(section, {}).items():
                if key in env:
                    env[key] = value
                else:
                    warning = f"env file: {key} is not declared for {logical_id} in the template; ignored"
                    if warning not in self.warnings:
                        self.warnings.append(warning)
        env.update(runtime_env)
        return env

    def env_file_value(self, name: str) -> str:
        for section in ("Parameters", *self.template.functions):
            value = self.env_file.get(section, {}).get(name, "")
            if value:
                return value
        return ""

    # Set-up -----------------------------------------------------------------------------------
    def _create_queues(self) -> None:
        client = self.sqs_client
        pending = dict(self.template.queues)
        # Dead-letter queues first: a redrive policy names its target's ARN.
        while pending:
            ready = [
                s
                for s in pending.values()
                if not s.dead_letter_target or s.dead_letter_target in self.queue_urls
            ]
            if not ready:
                raise ConfigError("the template's redrive policies form a cycle")
            for spec in ready:
                attributes = {
                    "VisibilityTimeout": str(spec.visibility_timeout),
                    "MessageRetentionPeriod": str(spec.retention_seconds),
                }
                if spec.dead_letter_target:
                    target_arn = self.template.attributes[(spec.dead_letter_target, "Arn")]
                    attributes["RedrivePolicy"] = json.dumps(
                        {
                            "deadLetterTargetArn": target_arn,
                            "maxReceiveCount": str(spec.max_receive_count or 10),
                        }
                    )
                url = client.create_queue(QueueName=spec.name, Attributes=attributes)["QueueUrl"]
                arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                    "QueueArn"
                ]
                self.template.bind_queue(spec.logical_id, url, arn)
                self.queue_urls[spec.logical_id] = url
                del pending[spec.logical_id]

    def _local_channels(self, receiver_url: str, email_sender: str) -> dict[str, str]:
        """Every channel the registry declares, switched on against a local stand-in: SMS
        and web chat to the signature-verifying receiver, e-mail to moto's SES. A declared
        channel with no stand-in here stays off, with a warning."""
        stand_ins = {
            "sms": {"N8N_OUTBOUND_WEBHOOK_URL": receiver_url},
            "email": {"EMAIL_FROM_ADDRESS": email_sender},
            "web_chat": {"WEB_CHAT_WEBHOOK_URL": receiver_url.replace("/webhook", "/chat")},
        }
        env: dict[str, str] = {}
        for declaration in CHANNELS:
            if declaration.name in stand_ins:
                env.update(stand_ins[declaration.name])
            else:
                self.warnings.append(f"channel {declaration.name} has no local stand-in; it stays off")
        return env

    def channel_line(self) -> str:
        """Which channels the deliver function has, and through which provider."""
        settings = next(
            f.services.settings for f in self.functions.values() if isinstance(f.services.settings, Settings)
        )
        names = [f"{d.name} via {d.provider(settings)}" for d in CHANNELS.configured(settings)]
        return "channels: " + ", ".join(names)

    def _build_functions(self, runtime_env: dict[str, str], endpoint: str) -> None:
        for logical_id, spec in self.template.functions.items():
            if not (spec.schedules or spec.sqs_events):
                if spec.function_url:
                    self._build_url_function(logical_id, runtime_env, endpoint)
                continue
            environment = self.function_environment(logical_id, runtime_env)
            try:
                settings = Settings.from_env(environment)
            except ConfigError as exc:
                raise ConfigError(f"{logical_id}: {exc}") from None
            services = build(
                settings,
                sqs=local_client("sqs", endpoint),
                sesv2=local_client("sesv2", endpoint),
            )
            handler = load_handler(spec.module_file, spec.function_name, logical_id)
            bound = handler.with_services(services) if hasattr(handler, "with_services") else handler
            self.functions[logical_id] = LocalFunction(
                logical_id, bound, spec.timeout, spec.memory_mb, environment, services
            )

    def _build_url_function(self, logical_id: str, runtime_env: dict[str, str], endpoint: str) -> None:
        """The inbound edge: its InboundSettings from its environment, served by the Function
        URL stand-in started before the functions were built (its URL is in their env)."""
        spec = self.template.functions[logical_id]
        environment = self.function_environment(logical_id, runtime_env)
        try:
            settings = InboundSettings.from_env(environment)
        except ConfigError as exc:
            raise ConfigError(f"{logical_id}: {exc}") from None
        services = InboundServices(settings, sqs=local_client("sqs", endpoint))
        handler = load_handler(spec.module_file, spec.function_name, logical_id)
        bound = handler.with_services(services) if hasattr(handler, "with_services") else handler
        self.functions[logical_id] = LocalFunction(
            logical_id, bound, spec.timeout, spec.memory_mb, environment, services
        )

    def _url_invoker(self, logical_id: str) -> Callable[[dict[str, Any]], Any]:
        def invoke(event: dict[str, Any]) -> Any:
            function = self.functions[logical_id]
            return function(event, function.context())

        return invoke

    def _build_mappings(self, on_invoke: Callable[[list[dict[str, Any]], Any], None] | None) -> None:
        for logical_id, function in self.functions.items():
            spec = self.template.functions[logical_id]
            for event in spec.sqs_events:
                if not event.enabled:
                    continue
                mapping = SqsEventSourceMapping(
                    self.sqs_client,
                    self.queue_urls[event.queue],
                    self.template.attributes[(event.queue, "Arn")],
                    function,
                    function_name=logical_id,
                    function_timeout=spec.timeout,
                    batch_size=event.batch_size,
                    batching_window=event.batching_window,
                    # Without ScalingConfig Lambda scales out freely; locally, 5 pollers.
                    maximum_concurrency=event.maximum_concurrency or 5,
                    report_batch_item_failures=event.report_batch_item_failures,
                    context_factory=_context_factory(function),
                    on_invoke=on_invoke,
                )
                self.mappings.append(mapping)

    def _build_scheduler(self) -> Scheduler:
        clock = ScheduleClock(self.options.speed)
        targets = [
            ScheduledTarget(
                logical_id,
                schedule.name,
                ScheduleExpression.parse(schedule.expression),
                schedule.input,
                clock.now(),
            )
            for logical_id, spec in self.template.functions.items()
            for schedule in spec.schedules
            if schedule.enabled
        ]
        return Scheduler(targets, clock)

    def _start_way_back(self, stack: ExitStack, plan: FaultPlan) -> dict[str, str]:
        """The inbound edge's Function URL on loopback and the Twilio stand-in that calls it
        back; the settings that point the functions at both."""
        from proactive_delivery_tools.local.seed import DEMO_HANDSETS

        if self.options.sms_provider not in SMS_PROVIDERS:
            raise ConfigError(f"--sms-provider must be one of {', '.join(SMS_PROVIDERS)}")
        env: dict[str, str] = {}
        url_functions = [lid for lid, spec in self.template.functions.items() if spec.function_url]
        for logical_id in url_functions:
            self.function_urls[logical_id] = stack.enter_context(
                FunctionUrlServer(self._url_invoker(logical_id), name=f"function-url-{logical_id}")
            )
        token = self.env_file_value("TWILIO_AUTH_TOKEN") or secrets.token_hex(16)
        env["TWILIO_AUTH_TOKEN"] = token
        inbound = self.function_urls.get("InboundFunction")
        if inbound is not None:
            # Twilio signs the URL it calls: here plain HTTP on loopback, not the https://
            # Function URL domain the edge would reconstruct, so it is the public URL.
            env["INBOUND_PUBLIC_URL"] = inbound.url.rstrip("/")
            events_secret = self.env_file_value("INBOUND_SIGNING_SECRET") or new_signing_secret()
            env["INBOUND_SIGNING_SECRET"] = events_secret
        if self.options.sms_provider == "twilio":
            account_sid = "AC" + secrets.token_hex(16)
            twilio = FakeTwilio(
                account_sid,
                token,
                plan=twilio_fault_plan(plan),
                callbacks=True,
                handsets=DEMO_HANDSETS,
                incoming_url=f"{inbound.url}twilio/inbound" if inbound else None,
                hold_callbacks=True,
            )
            self.twilio = stack.enter_context(twilio)
            env.update(
                SMS_PROVIDER="twilio",
                TWILIO_API_BASE_URL=twilio.base_url,
                TWILIO_ACCOUNT_SID=account_sid,
                TWILIO_FROM_NUMBER=LOCAL_TWILIO_NUMBER,
            )
            if inbound is not None:
                env["TWILIO_STATUS_CALLBACK_URL"] = f"{inbound.url}twilio/status"
        return env

    def release_callbacks(self) -> None:
        """Let the Twilio stand-in call back for the messages it accepted while no invocation
        was running: deliver records a batch's provider references after its last send, so a
        receipt posted earlier would find no message (deployed, the processor puts it back for
        30 s and tries again; here it is simply not posted before its message is recorded)."""
        if self.twilio is None:
            return
        held = self.twilio.held()
        if held and not any(m.stats.in_flight for m in self.mappings):
            self.twilio.release(held)

    def fire(self, target: ScheduledTarget) -> Any:
        """What EventBridge does when a schedule fires: invoke with the rule's Input."""
        function = self.functions[target.function]
        self.schedule_fires.append((target.function, target.name))
        return function(dict(target.input), function.context())

    # Queries for the display -------------------------------------------------------------------
    def view(self) -> dict[str, Any]:
        """What the display shows of the runtime (display.Watched)."""
        depths = self.queue_depths() if self.sqs_client is not None else {}
        dlqs = self.template.dead_letter_queues
        return {
            "queues": {q: d for q, d in depths.items() if q not in dlqs},
            "dlqs": {q: d for q, d in depths.items() if q in dlqs},
            "in_flight": sum(m.stats.in_flight for m in self.mappings),
            "invocations": {name: f.invocations for name, f in self.functions.items()},
            "schedules": [
                (t.function, t.name, t.expression.text, t.fired, t.next_fire)
                for t in (self.scheduler.targets if self.scheduler else [])
            ],
            "clock": self.scheduler.clock.now() if self.scheduler else None,
        }

    def queue_depths(self) -> dict[str, tuple[int, int]]:
        return {
            logical_id: queue_depth(self.sqs_client, url).pair for logical_id, url in self.queue_urls.items()
        }

    def drained(self) -> bool:
        """Nothing in flight and the source queues read empty twice in a row (a message whose
        visibility timeout ends between GetQueueAttributes' two counts is in neither; see
        SqsEventSourceMapping.drain). A delayed message counts while its message is due
        within a minute (one held for its provider's pace, seconds away); one deferred
        further (quiet hours open in ten minutes) does not keep a one-pass run waiting."""
        if any(m.stats.in_flight for m in self.mappings) or (self.twilio and not self.twilio.idle()):
            self._empty_reads = 0
            return False
        sources = {m.queue_url for m in self.mappings}
        depths = [queue_depth(self.sqs_client, url) for url in self.queue_urls.values() if url in sources]
        empty = all(d.pair == (0, 0) for d in depths)
        if empty and any(d.delayed for d in depths):
            empty = not self._due_within_a_minute()
        self._empty_reads = self._empty_reads + 1 if empty else 0
        return self._empty_reads >= 2

    def _due_within_a_minute(self) -> bool:
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT count(*) FROM delivery.message_state"
                " WHERE state = 'queued' AND next_attempt_at <= now() + interval '60 seconds'"
            ).fetchone()
        return bool(row and row[0])

    # The run ------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        from proactive_delivery_tools.local.display import Display, ledger_summary

        options = self.options
        started = time.monotonic()
        with ExitStack() as stack:
            display = Display(self, live=options.live, out=self.out)
            server_url = (
                options.database_url or os.environ.get("DATABASE_URL") or self.env_file_value("DATABASE_URL")
            )
            pg = None
            if not server_url:
                display.say("DATABASE_URL is not set: starting a throwaway PostgreSQL cluster")
                pg = ThrowawayPostgres(keep_data=options.keep_data).start()
                stack.callback(pg.stop)
                server_url = pg.url
            self.database_url, seeded = prepare_database(server_url, options.count)
            if seeded is not None:
                # Both counts: the ledger at the end holds the follow-ups too.
                display.say(
                    f"seeded {seeded.messages} sample messages and {seeded.followups} follow-ups"
                    f" into {redacted_url(self.database_url)}"
                )

            sqs = LocalSqsServer().start()
            stack.callback(sqs.stop)
            # moto's state lives in this process, not in the server: start from nothing, as
            # a fresh stack does (a second run in one process would find the first's queues).
            httpx.post(f"{sqs.endpoint}/moto-api/reset", timeout=10).raise_for_status()
            self.sqs_client = sqs.client()
            self._create_queues()
            # Email goes to moto's SES v2 on the same local server; it only accepts a
            # sender it knows, as SES only sends from a verified identity.
            email_sender = self.env_file_value("EMAIL_FROM_ADDRESS") or LOCAL_EMAIL_SENDER
            local_client("sesv2", sqs.endpoint).create_email_identity(EmailIdentity=email_sender)

            signing_secret = self.env_file_value("WEBHOOK_SIGNING_SECRET") or new_signing_secret()
            plan = fault_plan(options.fail_rate, options.status, options.latency, options.fault_seed)
            self.receiver = stack.enter_context(WebhookReceiver(signing_secret, plan=plan))
            runtime_env = {
                **local_aws_environment(sqs.endpoint),
                "DATABASE_URL": self.database_url,
                "WEBHOOK_SIGNING_SECRET": signing_secret,
                "AWS_ENDPOINT_URL_SESV2": sqs.endpoint,
                **self._local_channels(self.receiver.url, email_sender),
                **self._start_way_back(stack, plan),
            }

            # The functions' stdout (Powertools' JSON logs and EMF metrics) goes to a file,
            # as it would go to CloudWatch; the terminal belongs to the display.
            options.run_dir.mkdir(parents=True, exist_ok=True)
            self.log_path = (options.run_dir / "functions.log").resolve()
            log_file = stack.enter_context(self.log_path.open("w"))
            stack.enter_context(contextlib.redirect_stdout(log_file))

            self._build_functions(runtime_env, sqs.endpoint)
            display.say(self.channel_line())
            for function in self.functions.values():
                if hasattr(function.services, "close"):
                    stack.callback(function.services.close)
            self._build_mappings(display.on_invoke)
            self.scheduler = self._build_scheduler()
            for warning in self.warnings:
                display.say(f"warning: {warning}")

            stop = threading.Event()
            threads: list[threading.Thread] = []
            stack.callback(_join_all, threads)
            stack.callback(stop.set)
            stack.enter_context(display)
            exit_code = self._loop(stop, threads, display)
            stop.set()
            for thread in threads:
                thread.join(timeout=120)
            summary = ledger_summary(self.database_url)
            summary.update(self._run_facts(time.monotonic() - started, pg))
        display.final(summary)
        if options.once and summary["unbalanced"]:
            exit_code = 1
        return RunResult(summary, exit_code)

    def _loop(self, stop: threading.Event, threads: list[threading.Thread], display: Any) -> int:
        options = self.options
        assert self.scheduler is not None
        if options.once:
            # One pass: every schedule fires once, now; then the queue is drained.
            for target in self.scheduler.targets:
                target.fired += 1
                self.fire(target)
        else:
            threads.append(threading.Thread(target=self._schedule_loop, args=(stop,), daemon=True))
            threads[-1].start()
        for mapping in self.mappings:
            threads.extend(mapping.run(stop, idle_sleep=0.1))
        deadline = time.monotonic() + (options.run_for if options.run_for is not None else options.max_wait)
        try:
            while True:
                display.refresh()
                self.release_callbacks()
                if stop.wait(0.1 if self.twilio and not self.twilio.idle() else 0.25):
                    return 0
                if options.once and self.drained():
                    if self._next_pass(display):
                        continue
                    return 0
                if (options.once or options.run_for is not None) and time.monotonic() >= deadline:
                    if options.once:
                        display.say(f"the queue was not drained within {options.max_wait:.0f} s")
                        return 1
                    return 0
        except KeyboardInterrupt:
            display.say("interrupted: stopping")
            return 130

    def _next_pass(self, display: Any) -> bool:
        """--once, after the first pass drained with what came back applied: the platform
        writes the next message to the contractors of the way-back scenario (the one who
        replied STOP, the one whose number is a landline) and evaluate's schedules fire once
        more. Whether there is a second pass (only once, and only when it wrote something)."""
        from proactive_delivery_tools.local.seed import write_next_messages

        if self.next_messages or self.scheduler is None:
            return False
        with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
            written = write_next_messages(conn)
        self.next_messages = len(written) or -1  # -1: looked once, nothing to write
        if not written:
            return False
        whom = {
            "stop": "the contractor whose STOP was applied",
            "landline": "the one whose number came back a landline",
        }
        display.say(
            f"the platform wrote {len(written)} more messages (to {' and '.join(whom[k] for k in written)}):"
            " evaluate fires again"
        )
        for target in self.scheduler.targets:
            if target.function == "EvaluateFunction":
                target.fired += 1
                self.fire(target)
        self._empty_reads = 0
        return True

    def _schedule_loop(self, stop: threading.Event) -> None:
        assert self.scheduler is not None
        while not stop.is_set():
            for target in self.scheduler.due():
                try:
                    self.fire(target)
                except Exception as exc:
                    self.schedule_fires.append(
                        (target.function, f"{target.name} failed: {type(exc).__name__}")
                    )
            upcoming = self.scheduler.next_fire()
            wait = self.scheduler.clock.real_seconds_until(upcoming) if upcoming else 1.0
            stop.wait(min(max(wait, 0.01), 1.0))

    def _run_facts(self, elapsed: float, pg: Any) -> dict[str, Any]:
        receiver = self.receiver
        assert receiver is not None
        depths = self.queue_depths()
        dlq_depth = sum(sum(depths[q]) for q in self.template.dead_letter_queues)
        twilio = self.twilio
        callbacks = twilio.callback_log.posted if twilio is not None else []
        return {
            "elapsed_seconds": round(elapsed, 2),
            "twilio_requests": len(twilio.requests) if twilio is not None else None,
            "twilio_accepted": len(twilio.delivered()) if twilio is not None else None,
            "callbacks": {
                "status": sum(1 for c, _ in callbacks if c.kind == "status"),
                "incoming": sum(1 for c, _ in callbacks if c.kind == "incoming"),
                "answered_2xx": sum(1 for _, status in callbacks if 200 <= status < 300),
            },
            "function_url_requests": {k: v.requests for k, v in self.function_urls.items()},
            "next_messages": max(self.next_messages, 0),
            "webhook_posts": len(receiver.requests),
            "webhook_accepted": len(receiver.accepted()),
            "signature_rejections": receiver.rejected_signatures,
            "invocations": {name: f.invocations for name, f in self.functions.items()},
            "function_errors": {name: f.errors for name, f in self.functions.items()},
            # By function: the deliver function's batches and the inbound processor's.
            "batch_sizes": {
                m.function_name: [
                    size
                    for n in self.mappings
                    if n.function_name == m.function_name
                    for size in n.stats.batch_sizes
                ]
                for m in self.mappings
            },
            "peak_concurrency": max((m.stats.peak_concurrency for m in self.mappings), default=0),
            "schedule_fires": len(self.schedule_fires),
            "dlq_messages": dlq_depth,
            "database": redacted_url(self.database_url),
            "database_kept": pg is None or self.options.keep_data,
            "pg_data_dir": str(pg.data_dir) if pg is not None and self.options.keep_data else None,
            "functions_log": str(self.log_path),
        }


def _context_factory(function: LocalFunction) -> Callable[[str, float], LambdaContext]:
    def factory(_name: str, _timeout: float) -> LambdaContext:
        return function.context()

    return factory


def _join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(timeout=120)


def run_local(options: RuntimeOptions, out: TextIO | None = None) -> RunResult:
    return LocalRuntime(options, out).run()
