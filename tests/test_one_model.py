"""One model of each concept: whatever `weir validate` accepts, apply accepts and can route; and the reverse.

The defect these pin: a canary version `v2_rc1` passed `weir validate` and
`parse_policy`, then `apply` answered 422 with a path from a routing-file
format the user never wrote, because the engine built a dict and validated it
a second time with other rules.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from analysis.analyzer import ScriptedAnalyzer
from control_plane.rollouts.desired import routing_of_release, routing_of_rollout
from control_plane.rollouts.engine import Engine
from control_plane.rollouts.model import Phase, Release, Rollout
from control_plane.routing.xds_router import XdsRouter
from control_plane.store import SQLiteStore
from policies import PolicyValidationError, RolloutPolicy, parse_policy
from tests.test_policies_units import policies_data
from xds.cache import SnapshotCache
from xds.routing import ServiceRouting
from xds.snapshot import snapshot_from_envoy
from xds.status import StatusRegistry
from xds.translate import translate

versions = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,20}", fullmatch=True)


@st.composite
def policy_texts(draw) -> str:
    data = draw(policies_data())
    stable, canary = draw(versions), draw(versions)
    data["spec"]["stable"]["version"] = stable
    data["spec"]["canary"]["version"] = canary
    if draw(st.booleans()):
        data["spec"]["strategy"]["match"] = [{"header": {"name": "x-canary", "exact": "true"}}]
    if draw(st.booleans()):
        data["spec"]["strategy"]["stickiness"] = {"header": "x-user"}
    return yaml.safe_dump(data, sort_keys=False)


def validated(text: str) -> RolloutPolicy | None:
    try:
        return parse_policy(text)
    except PolicyValidationError:
        return None


def _rollouts_of(policy: RolloutPolicy) -> list[Rollout]:
    """The rollout at every phase and step it can be in."""
    spec = policy.spec
    base = Rollout(name=policy.metadata.name, service=spec.service.name, group="*", policy={}, policy_hash="h",
                   stable_version=spec.stable.version, canary_version=spec.canary.version)
    out = [base, dataclasses.replace(base, phase=Phase.ROLLING_BACK)]
    if spec.strategy.shadow is not None:
        out.append(dataclasses.replace(base, phase=Phase.SHADOWING, mirror=float(spec.strategy.shadow.percent)))
    for i, step in enumerate(spec.strategy.canary.steps):
        weight = step.weight if step.weight is not None else 0
        for phase in (Phase.PROGRESSING, Phase.PAUSED, Phase.HOLDING):
            out.append(dataclasses.replace(base, phase=phase, step=i, weight=weight))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy_texts())
def test_every_valid_policy_routes_validly_at_every_phase(text: str) -> None:
    policy = validated(text)
    assume(policy is not None)
    spec = policy.spec
    release = Release(service=spec.service.name, group="*", version=spec.stable.version,
                      endpoints=[str(e) for e in spec.stable.endpoints],
                      settings={"service": spec.service.model_dump(mode="json", by_alias=True, exclude_none=True),
                                "loadBalancing": spec.load_balancing.model_dump(mode="json", by_alias=True, exclude_none=True)})
    built = [routing_of_release(release)] + [routing_of_rollout(r, policy, release) for r in _rollouts_of(policy)]
    for routing in built:
        # What the engine built without validating is exactly what the routing model accepts ...
        again = ServiceRouting.model_validate(routing.model_dump(mode="json", by_alias=True))
        assert again == routing
        # ... and translates into a consistent snapshot Envoy can be given.
        from xds.routing import DesiredRouting

        snapshot_from_envoy(translate(DesiredRouting(listen_address="0.0.0.0", services=[routing]))).check()


async def _apply(text: str) -> str:
    store = SQLiteStore(":memory:")
    try:
        engine = Engine(store, XdsRouter(SnapshotCache(), StatusRegistry()), ScriptedAnalyzer(("inconclusive",)))
        await engine.start(run=False)
        applied = await engine.apply(text)
        return applied.plan.action
    finally:
        await store.close()


_CORRUPTIONS = [
    ("spec", "canary", "version", "-bad"),
    ("spec", "canary", "version", "a" * 64),
    ("spec", "service", "port", 0),
    ("spec", "service", "pathPrefix", "nope"),
    ("spec", "strategy", "canary", "steps", 0, "weight", 101),
    ("spec", "stable", "endpoints", 0, "localhost:80"),
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(text=policy_texts(), corruption=st.sampled_from([None, *_CORRUPTIONS]))
def test_validate_accepts_exactly_what_apply_accepts(text: str, corruption) -> None:
    if corruption is not None:
        data = yaml.safe_load(text)
        *path, value = corruption
        node: Any = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        text = yaml.safe_dump(data, sort_keys=False)
    policy = validated(text)
    if policy is None:
        with pytest.raises(PolicyValidationError) as by_apply:
            asyncio.run(_apply(text))
        with pytest.raises(PolicyValidationError) as by_validate:
            parse_policy(text)
        assert [e.path for e in by_apply.value.errors] == [e.path for e in by_validate.value.errors]
    else:
        assert asyncio.run(_apply(text)) == "create"
