"""The interface the rollout engine asks for verdicts, and two simple implementations.

The engine never reads metrics itself. Once every proxy has ACKed a step's
routing it asks an :class:`Analyzer` about the traffic since that moment; the
analyzer answers pass / fail / inconclusive with evidence (see ``analysis``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

from policies import RolloutPolicy


@dataclass(frozen=True)
class AnalysisRequest:
    """Which traffic to judge: one rollout step, counted from `since` (its convergence).

    A step's samples may come in several *segments* (``segment`` changes when
    the control plane restarted, an operator resumed a held step or set the
    weight): each segment's samples are counted from its own ``since``, and
    the step's judge continues across them. ``judge_state`` is the state the
    engine stored for this step (``None`` before its first look), and
    ``previous_state`` that of the step analysed before it, so a judge that
    watches for harm across the whole rollout can continue from it. ``run``
    changes when the analysis must start over (a new canary, a retry, a
    changed analysis section).
    """

    rollout: str
    service: str
    group: str
    stable_version: str
    canary_version: str
    phase: str  # "shadow" | "canary"
    step: int  # -1 for shadow
    n_steps: int
    weight: int  # % of live traffic to the canary
    mirror: float  # % mirrored to the canary (shadow phase)
    since: float  # epoch seconds; samples before this do not count
    min_requests: int
    policy: RolloutPolicy
    run: int = 1
    segment: int = 0
    judge_state: dict[str, Any] | None = None
    previous_state: dict[str, Any] | None = None


@dataclass
class SimpleVerdict:
    """A verdict with the fields the engine relies on (analysis.Verdict has the same shape)."""

    outcome: str  # "pass" | "fail" | "inconclusive"
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    samples_needed: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "reason": self.reason, "evidence": self.evidence, "samples_needed": self.samples_needed}


class Analyzer(Protocol):
    """What the engine asks for verdicts. ``judge_state`` is optional: analyzers with
    stateful judges return the state to store after each look (JSON), or None."""

    async def analyze(self, request: AnalysisRequest) -> Any:
        """Return a verdict (outcome, reason, to_json()) for the request's traffic."""


class NoEvidenceAnalyzer:
    """Used when no metric source is wired: always inconclusive, so nothing is ever promoted."""

    async def analyze(self, request: AnalysisRequest) -> SimpleVerdict:
        return SimpleVerdict("inconclusive", "no metric source is connected: no evidence, no promotion")


class ScriptedAnalyzer:
    """A judge for tests and demos: verdicts from a script, one per call.

    `script` is a sequence of outcomes ("pass", "fail", "inconclusive"; the
    last repeats) or a callable request -> outcome.
    """

    def __init__(self, script: Sequence[str] | Callable[[AnalysisRequest], str]):
        self.script = script
        self.calls: list[AnalysisRequest] = []

    async def analyze(self, request: AnalysisRequest) -> SimpleVerdict:
        self.calls.append(request)
        if callable(self.script):
            outcome = self.script(request)
        else:
            outcome = self.script[min(len(self.calls), len(self.script)) - 1]
        return SimpleVerdict(outcome, f"scripted {outcome}", {"call": len(self.calls), "step": request.step})
