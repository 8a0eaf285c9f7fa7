"""The rollout record the engine owns, its phases and its events.

State diagram (also in docs/rollout-states.md)::

    Pending ──► Shadowing ──► Progressing(k) ──► ... ──► Succeeded
       │            │            ▲   │  ▲
       │            │   resume   │   │  │ resume
       │            ▼            │   ▼  │
       │         Paused ◄────────┴─ Holding (inconclusive / gate refused)
       │            │                 │
       └────────────┴──► RollingBack ─┴──► RolledBack ──(retry)──► Pending
                                            Failed ─────(retry)──► Pending

Every change of a rollout is written together with an Event row (time,
reason, verdict evidence, policy hash) in one transaction, so the history
explains every decision and a crash never loses one.
"""

from __future__ import annotations

import enum
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import Conflict, NotFound


class Phase(str, enum.Enum):
    PENDING = "Pending"
    SHADOWING = "Shadowing"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    HOLDING = "Holding"
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED})
ACTIVE = frozenset(Phase) - TERMINAL

ACTIONS = ("pause", "resume", "promote", "abort", "retry", "set-weight")


class InvalidAction(Conflict):
    """An action that the rollout's current phase does not allow."""

    kind = "invalid-action"
    title = "Action not allowed now"

    def __init__(self, action: str, phase: Phase, hint: str = ""):
        self.action, self.phase = action, phase
        message = f"cannot {action} a rollout that is {phase.value}"
        super().__init__(f"{message}: {hint}" if hint else message, action=action, phase=phase.value)


class RolloutConflict(Conflict):
    """The policy cannot be applied in the current state (another active rollout, a version that is not live)."""

    kind = "rollout-conflict"
    title = "Rollout conflict"


class RolloutNotFound(NotFound):
    """No rollout of that name."""

    kind = "rollout-not-found"
    title = "Rollout not found"

    def __init__(self, name: str):
        self.name = name
        super().__init__(f"no rollout named {name!r}")


@dataclass
class Rollout:
    """One rollout of one policy revision: where it is and what it last decided."""

    name: str
    service: str
    group: str  # the proxy group serving it ("*" = every proxy)
    policy: dict[str, Any]  # the policy as submitted (JSON form, camelCase)
    policy_hash: str
    stable_version: str
    canary_version: str
    revision: int = 1
    phase: Phase = Phase.PENDING
    step: int = -1  # index into spec.strategy.canary.steps; -1 = not started / shadowing
    weight: int = 0  # % of live traffic to the canary
    mirror: float = 0.0  # % of live traffic mirrored to the canary
    weight_override: int | None = None  # set by an operator; holds until the next step
    step_started_at: float | None = None
    converged_at: float | None = None  # proxies ACKed this step's routing; samples count after it
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    deadline_at: float | None = None
    message: str = ""
    verdict: dict[str, Any] | None = None  # the latest verdict (outcome, reason, evidence)
    gate: str | None = None  # a webhook gate holding the rollout, e.g. "confirm-promotion"
    generation: int = 0  # bumped by every stored change (optimistic concurrency)
    analysis_run: int = 1  # bumped when the analysis must start over (new canary, retry, changed analysis)
    segment: int = 0  # bumped when a step's samples restart (restart, resume, set-weight): the judge continues
    canary_endpoints: list[str] | None = None  # set through `weir endpoints set` (e.g. an autoscaler); else the policy's

    @property
    def active(self) -> bool:
        return not self.phase.terminal

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["phase"] = self.phase.value
        data["active"] = self.active
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Rollout":
        data = dict(data)
        data.pop("active", None)
        data["phase"] = Phase(data["phase"])
        return cls(**data)


@dataclass
class Release:
    """What serves a service's live traffic when no rollout splits it.

    Weir keeps one per service: the live version, where it runs, and the
    service's routing settings (the ``spec.service``, ``spec.loadBalancing``
    and ``spec.proxyGroup`` of the policy that made it live). A rollout moves a
    service from its release to a new one; the release changes only when a
    rollout succeeds (or a policy updates the live version's endpoints), in the
    same transaction as the decision.
    """

    service: str
    group: str
    version: str
    endpoints: list[str]  # "host:port[@weight]", the policy form
    settings: dict[str, Any]  # {"service": ..., "loadBalancing": ...} in the policy's JSON form
    rollout: str | None = None  # the rollout that made it live; None: declared as stable by the first policy
    revision: int = 0  # that rollout's revision
    updated_at: float = field(default_factory=time.time)
    generation: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Release":
        return cls(**data)


@dataclass
class Event:
    """One stored transition: what happened, why, and the evidence it acted on."""

    rollout: str
    revision: int
    kind: str  # created | step | verdict | action | phase | gate | resumed | error
    phase_from: str | None
    phase_to: str
    step: int
    weight: int
    reason: str
    policy_hash: str
    verdict: dict[str, Any] | None = None
    at: float = field(default_factory=time.time)
    seq: int | None = None  # assigned by the store

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
