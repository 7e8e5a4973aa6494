"""The exact worker's phase reports: the child times its phases (``Phases``) and writes each as it ends,
a line ``PHASE_MARK name seconds`` on stderr (``mark``); the runner reads them back (``read_marks``), so it
knows where the time went even when it has to kill the child. Standard library only.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

__all__ = ["PHASE_MARK", "WORKER_PHASES", "mark", "Phases", "read_marks"]

PHASE_MARK = "@packer-phase"
WORKER_PHASES = ("worker_start", "prepare", "import", "model_build", "search", "answer")  # in the order they run


def mark(name: str, seconds: float) -> None:
    """Report that phase ``name`` took ``seconds`` (stderr, flushed at once: it must survive a kill)."""
    print(f"{PHASE_MARK} {name} {seconds:.6f}", file=sys.stderr, flush=True)


class Phases:
    """Times consecutive phases: ``done(name)`` ends the phase that began at the previous call."""

    def __init__(self, start: float, report: Callable[[str, float], None] | None = None):
        self.last = start
        self.report = report
        self.seconds: dict[str, float] = {}

    def done(self, name: str) -> None:
        now = time.monotonic()
        took, self.last = now - self.last, now
        self.seconds[name] = self.seconds.get(name, 0.0) + took
        if self.report is not None:
            self.report(name, took)


def read_marks(stderr: str) -> tuple[dict[str, float], str]:
    """The worker's phase reports (see ``mark``) and the rest of its stderr."""
    marks: dict[str, float] = {}
    rest = []
    for line in stderr.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == PHASE_MARK:
            try:
                marks[parts[1]] = marks.get(parts[1], 0.0) + float(parts[2])
                continue
            except ValueError:
                pass
        rest.append(line)
    return marks, "\n".join(rest)
