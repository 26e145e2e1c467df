"""X-Ray subsegments around the calls that leave the process: PostgreSQL, SQS and each
channel. Through the Powertools Tracer, so POWERTOOLS_TRACE_DISABLED=true (tests, the
local runtime) turns every one of them into a no-op.

The deliverer sends from worker threads. Inside Lambda the X-Ray SDK's context builds the
invocation's facade segment from _X_AMZN_TRACE_ID in whichever thread asks, so a channel
subsegment opened in a worker still lands in the invocation's trace.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Tracer

from proactive_delivery import SERVICE

_tracer = Tracer(service=SERVICE)


@contextmanager
def subsegment(name: str, **annotations: str | bool) -> Iterator[Any]:
    """Open a subsegment named `name`; annotations make it searchable in X-Ray (never pass
    contact details: annotations are indexed)."""
    with _tracer.provider.in_subsegment(name) as segment:
        for key, value in annotations.items():
            segment.put_annotation(key, value)
        yield segment
