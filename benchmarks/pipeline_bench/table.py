"""The benchmark's one table. A row is one of three kinds, and only two of them decide the
exit status:

- info: a figure with no pass/fail. Absolute rates (msg/s, rows/s, ms) are info: they say
  how fast this machine was in this run, and a loaded or slower machine is not a
  regression.
- target: a ratio of two figures measured in the same run (both sides see the same
  machine and load), or a count or size that does not depend on the machine's speed
  (statements per batch, log bytes per message). A missed target fails the run.
- check: a correctness condition (every message sent once, an index scan). A failed check
  fails the run: the figures of a run that lost or repeated messages mean nothing.

A section that raises adds an ERROR row and fails the run too: its targets went unmeasured.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

INFO = "-"


@dataclass
class Table:
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def info(self, measure: str, value: str) -> None:
        self.rows.append((measure, value, INFO, INFO))

    def target(
        self, measure: str, value: float, fmt: str, limit: float, *, at_least: bool, unit: str = ""
    ) -> bool:
        """A target row; returns whether it was met."""
        met = value >= limit if at_least else value <= limit
        wanted = f"{'>=' if at_least else '<='} {limit:g}{unit}"
        shown = fmt.format(value) + unit
        self.rows.append((measure, shown, wanted, "met" if met else "MISSED"))
        if not met:
            self.missed.append(f"{measure}: {shown} (target {wanted})")
        return met

    def check(self, measure: str, value: str, expected: str, *, ok: bool) -> None:
        self.rows.append((measure, value, expected, "ok" if ok else "FAILED"))
        if not ok:
            self.failed_checks.append(f"{measure}: {value} (expected {expected})")

    def problems(self, measure: str, problems: Sequence[str], expected: str) -> None:
        """A check row whose value is "ok", or the problems found."""
        self.check(measure, "; ".join(problems) or "ok", expected, ok=not problems)

    def error(self, section: str, exc: BaseException) -> None:
        message = f"ERROR {type(exc).__name__}: {str(exc)[:80]}"
        self.rows.append((section, message, INFO, "FAILED"))
        self.errors.append(f"{section}: {message}")

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Runs one section; if it raises, the traceback goes to stderr and the table gets an
        ERROR row, and the next section runs."""
        try:
            yield
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self.error(name, exc)

    @property
    def failed(self) -> bool:
        return bool(self.missed or self.failed_checks or self.errors)

    def results(self) -> list[str]:
        """The result lines printed under the table: each missed target, failed check and
        section error by name, or the one line that says all held."""
        lines = [f"result: TARGET MISSED: {m}" for m in self.missed]
        lines += [f"result: CHECK FAILED: {c}" for c in self.failed_checks]
        lines += [f"result: SECTION FAILED: {e}" for e in self.errors]
        return lines or ["result: all targets met, all checks hold"]

    def render(self) -> str:
        head = ("measure", "value", "target", "verdict")
        widths = [max(len(r[i]) for r in [head, *self.rows]) for i in range(4)]

        def line(r: Sequence[str]) -> str:
            return " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

        sep = "-+-".join("-" * w for w in widths)
        return "\n".join([line(head), sep, *(line(r) for r in self.rows)])
