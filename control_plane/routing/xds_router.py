"""The xDS router: desired routing -> Envoy resources in the snapshot cache, and per-service convergence.

``apply`` builds one :class:`xds.routing.DesiredRouting` per proxy group
(services without a proxy group are served by every group), translates and
serialises it once, checks every group's snapshot and only then publishes
them all, so a bad service never leaves the fleet half-updated.

``status`` answers per service. A service's routing lives in a few named
resources: its clusters and their endpoints (``<service>-<version>``) and
the listener and route configuration of its port. A proxy runs revision R of
service S when, for each of those resources, the version it ACKed was still
current at or after the publish that carried R (resource versions are
content hashes, so any later version of a shared route configuration also
carries S's routing). So a push that changes only endpoint weights, or
another service on the same port, never makes S wait, and S's own change is
not counted until every proxy that serves S has it.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from typing import Mapping

from xds.cache import DEFAULT_GROUP, SnapshotCache
from xds.routing import DesiredRouting, RoutingError, ServiceRouting, cross_service_problems
from xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, SHORT_NAMES, Snapshot, snapshot_from_envoy
from xds.status import ProxyStatus, StatusRegistry
from xds.translate import listener_name, route_name, translate
from policies.errors import PolicyError, format_path

from ..balancing.balancer import BalancedService
from .protocol import CONVERGED, FAILED, WAITING, RouteStatus, ServiceState

__all__ = ["XdsRouter"]

#: Proxies named in a "waiting on" detail; the rest are counted.
_NAMED = 5


class XdsRouter:
    """Serves desired routing to Envoy through the snapshot cache (see the module docstring)."""

    name = "xds"

    def __init__(
        self,
        cache: SnapshotCache,
        registry: StatusRegistry,
        *,
        listen_address: str = "0.0.0.0",
        access_log_cluster: str | None = None,
        clock=time.time,
    ):
        self.cache = cache
        self.registry = registry
        self.listen_address = listen_address
        self.access_log_cluster = access_log_cluster
        self.clock = clock
        self._desired: dict[str, ServiceState] = {}
        self._seq = 0
        self._published_at: dict[int, float] = {}
        self._since: dict[str, tuple[int, int]] = {}  # service -> (revision, publish seq that carried it)
        # group -> (type_url, name) -> version -> the last publish seq at which it was current
        self._history: dict[str, dict[tuple[str, str], dict[str, int]]] = defaultdict(dict)
        self._groups: set[str] = set()
        # (service, version) -> {"ip:port": weight}: the latency-aware balancer's endpoint weights
        self._weights: dict[tuple[str, str], dict[str, int]] = {}

    # -- apply -------------------------------------------------------------------------------------
    def routing_by_group(self, desired: Mapping[str, ServiceState]) -> dict[str, DesiredRouting]:
        """Every group's full routing: the shared services plus its own."""
        shared = sorted((s for s in desired.values() if s.group == DEFAULT_GROUP), key=lambda s: s.service)
        own: dict[str, list[ServiceState]] = defaultdict(list)
        for state in desired.values():
            if state.group != DEFAULT_GROUP:
                own[state.group].append(state)
        out = {DEFAULT_GROUP: self._routing([s.routing for s in shared])}
        for group, states in own.items():
            out[group] = self._routing([s.routing for s in shared + sorted(states, key=lambda s: s.service)])
        return out

    def _routing(self, services: list[ServiceRouting]) -> DesiredRouting:
        problems = cross_service_problems(services)
        if problems:
            raise RoutingError([PolicyError(format_path(loc), message) for loc, message in problems])
        # Each service was built from validated typed models; only the cross-service rules were new.
        return DesiredRouting.model_construct(listen_address=self.listen_address, services=services)

    def _weighted(self, state: ServiceState) -> ServiceState:
        """The state with the balancer's endpoint weights in place of the declared ones (EDS only)."""
        routing = state.routing
        if not any((routing.name, b.version) in self._weights for b in routing.backends):
            return state
        backends = []
        for backend in routing.backends:
            weights = self._weights.get((routing.name, backend.version))
            if weights:
                endpoints = [e.model_copy(update={"weight": weights.get(e.address, e.weight)}) for e in backend.endpoints]
                backend = backend.model_copy(update={"endpoints": endpoints})
            backends.append(backend)
        return dataclasses.replace(state, routing=routing.model_copy(update={"backends": backends}))

    def snapshots(self, desired: Mapping[str, ServiceState]) -> dict[str, Snapshot]:
        """Translate and check every group's snapshot (raises, publishing nothing, on any problem)."""
        out = {}
        desired = {name: self._weighted(state) for name, state in desired.items()}
        for group, routing in self.routing_by_group(desired).items():
            resources = translate(routing, access_log_cluster=self.access_log_cluster)
            out[group] = snapshot_from_envoy(resources).check()
        return out

    async def apply(self, desired: Mapping[str, ServiceState]) -> None:
        self._publish(self.snapshots(desired), desired)

    async def set_endpoint_weights(self, service: str, version: str, weights: Mapping[str, int]) -> None:
        """Replace one version's endpoint weights (EDS only: the split, and convergence, are untouched).

        Weights name endpoints by address ("ip:port"); endpoints not named keep their declared weight.
        ``weights`` empty clears the override.
        """
        key = (service, version)
        if weights:
            self._weights[key] = {k: max(1, int(v)) for k, v in weights.items()}
        else:
            self._weights.pop(key, None)
        if service in self._desired:
            self._publish(self.snapshots(self._desired), self._desired)

    def balanced_services(self) -> list[BalancedService]:
        """The latency-aware services this router serves now, with their versions' endpoint addresses."""
        return [
            BalancedService(state.service, state.balancing,
                            {b.version: tuple(e.address for e in b.endpoints) for b in state.routing.backends})
            for state in self._desired.values() if state.balancing is not None
        ]

    def endpoint_weights(self, service: str, version: str) -> dict[str, int]:
        return dict(self._weights.get((service, version), {}))

    def _publish(self, snapshots: Mapping[str, Snapshot], desired: Mapping[str, ServiceState]) -> None:
        self._seq += 1
        seq = self._seq
        self._published_at[seq] = self.clock()
        for group, snapshot in snapshots.items():
            self.cache.set_snapshot(group, snapshot)
            history = self._history[group]
            for type_url, resources in snapshot.resources.items():
                for name, res in resources.items():
                    history.setdefault((type_url, name), {})[res.version] = seq
        for group in self._groups - set(snapshots):
            self.cache.clear_snapshot(group)
            self._history.pop(group, None)
        self._groups = set(snapshots)
        for service, state in desired.items():
            seen = self._since.get(service)
            if seen is None or seen[0] != state.revision:
                self._since[service] = (state.revision, seq)
        for service in set(self._since) - set(desired):
            del self._since[service]
        self._desired = dict(desired)
        self._prune()

    def _prune(self) -> None:
        """Forget versions no service can accept any more (older than every service's revision)."""
        if not self._since:
            return
        oldest = min(seq for _, seq in self._since.values())
        for history in self._history.values():
            for versions in history.values():
                for version in [v for v, last in versions.items() if last < oldest]:
                    del versions[version]
        for seq in [s for s in self._published_at if s < oldest]:
            del self._published_at[seq]

    # -- status ------------------------------------------------------------------------------------
    @staticmethod
    def resources_of(routing: ServiceRouting) -> list[tuple[str, str]]:
        """The (type, name) of every resource that carries a service's routing."""
        out = [(LISTENER, listener_name(routing.port)), (ROUTE, route_name(routing.port))]
        for backend in routing.backends:
            cluster = routing.cluster_name(backend.version)
            out += [(CLUSTER, cluster), (ENDPOINT, cluster)]
        return out

    def _proxies(self, group: str) -> list[ProxyStatus]:
        if group == DEFAULT_GROUP:
            return self.registry.proxies()
        return [p for p in self.registry.proxies() if p.group == group]

    async def status(self, service: str, revision: int) -> RouteStatus:
        return self.status_now(service, revision)

    def status_now(self, service: str, revision: int) -> RouteStatus:
        state = self._desired.get(service)
        if state is None or state.revision != revision:
            have = "none" if state is None else f"revision {state.revision}"
            return RouteStatus(WAITING, f"routing revision {revision} of {service} is not applied yet (the router has {have})")
        since = self._since[service][1]
        proxies = self._proxies(state.group)
        where = "any group" if state.group == DEFAULT_GROUP else f"group {state.group!r}"
        if not proxies:
            return RouteStatus(WAITING, f"no proxy of {where} is connected: waiting for one to serve {service}")
        required = self.resources_of(state.routing)
        behind: list[ProxyStatus] = []
        for proxy in proxies:
            history = self._history.get(proxy.group, {})
            for key in required:
                acked = proxy.acked_version(*key)
                current_at = history.get(key, {}).get(acked) if acked is not None else None
                if current_at is None or current_at < since:
                    behind.append(proxy)
                    break
        if not behind:
            return RouteStatus(CONVERGED, f"all {len(proxies)} prox{'y' if len(proxies) == 1 else 'ies'} of {where} run {service} routing revision {revision}")
        published = self._published_at.get(since, 0.0)
        types = {t for t, _ in required}
        for proxy in behind:
            nack = next((n for n in reversed(proxy.nacks) if n.type_url in types and n.at >= published), None)
            if nack is not None:
                return RouteStatus(
                    FAILED,
                    f"proxy {proxy.node_id} rejected the {SHORT_NAMES[nack.type_url].upper()} update for {service}: {nack.message}",
                    (proxy.node_id,), nack.message,
                )
        names = tuple(p.node_id for p in behind)
        shown = ", ".join(names[:_NAMED]) + (f" and {len(names) - _NAMED} more" if len(names) > _NAMED else "")
        return RouteStatus(
            WAITING,
            f"waiting for {len(behind)} of {len(proxies)} prox{'y' if len(proxies) == 1 else 'ies'} of {where} to ACK {service} routing revision {revision} ({shown})",
            names,
        )

    def on_change(self, callback) -> None:
        """Call ``callback()`` whenever an ACK, a disconnect or a move may have advanced convergence."""
        self.registry.listeners.append(lambda group: callback())

    async def close(self) -> None:
        return None
