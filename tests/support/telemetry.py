"""What the functions print, as the tests read it: EMF blobs and log lines. No I/O beyond
the process, so unit tests may import it."""

from __future__ import annotations

import io
import json
import logging
from contextlib import contextmanager
from typing import Any


def emf_blobs(output: str) -> list[dict[str, Any]]:
    """Every EMF blob printed by Powertools Metrics (one JSON object per line)."""
    blobs: list[dict[str, Any]] = []
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("{") and "_aws" in line:
            blobs.append(json.loads(line))
    return blobs


def emf_metrics(output: str, dimensions: frozenset[str] = frozenset({"service"})) -> dict[str, float]:
    """Sum the EMF metrics printed under exactly `dimensions` (default: the per-invocation
    totals, whose only dimension is service)."""
    totals: dict[str, float] = {}
    for blob in emf_blobs(output):
        for directive in blob["_aws"]["CloudWatchMetrics"]:
            if not any(frozenset(d) == dimensions for d in directive["Dimensions"]):
                continue
            for metric in directive["Metrics"]:
                value = blob[metric["Name"]]
                values = value if isinstance(value, list) else [value]
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(values)
    return totals


@contextmanager
def captured_log_lines() -> Any:
    """Every line the package's loggers write, formatted exactly as in CloudWatch."""
    from proactive_delivery.handlers import logger

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logger.registered_formatter)
    root = logging.getLogger("proactive-delivery")
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
