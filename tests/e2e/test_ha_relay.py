"""The leader judges traffic it never saw itself: an Envoy on the follower, its access logs relayed.

Real etcd, two replicas (`weir serve --store etcd://...`, the real analyzer),
one Envoy connected to the *follower* only, so every access-log entry and
timing record reaches the leader through the follower's relay
(control_plane/ha/relay.py). The leader's counts must equal what the backends
served, and a rollout with nothing but that traffic must reach a verdict
(before the relay the leader saw 0 samples and never decided).
"""

from __future__ import annotations

import re

import httpx
import pytest
import yaml

from devtools.devstack import Backend, EnvoyProcess, free_port
from devtools.etcd import EtcdCluster
from tests.e2e.ha_stack import ReplicaProcess, Traffic, leader_of, policy, requirements, wait_for
from xds.bootstrap import render_bootstrap

pytestmark = pytest.mark.e2e


def _metric(text: str, name: str, version: str) -> float:
    """One series of /metrics (echo's live traffic of ``version``), 0 when absent."""
    pattern = re.compile(rf'^{name}\{{(?=[^}}]*service="echo")(?=[^}}]*version="{version}")(?=[^}}]*traffic="live")'
                         rf'[^}}]*\}} ([0-9.e+]+)$', re.M)
    m = pattern.search(text)
    return float(m.group(1)) if m else 0.0


def _counts(replica: ReplicaProcess) -> dict[str, tuple[float, float]]:
    text = httpx.get(f"{replica.api}/metrics", timeout=5).text
    return {v: (_metric(text, "weir_version_requests_total", v), _metric(text, "weir_version_ttfb_seconds_count", v))
            for v in ("v1", "v2")}


def test_the_leader_judges_the_traffic_of_an_envoy_on_the_follower():
    requirements()
    v1, v2 = Backend("v1"), Backend("v2")
    listener = free_port()
    started: list = []
    traffic = None
    with EtcdCluster(1) as etcd:
        a, b = ReplicaProcess("a", etcd.url, "sources"), ReplicaProcess("b", etcd.url, "sources")
        try:
            started += [a.start(), b.start()]
            leader, follower = leader_of(a, b)
            envoy = EnvoyProcess(render_bootstrap("gw-f", "gw", "127.0.0.1", follower.xds_port, admin_port=free_port()))
            started.append(envoy.start())
            wait_for("the Envoy on the follower only", lambda: follower.proxies() == {"gw-f"} and not leader.proxies())

            doc = yaml.safe_load(policy(listener, v1.address, v2.address,
                                        ({"weight": 50, "minRequests": 150, "maxDuration": "90s"}, 100)))
            doc["spec"]["analysis"] = {"alpha": 0.05, "slos": [{"metric": "error-rate", "maxIncrease": "5%"}]}
            resp = httpx.post(f"{leader.api}/v1/rollouts", content=yaml.safe_dump(doc),
                              headers={"content-type": "application/yaml"}, timeout=10)
            assert resp.status_code == 201, resp.text
            wait_for("step 1 converged on the follower's proxy",
                     lambda: (r := leader.rollout())["weight"] == 50 and r["converged_at"] is not None)
            envoy.wait_listening(listener)
            traffic = Traffic([listener]).start()

            # The leader counts the follower's proxy's traffic (before the relay: 0, whatever was sent).
            wait_for("the leader counts requests of both versions",
                     lambda: all(n > 0 for n, _ in _counts(leader).values()), timeout=20)
            done = wait_for("the rollout, driven by the leader on relayed traffic alone, is promoted",
                            lambda: (r := leader.rollout())["phase"] in ("Succeeded", "RolledBack") and r, timeout=90)
            counts = traffic.stop()
            assert done["phase"] == "Succeeded", done
            assert traffic.failures() == {}, counts

            # Every request the backends served is one entry and one timing record at the leader.
            served = {"v1": v1.count(), "v2": v2.count()}
            assert served["v1"] > 0 and served["v2"] > 150, served
            wait_for("the leader's counts equal what the backends served",
                     lambda: _counts(leader) == {v: (float(n), float(n)) for v, n in served.items()}, timeout=10)
            # The follower holds nothing back and the leader knows where the entries came from.
            status = httpx.get(f"{leader.api}/v1/leader", timeout=5).json()
            assert status["role"] == "leader" and status["replica"] == leader.name  # no failover meanwhile
            assert status["relay"]["fleet"] == {follower.name: ["gw-f"]}  # coverage knew whose logs to expect
            relayed = status["relay"]["from"][follower.name]
            assert relayed["connected"] and relayed["nodes"] == ["gw-f"] and relayed["gaps"] == 0, relayed
            out = httpx.get(f"{follower.api}/v1/leader", timeout=5).json()["relay"]["to_leader"]
            assert out["connected"] and out["dropped_items"] == 0 and out["unsent_items"] == 0, out

            # The deciding verdict judged the relayed samples, with complete coverage.
            events = leader.events()
            steps = [e for e in events if (e.get("verdict") or {}).get("outcome") == "pass"]
            assert steps, [e["kind"] for e in events]
            evidence = steps[0]["verdict"]["evidence"]
            assert evidence["source"]["complete"], evidence["source"]
        finally:
            if traffic is not None:
                traffic.stop()
            for proc in reversed(started):
                proc.stop() if isinstance(proc, EnvoyProcess) else proc.kill()
            v1.close()
            v2.close()
