"""Releases and rollouts -> each service's desired routing (the engine's only output to a router).

Pure. A service's routing comes from its active rollout when it has one (the
policy's service settings; stable = the live release's endpoints, canary =
the policy's; the split, mirror and header routes of the rollout's phase and
step) and from its release otherwise (all traffic to the live version).

The routing is built from the typed policy models with ``model_construct``:
every value was validated once, by the policy's own field types, which the
routing model shares (:mod:`policies.fields`), so nothing is validated twice
and nothing can disagree. A property test checks that what is built here is
a valid :class:`~xds.routing.ServiceRouting` for every valid policy and phase.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from policies import LoadBalancing, RolloutPolicy, Service, parse_endpoint
from policies.endpoints import Endpoint
from policies.model import HealthCheck
from xds.cache import DEFAULT_GROUP
from xds.routing import Backend, HeaderRoute, Mirror, ServiceRouting

from .model import Phase, Release, Rollout

__all__ = ["LB_POLICIES", "ReleaseSettings", "release_settings", "routing_of_release", "routing_of_rollout", "SPLITTING"]

#: Contract policy names -> the LB policies the xDS layer programs today.
#: latency-aware balancing is programmed as least-request until the
#: latency-aware balancer lands (it is a refinement of least-request).
LB_POLICIES = {"round-robin": "round-robin", "least-request": "least-request", "latency-aware": "least-request"}

#: Envoy's least-request weighs in-flight requests as (active + 1)^bias against endpoint weights; at the
#: default 1.0 a replica the balancer weighed down still draws traffic whenever it is idle (measured:
#: 6.8% of requests to a 3x slower replica instead of ~3%). Latency-aware services weigh in-flight less.
LATENCY_AWARE_ACTIVE_BIAS = 0.5

#: Phases in which a rollout's step decides the split.
SPLITTING = frozenset({Phase.SHADOWING, Phase.PROGRESSING, Phase.PAUSED, Phase.HOLDING})


@dataclass(frozen=True)
class ReleaseSettings:
    """A release's routing settings as typed models (parsed once when the release is read)."""

    service: Service
    load_balancing: LoadBalancing
    health_check: HealthCheck | None = None

    @classmethod
    def from_release(cls, release: Release) -> "ReleaseSettings":
        check = release.settings.get("healthCheck")
        return cls(
            Service.model_validate(release.settings["service"]),
            LoadBalancing.model_validate(release.settings.get("loadBalancing", {})),
            HealthCheck.model_validate(check) if check is not None else None,
        )


def release_settings(policy: RolloutPolicy, version: str = "stable") -> dict:
    """The settings a release keeps from the policy that made it live (JSON form).

    ``version`` says which of the policy's versions becomes (or is) live: its health check goes with it.
    """
    spec = policy.spec
    out = {
        "service": spec.service.model_dump(mode="json", by_alias=True, exclude_none=True),
        "loadBalancing": spec.load_balancing.model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    live = spec.canary if version == "canary" else spec.stable
    if live is not None and live.health_check is not None:
        out["healthCheck"] = live.health_check.model_dump(mode="json", by_alias=True, exclude_none=True)
    return out


Expand = Callable[[Iterable[Endpoint]], list[Endpoint]]
"""Turns policy endpoints (IP addresses or DNS names) into addresses (``EndpointResolver.expand``)."""


def _as_is(endpoints: Iterable[Endpoint]) -> list[Endpoint]:
    return list(endpoints)


def endpoints_of(texts: list[str]) -> list[Endpoint]:
    """A release's stored endpoints (``host:port[@weight]`` strings) as Endpoint objects."""
    return [parse_endpoint(t) for t in texts]


def _service_routing(
    service: Service,
    load_balancing: LoadBalancing,
    backends: list[Backend],
    split: dict[str, int],
    *,
    mirror: Mirror | None = None,
    header_routes: list[HeaderRoute] | None = None,
    sticky_header: str | None = None,
) -> ServiceRouting:
    return ServiceRouting.model_construct(
        protocol=service.protocol,
        idle_timeout=service.idle_timeout,
        retries=service.retries,
        name=service.name,
        port=service.port,
        domains=list(service.domains),
        path_prefix=service.path_prefix,
        timeout=service.timeout,
        backends=backends,
        split=split,
        header_routes=header_routes or [],
        sticky_header=sticky_header,
        mirror=mirror,
        lb_policy=LB_POLICIES[load_balancing.policy],
        least_request_choice_count=None,
        least_request_active_bias=LATENCY_AWARE_ACTIVE_BIAS if load_balancing.policy == "latency-aware" else None,
        outlier_detection=load_balancing.outlier_detection,
    )


def routing_of_release(release: Release, settings: ReleaseSettings | None = None, expand: Expand = _as_is) -> ServiceRouting:
    """All live traffic to the release's version."""
    settings = settings or ReleaseSettings.from_release(release)
    backend = Backend.model_construct(version=release.version, endpoints=expand(endpoints_of(release.endpoints)),
                                      health_check=settings.health_check)
    return _service_routing(settings.service, settings.load_balancing, [backend], {release.version: 100})


def routing_of_rollout(rollout: Rollout, policy: RolloutPolicy, release: Release,
                       settings: ReleaseSettings | None = None, expand: Expand = _as_is) -> ServiceRouting:
    """An active rollout's routing: stable (the live release) and canary, split as its phase and step say."""
    spec = policy.spec
    stable_check = spec.stable.health_check if spec.stable is not None else (
        (settings or ReleaseSettings.from_release(release)).health_check)
    stable = Backend.model_construct(version=release.version, endpoints=expand(endpoints_of(release.endpoints)),
                                     health_check=stable_check)
    declared = endpoints_of(rollout.canary_endpoints) if rollout.canary_endpoints is not None else spec.canary.endpoints
    canary = Backend.model_construct(version=spec.canary.version, endpoints=expand(declared),
                                     health_check=spec.canary.health_check)
    splitting = rollout.phase in SPLITTING
    weight = rollout.weight if splitting else 0
    mirror = None
    if splitting and rollout.mirror > 0:
        mirror = Mirror.model_construct(version=spec.canary.version, percent=rollout.mirror)
    routes: list[HeaderRoute] = []
    if splitting and rollout.step >= 0 and rollout.phase is not Phase.SHADOWING:
        routes = [
            HeaderRoute.model_construct(header=m.header.name, exact=m.header.exact, version=spec.canary.version)
            for m in spec.strategy.match
        ]
    sticky = spec.strategy.stickiness.header if spec.strategy.stickiness is not None else None
    return _service_routing(
        spec.service, spec.load_balancing, [stable, canary],
        {release.version: 100 - weight, spec.canary.version: weight},
        mirror=mirror, header_routes=routes, sticky_header=sticky,
    )


def group_of(policy: RolloutPolicy | None, release: Release | None) -> str:
    if policy is not None:
        return policy.spec.proxy_group or DEFAULT_GROUP
    return release.group if release is not None else DEFAULT_GROUP
