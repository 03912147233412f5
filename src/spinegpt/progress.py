"""Progress of long work, in one style everywhere (generation, judging, token counting, reading sources): a bar on
a terminal (tqdm), and where the console is a log file (a job's output, a child process read by its parent), a
logged line every few seconds -- done of total, rate, time left -- instead of thousands of carriage returns."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

logger = logging.getLogger(__name__)


class Progress:
    """``total=None``: work of unknown size (reading a source of unknown length): done and rate only."""

    def __init__(
        self,
        label: str,
        total: int | None,
        unit: str = "items",
        every_s: float = 10.0,
        log: logging.Logger | None = None,
    ):
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.log = log or logger
        self.done = 0
        self.said = False
        self.started = self.last = time.monotonic()
        self._bar: Any = None
        if sys.stderr.isatty() and self.log.isEnabledFor(logging.INFO):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit=f" {unit}", file=sys.stderr)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        # The last line closes what earlier lines began; work done in moments is not worth a line at all.
        finished = self.done == self.total and (self.said or now - self.started >= 1.0)
        if now - self.last >= self.every_s or finished:
            self.last, self.said = now, True
            self.log.info(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.done / elapsed
        if self.total is None:
            return f"{self.label}: {self.done:,} {self.unit} ({rate:,.0f}/s)"
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = f"{left / 60:.1f} min left" if left == left else "time left unknown"
        return f"{self.label}: {self.done}/{self.total} {self.unit} ({rate:.2f}/s, {eta})"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
