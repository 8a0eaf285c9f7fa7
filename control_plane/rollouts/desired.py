"""Rollouts -> desired routing per proxy group (the engine's only output to xds).

Each service's latest rollout decides its routing, whatever its phase: an
active one splits and mirrors as its step says, a succeeded one sends every
request to the canary, a rolled-back, failed or pending one to stable.
Services without a proxyGroup are served by every proxy, so every group's
routing carries them too.
"""

from __future__ import annotations

from typing import Iterable

from policies import RolloutPolicy
from xds.cache import DEFAULT_GROUP
from xds.routing import DesiredRouting, parse_routing

from .model import Phase, Rollout

#: Contract policy names -> the LB policies the xDS layer programs today.
#: latency-aware balancing is programmed as least-request until the
#: latency-aware balancer lands (it is a refinement of least-request).
LB_POLICIES = {"round-robin": "round-robin", "least-request": "least-request", "latency-aware": "least-request"}


def _endpoints(version_spec) -> list[str]:
    out = []
    for ep in version_spec.endpoints:
        text = f"{ep.host}:{ep.port}"
        if ep.weight is not None:
            text += f"@{ep.weight}"
        out.append(text)
    return out


def service_routing(rollout: Rollout, policy: RolloutPolicy) -> dict:
    """The desired-routing entry (routing-file form) of one rollout's service."""
    spec = policy.spec
    stable, canary = spec.stable.version, spec.canary.version
    splitting = rollout.phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.HOLDING, Phase.SHADOWING)
    if rollout.phase is Phase.SUCCEEDED:
        weight = 100
    elif splitting:
        weight = rollout.weight
    else:
        weight = 0
    svc: dict = {
        "name": spec.service.name,
        "port": spec.service.port,
        "domains": list(spec.service.domains),
        "pathPrefix": spec.service.path_prefix,
        "timeout": spec.service.timeout.total_seconds(),
        "backends": [
            {"version": stable, "endpoints": _endpoints(spec.stable)},
            {"version": canary, "endpoints": _endpoints(spec.canary)},
        ],
        "split": {stable: 100 - weight, canary: weight},
        "lbPolicy": LB_POLICIES[spec.load_balancing.policy],
    }
    od = spec.load_balancing.outlier_detection
    if od is not None:
        svc["outlierDetection"] = {
            "consecutive5xx": od.consecutive_5xx,
            "baseEjectionTime": od.base_ejection_time.total_seconds(),
            "maxEjectionPercent": od.max_ejection_percent,
        }
    if splitting and rollout.mirror > 0:
        svc["mirror"] = {"version": canary, "percent": rollout.mirror}
    if splitting and rollout.step >= 0 and rollout.phase is not Phase.SHADOWING:
        svc["headerRoutes"] = [{"header": m.header.name, "exact": m.header.exact, "version": canary} for m in spec.strategy.match]
    if spec.strategy.stickiness is not None:
        svc["stickyHeader"] = spec.strategy.stickiness.header
    return svc


def desired_by_group(
    rollouts: Iterable[tuple[Rollout, RolloutPolicy]], listen_address: str = "0.0.0.0"
) -> dict[str, DesiredRouting]:
    """Desired routing for the default group and every named proxy group."""
    shared: list[dict] = []
    by_group: dict[str, list[dict]] = {}
    for rollout, policy in sorted(rollouts, key=lambda rp: rp[0].service):
        entry = service_routing(rollout, policy)
        if rollout.group == DEFAULT_GROUP:
            shared.append(entry)
        else:
            by_group.setdefault(rollout.group, []).append(entry)
    out = {DEFAULT_GROUP: parse_routing({"listenAddress": listen_address, "services": shared})}
    for group, entries in by_group.items():
        out[group] = parse_routing({"listenAddress": listen_address, "services": shared + entries})
    return out
