"""Settings.from_env: one typed object, every failure names the variable at fault."""

from __future__ import annotations

import re

import pytest

from proactive_delivery.core.errors import ConfigError
from proactive_delivery.settings import Settings

SECRET = "whsec_dGVzdC1zaWduaW5nLXNlY3JldC0zMi1ieXRlcyEhISE="

REQUIRED = ("DELIVERY_QUEUE_URL", "N8N_OUTBOUND_WEBHOOK_URL", "DATABASE_URL", "WEBHOOK_SIGNING_SECRET")


def local_env(**overrides: str) -> dict[str, str]:
    env = {
        "STAGE": "local",
        "DELIVERY_QUEUE_URL": "http://127.0.0.1:5000/123456789012/delivery",
        "N8N_OUTBOUND_WEBHOOK_URL": "http://127.0.0.1:5678/webhook/proactive",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/app",
        "WEBHOOK_SIGNING_SECRET": SECRET,
    }
    env.update(overrides)
    return env


def deployed_env(stage: str = "prod", **overrides: str) -> dict[str, str]:
    env = {
        "STAGE": stage,
        "DELIVERY_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/123456789012/delivery",
        "N8N_OUTBOUND_WEBHOOK_URL": "https://n8n.example.com/webhook/proactive",
        "DATABASE_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf",
        "WEBHOOK_SIGNING_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hook-AbCdEf",
        "PHONE_HASH_KEY_ARN": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:phone-hash-AbCdEf",
    }
    env.update(overrides)
    return env


def without(env: dict[str, str], *names: str) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in names}


def names_in(message: str) -> set[str]:
    return set(re.findall(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b", message))


# --- required variables --------------------------------------------------------------------


@pytest.mark.parametrize("name", ["DELIVERY_QUEUE_URL", "N8N_OUTBOUND_WEBHOOK_URL"])
def test_missing_required_url_names_exactly_that_variable(name: str) -> None:
    # GIVEN a complete local environment without one required URL
    env = without(local_env(), name)

    # WHEN the settings are read
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(env)

    # THEN the error names that variable and no other
    assert names_in(str(excinfo.value)) == {name}


@pytest.mark.parametrize("name", ["DELIVERY_QUEUE_URL", "N8N_OUTBOUND_WEBHOOK_URL"])
def test_blank_required_url_counts_as_missing(name: str) -> None:
    # GIVEN a required URL set to whitespace only
    env = local_env(**{name: "   "})

    # WHEN / THEN it is reported as missing, by name
    with pytest.raises(ConfigError, match=f"{name} is required"):
        Settings.from_env(env)


def test_missing_database_names_both_ways_to_configure_it() -> None:
    # GIVEN neither DATABASE_URL nor DATABASE_SECRET_ARN
    env = without(local_env(), "DATABASE_URL", "DATABASE_SECRET_ARN")

    # WHEN the settings are read
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(env)

    # THEN the error names the two database variables and nothing else
    assert names_in(str(excinfo.value)) == {"DATABASE_URL", "DATABASE_SECRET_ARN"}


def test_missing_signing_secret_names_both_ways_to_configure_it() -> None:
    # GIVEN neither WEBHOOK_SIGNING_SECRET nor WEBHOOK_SIGNING_SECRET_ARN
    env = without(local_env(), "WEBHOOK_SIGNING_SECRET", "WEBHOOK_SIGNING_SECRET_ARN")

    # WHEN the settings are read
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(env)

    # THEN the error names the two signing-secret variables and nothing else
    assert names_in(str(excinfo.value)) == {"WEBHOOK_SIGNING_SECRET", "WEBHOOK_SIGNING_SECRET_ARN"}


def test_secret_arns_alone_satisfy_database_and_signing_secret() -> None:
    # GIVEN a deployed environment configured only through secret ARNs
    env = deployed_env()

    # WHEN the settings are read
    settings = Settings.from_env(env)

    # THEN the ARNs are carried and no inline values are invented
    assert settings.database_url is None
    assert settings.database_secret_arn == env["DATABASE_SECRET_ARN"]
    assert settings.webhook_signing_secret is None
    assert settings.webhook_signing_secret_arn == env["WEBHOOK_SIGNING_SECRET_ARN"]


def test_database_url_must_be_postgresql() -> None:
    # GIVEN a DATABASE_URL for another database
    env = local_env(DATABASE_URL="sqlite:///tmp/app.db")

    # WHEN / THEN the error names DATABASE_URL
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(env)
    assert names_in(str(excinfo.value)) == {"DATABASE_URL"}


def test_signing_secret_must_be_a_standard_webhooks_secret() -> None:
    # GIVEN a signing secret without the whsec_ prefix
    env = local_env(WEBHOOK_SIGNING_SECRET="plain-text-secret")

    # WHEN the settings are read
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(env)

    # THEN the variable is named and its value is not echoed
    assert names_in(str(excinfo.value)) == {"WEBHOOK_SIGNING_SECRET"}
    assert "plain-text-secret" not in str(excinfo.value)


def test_delivery_queue_url_must_be_an_http_url() -> None:
    # GIVEN a queue "URL" that is a bare queue name
    env = local_env(DELIVERY_QUEUE_URL="delivery")

    # WHEN / THEN the error names DELIVERY_QUEUE_URL
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(env)
    assert names_in(str(excinfo.value)) == {"DELIVERY_QUEUE_URL"}


# --- numbers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "MAX_RECEIVE_COUNT",
        "ENQUEUE_CONCURRENCY",
        "LEASE_SECONDS",
        "RECONCILE_AFTER_SECONDS",
        "SEND_CONCURRENCY",
        "EVALUATE_PAGE_SIZE",
        "SECRET_MAX_AGE_SECONDS",
    ],
)
def test_non_integer_names_the_variable_and_the_value(name: str) -> None:
    # GIVEN an integer setting that is not an integer
    env = local_env(**{name: "ten"})

    # WHEN the settings are read
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(env)

    # THEN the error names that variable and shows the bad value
    assert names_in(str(excinfo.value)) == {name}
    assert "'ten'" in str(excinfo.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_RECEIVE_COUNT", "0"),
        ("SEND_CONCURRENCY", "65"),
        ("ENQUEUE_CONCURRENCY", "0"),
        ("EVALUATE_PAGE_SIZE", "-1"),
        ("LEASE_SECONDS", "1.5"),
    ],
)
def test_out_of_range_integer_names_the_variable(name: str, value: str) -> None:
    # GIVEN an integer setting outside its allowed range (or a fraction)
    env = local_env(**{name: value})

    # WHEN / THEN the error names that variable
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(env)
    assert names_in(str(excinfo.value)) == {name}


@pytest.mark.parametrize("name", ["HTTP_CONNECT_TIMEOUT_SECONDS", "HTTP_READ_TIMEOUT_SECONDS"])
@pytest.mark.parametrize("value", ["soon", "0", "-2"])
def test_bad_timeout_names_the_variable(name: str, value: str) -> None:
    # GIVEN a timeout that is not a positive number
    env = local_env(**{name: value})

    # WHEN / THEN the error names that variable
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(env)
    assert names_in(str(excinfo.value)) == {name}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RETRY_WINDOW_HOURS", "0"),
        ("RETRY_WINDOW_HOURS", "a day"),
        ("RETRY_WINDOW_HOURS", "400"),
        ("RETRY_SCHEDULE_SECONDS", "5,0"),
        ("RETRY_SCHEDULE_SECONDS", "5,soon"),
    ],
)
def test_a_bad_retry_window_or_schedule_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(local_env(**{name: value}))
    assert names_in(str(excinfo.value)) == {name}


def test_a_receive_count_below_the_windows_attempts_is_refused() -> None:
    # GIVEN a 24-hour window (8 attempts) and a queue that dead-letters after 5 receives
    env = local_env(RETRY_WINDOW_HOURS="24", MAX_RECEIVE_COUNT="5")
    # WHEN / THEN the mismatch is one error naming both
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(env)
    assert {"MAX_RECEIVE_COUNT", "RETRY_WINDOW_HOURS"} <= names_in(str(excinfo.value))


def test_without_max_receive_count_the_budget_follows_from_the_window() -> None:
    settings = Settings.from_env(local_env(RETRY_WINDOW_HOURS="24"))
    assert settings.max_receive_count is None
    assert settings.receive_budget == settings.retry_policy.max_receive_count == 18


def test_integers_and_numbers_are_parsed() -> None:
    # GIVEN explicit numeric settings, with surrounding whitespace
    env = local_env(
        RETRY_WINDOW_HOURS=" 0.5 ",
        RETRY_SCHEDULE_SECONDS="60,600",
        MAX_RECEIVE_COUNT="9",
        SEND_CONCURRENCY="4",
        HTTP_CONNECT_TIMEOUT_SECONDS="1.5",
        HTTP_READ_TIMEOUT_SECONDS="2",
    )

    # WHEN the settings are read
    settings = Settings.from_env(env)

    # THEN they are typed values, and the send budget is connect + read
    assert (settings.retry_window_hours, settings.retry_schedule_seconds) == (0.5, (60, 600))
    assert settings.retry_policy.plan() == (60, 600, 600, 540)
    assert (settings.max_receive_count, settings.send_concurrency) == (9, 4)
    assert settings.send_budget_seconds == pytest.approx(3.5)


# --- stages and the webhook URL -------------------------------------------------------------


@pytest.mark.parametrize("stage", ["prod", "dev"])
@pytest.mark.parametrize(
    "url",
    [
        "http://n8n.example.com/webhook/proactive",
        "http://localhost:5678/webhook/proactive",
        "https://localhost:5678/webhook/proactive",
        "https://LOCALHOST/webhook",
        "https://127.0.0.1:5678/webhook/proactive",
        "https://[::1]:5678/webhook",
        "https://0.0.0.0/webhook",
    ],
)
def test_deployed_stage_refuses_plain_http_and_loopback_webhooks(stage: str, url: str) -> None:
    # GIVEN a deployed stage whose webhook URL is plain HTTP or points at this machine
    env = deployed_env(stage, N8N_OUTBOUND_WEBHOOK_URL=url)

    # WHEN the settings are read
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(env)

    # THEN start-up fails with an error naming N8N_OUTBOUND_WEBHOOK_URL only
    assert names_in(str(excinfo.value)) == {"N8N_OUTBOUND_WEBHOOK_URL"}


@pytest.mark.parametrize("stage", ["prod", "dev"])
def test_deployed_stage_without_webhook_url_fails_at_start_up(stage: str) -> None:
    # GIVEN a deployed stage with no webhook URL (there is no default to fall back on)
    env = without(deployed_env(stage), "N8N_OUTBOUND_WEBHOOK_URL")

    # WHEN / THEN the missing variable is named
    with pytest.raises(ConfigError, match="N8N_OUTBOUND_WEBHOOK_URL is required"):
        Settings.from_env(env)


def test_deployed_stage_accepts_a_public_https_webhook() -> None:
    # GIVEN a deployed stage with a public HTTPS webhook
    env = deployed_env("prod")

    # WHEN the settings are read
    settings = Settings.from_env(env)

    # THEN they are accepted as a deployed configuration
    assert settings.is_deployed
    assert settings.n8n_outbound_webhook_url == "https://n8n.example.com/webhook/proactive"


@pytest.mark.parametrize("stage", ["local", "test"])
@pytest.mark.parametrize(
    "url",
    ["http://localhost:5678/webhook/proactive", "http://127.0.0.1:5678/webhook/proactive"],
)
def test_local_stages_accept_loopback_http_webhooks(stage: str, url: str) -> None:
    # GIVEN a local stage with the local receiver's plain-HTTP loopback URL
    env = local_env(STAGE=stage, N8N_OUTBOUND_WEBHOOK_URL=url)

    # WHEN the settings are read
    settings = Settings.from_env(env)

    # THEN the URL is accepted as is
    assert not settings.is_deployed
    assert settings.n8n_outbound_webhook_url == url


def test_local_stage_still_requires_an_http_url() -> None:
    # GIVEN a local stage whose webhook URL is not an http(s) URL at all
    env = local_env(N8N_OUTBOUND_WEBHOOK_URL="localhost:5678")

    # WHEN / THEN it is refused by name
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(env)
    assert names_in(str(excinfo.value)) == {"N8N_OUTBOUND_WEBHOOK_URL"}


# --- defaults and repr ----------------------------------------------------------------------


def test_defaults() -> None:
    # GIVEN only the required variables, and no STAGE
    env = without(local_env(), "STAGE")

    # WHEN the settings are read
    settings = Settings.from_env(env)

    # THEN the documented defaults apply and the stage is local
    assert settings.stage == "local"
    assert not settings.is_deployed
    assert settings.retry_window_hours == 24.0
    assert settings.retry_schedule_seconds == (5, 300, 1800, 7200, 18000, 36000)
    assert settings.receive_budget == 18
    assert settings.enqueue_concurrency == 32
    assert settings.lease_seconds == 120
    assert settings.reconcile_after_seconds == 1800
    assert settings.send_concurrency == 10
    assert settings.http_connect_timeout_seconds == 3.0
    assert settings.http_read_timeout_seconds == 10.0
    assert settings.evaluate_page_size == 2000
    assert settings.secret_max_age_seconds == 300
    assert settings.database_secret_arn is None
    assert settings.webhook_signing_secret_arn is None


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN the process environment holds a complete configuration
    for name in (*REQUIRED, "STAGE", "DATABASE_SECRET_ARN", "WEBHOOK_SIGNING_SECRET_ARN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in local_env(EVALUATE_PAGE_SIZE="42").items():
        monkeypatch.setenv(name, value)

    # WHEN the settings are read without an explicit mapping
    settings = Settings.from_env()

    # THEN they come from os.environ
    assert settings.evaluate_page_size == 42


def test_signing_secret_is_not_in_repr() -> None:
    # GIVEN settings carrying an inline signing secret
    settings = Settings.from_env(local_env())

    # WHEN they are rendered (as a log line or a traceback would)
    text = repr(settings)

    # THEN the secret does not appear, neither whole nor its key material
    assert settings.webhook_signing_secret == SECRET
    assert SECRET not in text
    assert SECRET.removeprefix("whsec_") not in text
    assert "webhook_signing_secret=" not in text


def test_database_password_is_not_in_repr() -> None:
    # GIVEN a DATABASE_URL with a password in it
    settings = Settings.from_env(local_env(DATABASE_URL="postgresql://app:hunter2-s3cret@db.internal/app"))

    # WHEN / THEN rendering the settings does not reveal the password
    assert "hunter2-s3cret" not in repr(settings)


# --- the platform's side --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"N8N_PAYLOAD_FORMAT": "xml"}, "N8N_PAYLOAD_FORMAT"),
        ({"EMAIL_PROVIDER": "smtp"}, "EMAIL_PROVIDER"),
        ({"PLATFORM_TIMEZONE": "Mars/Olympus_Mons"}, "PLATFORM_TIMEZONE"),
        ({"DEFAULT_PHONE_REGION": "ZZ"}, "DEFAULT_PHONE_REGION"),
        ({"FOLLOWUP_SENT_BY": "x" * 101}, "FOLLOWUP_SENT_BY"),
        (
            {"EMAIL_PROVIDER": "n8n", "EMAIL_FROM_ADDRESS": "coach@example.com"},
            "N8N_EMAIL_WEBHOOK_URL",
        ),
    ],
)
def test_a_bad_platform_setting_is_one_error_naming_it(overrides: dict[str, str], name: str) -> None:
    # GIVEN a local environment with one unusable value WHEN the settings are read
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(local_env(**overrides))
    # THEN the error names that setting
    assert name in names_in(str(excinfo.value))


def test_the_n8n_email_webhook_is_held_to_the_deployed_rules() -> None:
    env = deployed_env(
        EMAIL_PROVIDER="n8n",
        EMAIL_FROM_ADDRESS="coach@example.com",
        N8N_EMAIL_WEBHOOK_URL="http://n8n.example.com/webhook/email-outbound",
    )
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(env)
    assert names_in(str(excinfo.value)) == {"N8N_EMAIL_WEBHOOK_URL"}


def test_platform_defaults_match_the_platform() -> None:
    settings = Settings.from_env(local_env())
    assert settings.platform_timezone == "UTC"
    assert settings.n8n_payload_format == "ghl"
    assert settings.sms_from_name == "Power100 Concierge"
    assert settings.sms_tags == ()
    assert settings.followup_sent_by == "scheduler"
    assert settings.email_provider == "ses"
    assert settings.policy.phone_region == "US"


def test_sms_tags_are_a_comma_separated_list() -> None:
    settings = Settings.from_env(local_env(SMS_TAGS=" tpe, proactive ,,"))
    assert settings.sms_tags == ("tpe", "proactive")


# --- retention -----------------------------------------------------------------------------


def test_retention_defaults_and_values() -> None:
    from proactive_delivery.settings import Retention

    # GIVEN no retention variable THEN finished rows are kept 90 days, purged 1,000 a statement
    assert Settings.from_env(local_env()).retention == Retention(days=90, batch_size=1000)
    # AND the variables set them
    settings = Settings.from_env(local_env(RETENTION_DAYS="180", PURGE_BATCH_SIZE="250"))
    assert settings.retention == Retention(days=180, batch_size=250)


@pytest.mark.parametrize(("value", "said"), [("7", "at least 30, got 7"), ("29", "at least 30, got 29")])
def test_a_retention_shorter_than_what_the_tools_read_back_is_refused(value: str, said: str) -> None:
    # GIVEN RETENTION_DAYS below what status, resend and a DLQ replay read back
    # WHEN the settings are read THEN one error names the variable, the minimum and why
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(local_env(RETENTION_DAYS=value))
    message = str(excinfo.value)
    assert names_in(message) == {"RETENTION_DAYS"}
    assert said in message and "replay" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [("RETENTION_DAYS", "ninety"), ("RETENTION_DAYS", "0"), ("RETENTION_DAYS", "3651"),
     ("PURGE_BATCH_SIZE", "0"), ("PURGE_BATCH_SIZE", "10001"), ("PURGE_BATCH_SIZE", "lots")],
)  # fmt: skip
def test_a_bad_retention_setting_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        Settings.from_env(local_env(**{name: value}))
    assert names_in(str(excinfo.value)) == {name}


def test_the_purge_command_reads_retention_as_the_functions_do() -> None:
    from proactive_delivery.settings import retention_from_env

    # GIVEN only the retention variables (no queue, webhook or database settings)
    # THEN they are read and checked exactly as Settings.from_env reads them
    assert (
        retention_from_env({"RETENTION_DAYS": "45"})
        == Settings.from_env(local_env(RETENTION_DAYS="45")).retention
    )
    assert retention_from_env({}).days == 90
    with pytest.raises(ConfigError, match="RETENTION_DAYS must be at least 30"):
        retention_from_env({"RETENTION_DAYS": "10"})
