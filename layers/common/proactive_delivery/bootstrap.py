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
    phone_hash_key_from,
    powertools_reader,
    signing_secret_from,
    twilio_auth_token_from,
    twilio_credentials_from,
)
from proactive_delivery.adapters.sqs import SqsDeliveryQueue, SqsInboundQueue
from proactive_delivery.channels import CHANNELS, ChannelRegistry
from proactive_delivery.core.errors import ConfigError
from proactive_delivery.core.phone_hash import PhoneHasher, derive_local_key
from proactive_delivery.core.policy import ChannelCatalog
from proactive_delivery.settings import InboundSettings, Settings

if TYPE_CHECKING:
    import httpx

    from proactive_delivery.adapters.inbound_batch import InboundBatch
    from proactive_delivery.adapters.sqs_batch import SqsBatch
    from proactive_delivery.app.deliver import Deliverer
    from proactive_delivery.app.evaluate import Evaluator
    from proactive_delivery.app.inbound_apply import InboundApplier
    from proactive_delivery.app.inbound_edge import InboundEdge
    from proactive_delivery.app.ports import Channel, InboundQueue
    from proactive_delivery.app.purge import Purger
    from proactive_delivery.core.inbound import InboundEvent

T = TypeVar("T")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class _BuiltOnce:
    """Pieces built once per execution environment on first use, under a lock (the local
    runtime runs concurrent invocations as threads); a piece given to the constructor (a test's
    or the local runtime's) is used instead of building one."""

    def __init__(self, given: dict[str, Any]) -> None:
        self._given = given
        self._built: dict[str, Any] = {}
        self._lock = threading.RLock()

    def _once(self, name: str, factory: Callable[[], T]) -> T:
        with self._lock:
            if name not in self._built:
                given = self._given.get(name)
                self._built[name] = given if given is not None else factory()
            return self._built[name]  # type: ignore[no-any-return]


class Services(_BuiltOnce):
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
        queue: Any = None,
        channels: ChannelRegistry = CHANNELS,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.registry = channels
        super().__init__(
            {
                "sqs": sqs,
                "sesv2": sesv2,
                "http": http,
                "store": store,
                "queue": queue,
            }
        )
        self._secrets = secrets or powertools_reader(settings.secret_max_age_seconds)

    # -- adapters ---------------------------------------------------------------------------
    @property
    def database(self) -> Database:
        settings = self.settings
        return self._once(
            "database",
            lambda: Database(
                lambda: database_url_from(settings.database_url, settings.database_secret_arn, self._secrets),
                platform_timezone=settings.platform_timezone,
                features={"ignored_run"} if settings.policy.ignored_run_pause else (),
            ),
        )

    @property
    def store(self) -> PostgresStore:
        settings = self.settings
        pause = settings.policy.ignored_run_pause
        return self._once(
            "store",
            lambda: PostgresStore(
                self.database,
                followup_sent_by=settings.followup_sent_by,
                pace=settings.pace,
                ignored_run=pause.count if pause else 0,
            ),
        )

    @property
    def sqs(self) -> Any:
        # Endpoint overrides come from boto3 itself (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SQS).
        # Evaluate's calls in flight each hold a connection (botocore keeps 10 by default).
        pool = max(10, self.settings.enqueue_concurrency)
        return self._once("sqs", lambda: aws.client("sqs", max_pool_connections=pool))

    @property
    def queue(self) -> SqsDeliveryQueue:
        """The delivery queue (a given one: anything with SqsDeliveryQueue's methods)."""
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
    def enqueue_executor(self) -> ThreadPoolExecutor:
        # Evaluate's SendMessageBatch calls in flight (ENQUEUE_CONCURRENCY).
        return self._once(
            "enqueue_executor",
            lambda: ThreadPoolExecutor(
                max_workers=self.settings.enqueue_concurrency, thread_name_prefix="enqueue"
            ),
        )

    @property
    def channels(self) -> list[Channel]:
        """The adapters of the channels this deployment configured (channels.py)."""
        return self._once("channels", lambda: self.registry.build(self))

    @property
    def catalog(self) -> ChannelCatalog:
        return self._once("catalog", lambda: self.registry.catalog(self.settings))

    @property
    def sqs_batch(self) -> SqsBatch:
        from proactive_delivery.adapters.sqs_batch import SqsBatch

        return self._once("sqs_batch", lambda: SqsBatch(self.queue))

    # -- what the channels' adapters are built from (channels.ChannelWiring) ------------------
    def signing_secret(self) -> str:
        s = self.settings
        read = self._secrets
        return self._once(
            "signing_secret",
            lambda: signing_secret_from(s.webhook_signing_secret, s.webhook_signing_secret_arn, read),
        )

    def twilio_credentials(self) -> tuple[str, str]:
        # Per send: the token comes from a cached secret that may be rotated.
        s = self.settings
        return twilio_credentials_from(
            s.twilio_account_sid, s.twilio_auth_token, s.twilio_secret_arn, self._secrets
        )

    def aws_client(self, service: str) -> Any:
        return self._once(service, lambda: aws.client(service))

    # -- the way back (docs/inbound.md) ------------------------------------------------------
    @property
    def phone_hasher(self) -> PhoneHasher:
        """Hashes phone numbers with PHONE_HASH_KEY(_ARN), read once; a local or test stage
        without one derives its key from the outbound signing secret."""
        return self._once("phone_hasher", self._build_phone_hasher)

    def _build_phone_hasher(self) -> PhoneHasher:
        s = self.settings
        key = phone_hash_key_from(s.phone_hash_key, s.phone_hash_key_arn, self._secrets)
        if key is None:
            if s.is_deployed:  # Settings.validate refuses this already
                raise ConfigError("PHONE_HASH_KEY_ARN (or PHONE_HASH_KEY) must be set in a deployed stage")
            key = derive_local_key(self.signing_secret())
        return PhoneHasher(key, s.policy.phone_region)

    @property
    def inbound_applier(self) -> InboundApplier:
        return self._once("inbound_applier", self._build_inbound_applier)

    @property
    def inbound_batch(self) -> InboundBatch:
        from proactive_delivery.adapters.inbound_batch import InboundBatch

        s = self.settings
        return self._once(
            "inbound_batch",
            lambda: InboundBatch(
                SqsDeliveryQueue(
                    self.sqs, s.inbound_queue_url, dead_letter_url=s.inbound_dead_letter_queue_url
                )
                if s.inbound_queue_url
                else None
            ),
        )

    def _build_inbound_applier(self) -> InboundApplier:
        from proactive_delivery.app.inbound_apply import ApplyOptions, InboundApplier

        s = self.settings
        options = ApplyOptions(
            reply_window=s.reply_window,
            write_responses=s.platform_write_responses,
            write_sms_opt_in=s.platform_write_sms_opt_in,
        )
        return InboundApplier(self.store, self.phone_hasher, options, clock=self.clock)

    # -- use cases --------------------------------------------------------------------------
    @property
    def evaluator(self) -> Evaluator:
        return self._once("evaluator", self._build_evaluator)

    @property
    def deliverer(self) -> Deliverer:
        return self._once("deliverer", self._build_deliverer)

    @property
    def purger(self) -> Purger:
        return self._once("purger", self._build_purger)

    def _build_evaluator(self) -> Evaluator:
        from proactive_delivery.app.evaluate import Enqueuer, Evaluator
        from proactive_delivery.app.gate import QueueGate

        settings = self.settings
        return Evaluator(
            self.store,
            QueueGate(
                self.store,
                settings.policy,
                self.catalog,
                clock=self.clock,
                phone_hash=self.phone_hasher.of_e164,
                directory=self.store,
                write_sms_opt_in=settings.platform_write_sms_opt_in,
            ),
            Enqueuer(self.queue, concurrency=settings.enqueue_concurrency, executor=self.enqueue_executor),
            page_size=settings.evaluate_page_size,
            reconcile_after_seconds=settings.reconcile_after_seconds,
        )

    def _build_deliverer(self) -> Deliverer:
        from proactive_delivery.app.deliver import DeliverConfig, Deliverer

        settings = self.settings
        config = DeliverConfig(
            lease_seconds=settings.lease_seconds,
            retry=settings.retry_policy,
            max_receive_count=settings.receive_budget,
            send_budget_ms=int(settings.send_budget_seconds * 1000),
            pace=settings.pace,
        )
        return Deliverer(
            self.store,
            self.channels,
            self.executor,
            config,
            policy=settings.policy,
            catalog=self.catalog,
            clock=self.clock,
            phone_hash=self.phone_hasher.of_e164,
        )

    def _build_purger(self) -> Purger:
        from proactive_delivery.adapters.postgres.retention import PostgresRetentionStore
        from proactive_delivery.app.purge import Purger

        retention = self.settings.retention
        return Purger(
            PostgresRetentionStore(self.database),
            retention_days=retention.days,
            batch_size=retention.batch_size,
            clock=self.clock,
        )

    def close(self) -> None:
        """Release what was built here (connections, threads); what was given stays open."""
        with self._lock:
            built, self._built = self._built, {}
        for name, piece in built.items():
            if self._given.get(name) is not None:
                continue
            if name in ("executor", "enqueue_executor"):
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
class InboundServices(_BuiltOnce):
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
        super().__init__({"sqs": sqs, "queue": queue})
        self._secrets = secrets or powertools_reader(settings.secret_max_age_seconds)

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
