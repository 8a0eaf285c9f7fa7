"""The rollout state machine: pure transitions, no I/O, no clock of its own.

Every function takes a Rollout (never modified) plus what the engine observed
(the time, a verdict, a webhook answer, an operator action) and returns a
:class:`Decision`: the new Rollout, the events that explain it, and the side
effects the engine must carry out (publish routing, call a webhook). The
engine stores the decision first and acts second, so a crash between the two
is repaired by re-acting on the stored state, never by deciding twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Protocol

from policies import RolloutPolicy

from .desired import SPLITTING
from .model import ACTIVE, Event, InvalidAction, Phase, Rollout

#: Canary samples a step needs before a pass counts, when the policy gives none.
DEFAULT_MIN_REQUESTS = 200

GATE_PAUSE_STEP = "pause-step"
GATE_PROMOTION = "confirm-promotion"


class VerdictLike(Protocol):
    outcome: str  # "pass" | "fail" | "inconclusive"
    reason: str

    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class StepPlan:
    """One step of a rollout as the engine runs it."""

    index: int  # -1 for the shadow phase
    kind: str  # "shadow" | "weight" | "pause"
    weight: int = 0
    mirror: float = 0.0
    min_requests: int = DEFAULT_MIN_REQUESTS
    max_duration_s: float | None = None


def plan(policy: RolloutPolicy) -> tuple[StepPlan | None, list[StepPlan]]:
    """The shadow phase (or None) and the canary steps of a policy."""
    strategy = policy.spec.strategy
    shadow = None
    if strategy.shadow is not None:
        s = strategy.shadow
        shadow = StepPlan(-1, "shadow", 0, float(s.percent), int(s.min_requests), s.max_duration.total_seconds())
    steps = []
    for i, step in enumerate(strategy.canary.steps):
        max_s = step.max_duration.total_seconds() if step.max_duration is not None else None
        min_req = int(step.min_requests) if step.min_requests is not None else DEFAULT_MIN_REQUESTS
        if step.pause is not None:
            steps.append(StepPlan(i, "pause", min_requests=min_req, max_duration_s=max_s))
        else:
            steps.append(StepPlan(i, "weight", int(step.weight), 0.0, min_req, max_s))
    return shadow, steps


@dataclass
class Decision:
    """What a transition produced. `changed` is False for an idempotent no-op."""

    rollout: Rollout
    events: list[Event] = field(default_factory=list)
    publish: bool = False  # desired routing changed: publish and wait for convergence
    webhooks: list[str] = field(default_factory=list)  # fire-and-record hooks: post-rollout, rollback
    gate: str | None = None  # a gating webhook to ask before going on (confirm-promotion)
    changed: bool = True


class RolloutMachine:
    """Transitions of one rollout under one policy."""

    def __init__(self, policy: RolloutPolicy):
        self.policy = policy
        self.shadow, self.steps = plan(policy)

    # -- helpers -----------------------------------------------------------------
    def current_step(self, rollout: Rollout) -> StepPlan | None:
        if rollout.step == -1:
            return self.shadow
        if 0 <= rollout.step < len(self.steps):
            return self.steps[rollout.step]
        return None

    @staticmethod
    def _event(before: Rollout, after: Rollout, kind: str, reason: str, now: float, verdict=None) -> Event:
        return Event(
            rollout=after.name,
            revision=after.revision,
            kind=kind,
            phase_from=before.phase.value,
            phase_to=after.phase.value,
            step=after.step,
            weight=after.weight,
            reason=reason,
            policy_hash=after.policy_hash,
            verdict=verdict,
            at=now,
        )

    def _decide(self, before: Rollout, now: float, kind: str, reason: str, verdict=None, /, **changes) -> Decision:
        """The new rollout with `changes`, one event explaining it, and whether routing moved.

        `verdict` (positional) is evidence acted on: stored and put on the event. A
        ``verdict=None`` keyword is a change like any other: it clears the stored one.
        """
        if verdict is not None:
            changes["verdict"] = verdict
        after = dataclasses.replace(before, updated_at=now, message=reason, **changes)
        routing_changed = (after.weight, after.mirror, after.phase in SPLITTING) != (
            before.weight, before.mirror, before.phase in SPLITTING)
        if routing_changed:
            after.converged_at = None
        if after.converged_at is None and before.converged_at is not None:
            after.segment += 1  # the samples of this step restart; its judge continues
        decision = Decision(after, [self._event(before, after, kind, reason, now, verdict)], publish=routing_changed)
        return decision

    # -- the forward path ----------------------------------------------------------
    def start(self, rollout: Rollout, now: float) -> Decision:
        """Pending -> the shadow phase or the first step (after pre-rollout hooks passed)."""
        if rollout.phase is not Phase.PENDING:
            raise InvalidAction("start", rollout.phase)
        deadline = self.policy.spec.deadline
        extra = {"deadline_at": now + deadline.total_seconds() if deadline else None}
        if self.shadow is not None:
            return self._decide(
                rollout, now, "phase", f"shadowing: mirroring {self.shadow.mirror:g}% of live traffic to {rollout.canary_version}",
                phase=Phase.SHADOWING, step=-1, weight=0, mirror=self.shadow.mirror, step_started_at=now, gate=None, **extra,
            )
        decision = self.enter_step(dataclasses.replace(rollout, **extra), 0, now)
        return decision

    def enter_step(self, rollout: Rollout, index: int, now: float, why: str = "") -> Decision:
        """Go to step `index`; past the last step (or a 100% step) asks to promote."""
        prefix = f"{why}; " if why else ""
        if index >= len(self.steps) or (self.steps[index].kind == "weight" and self.steps[index].weight >= 100):
            decision = self._decide(
                rollout, now, "gate", f"{prefix}all steps passed: asking confirm-promotion before going to 100%",
                phase=Phase.PROGRESSING, step=min(index, len(self.steps) - 1), gate=GATE_PROMOTION,
                weight_override=None, mirror=0.0,
            )
            decision.gate = GATE_PROMOTION
            return decision
        step = self.steps[index]
        if step.kind == "pause":
            return self._decide(
                rollout, now, "step", f"{prefix}step {index + 1}: manual gate, waiting for promote (or resume to continue)",
                phase=Phase.PAUSED, step=index, gate=GATE_PAUSE_STEP, mirror=0.0, weight_override=None, step_started_at=now,
            )
        return self._decide(
            rollout, now, "step", f"{prefix}step {index + 1}/{len(self.steps)}: {step.weight}% of live traffic to {rollout.canary_version}",
            phase=Phase.PROGRESSING, step=index, weight=step.weight, mirror=0.0, weight_override=None,
            step_started_at=now, gate=None,
        )

    def on_verdict(self, rollout: Rollout, verdict: VerdictLike, now: float) -> Decision | None:
        """Act on a verdict for the current step. None: keep waiting (nothing stored)."""
        if rollout.phase not in (Phase.SHADOWING, Phase.PROGRESSING) or rollout.gate or rollout.converged_at is None:
            return None
        evidence = verdict.to_json()
        if verdict.outcome == "pass":
            nxt = 0 if rollout.step == -1 else rollout.step + 1
            where = "shadow analysis" if rollout.step == -1 else f"step {rollout.step + 1}"
            decision = self.enter_step(rollout, nxt, now, why=f"{where} passed: {verdict.reason}")
            decision.rollout.verdict = evidence
            decision.events[0].verdict = evidence
            return decision
        if verdict.outcome == "fail":
            return self._fail(rollout, now, f"analysis failed: {verdict.reason}", evidence)
        step = self.current_step(rollout)
        started = rollout.step_started_at or now
        if step is not None and step.max_duration_s is not None and now - started >= step.max_duration_s:
            return self._inconclusive(rollout, now, f"no verdict within {step.max_duration_s:g}s: {verdict.reason}", evidence)
        return None

    def on_tick(self, rollout: Rollout, now: float) -> Decision | None:
        """Time-driven rules: the rollout deadline."""
        if rollout.phase in (Phase.PENDING, Phase.ROLLING_BACK) or not rollout.active:
            return None
        if rollout.deadline_at is not None and now >= rollout.deadline_at and rollout.phase is not Phase.HOLDING:
            if rollout.phase is Phase.PAUSED and self.policy.spec.on_inconclusive == "pause":
                return None
            return self._inconclusive(rollout, now, "rollout deadline passed", None)
        return None

    def on_converged(self, rollout: Rollout, now: float) -> Decision | None:
        """The proxies ACKed the routing: analysis may count; a rollback completes."""
        if rollout.converged_at is not None:
            return None
        if rollout.phase is Phase.ROLLING_BACK:
            decision = self._decide(
                rollout, now, "phase", f"rolled back: all traffic on {rollout.stable_version}",
                phase=Phase.ROLLED_BACK, converged_at=now, gate=None,
            )
            decision.webhooks.append("rollback")
            return decision
        return self._decide(
            rollout, now, "converged", "every proxy ACKed this step's routing: counting samples from now", converged_at=now
        )

    def on_gate(self, rollout: Rollout, gate: str, ok: bool, detail: str, now: float) -> Decision:
        """The answer of a gating webhook (confirm-promotion)."""
        if gate != GATE_PROMOTION or rollout.gate != GATE_PROMOTION:
            raise InvalidAction(f"answer gate {gate}", rollout.phase)
        if not ok:
            if rollout.phase is Phase.HOLDING and rollout.message.endswith(detail):
                return Decision(rollout, changed=False)
            return self._decide(
                rollout, now, "gate", f"confirm-promotion refused, holding (never promotes without it): {detail}",
                phase=Phase.HOLDING,
            )
        decision = self._decide(
            rollout, now, "phase", f"promoted: 100% of live traffic to {rollout.canary_version}",
            phase=Phase.SUCCEEDED, weight=100, mirror=0.0, gate=None, weight_override=None,
        )
        decision.webhooks.append("post-rollout")
        return decision

    def _fail(self, rollout: Rollout, now: float, reason: str, verdict) -> Decision:
        if self.policy.spec.on_failure == "pause":
            return self._decide(rollout, now, "verdict", f"{reason}; paused (onFailure: pause)", verdict, phase=Phase.PAUSED)
        return self._rollback(rollout, now, f"{reason}; rolling back (onFailure: rollback)", verdict)

    def _inconclusive(self, rollout: Rollout, now: float, reason: str, verdict) -> Decision:
        if self.policy.spec.on_inconclusive == "rollback":
            return self._rollback(rollout, now, f"{reason}; rolling back (onInconclusive: rollback)", verdict)
        return self._decide(rollout, now, "verdict", f"{reason}; holding (onInconclusive: pause)", verdict,
                            phase=Phase.HOLDING)

    def _rollback(self, rollout: Rollout, now: float, reason: str, verdict) -> Decision:
        return self._decide(
            rollout, now, "verdict" if verdict else "phase", reason, verdict,
            phase=Phase.ROLLING_BACK, weight=0, mirror=0.0, gate=None, weight_override=None,
        )

    # -- new revisions of the policy ------------------------------------------------------------
    def revise(self, rollout: Rollout, *, policy_json: dict, digest: str, changes: tuple[str, ...], reason: str,
               now: float) -> Decision:
        """An active rollout takes a changed policy (``self.policy``) in place, as its next revision.

        The current step is kept where it still exists (its weight follows the
        new policy unless an operator set one); a step that no longer exists
        moves the rollout to the new last step; a removed shadow phase moves
        it to the first step. Changed analysis starts the current step's test
        again (a new analysis run); anything else keeps the test going.
        """
        base = dataclasses.replace(
            rollout, policy=policy_json, policy_hash=digest, revision=rollout.revision + 1,
            analysis_run=rollout.analysis_run + (1 if "analysis" in changes else 0),
        )
        deadline = self.policy.spec.deadline
        if "deadline" in changes and rollout.phase is not Phase.PENDING:
            base.deadline_at = (rollout.created_at + deadline.total_seconds()) if deadline else None
        where = None
        if rollout.phase is Phase.PENDING:
            decision = self._decide(base, now, "revised", reason)
        elif rollout.step == -1 and self.shadow is None and rollout.phase in (Phase.SHADOWING, Phase.PAUSED, Phase.HOLDING):
            decision = self.enter_step(base, 0, now, why=f"{reason}; the shadow phase was removed")
        elif rollout.step == -1 and self.shadow is not None and rollout.phase in SPLITTING:
            decision = self._decide(base, now, "revised", reason, mirror=self.shadow.mirror)
        elif rollout.step >= len(self.steps):
            decision = self.enter_step(base, len(self.steps) - 1, now, why=f"{reason}; step {rollout.step + 1} no longer exists")
        elif rollout.step >= 0:
            step = self.steps[rollout.step]
            if step.kind == "pause" and rollout.gate != GATE_PAUSE_STEP and rollout.phase in (Phase.PROGRESSING, Phase.HOLDING):
                decision = self.enter_step(base, rollout.step, now, why=f"{reason}; step {rollout.step + 1} is now a manual gate")
            elif step.kind == "weight" and rollout.gate == GATE_PAUSE_STEP:
                decision = self.enter_step(dataclasses.replace(base, gate=None), rollout.step, now,
                                           why=f"{reason}; step {rollout.step + 1} is no longer a manual gate")
            else:
                changes_: dict[str, Any] = {}
                if step.kind == "weight" and rollout.weight_override is None and rollout.phase in SPLITTING and rollout.gate is None:
                    changes_["weight"] = step.weight
                    if step.weight >= 100:
                        return self.enter_step(base, rollout.step, now, why=reason)
                where = f"; staying at step {rollout.step + 1}"
                decision = self._decide(base, now, "revised", reason + where, **changes_)
        else:
            decision = self._decide(base, now, "revised", reason)
        if "analysis" in changes and decision.rollout.converged_at is not None:
            decision.rollout.step_started_at = now
        return decision

    def restart(self, rollout: Rollout, *, policy_json: dict, digest: str, canary_version: str, stable_version: str,
                reason: str, now: float) -> Decision:
        """The canary changed (version or endpoints): start again from the first step, as the next revision."""
        base = dataclasses.replace(
            rollout, policy=policy_json, policy_hash=digest, revision=rollout.revision + 1,
            canary_version=canary_version, stable_version=stable_version, analysis_run=rollout.analysis_run + 1,
        )
        return self._decide(
            base, now, "restarted", reason, phase=Phase.PENDING, step=-1, weight=0, mirror=0.0, weight_override=None,
            gate=None, verdict=None, step_started_at=None, deadline_at=None, converged_at=None, canary_endpoints=None,
        )

    # -- operator actions -------------------------------------------------------------
    def act(self, rollout: Rollout, action: str, now: float, weight: int | None = None) -> Decision:
        """pause | resume | promote | abort | retry | set-weight. Idempotent; 409 when invalid."""
        phase = rollout.phase
        if action == "pause":
            if phase is Phase.PAUSED:
                return Decision(rollout, changed=False)
            if phase not in (Phase.PENDING, Phase.SHADOWING, Phase.PROGRESSING, Phase.HOLDING):
                raise InvalidAction(action, phase, "only a pending, shadowing, progressing or holding rollout can pause")
            return self._decide(rollout, now, "action", "paused", phase=Phase.PAUSED)
        if action == "resume":
            if phase in (Phase.PROGRESSING, Phase.SHADOWING, Phase.PENDING):
                return Decision(rollout, changed=False)
            if phase not in (Phase.PAUSED, Phase.HOLDING):
                raise InvalidAction(action, phase, "only a paused or holding rollout can resume")
            if rollout.gate == GATE_PAUSE_STEP:
                return self.enter_step(dataclasses.replace(rollout, gate=None), rollout.step + 1, now, "resumed past the manual gate")
            if rollout.gate == GATE_PROMOTION:
                decision = self._decide(rollout, now, "action", "resumed: asking confirm-promotion again", phase=Phase.PROGRESSING)
                decision.gate = GATE_PROMOTION
                return decision
            if rollout.step == -1 and rollout.step_started_at is None:
                return self._decide(rollout, now, "action", "resumed: starting the rollout", phase=Phase.PENDING)
            if rollout.step == -1:
                return self._decide(rollout, now, "action", "resumed shadow analysis", phase=Phase.SHADOWING,
                                    step_started_at=now, converged_at=None)
            return self._decide(rollout, now, "action", f"resumed step {rollout.step + 1}", phase=Phase.PROGRESSING,
                                step_started_at=now, converged_at=None)
        if action == "promote":
            if phase is Phase.SUCCEEDED:
                return Decision(rollout, changed=False)
            if phase not in ACTIVE or phase is Phase.ROLLING_BACK:
                raise InvalidAction(action, phase, "only an active rollout can be promoted")
            if rollout.gate == GATE_PROMOTION and phase is Phase.PROGRESSING:
                return Decision(rollout, changed=False)
            decision = self._decide(
                rollout, now, "action", "promote requested: asking confirm-promotion before going to 100%",
                phase=Phase.PROGRESSING, gate=GATE_PROMOTION,
            )
            decision.gate = GATE_PROMOTION
            return decision
        if action == "abort":
            if phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
                return Decision(rollout, changed=False)
            if phase not in ACTIVE:
                raise InvalidAction(action, phase, "only an active rollout can be aborted")
            return self._rollback(rollout, now, "aborted: rolling back", None)
        if action == "retry":
            if phase not in (Phase.ROLLED_BACK, Phase.FAILED):
                raise InvalidAction(action, phase, "only a rolled-back or failed rollout can be retried")
            return self._decide(
                rollout, now, "action", "retry requested: starting again from the first step",
                phase=Phase.PENDING, step=-1, weight=0, mirror=0.0, weight_override=None, gate=None,
                verdict=None, step_started_at=None, deadline_at=None, converged_at=None,
                analysis_run=rollout.analysis_run + 1,
            )
        if action == "set-weight":
            if weight is None or not 0 <= weight <= 100:
                raise ValueError(f"weight: must be between 0 and 100 (got {weight})")
            if phase not in (Phase.PROGRESSING, Phase.PAUSED, Phase.HOLDING) or rollout.step < 0:
                raise InvalidAction(action, phase, "the weight can be set once canary steps run (progressing, paused or holding)")
            if rollout.weight == weight and rollout.weight_override == weight:
                return Decision(rollout, changed=False)
            return self._decide(
                rollout, now, "action", f"weight set to {weight}% (analysis restarts)",
                weight=weight, weight_override=weight, step_started_at=now,
            )
        raise ValueError(f"unknown action {action!r}; expected one of pause, resume, promote, abort, retry, set-weight")
