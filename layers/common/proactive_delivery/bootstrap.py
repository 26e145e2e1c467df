"""Assembles the real adapters around the use cases: one `build(settings)` per execution
environment (cosmicpython's bootstrap). The handlers call it once; tests, the benchmark and
the local runtime call it with their own pieces (an SQS client at moto, a queue stand-in, a
fake clock, a store that crashes on cue) instead of patching anything.

Every piece is built on first use and then kept, so the evaluate function never builds (or
imports) the HTTP client, the channels or the batch utilities it does not use.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from proactive_delivery.adapters import aws
from proactive_delivery.adapters.postgres.database import Database
from proactive_delivery.adapters.postgres.store import PostgresStore
from proactive_delivery.adapters.secrets import (
    SecretReader,
    database_url_from,
    powertools_reader,
    signing_secret_from,
    twilio_auth_token_from,
    twilio_credentials_from,
)
from proactive_delivery.adapters.sqs import SqsDeliveryQueue, SqsInboundQueue
from proactive_delivery.settings import InboundSettings, Settings

if TYPE_CHECKING:
    import httpx

    from proactive_delivery.app.deliver import Deliverer
    from proactive_delivery.app.evaluate import Evaluator
    from proactive_delivery.app.inbound_edge import InboundEdge
    from proactive_delivery.app.ports import Channel, DeliveryQueue, InboundQueue
    from proactive_delivery.core.inbound import InboundEvent

T = TypeVar("T")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Services:
    """The pieces of one execution environment, each built once on first use. Thread-safe:
    the local runtime runs concurrent invocations of one function as threads (Lambda runs
    one at a time per environment)."""

    def __init__(
        self,
        settings: Settings,
        *,
        sqs: Any = None,
        sesv2: Any = None,
        http: httpx.Client | None = None,
        clock: Clock = utc_now,
        secrets: SecretReader | None = None,
        store: PostgresStore | None = None,
        queue: DeliveryQueue | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._given: dict[str, Any] = {
            "sqs": sqs,
            "sesv2": sesv2,
            "http": http,
            "store": store,
            "queue": queue,
        }
        self._secrets = secrets or powertools_reader(settings.secret_max_age_seconds)
        self._built: dict[str, Any] = {}
        self._lock = threading.RLock()

    def _once(self, name: str, factory: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._built:
                given = self._given.get(name)
                self._built[name] = given if given is not None else factory()
            return self._built[name]  # type: ignore[no-any-return]

    # -- adapters ---------------------------------------------------------------------------
    @property
    def database(self) -> Database:
        settings = self.settings
        return self._once(
            "database",
            lambda: Database(
                lambda: database_url_from(settings.database_url, settings.database_secret_arn, self._secrets),
                platform_timezone=settings.platform_timezone,
            ),
        )

    @property
    def store(self) -> PostgresStore:
        return self._once(
            "store", lambda: PostgresStore(self.database, followup_sent_by=self.settings.followup_sent_by)
        )

    @property
    def sqs(self) -> Any:
        # Endpoint overrides come from boto3 itself (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SQS).
        # Evaluate's calls in flight each hold a connection (botocore keeps 10 by default).
        pool = max(10, self.settings.enqueue_concurrency)
        return self._once("sqs", lambda: aws.client("sqs", max_pool_connections=pool))

    @property
    def queue(self) -> DeliveryQueue:
        settings = self.settings
        return self._once(
            "queue",
            lambda: SqsDeliveryQueue(
                self.sqs, settings.delivery_queue_url, dead_letter_url=settings.dead_letter_queue_url
            ),
        )

    @property
    def http(self) -> httpx.Client:
        return self._once("http", lambda: _http_client(self.settings))

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._once(
            "executor",
            lambda: ThreadPoolExecutor(max_workers=self.settings.send_concurrency, thread_name_prefix="send"),
        )

    @property
    def channels(self) -> list[Channel]:
        return self._once("channels", self._build_channels)

    # -- use cases --------------------------------------------------------------------------
    @property
    def evaluator(self) -> Evaluator:
        return self._once("evaluator", self._build_evaluator)

    @property
    def deliverer(self) -> Deliverer:
        return self._once("deliverer", self._build_deliverer)

    def _build_evaluator(self) -> Evaluator:
        from proactive_delivery.app.evaluate import Evaluator
        from proactive_delivery.app.gate import QueueGate

        settings = self.settings
        return Evaluator(
            self.store,
            self.queue,
            QueueGate(self.store, settings.policy, settings.available_channels, clock=self.clock),
            page_size=settings.evaluate_page_size,
            reconcile_after_seconds=settings.reconcile_after_seconds,
            enqueue_concurrency=settings.enqueue_concurrency,
        )

    def _build_deliverer(self) -> Deliverer:
        from proactive_delivery.app.deliver import DeliverConfig, Deliverer

        settings = self.settings
        config = DeliverConfig(
            lease_seconds=settings.lease_seconds,
            retry=settings.retry_policy,
            max_receive_count=settings.receive_budget,
            send_budget_ms=int(settings.send_budget_seconds * 1000),
        )
        return Deliverer(
            self.store,
            self.queue,
            self.channels,
            self.executor,
            config,
            policy=settings.policy,
            clock=self.clock,
        )

    def _build_channels(self) -> list[Channel]:
        """One adapter per configured channel; a channel without its setting is not built."""
        from proactive_delivery.adapters.channels.ses import SesEmailChannel
        from proactive_delivery.adapters.channels.twilio import TwilioSmsChannel
        from proactive_delivery.adapters.channels.webhook import (
            GhlSmsPayload,
            N8nEmailPayload,
            Payload,
            SignedWebhookChannel,
            flat_sms_payload,
            web_chat_payload,
        )

        s = self.settings
        read = self._secrets

        def signing_secret() -> str:
            return self._once(
                "signing_secret",
                lambda: signing_secret_from(s.webhook_signing_secret, s.webhook_signing_secret_arn, read),
            )

        def webhook(name: str, url: str, payload: Payload) -> Channel:
            return SignedWebhookChannel(
                name=name, url=url, client=self.http, signing_secret=signing_secret(), payload=payload
            )

        channels: list[Channel] = []
        if s.sms_provider == "twilio":
            channels.append(
                TwilioSmsChannel(
                    base_url=s.twilio_api_base_url,
                    # Per send: the token comes from a cached secret that may be rotated.
                    credentials=lambda: twilio_credentials_from(
                        s.twilio_account_sid, s.twilio_auth_token, s.twilio_secret_arn, read
                    ),
                    client=self.http,
                    from_number=s.twilio_from_number,
                    messaging_service_sid=s.twilio_messaging_service_sid,
                )
            )
        else:
            sms: Payload = (
                GhlSmsPayload(from_name=s.sms_from_name, tags=s.sms_tags)
                if s.n8n_payload_format == "ghl"
                else flat_sms_payload
            )
            channels.append(webhook("sms", s.n8n_outbound_webhook_url, sms))
        if s.email_from_address and s.email_provider == "n8n":
            assert s.n8n_email_webhook_url is not None  # Settings.validate requires it
            email = N8nEmailPayload(from_email=s.email_from_address, from_name=s.email_from_name)
            channels.append(webhook("email", s.n8n_email_webhook_url, email))
        elif s.email_from_address:
            sesv2 = self._once("sesv2", lambda: aws.client("sesv2"))
            channels.append(
                SesEmailChannel(
                    client=sesv2,
                    from_address=s.email_from_address,
                    from_name=s.email_from_name,
                    configuration_set=s.ses_configuration_set,
                )
            )
        if s.web_chat_webhook_url:
            channels.append(webhook("web_chat", s.web_chat_webhook_url, web_chat_payload))
        return channels

    def close(self) -> None:
        """Release what was built here (connections, threads); what was given stays open."""
        with self._lock:
            built, self._built = self._built, {}
        for name, piece in built.items():
            if self._given.get(name) is not None:
                continue
            if name == "executor":
                piece.shutdown(wait=True)
            elif name in ("database", "http"):
                piece.close()


# The services of one execution environment: build(settings, *, sqs=, http=, clock=, ...).
# Every argument but the settings replaces the piece that would otherwise be built from them.
build = Services


def _http_client(settings: Settings) -> httpx.Client:
    import httpx

    timeout = httpx.Timeout(
        connect=settings.http_connect_timeout_seconds,
        read=settings.http_read_timeout_seconds,
        write=settings.http_read_timeout_seconds,
        pool=settings.http_connect_timeout_seconds,
    )
    limits = httpx.Limits(
        max_connections=settings.send_concurrency, max_keepalive_connections=settings.send_concurrency
    )
    return httpx.Client(timeout=timeout, limits=limits, follow_redirects=False)


def database_url(settings: Settings, secrets: SecretReader | None = None) -> str:
    """The database URL the functions would use (for the operator's commands)."""
    read = secrets or powertools_reader(settings.secret_max_age_seconds)
    return database_url_from(settings.database_url, settings.database_secret_arn, read)


# -- The inbound edge (functions/inbound) --------------------------------------------------------
class InboundServices:
    """The inbound edge's pieces, each built once per execution environment on first use: an
    SQS client, the inbound queue and the edge with its cached secrets. Nothing here touches
    the database, so the edge keeps answering (and storing) while PostgreSQL is down."""

    def __init__(
        self,
        settings: InboundSettings,
        *,
        sqs: Any = None,
        clock: Clock = utc_now,
        secrets: SecretReader | None = None,
        queue: InboundQueue | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._given: dict[str, Any] = {"sqs": sqs, "queue": queue}
        self._secrets = secrets or powertools_reader(settings.secret_max_age_seconds)
        self._built: dict[str, Any] = {}
        self._lock = threading.RLock()

    def _once(self, name: str, factory: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._built:
                given = self._given.get(name)
                self._built[name] = given if given is not None else factory()
            return self._built[name]  # type: ignore[no-any-return]

    @property
    def sqs(self) -> Any:
        return self._once("sqs", lambda: aws.client("sqs"))

    @property
    def queue(self) -> InboundQueue:
        return self._once("queue", lambda: SqsInboundQueue(self.sqs, self.settings.inbound_queue_url))

    @property
    def edge(self) -> InboundEdge:
        return self._once("edge", self._build_edge)

    def _build_edge(self) -> InboundEdge:
        from proactive_delivery.app.inbound_edge import InboundEdge

        s = self.settings
        read = self._secrets

        def twilio_auth_token() -> str:
            # Per request: read through the cache, so a rotated token is picked up.
            return twilio_auth_token_from(s.twilio_auth_token, s.twilio_secret_arn, read)

        def signing_secret() -> str:
            return signing_secret_from(
                s.inbound_signing_secret,
                s.inbound_signing_secret_arn,
                read,
                setting="INBOUND_SIGNING_SECRET_ARN",
            )

        return InboundEdge(
            # Resolved on first put: a request refused before that builds no SQS client.
            _LazyInboundQueue(lambda: self.queue),
            twilio_auth_token=twilio_auth_token if s.twilio_enabled else None,
            signing_secret=signing_secret if s.events_enabled else None,
            public_url=s.inbound_public_url,
            max_body_bytes=s.inbound_max_body_bytes,
            clock=self.clock,
        )


class _LazyInboundQueue:
    def __init__(self, queue: Callable[[], InboundQueue]) -> None:
        self._queue = queue

    def put(self, event: InboundEvent) -> None:
        self._queue().put(event)


build_inbound = InboundServices
