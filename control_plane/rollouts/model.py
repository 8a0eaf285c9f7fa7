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


class InvalidAction(Exception):
    """An action that the rollout's current phase does not allow (HTTP 409)."""

    def __init__(self, action: str, phase: Phase, hint: str = ""):
        self.action, self.phase = action, phase
        message = f"cannot {action} a rollout that is {phase.value}"
        super().__init__(f"{message}: {hint}" if hint else message)


class RolloutConflict(Exception):
    """A second active rollout for one service (HTTP 409)."""


class RolloutNotFound(KeyError):
    """No rollout of that name (HTTP 404)."""

    def __str__(self) -> str:
        return f"no rollout named {self.args[0]!r}"


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
