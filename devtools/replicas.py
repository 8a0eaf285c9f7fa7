"""Weir replicas (`weir serve --store etcd://...`) as real local processes, for tests and benchmarks.

Each replica runs in its own session on 127.0.0.1 with ports from the OS;
:meth:`ReplicaProcess.kill` sends SIGKILL to the whole group. Callers stop
everything they started in a ``finally`` (kill, then wait).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from .devstack import free_port

__all__ = ["ReplicaProcess", "wait_for"]


class ReplicaProcess:
    """One `weir serve --store etcd://...` process on 127.0.0.1 with free ports."""

    def __init__(self, name: str, store_url: str, analyzer: str, *, lease_ttl: int = 3, extra: list[str] = ()):
        self.name = name
        self.api_port, self.xds_port = free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.log_path = Path(tempfile.mkdtemp(prefix=f"weir-{name}-")) / "serve.log"
        self.store_url, self.analyzer = store_url, analyzer
        self.cmd = [sys.executable, "-m", "control_plane.cli", "serve", "--store", store_url,
                    "--api-port", str(self.api_port), "--xds-port", str(self.xds_port), "--tick", "0.05",
                    "--listen-address", "127.0.0.1", "--analyzer", analyzer, "--replica-id", name,
                    "--lease-ttl", str(lease_ttl), *extra]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> "ReplicaProcess":
        self.proc = subprocess.Popen(self.cmd, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica {self.name} exited: {self.log()[-3000:]}")
            if self.ready():
                return self
            time.sleep(0.1)
        raise TimeoutError(f"replica {self.name} not ready after {timeout:g}s: {self.log()[-3000:]}")

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.api}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def readyz(self) -> httpx.Response:
        return httpx.get(f"{self.api}/readyz", timeout=5)

    def role(self) -> str | None:
        try:
            return httpx.get(f"{self.api}/v1/leader", timeout=2).json()["role"]
        except (httpx.HTTPError, KeyError, ValueError):
            return None

    def proxies(self) -> set[str]:
        data = httpx.get(f"{self.api}/v1/proxies", timeout=2).json()
        return {p["node_id"] for p in data.get("connected", [])}

    def rollout(self, name: str = "echo") -> dict:
        return httpx.get(f"{self.api}/v1/rollouts/{name}", timeout=5).json()

    def events(self, name: str = "echo") -> list[dict]:
        return httpx.get(f"{self.api}/v1/rollouts/{name}/events", timeout=5).json()["items"]

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def wait_for(what: str, predicate, timeout: float = 30.0, interval: float = 0.05):
    """Poll until ``predicate()`` returns something truthy (bounded; the message says what never happened)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (httpx.HTTPError, KeyError, ValueError) as err:
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"{what}: not reached in {timeout:g}s (last: {last!r})")
