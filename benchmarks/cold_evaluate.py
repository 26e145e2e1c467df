#!/usr/bin/env python
"""One cold start of the evaluate function, for the pipeline benchmark (pipeline_bench/cost.py)
to time from outside: in a fresh interpreter, import functions/evaluate/app.py as Lambda's
runtime does, then run the first invocation (settings, connection, schema read) with the
event EventBridge sends. It imports nothing else, so the time is the function's own.
Settings come from the environment (the benchmark sets them); exit status 1 if the run
queued anything (it must find nothing due)."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Context:
    """The parts of Lambda's context object the handlers use."""

    function_name = "EvaluateFunction"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:EvaluateFunction"
    memory_limit_in_mb = 512
    log_group_name = "/aws/lambda/EvaluateFunction"
    log_stream_name = "cold"

    def __init__(self, timeout_seconds: float) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def main() -> int:
    sys.path.insert(0, str(ROOT / "functions" / "evaluate"))
    import app  # type: ignore[import-not-found]

    report = app.lambda_handler({}, Context(300))
    return 1 if report["enqueued"] else 0


if __name__ == "__main__":
    sys.exit(main())
