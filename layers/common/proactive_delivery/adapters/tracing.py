"""X-Ray subsegments around the calls that leave the process: PostgreSQL, SQS and each
channel. Through the Powertools Tracer, so POWERTOOLS_TRACE_DISABLED=true (tests, the
local runtime) turns every one of them into a no-op.

The deliverer sends from worker threads. Inside Lambda the X-Ray SDK's context builds the
invocation's facade segment from _X_AMZN_TRACE_ID in whichever thread asks, so a channel
subsegment opened in a worker still lands in the invocation's trace.

Only botocore is patched (every AWS call becomes a subsegment with its service and
operation). The X-Ray SDK's default patches every library it knows that is importable,
which imports them all at cold start (httpx into the evaluate function, which never sends
over HTTP) and records each HTTP request's full URL, an n8n webhook's secret path
included. PostgreSQL and the channels get the named subsegments below instead, which
carry no SQL text, URL or contact detail.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools import Tracer

from proactive_delivery import SERVICE

PATCHED_MODULES = ("botocore",)

tracer = Tracer(service=SERVICE, patch_modules=PATCHED_MODULES)


@contextmanager
def subsegment(name: str, **annotations: str | bool) -> Iterator[Any]:
    """Open a subsegment named `name`; annotations make it searchable in X-Ray (never pass
    contact details: annotations are indexed)."""
    with tracer.provider.in_subsegment(name) as segment:
        for key, value in annotations.items():
            segment.put_annotation(key, value)
        yield segment
