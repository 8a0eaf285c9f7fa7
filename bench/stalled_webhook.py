#!/usr/bin/env python3
"""One rollout's hanging webhook must not delay another's rollback: time from a failing verdict to 0% canary.

Setup (all real, on 127.0.0.1): `weir serve` as a subprocess with the scripted
analyzer `fail` (every first verdict fails), one real Envoy connected to it,
and an HTTP server that accepts webhook calls and never answers. Rollout
`stuck` has a pre-rollout webhook pointing there (timeout `--hook-timeout`,
so its task waits about 3 x timeout); rollout `victim`, on another service,
has none: it starts, gets its failing verdict at step 1 and rolls back. We
measure, from the stored events, the time from the failing verdict
(Progressing -> RollingBack) to RolledBack, which the engine records only once
the Envoy has ACKed the 0% routing, and from `apply` to RolledBack.

Cases, in the same run:
  no-hang     the same two rollouts, the stuck one without a webhook (the baseline)
  hang        the stuck rollout's webhook hangs
  hang-old    (--baseline-ref REF, default the commit before the core was reshaped) the same with
              that commit's `weir serve`, where every rollout was driven by one loop

Output: one JSON line per case on stdout: {"bench": "stalled_webhook", "case", "runs",
"verdict_to_zero_ms_p50", "apply_to_zero_ms_p50", "max_ms", ...}.
Usage: bench/stalled_webhook.py [--runs 5] [--hook-timeout 5] [--baseline-ref 3e8be59 | --no-baseline]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

from _benchlib import ROOT, die_with_parent, emit, free_port, log  # noqa: F401  (sets sys.path)
from devtools.devstack import EnvoyProcess
from xds.bootstrap import render_bootstrap

POLICY = yaml.safe_load((ROOT / "policies/examples/minimal.yaml").read_text())


class HangingServer:
    """Accepts HTTP connections, reads the request, never answers (until closed)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.calls = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.calls += 1
            self.conns.append(conn)

    def close(self) -> None:
        self.sock.close()
        for c in self.conns:
            c.close()


def policy(name: str, port: int, base_port: int, hook_url: str | None, timeout_s: int) -> dict:
    data = yaml.safe_load(yaml.safe_dump(POLICY))
    data["metadata"]["name"] = name
    data["spec"]["service"]["name"] = name
    data["spec"]["service"]["port"] = port
    data["spec"]["stable"]["endpoints"] = [f"127.0.0.1:{base_port}"]
    data["spec"]["canary"]["endpoints"] = [f"127.0.0.1:{base_port + 1}"]
    data["spec"]["strategy"]["canary"]["steps"] = [{"weight": 10}, {"weight": 100}]
    if hook_url:
        data["spec"]["webhooks"] = [{"on": "pre-rollout", "url": hook_url, "timeout": f"{timeout_s}s"}]
    return data


def start_serve(db: Path, api_port: int, xds_port: int, pythonpath: str | None) -> subprocess.Popen:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    cmd = [sys.executable, "-m", "control_plane.cli", "serve", "--db", str(db), "--api-port", str(api_port),
           "--xds-port", str(xds_port), "--tick", "0.1", "--listen-address", "127.0.0.1", "--analyzer", "scripted:fail"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=pythonpath or ROOT,
                            start_new_session=True, preexec_fn=die_with_parent)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        try:
            if httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError("weir serve did not become ready")


def one_run(hang: bool, timeout_s: int, pythonpath: str | None, tmp: Path, limit_s: float) -> dict:
    hook = HangingServer()
    api_port, xds_port = free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    proc = start_serve(tmp / f"weir-{time.monotonic_ns()}.db", api_port, xds_port, pythonpath)
    envoy = EnvoyProcess(render_bootstrap("bench-1", "bench", "127.0.0.1", xds_port, admin_port=free_port()))
    try:
        url = f"http://127.0.0.1:{hook.port}/hook" if hang else None
        stuck = policy("stuck", free_port(), 9101, url, timeout_s)
        victim = policy("victim", free_port(), 9201, None, timeout_s)
        httpx.post(f"{api}/v1/rollouts", content=yaml.safe_dump(stuck), headers={"content-type": "application/yaml"},
                   timeout=5).raise_for_status()
        try:
            envoy.start(timeout=10)
        except TimeoutError:
            pass  # the old engine publishes nothing until its loop gets past the hanging hook
        while hang and hook.calls == 0:
            time.sleep(0.01)
        applied = time.time()
        httpx.post(f"{api}/v1/rollouts", content=yaml.safe_dump(victim), headers={"content-type": "application/yaml"},
                   timeout=30).raise_for_status()
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if httpx.get(f"{api}/v1/rollouts/victim", timeout=5).json()["phase"] == "RolledBack":
                break
            time.sleep(0.02)
        events = httpx.get(f"{api}/v1/rollouts/victim/events", timeout=5).json()["items"]
        failed = next((e["at"] for e in events if e["phase_to"] == "RollingBack"), None)
        zero = next((e["at"] for e in events if e["phase_to"] == "RolledBack"), None)
        stuck_phase = httpx.get(f"{api}/v1/rollouts/stuck", timeout=5).json()["phase"]
        return {
            "verdict_to_zero_ms": None if failed is None or zero is None else (zero - failed) * 1000,
            "apply_to_zero_ms": None if zero is None else (zero - applied) * 1000,
            "stuck_phase": stuck_phase,
            "hook_calls": hook.calls,
        }
    finally:
        envoy.stop()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        hook.close()


def baseline_tree(ref: str, tmp: Path) -> str:
    """The source of an earlier commit (git archive), importable ahead of the installed package."""
    out = tmp / f"src-{ref}"
    out.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref], capture_output=True, check=True)
    with tarfile.open(fileobj=__import__("io").BytesIO(archive.stdout)) as tar:
        tar.extractall(out, filter="data")
    return str(out)


def summarise(case: str, runs: list[dict], timeout_s: int) -> dict:
    def values(key):
        return [r[key] for r in runs if r[key] is not None]

    v2z, a2z = values("verdict_to_zero_ms"), values("apply_to_zero_ms")
    return {
        "bench": "stalled_webhook",
        "case": case,
        "runs": len(runs),
        "hook_timeout_s": timeout_s,
        "verdict_to_zero_ms_p50": round(statistics.median(v2z), 1) if v2z else None,
        "apply_to_zero_ms_p50": round(statistics.median(a2z), 1) if a2z else None,
        "max_ms": round(max(a2z), 1) if a2z else None,
        "rolled_back": sum(1 for r in runs if r["apply_to_zero_ms"] is not None),
        "stuck_phase": sorted({r["stuck_phase"] for r in runs}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hook-timeout", type=int, default=5, help="seconds per webhook attempt (3 attempts)")
    parser.add_argument("--baseline-ref", default="3e8be59", help="an earlier commit to compare with")
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="weir-bench-") as tmpdir:
        tmp = Path(tmpdir)
        for case, hang in (("no-hang", False), ("hang", True)):
            runs = []
            for i in range(args.runs):
                runs.append(one_run(hang, args.hook_timeout, None, tmp, limit_s=30))
                log(f"{case} run {i + 1}: {runs[-1]}")
            emit(summarise(case, runs, args.hook_timeout))
        if not args.no_baseline:
            src = baseline_tree(args.baseline_ref, tmp)
            limit = 4 * 3 * args.hook_timeout + 10
            runs = [one_run(True, args.hook_timeout, src, tmp, limit_s=limit)]
            log(f"hang-old ({args.baseline_ref}): {runs[-1]}")
            emit({**summarise("hang-old", runs, args.hook_timeout), "ref": args.baseline_ref})
    return 0


if __name__ == "__main__":
    sys.exit(main())
