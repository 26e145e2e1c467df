"""Assembles the real adapters, once per execution environment.

Handlers call get_evaluator() / get_deliverer(); tests replace the pieces they need by
building Evaluator / Deliverer themselves or by calling reset() after changing the
environment.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import boto3
import httpx
from botocore.config import Config

from proactive_delivery.channels.base import Channel
from proactive_delivery.channels.email import SesEmailChannel
from proactive_delivery.channels.twilio import TwilioSmsChannel
from proactive_delivery.channels.webhook import (
    GhlSmsPayload,
    N8nEmailPayload,
    Payload,
    SignedWebhookChannel,
    flat_sms_payload,
    web_chat_payload,
)
from proactive_delivery.db import Database, PostgresStore
from proactive_delivery.deliver import DeliverConfig, Deliverer
from proactive_delivery.errors import ConfigError
from proactive_delivery.evaluate import Evaluator
from proactive_delivery.gate import QueueGate
from proactive_delivery.ops_store import OperationsStore
from proactive_delivery.queue import SqsDeliveryQueue
from proactive_delivery.settings import Settings

T = TypeVar("T")
_LOCK = threading.RLock()


class _Once(Generic[T]):
    """functools.cache for a factory without arguments, made safe for the local runtime's
    concurrent invocations in one process (Lambda never runs two at once in one
    environment)."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._built = False
        self.__doc__ = factory.__doc__

    def __call__(self) -> T:
        with _LOCK:
            if not self._built:
                self._value = self._factory()
                self._built = True
            return self._value  # type: ignore[return-value]

    @property
    def built(self) -> bool:
        return self._built

    def cache_clear(self) -> None:
        with _LOCK:
            self._value = None
            self._built = False


def _once(factory: Callable[[], T]) -> _Once[T]:
    return _Once(factory)


@_once
def get_settings() -> Settings:
    return Settings.from_env()


def _get_secret(arn: str, max_age: int) -> str:
    from aws_lambda_powertools.utilities import parameters

    try:
        value = parameters.get_secret(arn, max_age=max_age)
    except parameters.exceptions.GetParameterError as exc:
        cause = exc.__cause__
        # A ClientError says which (ResourceNotFoundException, AccessDeniedException, ...).
        code = getattr(cause, "response", {}).get("Error", {}).get("Code") if cause is not None else None
        raise ConfigError(
            f"cannot read secret {arn.rsplit(':', 1)[-1]}: {code or type(cause).__name__}"
        ) from exc
    return str(value)


def database_url(settings: Settings) -> str:
    """DATABASE_URL as given, or built from the Secrets Manager secret (the RDS secret
    format: JSON with host, port, username, password, dbname). Read through Powertools
    Parameters, so the value is cached for SECRET_MAX_AGE_SECONDS and a rotated password
    is picked up on the next reconnect."""
    return database_url_from(
        settings.database_url, settings.database_secret_arn, settings.secret_max_age_seconds
    )


def database_url_from(url: str | None, secret_arn: str | None, max_age: int = 300) -> str:
    """database_url() for callers without the functions' other settings (the operator's
    command line)."""
    if url:
        return url
    if not secret_arn:
        raise ConfigError("DATABASE_URL or DATABASE_SECRET_ARN must be set")
    raw = _get_secret(secret_arn, max_age)
    try:
        secret: dict[str, Any] = json.loads(raw)
        user = quote(str(secret["username"]), safe="")
        password = quote(str(secret["password"]), safe="")
        host = secret["host"]
        port = int(secret.get("port", 5432))
        dbname = quote(str(secret.get("dbname", "postgres")), safe="")
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            "DATABASE_SECRET_ARN must name a JSON secret with host, port, username, password, dbname"
        ) from exc
    return f"postgresql://{user}:{password}@{host}:{port}/{dbname}?sslmode=prefer"


def signing_secret(settings: Settings) -> str:
    if settings.webhook_signing_secret:
        return settings.webhook_signing_secret
    assert settings.webhook_signing_secret_arn is not None
    raw = _get_secret(settings.webhook_signing_secret_arn, settings.secret_max_age_seconds).strip()
    if raw.startswith("{"):
        raw = str(json.loads(raw).get("secret", ""))
    if not raw.startswith("whsec_"):
        raise ConfigError("WEBHOOK_SIGNING_SECRET_ARN must hold a Standard Webhooks secret (whsec_...)")
    return raw


@_once
def get_database() -> Database:
    settings = get_settings()
    return Database(lambda: database_url(settings), platform_timezone=settings.platform_timezone)


_sqs_client_override: Any = None


def use_sqs_client(client: Any) -> None:
    """Make every queue built from now on use `client` (tests inject faults this way;
    None goes back to the real client)."""
    global _sqs_client_override
    _sqs_client_override = client
    for factory in (get_evaluator, get_deliverer, get_queue, get_sqs_client):
        factory.cache_clear()


@_once
def get_sqs_client() -> Any:
    if _sqs_client_override is not None:
        return _sqs_client_override
    # Endpoint overrides come from boto3 itself (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_SQS).
    return boto3.client("sqs", config=Config(retries={"mode": "standard", "max_attempts": 3}))


@_once
def get_queue() -> SqsDeliveryQueue:
    settings = get_settings()
    return SqsDeliveryQueue(
        get_sqs_client(), settings.delivery_queue_url, dead_letter_url=settings.dead_letter_queue_url
    )


@_once
def get_http_client() -> httpx.Client:
    settings = get_settings()
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


@_once
def get_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=get_settings().send_concurrency, thread_name_prefix="send")


@_once
def get_evaluator() -> Evaluator:
    settings = get_settings()
    return Evaluator(
        PostgresStore(get_database(), followup_sent_by=settings.followup_sent_by),
        get_queue(),
        page_size=settings.evaluate_page_size,
        reconcile_after_seconds=settings.reconcile_after_seconds,
        enqueue_concurrency=settings.enqueue_concurrency,
        gate=QueueGate(
            PostgresStore(get_database(), followup_sent_by=settings.followup_sent_by),
            settings.policy,
            settings.available_channels,
        ),
    )


def twilio_credentials(settings: Settings) -> tuple[str, str]:
    """(account SID, auth token): from the environment locally, else from the secret (JSON
    with account_sid and auth_token), cached by Powertools Parameters."""
    if settings.twilio_account_sid and settings.twilio_auth_token:
        return settings.twilio_account_sid, settings.twilio_auth_token
    assert settings.twilio_secret_arn is not None
    raw = _get_secret(settings.twilio_secret_arn, settings.secret_max_age_seconds)
    try:
        secret = json.loads(raw)
        return str(secret["account_sid"]), str(secret["auth_token"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            "TWILIO_SECRET_ARN must name a JSON secret with account_sid and auth_token"
        ) from exc


@_once
def get_sesv2_client() -> Any:
    # Endpoint overrides come from boto3 itself (AWS_ENDPOINT_URL_SESV2).
    return boto3.client("sesv2", config=Config(retries={"mode": "standard", "max_attempts": 3}))


def build_channels(settings: Settings) -> list[Channel]:
    """One adapter per configured channel; a channel without its setting is not built."""
    channels: list[Channel] = []
    if settings.sms_provider == "twilio":
        channels.append(
            TwilioSmsChannel(
                base_url=settings.twilio_api_base_url,
                credentials=lambda: twilio_credentials(settings),
                client=get_http_client(),
                from_number=settings.twilio_from_number,
                messaging_service_sid=settings.twilio_messaging_service_sid,
            )
        )
    else:
        sms_payload: Payload = (
            GhlSmsPayload(from_name=settings.sms_from_name, tags=settings.sms_tags)
            if settings.n8n_payload_format == "ghl"
            else flat_sms_payload
        )
        channels.append(
            SignedWebhookChannel(
                name="sms",
                url=settings.n8n_outbound_webhook_url,
                client=get_http_client(),
                signing_secret=signing_secret(settings),
                payload=sms_payload,
            )
        )
    if settings.email_from_address and settings.email_provider == "n8n":
        assert settings.n8n_email_webhook_url is not None
        channels.append(
            SignedWebhookChannel(
                name="email",
                url=settings.n8n_email_webhook_url,
                client=get_http_client(),
                signing_secret=signing_secret(settings),
                payload=N8nEmailPayload(
                    from_email=settings.email_from_address, from_name=settings.email_from_name
                ),
                needs="email",
            )
        )
    elif settings.email_from_address:
        channels.append(
            SesEmailChannel(
                client=get_sesv2_client(),
                from_address=settings.email_from_address,
                from_name=settings.email_from_name,
            )
        )
    if settings.web_chat_webhook_url:
        channels.append(
            SignedWebhookChannel(
                name="web_chat",
                url=settings.web_chat_webhook_url,
                client=get_http_client(),
                signing_secret=signing_secret(settings),
                payload=web_chat_payload,
                needs="contractor_id",
            )
        )
    return channels


@_once
def get_deliverer() -> Deliverer:
    settings = get_settings()
    channels = build_channels(settings)
    config = DeliverConfig(
        lease_seconds=settings.lease_seconds,
        retry=settings.retry_policy,
        max_receive_count=settings.receive_budget,
        send_budget_ms=int(settings.send_budget_seconds * 1000),
    )
    return Deliverer(
        PostgresStore(get_database(), followup_sent_by=settings.followup_sent_by),
        get_queue(),
        channels,
        get_executor(),
        config,
        policy=settings.policy,
    )


@_once
def get_operations_store() -> OperationsStore:
    return OperationsStore(get_database())


def reset() -> None:
    """Forget every cached object (tests, and the local runtime between stack changes)."""
    with _LOCK:
        for factory in (
            get_evaluator,
            get_deliverer,
            get_queue,
            get_sqs_client,
            get_settings,
            get_sesv2_client,
        ):
            factory.cache_clear()
        get_operations_store.cache_clear()
        if get_database.built:
            get_database().close()
        get_database.cache_clear()
        if get_http_client.built:
            get_http_client().close()
        get_http_client.cache_clear()
        if get_executor.built:
            get_executor().shutdown(wait=True)
        get_executor.cache_clear()
