"""etcd members lost and found: one member down changes nothing; quorum lost holds everything; back, it goes on.

The rollout's steps alternate with manual gates (``pause: {}``), so it moves
only when the test says ``resume``: a move that should not happen would show
as an event, and one that should happen is asked for explicitly.
"""

from __future__ import annotations

import time

import httpx
import pytest

from devtools.devstack import Backend, EnvoyProcess, free_port
from devtools.etcd import EtcdCluster
from tests.e2e.ha_stack import ReplicaProcess, Traffic, policy, requirements, wait_for
from xds.bootstrap import render_bootstrap

pytestmark = pytest.mark.e2e

YAML = {"content-type": "application/yaml"}


def _policy(listener: int, stable: str, canary: str) -> str:
    import yaml

    data = yaml.safe_load(policy(listener, stable, canary))
    data["spec"]["strategy"]["canary"]["steps"] = [{"weight": 10}, {"pause": {}}, {"weight": 50}, {"pause": {}},
                                                   {"weight": 100}]
    return yaml.safe_dump(data)


def test_one_member_down_goes_on_quorum_lost_holds_and_recovers(tmp_path):
    requirements()
    v1, v2 = Backend("v1"), Backend("v2")
    listener = free_port()
    started: list = []
    traffic = None
    with EtcdCluster(3) as etcd:
        a = ReplicaProcess("a", etcd.url, "scripted:pass")
        try:
            started.append(a.start())
            wait_for("a leads", lambda: a.role() == "leader")
            e1 = EnvoyProcess(render_bootstrap("gw-1", "gw", "127.0.0.1", a.xds_port, admin_port=free_port()))
            started.append(e1.start())
            resp = httpx.post(f"{a.api}/v1/rollouts", content=_policy(listener, v1.address, v2.address), headers=YAML,
                              timeout=10)
            assert resp.status_code == 201, resp.text
            wait_for("first gate", lambda: a.rollout()["gate"] is not None and a.rollout()["weight"] == 10)

            # One member down (the client's first endpoint): everything goes on.
            etcd.members[0].kill()
            assert httpx.post(f"{a.api}/v1/rollouts/echo/resume", timeout=10).status_code == 200
            wait_for("second gate at 50 %", lambda: (r := a.rollout())["weight"] == 50 and r["gate"] is not None)
            assert a.readyz().status_code == 200
            e1.wait_listening(listener)
            traffic = Traffic([listener]).start()
            held = a.events()

            # Quorum lost: no decisions, the last routing still served, not ready (with the cause).
            etcd.members[1].kill()
            bad = wait_for("a reports not-ready", lambda: (r := a.readyz()).status_code == 503 and r)
            assert "quorum" in bad.json()["detail"], bad.text
            wait_for("a stops leading", lambda: a.readyz().json().get("role") == "follower", timeout=15)
            refused = httpx.post(f"{a.api}/v1/rollouts/echo/resume", timeout=10)
            assert refused.status_code == 503, refused.text
            # A proxy that connects now still gets the last routing from a.
            e2 = EnvoyProcess(render_bootstrap("gw-2", "gw", "127.0.0.1", a.xds_port, admin_port=free_port()))
            started.append(e2.start())
            wait_for("gw-2 serves the listener", lambda: e2.stat("listener_manager.total_listeners_active") == 1)
            time.sleep(1.0)
            assert traffic.failures() == {}, traffic.counts

            # Quorum back: a leads again, resumes at the same step, and the rollout goes on when asked.
            etcd.members[0].start()
            etcd.members[1].start()
            etcd.wait_healthy()
            wait_for("a ready and leading again", lambda: a.readyz().json().get("role") == "leader", timeout=20)
            after = a.events()
            assert after[: len(held)] == held  # nothing lost, nothing written while there was no quorum
            assert [e["kind"] for e in after[len(held):]][:1] == ["resumed"]
            wait_for("reconverged", lambda: a.rollout()["converged_at"] is not None)
            assert httpx.post(f"{a.api}/v1/rollouts/echo/resume", timeout=10).status_code == 200
            wait_for("promoted", lambda: a.rollout()["phase"] == "Succeeded", timeout=20)
            counts = traffic.stop()
            assert traffic.failures() == {}, counts
            events = a.events()
            seqs = [e["seq"] for e in events]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            steps = [(e["step"], e["weight"]) for e in events if e["kind"] == "step"]
            assert len(steps) == len(set(steps)), steps
        finally:
            if traffic is not None:
                traffic.stop()
            for proc in reversed(started):
                proc.stop() if isinstance(proc, EnvoyProcess) else proc.kill()
            a.kill()
            v1.close()
            v2.close()
