"""One typed settings object, read once from the environment.

Every setting is named after its environment variable; a missing or invalid one raises
ConfigError naming it, so a bad deployment fails at its first invocation with one clear line.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import timedelta
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from proactive_delivery.channels import CHANNELS
from proactive_delivery.core.content import is_region
from proactive_delivery.core.errors import ConfigError
from proactive_delivery.core.pace import (
    DEFAULT_RATE_LIMITS,
    MAX_RESERVATION_SECONDS,
    CircuitPolicy,
    PacePolicy,
    RateLimit,
    parse_rate_limits,
)
from proactive_delivery.core.policy import (
    PolicyDefaults,
    PolicyInputError,
    is_e164,
    load_zone,
    parse_channels,
    parse_ignored_run_pause,
    parse_quiet_hours,
)
from proactive_delivery.core.retry import SVIX_SCHEDULE, RetryPolicy, parse_schedule

T = TypeVar("T")
SMS_PROVIDERS: Final = ("n8n", "twilio")
EMAIL_PROVIDERS: Final = ("ses", "n8n")
# `ghl`: the body the platform's live n8n workflow (backend-to-ghl) reads; `flat`: the seed
# document's {phone, message, contractor_id, message_type, message_id}.
N8N_PAYLOAD_FORMATS: Final = ("ghl", "flat")
# Where the platform's contractors mostly are; a contractor elsewhere gets a preference row.
DEFAULT_TIMEZONE: Final = "America/New_York"

# Our own rows are kept at least this long, whatever RETENTION_DAYS says: the operators'
# tools read back that far (status: the last 24 hours and the evaluate runs, kept 30 days;
# resend: failures since a date), a dead-lettered message waits up to 14 days for a replay
# that needs its row, and the widest retry window is 3 days.
MIN_RETENTION_DAYS: Final = 30


@dataclass(frozen=True)
class Retention:
    """What the retention purge keeps (docs/operations.md#retention-purge)."""

    # Finished messages and their attempt logs older than this go (RETENTION_DAYS).
    days: int = 90
    # Rows a purge statement reads (and at most deletes) in one short transaction.
    batch_size: int = 1000


# Stages that run on a developer's machine or in CI. Anything else is a deployed stage,
# where webhook URLs must be public HTTPS endpoints.
LOCAL_STAGES: Final = frozenset({"local", "test"})
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})  # noqa: S104 - refused, never bound  # nosec B104


@dataclass(frozen=True)
class Settings:
    stage: str
    delivery_queue_url: str
    n8n_outbound_webhook_url: str
    # Where deliver puts a message whose retry window is spent (the template passes the DLQ).
    dead_letter_queue_url: str | None = None
    database_url: str | None = field(default=None, repr=False)
    database_secret_arn: str | None = None
    webhook_signing_secret: str | None = field(default=None, repr=False)
    webhook_signing_secret_arn: str | None = None
    # Transient failures are retried on a widening schedule until this window since the
    # first attempt is spent (retry.py); maxReceiveCount follows from it (retry_budget).
    retry_window_hours: float = 24.0
    retry_schedule_seconds: tuple[int, ...] = SVIX_SCHEDULE
    max_receive_count: int | None = None
    lease_seconds: int = 120
    reconcile_after_seconds: int = 1800
    send_concurrency: int = 10
    http_connect_timeout_seconds: float = 3.0
    http_read_timeout_seconds: float = 10.0
    # Rows a page; with 32 calls in flight, 2,000 did ~10 % better than 500 (bench_pipeline.py).
    evaluate_page_size: int = 2000
    # SendMessageBatch calls evaluate keeps in flight. Against calls of 20 ms on two cores,
    # 1 in flight queued ~460 ids/s and 8 ~2,500 (pages of 500); 16 ~4,800, 32 ~6,700 and 64
    # ~9,000 (pages of 2,000): 32 queues a million-row backlog within one 300 s run with room
    # to spare (make bench).
    enqueue_concurrency: int = 32
    secret_max_age_seconds: int = 300
    # Channels and delivery policy (docs/channels-and-preferences.md).
    sms_provider: str = "n8n"
    twilio_api_base_url: str = "https://api.twilio.com"
    twilio_account_sid: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_secret_arn: str | None = None
    twilio_from_number: str | None = None
    twilio_messaging_service_sid: str | None = None
    email_from_address: str | None = None
    web_chat_webhook_url: str | None = None
    # The platform's side (docs/platform.md).
    platform_timezone: str = "UTC"
    followup_sent_by: str = "scheduler"
    n8n_payload_format: str = "ghl"
    sms_from_name: str = "Power100 Concierge"
    sms_tags: tuple[str, ...] = ()
    email_provider: str = "ses"
    n8n_email_webhook_url: str | None = None
    email_from_name: str = "Power100 Concierge"
    # The SES configuration set whose events reach the inbound queue (the template's).
    ses_configuration_set: str | None = None
    policy: PolicyDefaults = field(default_factory=lambda: _policy_defaults(_Reader({})))
    # Each provider's pace (core/pace.py has the defaults and where they come from).
    provider_rate_limits: Mapping[str, RateLimit] = field(
        default_factory=lambda: parse_rate_limits(DEFAULT_RATE_LIMITS)
    )
    circuit: CircuitPolicy = field(default_factory=CircuitPolicy)
    retention: Retention = field(default_factory=Retention)
    # -- The way back (docs/inbound.md): deliver records the keyed hash of each number it
    # texts; the inbound processor applies replies, opt-outs and receipts. The key hashes
    # phone numbers (HMAC-SHA256); a local or test stage without one derives it from the
    # outbound signing secret (core/phone_hash.py), a deployed stage must set it.
    phone_hash_key: str | None = field(default=None, repr=False)
    phone_hash_key_arn: str | None = None
    # Twilio calls back here with each message's status (the template passes the inbound
    # Function URL's /twilio/status, or INBOUND_PUBLIC_URL's).
    twilio_status_callback_url: str | None = None
    # The inbound processor: its queue (visibility changes) and DLQ (poison events go there
    # at once, with the reason), how long a reply may come after the SMS it answers, and
    # what it writes on the platform.
    inbound_queue_url: str | None = None
    inbound_dead_letter_queue_url: str | None = None
    reply_window_hours: float = 72.0
    platform_write_sms_opt_in: bool = True
    platform_write_responses: bool = True

    @property
    def is_deployed(self) -> bool:
        return self.stage not in LOCAL_STAGES

    @property
    def pace(self) -> PacePolicy:
        return PacePolicy(limits=self.provider_rate_limits, circuit=self.circuit)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(timedelta(hours=self.retry_window_hours), self.retry_schedule_seconds)

    @property
    def receive_budget(self) -> int:
        """The queue's maxReceiveCount: as configured, else what the retry window needs."""
        return self.max_receive_count or self.retry_policy.max_receive_count

    @property
    def send_budget_seconds(self) -> float:
        """Longest a single send can take; a send is only started with this much time left."""
        return self.http_connect_timeout_seconds + self.http_read_timeout_seconds

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        reader = _Reader(env)
        # The defaults are the fields' own (one place: the dataclass above).
        d: dict[str, Any] = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
        stage = reader.text("STAGE", default="local")
        settings = cls(
            stage=stage,
            delivery_queue_url=reader.text("DELIVERY_QUEUE_URL"),
            n8n_outbound_webhook_url=reader.text("N8N_OUTBOUND_WEBHOOK_URL"),
            dead_letter_queue_url=reader.optional("DEAD_LETTER_QUEUE_URL"),
            database_url=reader.optional("DATABASE_URL"),
            database_secret_arn=reader.optional("DATABASE_SECRET_ARN"),
            webhook_signing_secret=reader.optional("WEBHOOK_SIGNING_SECRET"),
            webhook_signing_secret_arn=reader.optional("WEBHOOK_SIGNING_SECRET_ARN"),
            retry_window_hours=reader.number("RETRY_WINDOW_HOURS", d["retry_window_hours"], maximum=336.0),
            retry_schedule_seconds=reader.parsed(
                "RETRY_SCHEDULE_SECONDS", ",".join(map(str, d["retry_schedule_seconds"])), parse_schedule
            ),
            max_receive_count=reader.optional_integer("MAX_RECEIVE_COUNT", minimum=1, maximum=1000),
            lease_seconds=reader.integer("LEASE_SECONDS", d["lease_seconds"], minimum=1),
            reconcile_after_seconds=reader.integer(
                "RECONCILE_AFTER_SECONDS", d["reconcile_after_seconds"], minimum=0
            ),
            send_concurrency=reader.integer("SEND_CONCURRENCY", d["send_concurrency"], minimum=1, maximum=64),
            http_connect_timeout_seconds=reader.number(
                "HTTP_CONNECT_TIMEOUT_SECONDS", d["http_connect_timeout_seconds"]
            ),
            http_read_timeout_seconds=reader.number(
                "HTTP_READ_TIMEOUT_SECONDS", d["http_read_timeout_seconds"]
            ),
            evaluate_page_size=reader.integer(
                "EVALUATE_PAGE_SIZE", d["evaluate_page_size"], minimum=1, maximum=10000
            ),
            enqueue_concurrency=reader.integer(
                "ENQUEUE_CONCURRENCY", d["enqueue_concurrency"], minimum=1, maximum=64
            ),
            secret_max_age_seconds=reader.integer(
                "SECRET_MAX_AGE_SECONDS", d["secret_max_age_seconds"], minimum=0
            ),
            sms_provider=reader.text("SMS_PROVIDER", default=d["sms_provider"]).lower(),
            twilio_api_base_url=reader.text("TWILIO_API_BASE_URL", default=d["twilio_api_base_url"]),
            twilio_account_sid=reader.optional("TWILIO_ACCOUNT_SID"),
            twilio_auth_token=reader.optional("TWILIO_AUTH_TOKEN"),
            twilio_secret_arn=reader.optional("TWILIO_SECRET_ARN"),
            twilio_from_number=reader.optional("TWILIO_FROM_NUMBER"),
            twilio_messaging_service_sid=reader.optional("TWILIO_MESSAGING_SERVICE_SID"),
            email_from_address=reader.optional("EMAIL_FROM_ADDRESS"),
            web_chat_webhook_url=reader.optional("WEB_CHAT_WEBHOOK_URL"),
            platform_timezone=reader.text("PLATFORM_TIMEZONE", default=d["platform_timezone"]),
            followup_sent_by=reader.text("FOLLOWUP_SENT_BY", default=d["followup_sent_by"]),
            n8n_payload_format=reader.text("N8N_PAYLOAD_FORMAT", default=d["n8n_payload_format"]).lower(),
            sms_from_name=reader.text("SMS_FROM_NAME", default=d["sms_from_name"]),
            sms_tags=tuple(t.strip() for t in reader.text("SMS_TAGS", default="").split(",") if t.strip()),
            email_provider=reader.text("EMAIL_PROVIDER", default=d["email_provider"]).lower(),
            n8n_email_webhook_url=reader.optional("N8N_EMAIL_WEBHOOK_URL"),
            email_from_name=reader.text("EMAIL_FROM_NAME", default=d["email_from_name"]),
            ses_configuration_set=reader.optional("SES_CONFIGURATION_SET"),
            policy=_policy_defaults(reader),
            provider_rate_limits=reader.parsed(
                "PROVIDER_RATE_LIMITS", DEFAULT_RATE_LIMITS, parse_rate_limits
            ),
            circuit=_circuit_policy(reader),
            retention=_retention(reader),
            phone_hash_key=reader.optional("PHONE_HASH_KEY"),
            phone_hash_key_arn=reader.optional("PHONE_HASH_KEY_ARN"),
            twilio_status_callback_url=reader.optional("TWILIO_STATUS_CALLBACK_URL"),
            inbound_queue_url=reader.optional("INBOUND_QUEUE_URL"),
            inbound_dead_letter_queue_url=reader.optional("INBOUND_DLQ_URL"),
            reply_window_hours=reader.number("REPLY_WINDOW_HOURS", d["reply_window_hours"], maximum=720.0),
            platform_write_sms_opt_in=reader.boolean(
                "PLATFORM_WRITE_SMS_OPT_IN", d["platform_write_sms_opt_in"]
            ),
            platform_write_responses=reader.boolean(
                "PLATFORM_WRITE_RESPONSES", d["platform_write_responses"]
            ),
        )
        settings.validate()
        return settings

    @property
    def reply_window(self) -> timedelta:
        return timedelta(hours=self.reply_window_hours)

    def validate(self) -> None:
        if not (self.database_url or self.database_secret_arn):
            raise ConfigError("DATABASE_URL or DATABASE_SECRET_ARN must be set")
        if self.database_url and not self.database_url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("DATABASE_URL must be a postgresql:// URL")
        if not (self.webhook_signing_secret or self.webhook_signing_secret_arn):
            raise ConfigError("WEBHOOK_SIGNING_SECRET or WEBHOOK_SIGNING_SECRET_ARN must be set")
        if self.webhook_signing_secret and not self.webhook_signing_secret.startswith("whsec_"):
            raise ConfigError("WEBHOOK_SIGNING_SECRET must be a Standard Webhooks secret (whsec_...)")
        budget = self.retry_policy
        if self.max_receive_count is not None and self.max_receive_count < budget.attempts:
            raise ConfigError(
                f"MAX_RECEIVE_COUNT ({self.max_receive_count}) is below the {budget.attempts} attempts that"
                f" RETRY_WINDOW_HOURS={self.retry_window_hours:g} gives: SQS would dead-letter messages"
                " before their retry window is spent (the template derives both from RetryWindowHours)"
            )
        check_webhook_url(
            "N8N_OUTBOUND_WEBHOOK_URL", self.n8n_outbound_webhook_url, deployed=self.is_deployed
        )
        check_http_url("DELIVERY_QUEUE_URL", self.delivery_queue_url)
        if self.dead_letter_queue_url:
            check_http_url("DEAD_LETTER_QUEUE_URL", self.dead_letter_queue_url)
        self._validate_channels()
        self._validate_inbound()

    def _validate_inbound(self) -> None:
        if self.is_deployed and not (self.phone_hash_key or self.phone_hash_key_arn):
            raise ConfigError(
                "PHONE_HASH_KEY_ARN (or PHONE_HASH_KEY) must be set in a deployed stage: the key that"
                " hashes phone numbers (the template passes its PhoneHashKey secret)"
            )
        if self.phone_hash_key is not None and len(self.phone_hash_key) < 16:
            raise ConfigError("PHONE_HASH_KEY must be at least 16 characters")
        for name, url in (
            ("INBOUND_QUEUE_URL", self.inbound_queue_url),
            ("INBOUND_DLQ_URL", self.inbound_dead_letter_queue_url),
        ):
            if url:
                check_http_url(name, url)
        if self.twilio_status_callback_url:
            check_webhook_url(
                "TWILIO_STATUS_CALLBACK_URL", self.twilio_status_callback_url, deployed=self.is_deployed
            )

    def _validate_channels(self) -> None:
        if self.sms_provider not in SMS_PROVIDERS:
            raise ConfigError(
                f"SMS_PROVIDER must be one of {', '.join(SMS_PROVIDERS)}, got {self.sms_provider!r}"
            )
        if self.sms_provider == "twilio":
            check_webhook_url("TWILIO_API_BASE_URL", self.twilio_api_base_url, deployed=self.is_deployed)
            if not self.twilio_secret_arn and not (self.twilio_account_sid and self.twilio_auth_token):
                raise ConfigError(
                    "SMS_PROVIDER=twilio needs TWILIO_SECRET_ARN or TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN"
                )
            if not (self.twilio_from_number or self.twilio_messaging_service_sid):
                raise ConfigError(
                    "SMS_PROVIDER=twilio needs TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID"
                )
            if self.twilio_from_number and not is_e164(self.twilio_from_number):
                raise ConfigError("TWILIO_FROM_NUMBER must be an E.164 number (+15550100000)")
        self._validate_email()
        self._validate_platform()

    def _validate_email(self) -> None:
        if self.email_from_address and "@" not in self.email_from_address:
            raise ConfigError("EMAIL_FROM_ADDRESS must be an email address")
        if self.email_provider not in EMAIL_PROVIDERS:
            raise ConfigError(
                f"EMAIL_PROVIDER must be one of {', '.join(EMAIL_PROVIDERS)}, got {self.email_provider!r}"
            )
        if self.email_provider == "n8n" and self.email_from_address:
            if not self.n8n_email_webhook_url:
                raise ConfigError("EMAIL_PROVIDER=n8n needs N8N_EMAIL_WEBHOOK_URL")
            check_webhook_url("N8N_EMAIL_WEBHOOK_URL", self.n8n_email_webhook_url, deployed=self.is_deployed)

    def _validate_platform(self) -> None:
        if self.n8n_payload_format not in N8N_PAYLOAD_FORMATS:
            raise ConfigError(
                f"N8N_PAYLOAD_FORMAT must be one of {', '.join(N8N_PAYLOAD_FORMATS)},"
                f" got {self.n8n_payload_format!r}"
            )
        try:
            load_zone(self.platform_timezone)
        except PolicyInputError:
            raise ConfigError(
                f"PLATFORM_TIMEZONE must be an IANA time zone, got {self.platform_timezone!r}"
            ) from None
        if len(self.followup_sent_by) > 100:
            raise ConfigError("FOLLOWUP_SENT_BY must be at most 100 characters (the column's size)")
        if self.web_chat_webhook_url:
            check_webhook_url("WEB_CHAT_WEBHOOK_URL", self.web_chat_webhook_url, deployed=self.is_deployed)


def _on_off(value: str) -> bool:
    if value.strip().lower() not in ("on", "off"):
        raise ValueError(f"expected on or off, got {value!r}")
    return value.strip().lower() == "on"


def _circuit_policy(reader: _Reader) -> CircuitPolicy:
    d = CircuitPolicy()
    try:
        return CircuitPolicy(
            enabled=reader.parsed("CIRCUIT_BREAKER", "on", _on_off),
            window=reader.integer("CIRCUIT_WINDOW", d.window, minimum=1, maximum=1000),
            min_attempts=reader.integer("CIRCUIT_MIN_ATTEMPTS", d.min_attempts, minimum=1, maximum=1000),
            failure_share=reader.number("CIRCUIT_FAILURE_SHARE", d.failure_share, maximum=1.0),
            cool_off_seconds=reader.integer(
                "CIRCUIT_COOL_OFF_SECONDS", d.cool_off_seconds, minimum=1, maximum=MAX_RESERVATION_SECONDS
            ),
        )
    except ValueError as exc:
        raise ConfigError(f"CIRCUIT_* settings are inconsistent: {exc}") from None


def _policy_defaults(reader: _Reader) -> PolicyDefaults:
    region = reader.text("DEFAULT_PHONE_REGION", default="US").upper()
    if not is_region(region):
        raise ConfigError(
            f"DEFAULT_PHONE_REGION must be a two-letter region code (US, CA, GB...), got {region!r}"
        )
    return PolicyDefaults(
        channels=reader.parsed("DEFAULT_CHANNELS", "sms", lambda v: parse_channels(v, CHANNELS.names)),
        timezone=reader.parsed("DEFAULT_TIMEZONE", DEFAULT_TIMEZONE, lambda v: load_zone(v).key),
        quiet_hours=reader.parsed("QUIET_HOURS", "21:00-08:00", parse_quiet_hours),
        max_per_day=reader.integer("MAX_MESSAGES_PER_DAY", 3, minimum=0, maximum=1000),
        max_age=timedelta(hours=reader.integer("MESSAGE_MAX_AGE_HOURS", 72, minimum=1, maximum=8760)),
        phone_region=region,
        ignored_run_pause=reader.parsed("IGNORED_RUN_PAUSE", "off", parse_ignored_run_pause),
    )


def _retention(reader: _Reader) -> Retention:
    default = Retention()
    days = reader.integer("RETENTION_DAYS", default.days, minimum=1, maximum=3650)
    if days < MIN_RETENTION_DAYS:
        raise ConfigError(
            f"RETENTION_DAYS must be at least {MIN_RETENTION_DAYS}, got {days}: the operators' tools"
            " read back 30 days (evaluate runs) and a dead-lettered message waits 14 days for a replay"
        )
    return Retention(
        days=days,
        batch_size=reader.integer("PURGE_BATCH_SIZE", default.batch_size, minimum=1, maximum=10000),
    )


def check_http_url(name: str, value: str) -> None:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an http(s) URL")


def check_webhook_url(name: str, value: str, *, deployed: bool) -> None:
    """A deployed stage only talks to public HTTPS endpoints: the old sender's
    localhost:5678 default is exactly the bug this refuses to repeat."""
    check_http_url(name, value)
    if not deployed:
        return
    parts = urlsplit(value)
    if parts.scheme != "https":
        raise ConfigError(f"{name} must use https in a deployed stage")
    host = (parts.hostname or "").lower()
    if host in _LOOPBACK_HOSTS or host.endswith(".localhost") or host.startswith("127."):
        raise ConfigError(f"{name} must not point at localhost in a deployed stage")


_TRUE: Final = frozenset({"true", "on", "1", "yes"})
_FALSE: Final = frozenset({"false", "off", "0", "no"})


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def optional(self, name: str) -> str | None:
        value = self._env.get(name, "").strip()
        return value or None

    def text(self, name: str, default: str | None = None) -> str:
        value = self.optional(name)
        if value is None:
            if default is None:
                raise ConfigError(f"{name} is required but not set")
            return default
        return value

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise ConfigError(f"{name} must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be <= {maximum}, got {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.optional(name)
        if raw is None:
            return default
        value = raw.lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise ConfigError(f"{name} must be true or false (on/off, 1/0), got {raw!r}")

    def optional_integer(
        self, name: str, *, minimum: int | None = None, maximum: int | None = None
    ) -> int | None:
        if self.optional(name) is None:
            return None
        return self.integer(name, 0, minimum=minimum, maximum=maximum)

    def number(self, name: str, default: float, *, maximum: float | None = None) -> float:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {raw!r}") from None
        if value <= 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
        if maximum is not None and value > maximum:
            raise ConfigError(f"{name} must be <= {maximum:g}, got {value:g}")
        return value

    def parsed(self, name: str, default: str, parse: Callable[[str], T]) -> T:
        raw = self.text(name, default=default)
        try:
            return parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} is invalid: {exc}") from None


def policy_defaults_from_env(environ: Mapping[str, str] | None = None) -> PolicyDefaults:
    """The delivery policy's defaults (DEFAULT_CHANNELS, DEFAULT_TIMEZONE, QUIET_HOURS,
    MAX_MESSAGES_PER_DAY, MESSAGE_MAX_AGE_HOURS, DEFAULT_PHONE_REGION) read and checked as
    Settings.from_env reads them, without the rest of the settings: for the operator's
    commands, which have the database but not the functions' other variables."""
    return _policy_defaults(_Reader(os.environ if environ is None else environ))


def platform_write_sms_opt_in_from_env(environ: Mapping[str, str] | None = None) -> bool:
    """PLATFORM_WRITE_SMS_OPT_IN read and checked as Settings.from_env reads it (default on),
    without the rest of the settings: for `proactive-delivery inbound backfill-phones`, which
    applies opt-outs as the functions do."""
    return _Reader(os.environ if environ is None else environ).boolean(
        "PLATFORM_WRITE_SMS_OPT_IN", Settings.platform_write_sms_opt_in
    )


def retention_from_env(environ: Mapping[str, str] | None = None) -> Retention:
    """RETENTION_DAYS and PURGE_BATCH_SIZE read and checked as Settings.from_env reads them,
    without the rest of the settings: for `proactive-delivery purge`, which needs the
    database only."""
    return _retention(_Reader(os.environ if environ is None else environ))


# -- The inbound edge (functions/inbound, docs/inbound.md) ------------------------------------
# Its own settings object: the edge verifies and enqueues, so it needs neither the database
# nor the delivery queue nor n8n's URL to start, and is not broken by their absence.
INBOUND_DEFAULT_MAX_BODY_BYTES: Final = 65_536
# A body the edge accepts must still fit one queue message once re-encoded (SQS's 256 KiB).
INBOUND_MAX_BODY_BYTES_LIMIT: Final = 262_144


@dataclass(frozen=True)
class InboundSettings:
    stage: str
    inbound_queue_url: str
    # The key n8n's events are signed with (Standard Webhooks); not the outbound one.
    inbound_signing_secret: str | None = field(default=None, repr=False)
    inbound_signing_secret_arn: str | None = None
    # Set when a custom domain fronts the Function URL: Twilio signs the URL it called.
    inbound_public_url: str | None = None
    inbound_max_body_bytes: int = INBOUND_DEFAULT_MAX_BODY_BYTES
    # The Twilio channel's credentials: the auth token signs Twilio's webhooks.
    twilio_auth_token: str | None = field(default=None, repr=False)
    twilio_secret_arn: str | None = None
    secret_max_age_seconds: int = 300

    @property
    def is_deployed(self) -> bool:
        return self.stage not in LOCAL_STAGES

    @property
    def twilio_enabled(self) -> bool:
        """The Twilio routes answer only with an auth token to verify their signatures."""
        return bool(self.twilio_auth_token or self.twilio_secret_arn)

    @property
    def events_enabled(self) -> bool:
        return bool(self.inbound_signing_secret or self.inbound_signing_secret_arn)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InboundSettings:
        reader = _Reader(os.environ if environ is None else environ)
        d: dict[str, Any] = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
        settings = cls(
            stage=reader.text("STAGE", default="local"),
            inbound_queue_url=reader.text("INBOUND_QUEUE_URL"),
            inbound_signing_secret=reader.optional("INBOUND_SIGNING_SECRET"),
            inbound_signing_secret_arn=reader.optional("INBOUND_SIGNING_SECRET_ARN"),
            inbound_public_url=reader.optional("INBOUND_PUBLIC_URL"),
            inbound_max_body_bytes=reader.integer(
                "INBOUND_MAX_BODY_BYTES",
                d["inbound_max_body_bytes"],
                minimum=1024,
                maximum=INBOUND_MAX_BODY_BYTES_LIMIT,
            ),
            twilio_auth_token=reader.optional("TWILIO_AUTH_TOKEN"),
            twilio_secret_arn=reader.optional("TWILIO_SECRET_ARN"),
            secret_max_age_seconds=reader.integer(
                "SECRET_MAX_AGE_SECONDS", d["secret_max_age_seconds"], minimum=0
            ),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        check_http_url("INBOUND_QUEUE_URL", self.inbound_queue_url)
        if self.inbound_signing_secret and not self.inbound_signing_secret.startswith("whsec_"):
            raise ConfigError("INBOUND_SIGNING_SECRET must be a Standard Webhooks secret (whsec_...)")
        if not (self.twilio_enabled or self.events_enabled):
            raise ConfigError(
                "the inbound edge verifies nothing without INBOUND_SIGNING_SECRET(_ARN) or the Twilio"
                " auth token (TWILIO_AUTH_TOKEN or TWILIO_SECRET_ARN)"
            )
        if self.inbound_public_url:
            check_webhook_url("INBOUND_PUBLIC_URL", self.inbound_public_url, deployed=self.is_deployed)
            parts = urlsplit(self.inbound_public_url)
            if parts.query or parts.fragment:
                raise ConfigError("INBOUND_PUBLIC_URL must be scheme://host[/path] without a query")
