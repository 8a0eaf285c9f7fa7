"""One Weir replica over etcd: the same parts as :mod:`control_plane.assembly`, plus leadership.

Every replica serves xDS (and the access-log service) to the Envoys that
connect to it, from the routing the leader publishes, and reports its
proxies' convergence. Exactly one replica, the leader, runs the engine; its
router is the :class:`~control_plane.routing.fleet.FleetRouter`, which waits on
the proxies of every replica. Losing the lease stops the engine (every
rollout holds) while xDS goes on serving the last routing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import Any, Iterable

from analysis.sources.access_log import AccessLogSource
from analysis.sources.envoy_stats import EnvoyStatsSource
from xds.bootstrap import CONTROL_PLANE_CLUSTER
from xds.cache import SnapshotCache
from xds.server import XdsServer

from ..api.metrics import Metrics
from ..assembly import ControlPlane, build_analyzer
from ..etcd.client import EtcdClient, TlsFiles, parse_etcd_url
from ..rollouts.engine import Engine
from ..routing.fleet import FleetRouter
from ..routing.xds_router import XdsRouter
from ..store.etcd import EtcdStore
from .cli import DEFAULT_LEASE_TTL_S
from .forward import LeaderForwarding
from .leadership import Leadership
from .replication import ConvergenceReporter, ObservedRegistry, RoutingFollower
from .session import Session

log = logging.getLogger("weir.ha")

__all__ = ["DEFAULT_LEASE_TTL_S", "Replica", "start_replica"]



@dataclass
class Replica(ControlPlane):
    """A running replica; ``leadership.is_leader`` says whether it drives the rollouts now."""

    client: EtcdClient = None  # type: ignore[assignment]
    session: Session = None  # type: ignore[assignment]
    leadership: Leadership = None  # type: ignore[assignment]
    follower: RoutingFollower = None  # type: ignore[assignment]
    reporter: ConvergenceReporter = None  # type: ignore[assignment]
    replica_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def role(self) -> str:
        return "leader" if self.leadership.is_leader else "follower"

    async def readiness(self) -> tuple[str | None, dict[str, Any]]:
        """(why this replica is not ready, or None; what to show): the store must answer with a quorum."""
        info = {"role": self.role, "replica": self.replica_id, "routing_revision": self.follower.revision}
        if not self.session.valid():
            return (f"this replica has no etcd session (the store may have lost quorum): "
                    f"{self.session.last_error or 'waiting for a lease'}"), info
        try:
            await asyncio.wait_for(self.store.list(), timeout=2.0)
        except Exception as exc:  # noqa: BLE001 - any failure to read means no quorum for us
            return f"the store has no quorum or does not answer: {exc or type(exc).__name__}", info
        return None, info

    def serve_api(self, app):
        """The ASGI app to serve: ``app`` plus GET /v1/leader, with writes forwarded to the leader."""
        from fastapi import Depends

        @app.get("/v1/leader", summary="Which replica leads (drives the rollouts) and this replica's role",
                 tags=["replicas"])
        async def get_leader(_=Depends(app.state.viewer)):
            return {"leader": await self.leadership.leader(), "replica": self.replica_id, "role": self.role,
                    "routing_revision": self.follower.revision}

        self.extra["forwarding"] = forwarding = LeaderForwarding(app, self.leadership, self.replica_id)
        return forwarding

    async def stop(self) -> None:
        forwarding = self.extra.pop("forwarding", None)
        if forwarding is not None:
            await forwarding.aclose()
        await self.leadership.stop()
        await self.reporter.stop()
        await self.follower.stop()
        await self.engine.stop()
        if self.envoy_stats is not None:
            await self.envoy_stats.stop()
        await self.xds.stop()
        await self.session.close(revoke=True)
        await self.client.close()


async def start_replica(
    *,
    store_url: str,
    tls: TlsFiles | None = None,
    prefix: str = "/weir",
    replica_id: str | None = None,
    advertise_api: str | None = None,
    lease_ttl_s: int = DEFAULT_LEASE_TTL_S,
    xds_host: str = "127.0.0.1",
    xds_port: int = 0,
    analyzer: str | None = "sources",
    listen_address: str = "0.0.0.0",
    tick_s: float = 1.0,
    envoy_admins: Iterable[str] = (),
) -> Replica:
    """Start xDS, the etcd session, routing follower, convergence reporter and leadership campaign."""
    endpoints = parse_etcd_url(store_url)
    registry = ObservedRegistry()
    access_log = AccessLogSource(proxies_alive=lambda: {p.node_id for p in registry.proxies()})
    admins = list(envoy_admins)
    envoy_stats = EnvoyStatsSource(admins) if admins else None
    chosen = build_analyzer(analyzer, access_log, envoy_stats)
    cache = SnapshotCache()
    xds = XdsServer(cache, registry, extra_handlers=[access_log.handler()])
    bound = await xds.start(xds_host, xds_port)
    replica = replica_id or f"{socket.gethostname()}:{bound}"
    client = EtcdClient(endpoints, tls=tls)
    try:
        store = EtcdStore(client, prefix, require_fence=True)
        local = XdsRouter(cache, registry, listen_address=listen_address, access_log_cluster=CONTROL_PLANE_CLUSTER)
        fleet = FleetRouter(client, store, local)
        metrics = Metrics()
        engine = Engine(store, fleet, chosen, tick_s=tick_s, observer=metrics)
        session = Session(client, lease_ttl_s)
        follower = RoutingFollower(client, store.key("routing"), local)
        reporter = ConvergenceReporter(client, session, store.key("convergence", replica), replica, follower, local,
                                       registry)
        leadership = Leadership(client, session, store, {"replica": replica, "api": advertise_api,
                                                         "xds": f"{xds_host}:{bound}"},
                                on_elected=engine.start, on_deposed=engine.stop)
        if envoy_stats is not None:
            await envoy_stats.start()
    except BaseException:
        await xds.stop()
        await client.close()
        raise
    session.start()
    follower.start()
    reporter.start()
    leadership.start()
    log.info("replica %s: xDS on %s:%d, store %s (prefix %s)", replica, xds_host, bound, store_url, prefix)
    return Replica(registry, cache, access_log, envoy_stats, xds, bound, store, local, engine, metrics,
                   client=client, session=session, leadership=leadership, follower=follower, reporter=reporter,
                   replica_id=replica)
