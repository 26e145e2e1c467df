"""Secrets: the database connection, the webhook signing key and Twilio's credentials, from
the environment locally or from Secrets Manager (through Powertools Parameters, cached for
SECRET_MAX_AGE_SECONDS, so a rotated secret is picked up without a deploy)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from proactive_delivery.adapters.aws import error_code
from proactive_delivery.core.errors import ConfigError

# arn -> the secret's string; the default reads Secrets Manager through Powertools.
SecretReader = Callable[[str], str]


def powertools_reader(max_age: int) -> SecretReader:
    def read(arn: str) -> str:
        from aws_lambda_powertools.utilities import parameters

        try:
            value = parameters.get_secret(arn, max_age=max_age)
        except parameters.exceptions.GetParameterError as exc:
            cause = exc.__cause__
            # The error code says which (ResourceNotFoundException, AccessDeniedException...).
            raise ConfigError(
                f"cannot read secret {arn.rsplit(':', 1)[-1]}: {error_code(cause, type(cause).__name__)}"
            ) from exc
        return str(value)

    return read


def database_url_from(url: str | None, secret_arn: str | None, read: SecretReader) -> str:
    """DATABASE_URL as given, or built from the Secrets Manager secret (the RDS secret
    format: JSON with host, port, username, password, dbname)."""
    if url:
        return url
    if not secret_arn:
        raise ConfigError("DATABASE_URL or DATABASE_SECRET_ARN must be set")
    try:
        secret: dict[str, Any] = json.loads(read(secret_arn))
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


def signing_secret_from(
    value: str | None,
    secret_arn: str | None,
    read: SecretReader,
    *,
    setting: str = "WEBHOOK_SIGNING_SECRET_ARN",
) -> str:
    """The Standard Webhooks key (whsec_...), as given or from its secret (plain, or JSON
    with a `secret` key); `setting` names the ARN's variable in the error."""
    if value:
        return value
    assert secret_arn is not None  # Settings.validate requires one of the two
    raw = read(secret_arn).strip()
    if raw.startswith("{"):
        raw = str(json.loads(raw).get("secret", ""))
    if not raw.startswith("whsec_"):
        raise ConfigError(f"{setting} must hold a Standard Webhooks secret (whsec_...)")
    return raw


def twilio_credentials_from(
    account_sid: str | None, auth_token: str | None, secret_arn: str | None, read: SecretReader
) -> tuple[str, str]:
    """(account SID, auth token): as given locally, else from the secret (JSON with
    account_sid and auth_token)."""
    if account_sid and auth_token:
        return account_sid, auth_token
    assert secret_arn is not None  # Settings.validate requires the secret or both values
    try:
        secret = json.loads(read(secret_arn))
        return str(secret["account_sid"]), str(secret["auth_token"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            "TWILIO_SECRET_ARN must name a JSON secret with account_sid and auth_token"
        ) from exc


def twilio_auth_token_from(auth_token: str | None, secret_arn: str | None, read: SecretReader) -> str:
    """The Twilio auth token that signs Twilio's webhooks: as given locally, else the
    auth_token of the Twilio channel's secret (JSON with account_sid and auth_token)."""
    if auth_token:
        return auth_token
    assert secret_arn is not None  # InboundSettings only enables the Twilio routes with one
    try:
        token = json.loads(read(secret_arn))["auth_token"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            "TWILIO_SECRET_ARN must name a JSON secret with account_sid and auth_token"
        ) from exc
    if not isinstance(token, str) or not token:
        raise ConfigError("TWILIO_SECRET_ARN holds no auth_token")
    return token


def phone_hash_key_from(value: str | None, secret_arn: str | None, read: SecretReader) -> bytes | None:
    """The key that hashes phone numbers (core/phone_hash.py): PHONE_HASH_KEY as given, or
    the secret PHONE_HASH_KEY_ARN names (the stack generates one: a plain string, or JSON
    with a `key`), as UTF-8 bytes. None when neither is set (a local stage derives one)."""
    if value:
        return value.encode("utf-8")
    if not secret_arn:
        return None
    raw = read(secret_arn).strip()
    if raw.startswith("{"):
        try:
            raw = str(json.loads(raw)["key"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError("PHONE_HASH_KEY_ARN must hold a plain string or JSON with a key") from exc
    if len(raw) < 16:
        raise ConfigError("PHONE_HASH_KEY_ARN must hold a key of at least 16 characters")
    return raw.encode("utf-8")
