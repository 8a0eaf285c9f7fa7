"""A rollout policy at one step -> the ``ServiceRouting`` the engine would publish then.

This is the single seam between the mesh package and the rollout engine: it
builds the routing of a step exactly as the engine does (the engine's own
``plan`` and ``service_routing``), from a stand-in rollout record placed at
that step. Nothing else in ``control_plane.mesh`` knows how policies become
routing, so when the core grows its own "routing of a policy at a step"
function this module is the only one to change.

A step is a canary step index (0-based, as in ``spec.strategy.canary.steps[N]``)
or ``"shadow"`` for the shadow phase. A ``pause`` step keeps the weight of the
weight step before it (0 when none), as a paused rollout does.
"""

from __future__ import annotations

from typing import Literal, Union

from policies import RolloutPolicy
from xds.cache import DEFAULT_GROUP
from xds.routing import RoutingError, ServiceRouting, parse_routing

from ..desired import service_routing
from ..machine import plan
from ..model import Phase, Rollout
from .errors import MeshError, MeshProblem

Step = Union[int, Literal["shadow"]]

__all__ = ["Step", "routing_at_step", "parse_step"]


def parse_step(text: str) -> Step:
    """``"shadow"`` or a step index written by a person (``--step 2``)."""
    if text == "shadow":
        return "shadow"
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"--step: expected a step index (0, 1, ...) or 'shadow' (got {text!r})") from None
    if value < 0:
        raise ValueError(f"--step: expected a step index (0, 1, ...) or 'shadow' (got {text!r})")
    return value


def routing_at_step(policy: RolloutPolicy, step: Step = 0) -> ServiceRouting:
    """The desired routing of ``policy``'s service while its rollout is at ``step``."""
    shadow, steps = plan(policy)
    where = f"RolloutPolicy {policy.name}"
    if step == "shadow":
        if shadow is None:
            raise MeshError([MeshProblem(where, "spec.strategy.shadow", "this policy has no shadow phase to render")])
        phase, index, weight, mirror = Phase.SHADOWING, -1, 0, shadow.mirror
    else:
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < len(steps):
            raise MeshError([MeshProblem(
                where, "spec.strategy.canary.steps",
                f"no step {step!r}: this policy has steps 0 to {len(steps) - 1}" + (" and 'shadow'" if shadow else ""),
            )])
        planned = steps[step]
        if planned.kind == "pause":
            before = [s.weight for s in steps[:step] if s.kind == "weight"]
            phase, weight = Phase.PAUSED, (before[-1] if before else 0)
        else:
            phase, weight = Phase.PROGRESSING, planned.weight
        index, mirror = step, 0.0
    spec = policy.spec
    rollout = Rollout(
        name=policy.name,
        service=spec.service.name,
        group=spec.proxy_group or DEFAULT_GROUP,
        policy={},
        policy_hash="",
        stable_version=spec.stable.version,
        canary_version=spec.canary.version,
        phase=phase,
        step=index,
        weight=weight,
        mirror=mirror,
    )
    entry = service_routing(rollout, policy)
    # service_routing writes IPv6 endpoints without brackets ("::1:8081@1"), which the routing
    # parser rejects; write them as the policy's own Endpoint does (until the core fixes it).
    for backend, version in zip(entry["backends"], (spec.stable, spec.canary)):
        backend["endpoints"] = [f"{ep.address}@{ep.weight}" for ep in version.endpoints]
    try:
        return parse_routing({"services": [entry]}).services[0]
    except RoutingError as err:
        raise MeshError(
            MeshProblem(where, _policy_path(e.path), f"cannot be routed: {e.message}") for e in err.errors
        ) from None


def _policy_path(routing_path: str) -> str:
    """Point a routing error back at the policy field it came from, where that is unambiguous."""
    path = routing_path.removeprefix("services[0]").lstrip(".")
    for prefix, policy_prefix in (
        ("backends[0]", "spec.stable"),
        ("backends[1]", "spec.canary"),
        ("domains", "spec.service.domains"),
        ("pathPrefix", "spec.service.pathPrefix"),
        ("path_prefix", "spec.service.pathPrefix"),
        ("headerRoutes", "spec.strategy.match"),
        ("stickyHeader", "spec.strategy.stickiness.header"),
    ):
        if path.startswith(prefix):
            return policy_prefix + path[len(prefix):]
    return f"(routing) {path}" if path else ""
