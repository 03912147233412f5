"""Progress of long work with a known size: a bar on a terminal (tqdm), plain lines every few seconds in a log
(where a redrawn bar would be thousands of carriage returns): done of total, rate, time left."""

from __future__ import annotations

import sys
import time
from typing import IO, Any


class Progress:
    def __init__(
        self, label: str, total: int, unit: str = "items", every_s: float = 10.0, stream: IO[str] | None = None
    ):
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.stream = stream or sys.stderr
        self.done = 0
        self.started = self.last = time.monotonic()
        self._bar: Any = None
        if self.stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit=f" {unit}", file=self.stream)

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = f"{left / 60:.1f} min left" if left == left else "time left unknown"
        return f"{self.label}: {self.done}/{self.total} {self.unit} ({rate:.2f}/s, {eta})"

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
