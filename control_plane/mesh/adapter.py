"""A rollout policy at one step -> the ``ServiceRouting`` the engine would publish then.

This is the single seam between the mesh package and the rollout engine: it
builds the routing of a step with the engine's own functions (the machine's
``plan`` and :func:`control_plane.rollouts.desired.routing_of_rollout`), from a
stand-in rollout placed at that step and the policy's ``stable`` as the live
release. Nothing else in ``control_plane.mesh`` knows how policies become
routing.

A step is a canary step index (0-based, as in ``spec.strategy.canary.steps[N]``)
or ``"shadow"`` for the shadow phase. A ``pause`` step keeps the weight of the
weight step before it (0 when none), as a paused rollout does.
"""

from __future__ import annotations

from typing import Literal, Union

from policies import RolloutPolicy
from xds.cache import DEFAULT_GROUP
from xds.routing import ServiceRouting

from ..rollouts.desired import release_settings, routing_of_rollout
from ..rollouts.machine import plan
from ..rollouts.model import Phase, Release, Rollout
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
    spec = policy.spec
    if spec.stable is None:
        raise MeshError([MeshProblem(
            where, "spec.stable",
            "rendering needs the live version: give spec.stable (version and endpoints) in the policy")])
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
    rollout = Rollout(
        name=policy.name, service=spec.service.name, group=spec.proxy_group or DEFAULT_GROUP, policy={},
        policy_hash="", stable_version=spec.stable.version, canary_version=spec.canary.version,
        phase=phase, step=index, weight=weight, mirror=mirror,
    )
    release = Release(service=spec.service.name, group=rollout.group, version=spec.stable.version,
                      endpoints=[str(e) for e in spec.stable.endpoints], settings=release_settings(policy))
    return routing_of_rollout(rollout, policy, release)
