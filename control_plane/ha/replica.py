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

import grpc

from ..api.metrics import Metrics
from ..assembly import ControlPlane, connect_router, start_serving
from ..etcd.client import EtcdClient, TlsFiles, parse_etcd_url
from ..rollouts.engine import Engine
from ..routing.fleet import FleetRouter
from ..rollouts.webhooks import WebhookClient
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
        await self.serving.stop()
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
    xds_credentials: grpc.ServerCredentials | None = None,
    webhooks: WebhookClient | None = None,
    router: str = "xds",
    istio_namespace: str = "default",
    istio_gateways: tuple[str, ...] = (),
) -> Replica:
    """Start xDS, the etcd session, routing follower, convergence reporter and leadership campaign.

    The serving side is the one-replica assembly's (:func:`~control_plane.assembly.start_serving`): mTLS,
    the access-log and OpenTelemetry log services, the latency-aware balancer of this replica's proxies.
    With ``router="istio"`` the leader's engine writes Istio objects and the replicas' xDS stays idle.
    """
    if router not in ("xds", "istio"):
        raise ValueError(f"--router: expected xds or istio (got {router!r})")
    endpoints = parse_etcd_url(store_url)
    serving = await start_serving(
        ObservedRegistry(), xds_host=xds_host, xds_port=xds_port, analyzer=analyzer, listen_address=listen_address,
        envoy_admins=envoy_admins, xds_credentials=xds_credentials, balance=router == "xds",
    )
    registry, local, bound = serving.registry, serving.xds_router, serving.xds_port
    replica = replica_id or f"{socket.gethostname()}:{bound}"
    client = EtcdClient(endpoints, tls=tls)
    try:
        store = EtcdStore(client, prefix, require_fence=True)
        engine_router = FleetRouter(client, store, local) if router == "xds" else await connect_router(
            router, local, istio_namespace=istio_namespace, istio_gateways=istio_gateways)
        metrics = Metrics()
        engine = Engine(store, engine_router, serving.analyzer, tick_s=tick_s, observer=metrics, webhooks=webhooks)
        session = Session(client, lease_ttl_s)
        follower = RoutingFollower(client, store.key("routing"), local)
        reporter = ConvergenceReporter(client, session, store.key("convergence", replica), replica, follower, local,
                                       registry)
        leadership = Leadership(client, session, store, {"replica": replica, "api": advertise_api,
                                                         "xds": f"{xds_host}:{bound}"},
                                on_elected=engine.start, on_deposed=engine.stop)
    except BaseException:
        await serving.stop()
        await client.close()
        raise
    session.start()
    follower.start()
    reporter.start()
    leadership.start()
    log.info("replica %s: xDS on %s:%d, store %s (prefix %s)", replica, xds_host, bound, store_url, prefix)
    return Replica(serving, store, engine, metrics, client=client, session=session, leadership=leadership,
                   follower=follower, reporter=reporter, replica_id=replica)
