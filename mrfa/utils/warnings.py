"""Warnings for accepted-but-suspicious input: one line on stderr each, counted for the run's summary."""
from __future__ import annotations

import sys
from collections import Counter
from typing import TextIO


class RunWarnings:
    """Collects a command's warnings: ``warn(kind, message)`` prints ``PROG: warning: message`` once on stderr and
    counts ``kind``; :attr:`counts` goes into the run's summary JSON, :meth:`summary` into its last line."""

    def __init__(self, prog: str, stream: TextIO | None = None) -> None:
        self.prog = prog
        self.stream = stream
        self.counts: Counter[str] = Counter()

    def __call__(self, kind: str, message: str) -> None:
        self.counts[kind] += 1
        print(f"{self.prog}: warning: {message}", file=self.stream or sys.stderr)

    def summary(self) -> str:
        """``""`` or ``" [N warnings: kind, ...]"``."""
        n = sum(self.counts.values())
        return f" [{n} warning{'s' if n != 1 else ''}: {', '.join(sorted(self.counts))}]" if n else ""

    def as_dict(self) -> dict[str, int]:
        return dict(self.counts)
