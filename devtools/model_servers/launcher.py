"""Run a demo model server as its own process: start, wait for readiness, change knobs, stop.

A subprocess is what end-to-end tests and benches need: the server then has
its own interpreter and GIL, so the load generator and Weir do not share a
core with it, and killing it is a real backend crash. Readiness is the one
JSON line the server prints once both ports accept connections; stderr goes
to a log file whose tail is quoted when start-up fails.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from devtools.model_servers.knobs import Knobs

REPO_ROOT = Path(__file__).resolve().parents[2]


class ModelServerProcess:
    """`python -m devtools.model_servers` as a child process in its own session."""

    def __init__(self, knobs: Knobs | None = None, *, host: str = "127.0.0.1", rest_port: int = 0,
                 grpc_port: int | None = 0, python: str = sys.executable, **overrides: Any) -> None:
        self.knobs = (knobs or Knobs()).changed(overrides)
        self.host, self.python = host, python
        self._rest_port, self._grpc_port = rest_port, grpc_port
        self.dir = Path(tempfile.mkdtemp(prefix="weir-model-server-"))
        self.log_path = self.dir / "model-server.log"
        self.proc: subprocess.Popen | None = None
        self.rest_port: int | None = None
        self.grpc_port: int | None = None
        self._log = None

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "devtools.model_servers", "--host", self.host, "--rest-port", str(self._rest_port),
               "--grpc-port", str(-1 if self._grpc_port is None else self._grpc_port)]
        defaults = Knobs()
        for f in dataclasses.fields(Knobs):
            value = getattr(self.knobs, f.name)
            if value == getattr(defaults, f.name):
                continue
            flag = "--" + f.name.replace("_", "-")
            cmd += [flag] if isinstance(value, bool) else [flag, repr(value) if isinstance(value, float) else str(value)]
        return cmd

    @property
    def rest_url(self) -> str:
        assert self.rest_port, "not started"
        return f"http://{self.host}:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        assert self.grpc_port, "not started with gRPC"
        return f"{self.host}:{self.grpc_port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 30.0) -> ModelServerProcess:
        """Start the server and block until it prints its ports (RuntimeError/TimeoutError with its log)."""
        self._log = open(self.log_path, "wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(self.command(), cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=self._log, start_new_session=True)
        try:
            ready = json.loads(self._read_line(timeout))
        except BaseException:
            self.stop()
            raise
        self.rest_port, self.grpc_port = ready["rest_port"], ready["grpc_port"]
        return self

    async def astart(self, timeout: float = 30.0) -> ModelServerProcess:
        """`start()` off the event loop."""
        return await asyncio.to_thread(self.start, timeout)

    def _read_line(self, timeout: float) -> str:
        assert self.proc and self.proc.stdout
        deadline = time.monotonic() + timeout
        buffer = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"model server not ready after {timeout:g}s: {self.log_text()[-3000:]}")
                if sel.select(min(left, 0.2)):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:
                        self.proc.wait(5)
                        raise RuntimeError(f"model server exited ({self.proc.returncode}): {self.log_text()[-3000:]}")
                    buffer += chunk
        return buffer.split(b"\n", 1)[0].decode()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # -- admin, blocking (scripts) and async (event loops) -------------------

    def set_knobs(self, changes: Mapping[str, Any] | None = None, **more: Any) -> dict[str, Any]:
        """POST /admin/knobs; returns the knobs now in force (ValueError with the server's reason)."""
        body = json.dumps({**(changes or {}), **more}).encode()
        request = urllib.request.Request(self.rest_url + "/admin/knobs", data=body, method="POST",
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return json.loads(resp.read())["knobs"]
        except urllib.error.HTTPError as err:
            raise ValueError(json.loads(err.read()).get("error", str(err))) from None

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.rest_url + "/admin/stats", timeout=5) as resp:
            return json.loads(resp.read())

    async def aset_knobs(self, changes: Mapping[str, Any] | None = None, **more: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            resp = await client.post(self.rest_url + "/admin/knobs", json={**(changes or {}), **more})
        if resp.status_code != 200:
            raise ValueError(resp.json().get("error", resp.text))
        return resp.json()["knobs"]

    async def astats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(self.rest_url + "/admin/stats")).json()

    # -- stopping ------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the server's session, SIGKILL it after `timeout`; removes its temp dir."""
        if self.proc is not None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            if self.proc.stdout:
                self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.dir, ignore_errors=True)

    async def astop(self, timeout: float = 5.0) -> None:
        await asyncio.to_thread(self.stop, timeout)

    def __enter__(self) -> ModelServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
