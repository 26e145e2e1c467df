"""The SQS batch as Powertools sees it, worked once.

The deliverer works a batch as a whole (one claim statement, concurrent sends, one outcome
statement), so the processor's `_prepare` does exactly that, and its record step only
reports what happened to each record: failed ones become batchItemFailures, to come back
after the visibility the deliverer already set on them. A batch in which every message
failed (the webhook is down) is a reported outcome, not a function error; infrastructure
failures (database unreachable) raise from `_prepare` and fail the invocation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import EventType
from aws_lambda_powertools.utilities.batch.base import (
    BasePartialBatchProcessor,
    FailureResponse,
    SuccessResponse,
)

from proactive_delivery.app.deliver import BatchResult, Deliverer


class DeliveryBatch(BasePartialBatchProcessor):
    def __init__(self, deliverer: Deliverer, remaining_ms: Callable[[], int]) -> None:
        super().__init__(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        self._deliverer = deliverer
        self._remaining_ms = remaining_ms
        self.result: BatchResult | None = None

    def _prepare(self) -> None:
        super()._prepare()  # type: ignore[no-untyped-call]
        self.result = self._deliverer.process(self.records, self._remaining_ms)

    def _process_record(self, record: dict[str, Any]) -> SuccessResponse | FailureResponse:
        assert self.result is not None
        data = self._to_batch_type(record=record, event_type=self.event_type)
        failure = self.result.failures.get(str(record.get("messageId", "")))
        if failure is None:
            return self.success_handler(record=data, result=None)
        # (type, value, no traceback): a reported outcome, not an error to log again.
        return self.failure_handler(record=data, exception=(type(failure), failure, None))

    async def _async_process_record(self, record: dict[str, Any]) -> SuccessResponse | FailureResponse:
        raise NotImplementedError  # pragma: no cover - the deliver function is synchronous
