"""Several replicas on a real three-member etcd, with real Envoys: kill -9 and SIGSTOP of the leader.

Both replicas run the same analyzer, so the test never depends on which one
leads (a loaded machine may move the leadership before the test acts: that is
failover working). Each Envoy lists both replicas (``weir bootstrap --xds A
--xds B``), its own first, so ``gw-1`` is on ``a`` and ``gw-2`` on ``b``.
Rollouts stop at manual gates (``pause: {}``), so they move only when the test
says ``resume``: a step that should not happen would show as an event.
"""

from __future__ import annotations

import signal
import time

import httpx
import pytest

from devtools.devstack import Backend, EnvoyProcess, free_port
from devtools.etcd import EtcdCluster
from tests.e2e.ha_stack import ReplicaProcess, Traffic, leader_of, policy, requirements, wait_for
from xds.bootstrap import render_bootstrap

pytestmark = pytest.mark.e2e


def _envoy(node: str, first: ReplicaProcess, other: ReplicaProcess) -> EnvoyProcess:
    return EnvoyProcess(render_bootstrap(node, "gw", "127.0.0.1", first.xds_port, admin_port=free_port(),
                                         standby_xds=[("127.0.0.1", other.xds_port)]))


def _gapless(events: list[dict]) -> None:
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), f"gap or duplicate in {seqs}"


def _pair(store_url: str, analyzer: str, ttl: int = 3) -> tuple[ReplicaProcess, ReplicaProcess]:
    return (ReplicaProcess("a", store_url, analyzer, lease_ttl=ttl), ReplicaProcess("b", store_url, analyzer, lease_ttl=ttl))


def test_kill_9_of_the_leader_mid_rollout_fails_over_without_loss(tmp_path):
    requirements()
    v1, v2 = Backend("v1"), Backend("v2")
    listener = free_port()
    started: list = []
    traffic = None
    with EtcdCluster(3) as etcd:
        a, b = _pair(etcd.url, "scripted:pass")
        try:
            started += [a.start(), b.start()]
            e1, e2 = _envoy("gw-1", a, b), _envoy("gw-2", b, a)
            started += [e1.start(), e2.start()]
            wait_for("each Envoy on its own replica", lambda: a.proxies() == {"gw-1"} and b.proxies() == {"gw-2"})
            leader, follower = leader_of(a, b)

            # A write sent to the follower goes through the leader.
            steps = (10, {"pause": {}}, 50, 80, 100)
            resp = httpx.post(f"{follower.api}/v1/rollouts", content=policy(listener, v1.address, v2.address, steps),
                              headers={"content-type": "application/yaml"}, timeout=10)
            assert resp.status_code == 201, resp.text
            assert resp.headers["x-weir-leader"] == leader.name
            wait_for("the gate after step 1, converged on both replicas' proxies",
                     lambda: (r := follower.rollout())["gate"] is not None and r["converged_at"] is not None)
            e1.wait_listening(listener)
            e2.wait_listening(listener)
            traffic = Traffic([listener]).start()
            time.sleep(0.5)

            leader, follower = leader_of(a, b)  # whoever leads now is the one killed
            before = follower.events()
            leader.kill()
            wait_for("the survivor leads", lambda: follower.role() == "leader", timeout=20)
            wait_for("it resumed the rollout", lambda: "resumed" in [e["kind"] for e in follower.events()[len(before):]])
            resp = httpx.post(f"{follower.api}/v1/rollouts/echo/resume", timeout=10)
            assert resp.status_code == 200, resp.text
            done = wait_for("the rollout finishes under the new leader",
                            lambda: (r := follower.rollout())["phase"] == "Succeeded" and r, timeout=40)
            assert done["weight"] == 100
            wait_for("both Envoys on the survivor", lambda: follower.proxies() == {"gw-1", "gw-2"}, timeout=20)
            time.sleep(0.5)
            counts = traffic.stop()
            assert traffic.failures() == {}, counts
            assert counts["v1"] > 0 and counts["v2"] > 0, counts

            after = follower.events()
            _gapless(after)
            assert after[: len(before)] == before  # nothing lost
            new = after[len(before):]
            assert new[0]["kind"] == "resumed" and [e["kind"] for e in new].count("resumed") == 1
            steps_done = [(e["step"], e["weight"]) for e in after if e["kind"] == "step"]
            assert [i for i, _ in steps_done] == [0, 1, 2, 3], steps_done  # each step once: none twice, none skipped
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
    requirements()
    v1, v2 = Backend("v1"), Backend("v2")
    listener = free_port()
    started: list = []
    with EtcdCluster(3) as etcd:
        # Neither replica ever decides a step (inconclusive): after the takeover, any step would be the paused one's.
        a, b = _pair(etcd.url, "scripted:inconclusive")
        try:
            started += [a.start(), b.start()]
            leader, follower = leader_of(a, b)
            # gw-1 on the follower: a paused replica also stops serving its own proxies' xDS.
            e1 = _envoy("gw-1", follower, leader)
            started.append(e1.start())
            wait_for("gw-1 on the follower", lambda: follower.proxies() == {"gw-1"})
            resp = httpx.post(f"{leader.api}/v1/rollouts", content=policy(listener, v1.address, v2.address, (50, 100)),
                              headers={"content-type": "application/yaml"}, timeout=10)
            assert resp.status_code == 201, resp.text
            wait_for("step 1 at 50 %, converged", lambda: (r := leader.rollout())["weight"] == 50 and r["converged_at"])

            paused, other = leader_of(a, b)
            paused.signal(signal.SIGSTOP)
            wait_for("the other leads while the leader is paused", lambda: other.role() == "leader", timeout=20)
            # It resumes and, once gw-1 ACKs its routing, counts samples again (then stays quiet: inconclusive).
            wait_for("the rollout resumed", lambda: [e["kind"] for e in other.events()][-2:] == ["resumed", "converged"],
                     timeout=20)
            taken_over = other.events()
            paused.signal(signal.SIGCONT)
            wait_for("the paused one knows it no longer leads", lambda: paused.role() == "follower", timeout=15)
            # Its operator write now goes through the leader; it writes nothing itself.
            resp = httpx.post(f"{paused.api}/v1/rollouts/echo/pause", timeout=10)
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-weir-leader"] == other.name
            time.sleep(1.0)  # the resumed process had every chance to act on what it remembered
            after = other.events()
            _gapless(after)
            assert after[: len(taken_over)] == taken_over
            assert [e["kind"] for e in after[len(taken_over):]] == ["action"]  # the pause, by the leader
            assert other.role() == "leader" and paused.role() == "follower"
            assert "lost the leadership" in paused.log() or "no longer holds the leadership" in paused.log()
        finally:
            for replica in (a, b):
                replica.signal(signal.SIGCONT)
            for proc in reversed(started):
                proc.stop() if isinstance(proc, EnvoyProcess) else proc.kill()
            a.kill()
            b.kill()
            v1.close()
            v2.close()
