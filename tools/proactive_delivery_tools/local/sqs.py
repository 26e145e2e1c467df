"""SQS on loopback, served by moto's server mode, with the queues the template declares."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any

from proactive_delivery.adapters import aws

LOCAL_REGION = "us-east-1"
# moto's placeholder credentials.
LOCAL_CREDENTIALS: dict[str, Any] = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",  # nosec B105
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalSqsServer:
    """moto's threaded server on 127.0.0.1; stop() ends it."""

    def __init__(self, port: int | None = None) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        # werkzeug prints one access line per SQS call; the demo has its own display.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = port or free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalSqsServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def client(self) -> Any:
        return local_client("sqs", self.endpoint)


def local_client(service: str, endpoint: str) -> Any:
    """A client of the local server (moto) for `service`, with its placeholder credentials."""
    return aws.client(service, region=LOCAL_REGION, endpoint_url=endpoint, **LOCAL_CREDENTIALS)


@dataclass(frozen=True)
class QueuePair:
    queue_url: str
    dlq_url: str
    dlq_arn: str


def create_queues(
    client: Any,
    *,
    name: str = "delivery",
    visibility_timeout: int = 360,
    max_receive_count: int = 5,
    retention_seconds: int = 345600,
    dlq_retention_seconds: int = 1209600,
) -> QueuePair:
    dlq_url = client.create_queue(
        QueueName=f"{name}-dlq", Attributes={"MessageRetentionPeriod": str(dlq_retention_seconds)}
    )["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = client.create_queue(
        QueueName=name,
        Attributes={
            "VisibilityTimeout": str(visibility_timeout),
            "MessageRetentionPeriod": str(retention_seconds),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
            ),
        },
    )["QueueUrl"]
    return QueuePair(queue_url=queue_url, dlq_url=dlq_url, dlq_arn=dlq_arn)


def local_aws_environment(endpoint: str) -> dict[str, str]:
    """The environment that points boto3 at the local server (boto3's own variables)."""
    return {
        "AWS_ENDPOINT_URL_SQS": endpoint,
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", LOCAL_REGION),
        "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS["aws_secret_access_key"],
    }
