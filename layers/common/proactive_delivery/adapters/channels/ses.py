"""Email through Amazon SES v2 (boto3 sesv2.send_email): a plain-text body and a subject
derived from the message type."""

from __future__ import annotations

from email.utils import formataddr
from typing import Any, Final

from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, ReadTimeoutError

from proactive_delivery.adapters.aws import error_code, http_status
from proactive_delivery.adapters.channels.base import TracedChannel
from proactive_delivery.adapters.channels.webhook import subject_for
from proactive_delivery.core.errors import PermanentSendError, TransientSendError
from proactive_delivery.core.models import OutboundMessage, SendResult

# Throttling and service-side trouble: try again later. Everything else SES answers
# (MessageRejected, an unverified sender, a paused account, a bad request) will not get
# better by retrying the same message.
TRANSIENT_CODES: Final = frozenset(
    {
        "TooManyRequestsException",
        "LimitExceededException",
        "Throttling",
        "ThrottlingException",
        "InternalFailure",
        "InternalServiceError",
        "ServiceUnavailable",
    }
)


class SesEmailChannel(TracedChannel):
    provider = "ses"

    def __init__(
        self,
        *,
        name: str,
        client: Any,
        from_address: str,
        from_name: str | None = None,
        configuration_set: str | None = None,
    ) -> None:
        self.name = name
        self._client = client
        # The stack's configuration set publishes this message's delivery, bounce, complaint
        # and reject events to EventBridge, and from there to the inbound queue.
        self._configuration_set = configuration_set
        # "Power100 Concierge <coach@example.com>": SES takes the display name in the address.
        self._from_address = formataddr((from_name, from_address)) if from_name else from_address

    def _deliver(self, message: OutboundMessage) -> SendResult:
        request: dict[str, Any] = {
            "FromEmailAddress": self._from_address,
            "Destination": {"ToAddresses": [message.email]},
            "Content": {
                "Simple": {
                    "Subject": {"Data": subject_for(message.message_type), "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": message.text, "Charset": "UTF-8"}},
                }
            },
            "EmailTags": [{"Name": "message_id", "Value": message.idempotency_key}],
        }
        if self._configuration_set:
            request["ConfigurationSetName"] = self._configuration_set
        try:
            response = self._client.send_email(**request)
        except ClientError as exc:
            code, status = error_code(exc, "ClientError"), http_status(exc)
            if code in TRANSIENT_CODES or (status is not None and status >= 500):
                raise TransientSendError("ses_unavailable", http_status=status, detail=code) from exc
            raise PermanentSendError("rejected", http_status=status, detail=f"ses {code}") from exc
        except (ConnectTimeoutError, ReadTimeoutError) as exc:
            raise TransientSendError("timeout", detail=type(exc).__name__) from exc
        except BotoCoreError as exc:
            raise TransientSendError("connection_error", detail=type(exc).__name__) from exc
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 200)
        return SendResult(http_status=int(status), provider_ref=response.get("MessageId"))
