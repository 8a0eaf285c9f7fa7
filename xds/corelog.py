"""gRPC core's own log lines about refused TLS handshakes, turned into rate-limited Weir log lines.

Why: with mTLS a connection without a good client certificate is refused by
gRPC's C core during the handshake; Python never sees it. The core writes
one line per refusal straight to file descriptor 2, so a client that keeps
reconnecting with a wrong certificate (or a scanner) writes to Weir's log as
fast as it likes, in gRPC's format. :class:`CoreLogBridge` puts a pipe in
front of descriptor 2: gRPC's handshake lines become one Weir line each,
through :class:`~xds.ratelog.RateLimitedLog`; every other byte is passed
through unchanged to the original stderr.

Only ``weir serve`` with ``--xds-tls-*`` installs it (it owns the process's
stderr); :meth:`CoreLogBridge.feed` is the pure part, tested without a pipe.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading

from .ratelog import RateLimitedLog

__all__ = ["CoreLogBridge"]

# gRPC core (absl) format: "E1201 09:45:20.030346   30810 ssl_transport_security.cc:2563] message"
_CORE_LINE = re.compile(rb"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ (?P<file>[\w./-]+):\d+\] (?P<message>.*)$")
_HANDSHAKE_FILES = (b"ssl_transport_security", b"security_handshaker", b"handshaker", b"tls_security_connector")
_REASON = re.compile(rb"OPENSSL_internal:(?P<reason>[A-Z_]+)(?::\s*(?P<more>.*))?")


class CoreLogBridge:
    """Reads what is written to fd 2; handshake refusals go to ``logger`` (rate-limited), the rest to stderr.

    The refusals are logged from the event loop (``install(loop)``), never from
    the thread draining the pipe: that thread must not write into the pipe it
    is the only reader of.
    """

    def __init__(self, logger: logging.Logger | None = None, *, max_lines: int = 10, window_s: float = 60.0):
        self.log = RateLimitedLog(logger or logging.getLogger("weir.xds"), "refused TLS connections",
                                  max_lines=max_lines, window_s=window_s)
        self._pending = b""
        self._saved: int | None = None
        self._read_end: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the pure part ---------------------------------------------------------------------------
    def feed(self, data: bytes) -> tuple[bytes, list[str]]:
        """Take bytes written to stderr: (what to pass through, the refusal reasons it held)."""
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        passed, reasons = [], []
        for line in lines:
            reason = self._reason(line)
            if reason is None:
                passed.append(line + b"\n")
            else:
                reasons.append(reason)
        return b"".join(passed), reasons

    def report(self, reason: str) -> None:
        self.log.log(logging.WARNING, "xDS: refused a TLS connection: %s (a proxy without a client certificate "
                     "from --xds-tls-client-ca, or not speaking TLS)", reason)

    @staticmethod
    def _reason(line: bytes) -> str | None:
        match = _CORE_LINE.match(line.rstrip(b"\r"))
        if match is None or not any(f in match.group("file") for f in _HANDSHAKE_FILES):
            return None
        message = match.group("message")
        if b"andshake" not in message and b"certificate" not in message.lower():
            return None
        found = _REASON.search(message)
        if found is None:
            return message.decode("utf-8", "replace")[:200]
        text = found.group("reason").decode("ascii", "replace")
        if found.group("more"):
            text += ": " + found.group("more").decode("utf-8", "replace")[:160]
        return text

    # -- the process part ------------------------------------------------------------------------
    def install(self, loop: asyncio.AbstractEventLoop) -> "CoreLogBridge":
        """Put a pipe in front of fd 2 and start the thread that drains it; refusals are logged on ``loop``."""
        self._loop = loop
        read_end, write_end = os.pipe()
        self._saved = os.dup(2)
        os.dup2(write_end, 2)
        os.close(write_end)
        self._read_end = read_end
        self._thread = threading.Thread(target=self._pump, name="weir-grpc-core-log", daemon=True)
        self._thread.start()
        return self

    def _pump(self) -> None:
        assert self._read_end is not None and self._saved is not None
        out, read_end = self._saved, self._read_end
        while True:
            try:
                data = os.read(read_end, 65536)
            except OSError:
                return
            if not data:
                if self._pending:
                    os.write(out, self._pending)
                    self._pending = b""
                return
            passed, reasons = self.feed(data)
            if passed:
                os.write(out, passed)
            for reason in reasons:
                try:
                    self._loop.call_soon_threadsafe(self.report, reason)  # type: ignore[union-attr]
                except RuntimeError:  # the loop is closed: the process is ending
                    return

    def uninstall(self) -> None:
        """Give fd 2 back (the pipe then ends) and pass through whatever was still in it."""
        if self._saved is None:
            return
        os.dup2(self._saved, 2)  # drops the pipe's last write end: the thread reads EOF and stops
        if self._thread is not None:
            self._thread.join(5)
        os.close(self._saved)
        self._saved = None
        if self._read_end is not None:
            os.close(self._read_end)
            self._read_end = None
