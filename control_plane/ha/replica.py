"""One Weir replica over etcd: the same parts as :mod:`control_plane.assembly`, plus leadership.

Every replica serves xDS (and the access-log service) to the Envoys that
connect to it, from the routing the leader publishes, and reports its
proxies' convergence. Exactly one replica, the leader, runs the engine; its
router is the :class:`~control_plane.routing.fleet.FleetRouter`, which waits on
the proxies of every replica. Losing the lease stops the engine (every
rollout holds) while xDS goes on serving the last routing. Every follower
relays its proxies' access logs to the leader (:mod:`.relay`), so the
leader's analysis judges the whole fleet's traffic.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from typing import Any, Iterable
from urllib.parse import urlsplit

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
from .relay import AccessLogRelay, LeaderWatch, RelayReceiver
from .replication import ConvergenceReporter, FleetProxies, ObservedRegistry, RoutingFollower
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
    relay: AccessLogRelay = None  # type: ignore[assignment]
    receiver: RelayReceiver = None  # type: ignore[assignment]
    fleet: FleetProxies = None  # type: ignore[assignment]
    leader_watch: LeaderWatch = None  # type: ignore[assignment]
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
                    "routing_revision": self.follower.revision, "relay": self.relay_status()}

        self.extra["forwarding"] = forwarding = LeaderForwarding(app, self.leadership, self.replica_id)
        return forwarding

    def relay_status(self) -> dict[str, Any]:
        """This replica's relay to the leader, and (while it leads) what each other replica's relay delivered."""
        return {"to_leader": self.relay.status(), "received": self.receiver.counters,
                "from": {r: o.to_json() for r, o in sorted(self.access_log.relays.items())},
                "fleet": {r: sorted(nodes) for r, nodes in sorted(self.fleet.view().items())}}

    async def stop(self) -> None:
        forwarding = self.extra.pop("forwarding", None)
        if forwarding is not None:
            await forwarding.aclose()
        await self.leadership.stop()
        await self.leader_watch.stop()
        await self.relay.stop()
        await self.fleet.stop()
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
    advertise_xds: str | None = None,
    relay_credentials: grpc.ChannelCredentials | None = None,
    relay_buffer_bytes: int = 64 * 1024 * 1024,
) -> Replica:
    """Start xDS, the etcd session, routing follower, convergence reporter and leadership campaign.

    The serving side is the one-replica assembly's (:func:`~control_plane.assembly.start_serving`): mTLS,
    the access-log and OpenTelemetry log services, the latency-aware balancer of this replica's proxies.
    With ``router="istio"`` the leader's engine writes Istio objects and the replicas' xDS stays idle.
    ``advertise_xds`` (``HOST:PORT``) is where the followers relay their proxies' access logs while this
    replica leads (default: the xDS address, or the ``advertise_api`` host when xDS listens on all
    addresses); ``relay_credentials`` the TLS of that relay (the xDS certificate, when xDS has mTLS).
    """
    if router not in ("xds", "istio"):
        raise ValueError(f"--router: expected xds or istio (got {router!r})")
    endpoints = parse_etcd_url(store_url)
    receiver = RelayReceiver()
    serving = await start_serving(
        ObservedRegistry(), xds_host=xds_host, xds_port=xds_port, analyzer=analyzer, listen_address=listen_address,
        envoy_admins=envoy_admins, xds_credentials=xds_credentials, balance=router == "xds",
        extra_handlers=[receiver.handler()],
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
                                       registry, nodes_key=store.key("proxies", replica))
        fleet = FleetProxies(client, store.key("proxies", ""), replica)
        serving.access_log.fleet_proxies = fleet.view  # coverage: every proxy of the fleet, and whose relay holds it
        holder: list[Leadership] = []
        relay = AccessLogRelay(replica, serving.access_log, credentials=relay_credentials,
                               max_buffer_bytes=relay_buffer_bytes,
                               leading=lambda: bool(holder) and holder[0].is_leader and session.valid()).attach()
        leader_watch = LeaderWatch(client, store.key("leader"), relay)

        async def elected() -> None:
            relay.lead()  # this replica's own proxies are in its own source: nothing to relay
            await engine.start()

        async def deposed() -> None:
            relay.follow()  # keep everything for the next leader from now on
            await engine.stop()

        xds_address = advertise_xds or _advertised_xds(xds_host, bound, advertise_api)
        leadership = Leadership(client, session, store, {"replica": replica, "api": advertise_api,
                                                         "xds": xds_address},
                                on_elected=elected, on_deposed=deposed)
        holder.append(leadership)
        receiver.bind(serving.access_log, replica=replica, is_leader=lambda: leadership.is_leader)
    except BaseException:
        await serving.stop()
        await client.close()
        raise
    session.start()
    follower.start()
    reporter.start()
    fleet.start()
    leader_watch.start()
    relay.start()
    leadership.start()
    log.info("replica %s: xDS on %s:%d (advertised %s), store %s (prefix %s)", replica, xds_host, bound, xds_address,
             store_url, prefix)
    return Replica(serving, store, engine, metrics, client=client, session=session, leadership=leadership,
                   follower=follower, reporter=reporter, relay=relay, receiver=receiver, fleet=fleet,
                   leader_watch=leader_watch, replica_id=replica)


def _advertised_xds(xds_host: str, port: int, advertise_api: str | None) -> str:
    """Where other replicas reach this one's xDS port: its address, or the API's host when it binds every address."""
    host = xds_host
    if host in ("", "0.0.0.0", "::"):
        host = (urlsplit(advertise_api).hostname if advertise_api else None) or socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
