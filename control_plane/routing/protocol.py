"""The traffic-router seam: the only way the rollout engine changes traffic.

The engine decides *what* each service's routing should be (a
:class:`xds.routing.ServiceRouting`: versions, endpoints, split, mirror,
header routes) and hands the whole desired set to a router. A router makes it
so on some data plane and answers, per service and revision, whether it has
converged. The xDS router (:mod:`.xds_router`) serves it to Envoy over ADS; a
router that writes Istio objects sits beside it. In the spirit of Argo
Rollouts' SetWeight/VerifyWeight and Flagger's router interface: apply and
verify are separate, so the engine never counts traffic for a step before the
data plane runs it.

Convergence is per service: another writer of the data plane (the
latency-aware balancer's endpoint weights, another service's rollout) never
makes a rollout wait. A service whose proxies are all gone is never
converged: the rollout holds and says which group has no proxy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Mapping, Protocol

from policies.model import LatencyAware
from xds.routing import ServiceRouting

__all__ = ["RouteStatus", "ServiceState", "TrafficRouter", "CONVERGED", "WAITING", "FAILED"]

CONVERGED = "converged"
WAITING = "waiting"
FAILED = "failed"


@dataclass(frozen=True)
class ServiceState:
    """The desired routing of one service at one revision."""

    service: str
    group: str  # proxy group serving it ("*" = every proxy)
    revision: int  # increases whenever this service's desired routing changes
    routing: ServiceRouting
    # `loadBalancing.policy: latency-aware`: its tuning. Whoever serves the proxies balances their endpoints
    # (every replica its own proxies); it never changes the split, so it is no part of convergence.
    balancing: LatencyAware | None = None


@dataclass(frozen=True)
class RouteStatus:
    """Where a service's routing stands on the data plane."""

    state: Literal["converged", "waiting", "failed"]
    detail: str  # one sentence for events and `weir describe`
    waiting_on: tuple[str, ...] = field(default_factory=tuple)  # proxies / objects not yet at this revision
    error: str | None = None  # a NACK's text, an API error

    @property
    def converged(self) -> bool:
        return self.state == CONVERGED


class TrafficRouter(Protocol):
    """Applies desired routing and reports convergence per service."""

    name: str

    async def apply(self, desired: Mapping[str, ServiceState]) -> None:
        """Make the data plane serve ``desired`` (every service, keyed by name).

        A service missing from ``desired`` loses its routing. Invalid routing
        raises (an :class:`~control_plane.errors.InvalidInput`) and changes nothing.
        """

    async def status(self, service: str, revision: int) -> RouteStatus:
        """Whether ``service`` runs ``revision`` of its routing everywhere it should."""

    async def close(self) -> None: ...

    # Optional: ``on_change(callback)`` registers a callback the router calls (on the loop, without
    # arguments) when the data plane may have converged further, so waiters look at once.
