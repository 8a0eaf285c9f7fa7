"""Failover: time from `kill -9` of the leader to the first decision of the new leader, and events lost or doubled.

    .venv/bin/python bench/failover.py [--runs 7] [--lease-ttl 3] [--tick 0.05]

A real three-member etcd cluster (Debian's etcd-server) and two `weir serve
--store etcd://...` replicas on 127.0.0.1. One rollout is active (the
analyzer never passes, so it stays active across every run). Each run kills
the current leader with SIGKILL, waits for the other replica to store its
first decision (the ``resumed`` event: the rollout resumed at its stored
step), and restarts the killed one as a follower for the next run.

Measured per run: ``decision_s`` = the new leader's first event's own
timestamp minus the kill's (one machine, one clock), ``elected_s`` = its
leadership key's timestamp minus the kill's. Checked after every run: the
event log is a gapless sequence, every event from before the kill is still
there unchanged (lost), no event is stored twice and exactly one
``resumed`` was added (doubled).

Output: one JSON line per --lease-ttl value:
``{"bench": "failover", "lease_ttl_s", "runs", "median_decision_s", "max_decision_s", "median_elected_s",
"per_run_decision_s", "events_lost", "events_doubled"}``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx
import yaml

from _benchlib import emit, free_port, log
from devtools.etcd import EtcdCluster
from devtools.replicas import ReplicaProcess, wait_for

POLICY = "policies/examples/minimal.yaml"


def _policy() -> str:
    data = yaml.safe_load(open(POLICY))
    data["spec"]["service"]["port"] = free_port()
    return yaml.safe_dump(data)


def _leader(replicas: list[ReplicaProcess]) -> ReplicaProcess:
    def find():
        leaders = [r for r in replicas if r.role() == "leader"]
        return leaders[0] if len(leaders) == 1 else None

    return wait_for("one leader", find, timeout=30)


def run_case(ttl: int, runs: int, tick: float) -> dict:
    decisions, elections = [], []
    lost = doubled = 0
    with EtcdCluster(3) as etcd:
        replicas = [ReplicaProcess(n, etcd.url, "none", lease_ttl=ttl, extra=["--tick", str(tick)]) for n in "ab"]
        try:
            for r in replicas:
                r.start()
            leader = _leader(replicas)
            resp = httpx.post(f"{leader.api}/v1/rollouts", content=_policy(),
                              headers={"content-type": "application/yaml"}, timeout=10)
            resp.raise_for_status()
            wait_for("rollout started", lambda: leader.rollout()["phase"] == "Progressing")
            for i in range(runs):
                other = next(r for r in replicas if r is not leader)
                time.sleep(1.5)  # a few keep-alives: the kill lands anywhere in the lease's period
                before = other.events()
                t_kill = time.time()
                leader.kill()
                new = wait_for("the new leader's first decision",
                               lambda: (ev := other.events()) and len(ev) > len(before) and ev, timeout=60,
                               interval=0.02)
                first = new[len(before)]
                decisions.append(first["at"] - t_kill)
                info = httpx.get(f"{other.api}/v1/leader", timeout=5).json()["leader"]
                elections.append(info["since"] - t_kill)
                time.sleep(0.3)
                after = other.events()
                seqs = [e["seq"] for e in after]
                lost += sum(1 for a, b in zip(before, after) if a != b) + max(0, len(before) - len(after))
                doubled += (len(seqs) - len(set(seqs))) + max(0, [e["kind"] for e in after[len(before):]].count("resumed") - 1)
                if seqs != list(range(seqs[0], seqs[0] + len(seqs))):
                    lost += 1
                log(f"ttl {ttl}s run {i + 1}/{runs}: elected after {elections[-1]:.2f}s, "
                    f"first decision ({first['kind']}) after {decisions[-1]:.2f}s")
                leader.start()  # back as a follower for the next run
                leader = other
        finally:
            for r in replicas:
                r.kill()
    return {
        "bench": "failover", "lease_ttl_s": ttl, "runs": runs,
        "median_decision_s": round(statistics.median(decisions), 3), "max_decision_s": round(max(decisions), 3),
        "median_elected_s": round(statistics.median(elections), 3),
        "per_run_decision_s": [round(d, 3) for d in decisions], "events_lost": lost, "events_doubled": doubled,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--lease-ttl", default="3", help="comma-separated TTLs in seconds, one case each (default 3)")
    p.add_argument("--tick", type=float, default=0.05, help="engine tick of the replicas (default 0.05 s)")
    args = p.parse_args()
    for ttl in [int(x) for x in args.lease_ttl.split(",")]:
        emit(run_case(ttl, args.runs, args.tick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
