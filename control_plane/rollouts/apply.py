"""What applying a policy means, given what is live and what is running: a pure decision.

Weir keeps per service the live release (version, endpoints, settings). A
policy names the canary; ``spec.stable`` may be omitted and then means "what
is live". Applying a policy:

* whose canary is already live: nothing to do, and Weir says so;
* whose ``stable`` is not what is live: refused, naming the live version;
* identical to the rollout's current revision: nothing changes;
* changed for an active rollout: updated in place as a new revision when only
  steps, analysis, webhooks or settings change (the current step is kept where
  it still exists); the canary restarts from the first step when its version
  or its endpoints change (the reason says which);
* for a finished rollout, or a new name: a new rollout (revision + 1 for a
  finished one). A rolled-back or failed rollout applied again unchanged is
  not restarted by accident: that is what ``retry`` is for.

GitOps mode and the REST API both call :func:`plan_apply`, so the rules are
the same whichever way a policy arrives.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from policies import PolicyError, PolicyValidationError, RolloutPolicy

from .desired import release_settings
from .model import Phase, Release, Rollout, RolloutConflict

__all__ = ["ApplyPlan", "plan_apply", "policy_changes"]

Action = Literal["create", "unchanged", "already-live", "update", "restart", "replace"]


@dataclass(frozen=True)
class ApplyPlan:
    """The outcome of applying one policy, before anything is stored."""

    action: Action
    message: str
    stable_version: str = ""
    #: the release to write with the rollout (the first release of a service, or new stable endpoints)
    release: Release | None = None
    changes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changes_anything(self) -> bool:
        return self.action not in ("unchanged", "already-live")


def _section(policy: RolloutPolicy, *path: str):
    node = policy.spec
    for part in path:
        node = getattr(node, part)
    return node.model_dump(mode="json", by_alias=True, exclude_none=True) if hasattr(node, "model_dump") else node


#: Parts of a policy an active rollout can take in place, and how events name them.
_IN_PLACE = (
    (("strategy",), "steps and strategy"),
    (("analysis",), "analysis"),
    (("webhooks",), "webhooks"),
    (("service",), "service settings"),
    (("load_balancing",), "load balancing"),
    (("on_failure",), "onFailure"),
    (("on_inconclusive",), "onInconclusive"),
    (("deadline",), "deadline"),
    (("proxy_group",), "proxyGroup"),
    (("stable",), "stable"),
)


def policy_changes(old: RolloutPolicy, new: RolloutPolicy) -> tuple[list[str], list[str]]:
    """(reasons to restart the canary, in-place changes) between two revisions of a policy."""
    restart = []
    if old.spec.canary.version != new.spec.canary.version:
        restart.append(f"the canary version changed from {old.spec.canary.version} to {new.spec.canary.version}")
    elif [str(e) for e in old.spec.canary.endpoints] != [str(e) for e in new.spec.canary.endpoints]:
        before = ", ".join(str(e) for e in old.spec.canary.endpoints)
        after = ", ".join(str(e) for e in new.spec.canary.endpoints)
        restart.append(f"the canary endpoints changed from [{before}] to [{after}]")
    in_place = [label for path, label in _IN_PLACE if _section(old, *path) != _section(new, *path)]
    if old.metadata.labels != new.metadata.labels:
        in_place.append("labels")
    return restart, in_place


def plan_apply(
    policy: RolloutPolicy,
    digest: str,
    *,
    existing: Rollout | None,
    existing_policy: RolloutPolicy | None,
    other_active: Rollout | None,
    release: Release | None,
    now: float,
) -> ApplyPlan:
    """Decide what applying ``policy`` (hash ``digest``) does; raise when it must be refused."""
    spec = policy.spec
    service = spec.service.name
    canary = spec.canary.version
    if other_active is not None:
        raise RolloutConflict(
            f"service {service!r} already has an active rollout {other_active.name!r} ({other_active.phase.value}, "
            f"{other_active.stable_version} -> {other_active.canary_version}); abort it, or apply your change "
            f"under metadata.name {other_active.name!r}",
            path="metadata.name",
        )
    active = existing is not None and existing.active
    if release is not None and canary == release.version and not active:
        return ApplyPlan("already-live", f"{canary} is already live for service {service!r}: nothing to do",
                         release.version)
    if release is None:
        if spec.stable is None:
            raise PolicyValidationError([PolicyError(
                "spec.stable",
                f"required for the first rollout of service {service!r}: no version of it is live yet; "
                "give the version serving today and its endpoints",
            )])
        stable_version = spec.stable.version
        new_release: Release | None = Release(
            service=service, group=spec.proxy_group or "*", version=stable_version,
            endpoints=[str(e) for e in spec.stable.endpoints], settings=release_settings(policy), rollout=None,
            revision=0, updated_at=now,
        )
    else:
        stable_version = release.version
        new_release = None
        if spec.stable is not None:
            if spec.stable.version != release.version:
                made = f" (made live by rollout {release.rollout!r})" if release.rollout else ""
                raise RolloutConflict(
                    f"spec.stable.version is {spec.stable.version!r} but service {service!r} serves "
                    f"{release.version!r}{made}; write stable version {release.version!r}, or leave stable out "
                    "to mean what is live",
                    path="spec.stable.version",
                )
            endpoints = [str(e) for e in spec.stable.endpoints]
            if endpoints != release.endpoints:
                new_release = dataclasses.replace(release, endpoints=endpoints, updated_at=now)
        if canary == release.version:  # and a rollout of another canary is active
            raise RolloutConflict(
                f"{canary} is already live for service {service!r}, while rollout {existing.name!r} rolls out "
                f"{existing.canary_version}; to stop that rollout, abort it",
                path="spec.canary.version",
            )
    stable_note = ""
    if new_release is not None and release is not None:
        stable_note = f"; the live {stable_version} endpoints are now [{', '.join(new_release.endpoints)}]"
    if existing is None:
        return ApplyPlan("create", f"created rollout of {canary} over {stable_version}{stable_note}", stable_version, new_release)
    if existing.policy_hash == digest:
        if active:
            return ApplyPlan("unchanged", f"rollout {existing.name!r} already runs this policy (revision "
                             f"{existing.revision}, {existing.phase.value}): nothing changed", stable_version)
        if existing.phase in (Phase.ROLLED_BACK, Phase.FAILED):
            return ApplyPlan("unchanged", f"rollout {existing.name!r} ended {existing.phase.value} with this very "
                             f"policy; run `weir retry {existing.name}` to try it again, or change the policy",
                             stable_version)
    if not active:
        return ApplyPlan("replace", f"revision {existing.revision + 1}: new rollout of {canary} over "
                         f"{stable_version}{stable_note}", stable_version, new_release)
    assert existing_policy is not None
    restart, in_place = policy_changes(existing_policy, policy)
    if restart:
        return ApplyPlan("restart", f"revision {existing.revision + 1}: {'; '.join(restart)}: restarting the canary "
                         f"from the first step{stable_note}", stable_version, new_release, tuple(restart + in_place))
    what = ", ".join(in_place) or "nothing Weir acts on"
    return ApplyPlan("update", f"revision {existing.revision + 1}: updated in place ({what} changed){stable_note}",
                     stable_version, new_release, tuple(in_place))
