"""Log lines that anyone on the network can cause, at a bounded rate: one line each, then a count.

Why: a malformed xDS stream, a refused TLS handshake or a store that keeps
failing would otherwise write a line (or a traceback) per event, so a client
could fill the disk and bury real problems cheaply. Each
:class:`RateLimitedLog` writes at most ``max_lines`` lines per ``window_s``
window; what it drops is counted and reported as one summary line when the
next window opens (on the next event, or :meth:`flush`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    """At most ``max_lines`` lines per ``window_s`` seconds on ``logger``; thread-safe."""

    def __init__(self, logger: logging.Logger, what: str, *, max_lines: int = 10, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.what = what  # names the dropped lines in the summary, e.g. "malformed xDS streams"
        self.max_lines = max_lines
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._written = 0
        self._dropped = 0
        self.total = 0  # every event seen, written or not

    def log(self, level: int, message: str, *args: object) -> bool:
        """Log one line (never a traceback); False when the window's budget is spent and it was only counted."""
        with self._lock:
            self.total += 1
            self._roll()
            if self._written >= self.max_lines:
                self._dropped += 1
                return False
            self._written += 1
        self.logger.log(level, message, *args)
        return True

    def flush(self) -> None:
        """Write the summary of what the current window dropped, if anything, and start a new window."""
        with self._lock:
            self._window_start = self.clock() - self.window_s
            self._roll()

    def _roll(self) -> None:
        now = self.clock()
        if now - self._window_start < self.window_s:
            return
        if self._dropped:
            self.logger.warning("%d more %s in the last %.0fs were not logged one by one",
                                self._dropped, self.what, now - self._window_start)
        self._window_start, self._written, self._dropped = now, 0, 0
