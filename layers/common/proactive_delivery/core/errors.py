"""The package's own exceptions. Adapters translate driver and SDK errors into these."""

from __future__ import annotations

from proactive_delivery.core.states import State


class DeliveryError(Exception):
    """Base class for every error this package raises on purpose."""


class ConfigError(DeliveryError):
    """A setting is missing or invalid. The message names the setting."""


class StoreUnavailableError(DeliveryError):
    """PostgreSQL could not be reached or the connection broke."""


class QueueError(DeliveryError):
    """The queue rejected a whole call (as opposed to reporting failed entries)."""


class MalformedRecordError(DeliveryError):
    """A queue record that can never be processed: bad JSON, wrong shape, unknown source or id."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class SendError(DeliveryError):
    """A channel could not deliver a message."""

    def __init__(self, reason: str, *, http_status: int | None = None, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.http_status = http_status


class TransientSendError(SendError):
    """Worth retrying later: timeout, connection error, 429, 5xx."""

    def __init__(
        self,
        reason: str,
        *,
        http_status: int | None = None,
        detail: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason, http_status=http_status, detail=detail)
        self.retry_after = retry_after


class PermanentSendError(SendError):
    """Retrying cannot help: the provider refused this message for good."""

    def __init__(
        self,
        reason: str,
        *,
        http_status: int | None = None,
        detail: str = "",
        final_state: State = State.FAILED,
    ) -> None:
        super().__init__(reason, http_status=http_status, detail=detail)
        # "failed" for a refusal, "skipped" when the recipient cannot or must not be messaged.
        self.final_state = final_state
