"""A dependency-free progress line on stderr (used by the CLI and benchmarks)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class ProgressLine:
    """Redraws one line ``label [#####.....] 42% info`` at most every ``min_interval_s``.

    On a non-terminal stream it prints a plain line at most every ``log_interval_s`` instead,
    so logs stay readable.
    """

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 28,
                 min_interval_s: float = 0.1, log_interval_s: float = 5.0, enabled: bool = True):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = min_interval_s if self.tty else log_interval_s
        self._last = -1e9
        self._drawn = False

    def update(self, fraction: float, info: str = "", force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return
        self._last = now
        fraction = min(max(float(fraction), 0.0), 1.0)
        filled = int(round(fraction * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        text = f"{self.label} [{bar}] {100 * fraction:3.0f}% {info}"
        if self.tty:
            self.stream.write("\r" + text[:160].ljust(100))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()
        self._drawn = True

    def close(self, info: str = "") -> None:
        if not self.enabled:
            return
        self.update(1.0, info, force=True)
        if self.tty and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
