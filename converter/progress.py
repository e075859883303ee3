"""A thread-safe progress bar on stderr, shown only when stderr is a terminal."""

from __future__ import annotations

import sys
import threading
import time


class Progress:
    """Counts units of work; draws at most ten times a second; silent when not wanted.

    Call the instance with a number of finished units; use it as a context manager.
    """

    def __init__(self, total: int, label: str, enabled: bool | None = None, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total, self.label, self.done = max(total, 1), label, 0
        self._lock = threading.Lock()
        self._start = time.perf_counter()
        self._drawn = 0.0

    def __call__(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            now = time.perf_counter()
            if self.enabled and (now - self._drawn > 0.1 or self.done >= self.total):
                self._drawn = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(30 * frac)
        elapsed = now - self._start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        self.stream.write(f"\r{self.label} [{bar:<30}] {frac:6.1%} {elapsed:6.1f}s elapsed, {eta:5.1f}s left ")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
