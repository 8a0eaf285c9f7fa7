"""One Weir control plane in this process: xDS + access-log service, store, router, engine.

The one place where the parts are wired together. `weir serve` adds the REST
API around it; the demo and the end-to-end tests use it as is, so all three
run the same assembly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import grpc

from analysis.analyzer import Analyzer, NoEvidenceAnalyzer, ScriptedAnalyzer
from analysis.sources.access_log import AccessLogSource
from analysis.sources.envoy_stats import EnvoyStatsSource
from xds.bootstrap import CONTROL_PLANE_CLUSTER
from xds.cache import SnapshotCache
from xds.server import XdsServer
from xds.status import StatusRegistry

from .api.metrics import Metrics
from .balancing.balancer import LatencyAwareBalancer
from .rollouts.engine import Engine
from .rollouts.webhooks import WebhookClient
from .routing.protocol import TrafficRouter
from .routing.xds_router import XdsRouter
from .store import SQLiteStore
from .store.protocol import Store


def build_analyzer(spec: str | None, access_log=None, envoy_stats=None) -> Analyzer:
    """The analyzer named on the command line.

    `sources` (the default) judges real traffic from the policy's metric
    source. `scripted:pass,inconclusive,...` is for demos and tests only: it
    answers from the script instead of from traffic.
    """
    if spec == "sources" or spec is None:
        from analysis.source_analyzer import SourceAnalyzer

        return SourceAnalyzer(access_log=access_log, envoy_stats=envoy_stats)
    if spec == "none":
        return NoEvidenceAnalyzer()
    if spec.startswith("scripted:"):
        outcomes = [o.strip() for o in spec.split(":", 1)[1].split(",") if o.strip()]
        bad = [o for o in outcomes if o not in ("pass", "fail", "inconclusive")]
        if bad or not outcomes:
            raise ValueError(f"--analyzer scripted: outcomes must be pass, fail or inconclusive (got {bad or 'nothing'})")
        return ScriptedAnalyzer(outcomes)
    raise ValueError(f"--analyzer: unknown analyzer {spec!r} (expected sources, none or scripted:OUTCOMES)")


@dataclass
class Serving:
    """What every Weir process runs for the Envoys connected to it, leader or not.

    xDS with the access-log services on the same port, the proxies' status,
    the analysis sources fed by them, the xDS router that serves desired
    routing, and the latency-aware balancer (each process balances the
    proxies that report to it, from their own access logs).
    """

    registry: StatusRegistry
    cache: SnapshotCache
    access_log: AccessLogSource
    envoy_stats: EnvoyStatsSource | None
    analyzer: Analyzer
    xds: XdsServer
    xds_port: int
    xds_router: XdsRouter
    balancer: LatencyAwareBalancer

    async def stop(self) -> None:
        await self.balancer.stop()
        if self.envoy_stats is not None:
            await self.envoy_stats.stop()
        await self.xds.stop()


async def start_serving(
    registry: StatusRegistry,
    *,
    xds_host: str = "127.0.0.1",
    xds_port: int = 0,
    analyzer: str | None = "sources",
    listen_address: str = "0.0.0.0",
    envoy_admins: Iterable[str] = (),
    xds_credentials: grpc.ServerCredentials | None = None,
    balance_tick_s: float = 0.25,
    balance: bool = True,
    extra_handlers: Iterable[grpc.GenericRpcHandler] = (),
) -> Serving:
    """Bind xDS and start the parts of :class:`Serving` (``balance=False``: another data plane balances).

    ``extra_handlers``: more gRPC services on the xDS port (a replica's access-log relay receiver).
    """
    # A proxy gone from xDS too was scaled in, not cut off: its ended access-log
    # stream is no gap in the evidence (otherwise every pass stays inconclusive).
    access_log = AccessLogSource(proxies_alive=lambda: {p.node_id for p in registry.proxies()})
    admins = list(envoy_admins)
    envoy_stats = EnvoyStatsSource(admins) if admins else None
    chosen = build_analyzer(analyzer, access_log, envoy_stats)
    cache = SnapshotCache()
    # Envoy reaches both ADS and the access-log services through the bootstrap's weir_control_plane cluster.
    xds = XdsServer(cache, registry, extra_handlers=[*access_log.handlers(), *extra_handlers],
                    credentials=xds_credentials)
    bound = await xds.start(xds_host, xds_port)
    try:
        if envoy_stats is not None:
            await envoy_stats.start()
        xds_router = XdsRouter(cache, registry, listen_address=listen_address, access_log_cluster=CONTROL_PLANE_CLUSTER)
        # Latency-aware services: per-replica estimates from the access log -> EDS endpoint weights.
        balancer = LatencyAwareBalancer(xds_router, xds_router.balanced_services, tick_s=balance_tick_s)
        access_log.entry_listeners.append(balancer.on_entries)
        if balance:
            balancer.start()
    except BaseException:
        await xds.stop()
        raise
    return Serving(registry, cache, access_log, envoy_stats, chosen, xds, bound, xds_router, balancer)


async def connect_router(router: str, local: TrafficRouter, *, istio_namespace: str = "default",
                         istio_gateways: tuple[str, ...] = ()) -> TrafficRouter:
    """The engine's router: ``local`` (xDS) or the Istio router (Weir writes VirtualServices)."""
    if router == "xds":
        return local
    if router == "istio":
        # control_plane/mesh/istio/router.py
        from .mesh.istio.render import IstioOptions
        from .mesh.istio.router import IstioRouter

        return await IstioRouter.connect(IstioOptions(namespace=istio_namespace, gateways=istio_gateways))
    raise ValueError(f"--router: expected xds or istio (got {router!r})")


@dataclass
class ControlPlane:
    """One replica: :class:`Serving` plus the SQLite store and the engine."""

    serving: Serving
    store: Store
    engine: Engine
    metrics: Metrics

    # The parts callers reach for, by their usual names.
    registry = property(lambda self: self.serving.registry)
    cache = property(lambda self: self.serving.cache)
    access_log = property(lambda self: self.serving.access_log)
    envoy_stats = property(lambda self: self.serving.envoy_stats)
    xds = property(lambda self: self.serving.xds)
    xds_port = property(lambda self: self.serving.xds_port)
    router = property(lambda self: self.serving.xds_router)
    balancer = property(lambda self: self.serving.balancer)

    async def stop(self) -> None:
        await self.engine.stop()
        await self.serving.stop()
        await self.store.close()


async def start_control_plane(
    *,
    db: str | Path,
    xds_host: str = "127.0.0.1",
    xds_port: int = 0,
    analyzer: str | None = "sources",
    listen_address: str = "0.0.0.0",
    tick_s: float = 1.0,
    envoy_admins: Iterable[str] = (),
    xds_credentials: grpc.ServerCredentials | None = None,
    webhooks: WebhookClient | None = None,
    balance_tick_s: float = 0.25,
    router: str = "xds",
    istio_namespace: str = "default",
    istio_gateways: tuple[str, ...] = (),
) -> ControlPlane:
    """Start xDS (with the access-log services on the same port), the store, the router and the engine."""
    if router not in ("xds", "istio"):
        raise ValueError(f"--router: expected xds or istio (got {router!r})")
    # The store first: a corrupt or unusable file stops the start before any port is taken.
    store = await asyncio.to_thread(SQLiteStore, db)  # opening runs quick_check: disk work, off the loop
    try:
        # With Istio the mesh balances within a subset: no endpoint weights.
        serving = await start_serving(
            StatusRegistry(), xds_host=xds_host, xds_port=xds_port, analyzer=analyzer, listen_address=listen_address,
            envoy_admins=envoy_admins, xds_credentials=xds_credentials, balance_tick_s=balance_tick_s,
            balance=router == "xds",
        )
    except BaseException:
        await store.close()
        raise
    try:
        chosen_router = await connect_router(router, serving.xds_router, istio_namespace=istio_namespace,
                                             istio_gateways=istio_gateways)
        metrics = Metrics()
        engine = Engine(store, chosen_router, serving.analyzer, tick_s=tick_s, observer=metrics, webhooks=webhooks)
        await engine.start()
    except BaseException:
        await serving.stop()
        await store.close()
        raise
    return ControlPlane(serving, store, engine, metrics)
