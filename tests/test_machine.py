"""The rollout state machine, one transition at a time, with the expected rollout written out by hand.

The property test (test_machine_properties.py) checks invariants over random
runs; these pin what each transition does: the deadline, resume at a plain
pause versus a manual gate, promote on a finished rollout, the verdict kept
with the decision, a policy whose last step is not 100%, revisions and
restarts, and every operator action. Expected values come from the policy
text (weights, durations) and from the documented rules, not from the code.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import yaml

from analysis.analyzer import SimpleVerdict
from control_plane.rollouts.machine import (
    DEFAULT_MIN_REQUESTS,
    GATE_PAUSE_STEP,
    GATE_PROMOTION,
    RolloutMachine,
    StepPlan,
    plan,
)
from control_plane.rollouts.model import InvalidAction, Phase, Rollout
from policies import RolloutPolicy

BASE = yaml.safe_load(open("policies/examples/minimal.yaml"))
T0 = 1000.0


def policy(steps=(10, 50, 100), **spec) -> RolloutPolicy:
    data = copy.deepcopy(BASE)
    data["spec"]["strategy"]["canary"]["steps"] = [
        s if isinstance(s, dict) else ({"pause": {}} if s == "pause" else {"weight": s}) for s in steps
    ]
    shadow = spec.pop("shadow", None)
    if shadow is not None:
        data["spec"]["strategy"]["shadow"] = shadow
    data["spec"].update(spec)
    return RolloutPolicy.model_validate(data)


def machine(steps=(10, 50, 100), **spec) -> RolloutMachine:
    return RolloutMachine(policy(steps, **spec))


def fresh(**changes) -> Rollout:
    r = Rollout(name="echo", service="echo", group="*", policy={}, policy_hash="h1", stable_version="v1",
                canary_version="v2", created_at=T0, updated_at=T0)
    return dataclasses.replace(r, **changes)


def ok(reason="looks fine"):
    return SimpleVerdict("pass", reason, {"n": 1})


def bad(reason="errors up"):
    return SimpleVerdict("fail", reason, {"n": 2})


def unsure(reason="too few samples"):
    return SimpleVerdict("inconclusive", reason, {"n": 3})


def converged(m: RolloutMachine, r: Rollout, now: float) -> Rollout:
    d = m.on_converged(r, now)
    assert d is not None
    return d.rollout


def running(m: RolloutMachine, now: float = T0) -> Rollout:
    """Started at T0 and converged at `now`."""
    return converged(m, m.start(fresh(), T0).rollout, now)


# ------------------------------------------------------------------------------------------- plan


def test_plan_reads_steps_and_shadow_from_the_policy():
    p = policy(
        [{"weight": 10, "maxDuration": "60s", "minRequests": 50}, "pause", {"weight": 100}],
        shadow={"percent": 25, "minRequests": 10, "maxDuration": "5m"},
    )
    shadow, steps = plan(p)
    assert shadow == StepPlan(-1, "shadow", 0, 25.0, 10, 300.0)
    assert steps == [
        StepPlan(0, "weight", 10, 0.0, 50, 60.0),
        StepPlan(1, "pause", 0, 0.0, 200, None),
        StepPlan(2, "weight", 100, 0.0, 200, None),
    ]
    assert DEFAULT_MIN_REQUESTS == 200
    assert plan(policy())[0] is None


# ------------------------------------------------------------------------------------------- start


def test_start_goes_to_the_first_step_and_sets_the_deadline():
    m = machine(deadline="2h")
    d = m.start(fresh(), T0)
    r = d.rollout
    assert (r.phase, r.step, r.weight, r.mirror, r.gate) == (Phase.PROGRESSING, 0, 10, 0.0, None)
    assert r.deadline_at == T0 + 7200
    assert r.step_started_at == T0 and r.updated_at == T0 and r.converged_at is None
    assert d.publish is True and d.gate is None and d.webhooks == []
    [e] = d.events
    assert (e.kind, e.phase_from, e.phase_to, e.step, e.weight, e.at) == ("step", "Pending", "Progressing", 0, 10, T0)
    assert e.reason == r.message == "step 1/3: 10% of live traffic to v2"
    with pytest.raises(InvalidAction):
        m.start(r, T0)


def test_start_without_deadline_has_none_and_shadow_mirrors_first():
    assert machine().start(fresh(), T0).rollout.deadline_at is None
    m = machine(shadow={"percent": 25, "minRequests": 10, "maxDuration": "5m"}, deadline="30m")
    d = m.start(fresh(), T0)
    r = d.rollout
    assert (r.phase, r.step, r.weight, r.mirror, r.step_started_at) == (Phase.SHADOWING, -1, 0, 25.0, T0)
    assert r.deadline_at == T0 + 1800
    assert d.publish is True
    assert d.events[0].kind == "phase"
    assert r.message == "shadowing: mirroring 25% of live traffic to v2"


# ------------------------------------------------------------------------------------------- deadline


def test_the_deadline_fires_exactly_when_it_passes_and_holds():
    m = machine(deadline="2h")
    r = running(m, T0 + 5)
    assert m.on_tick(r, T0 + 7199.999) is None
    d = m.on_tick(r, T0 + 7200)
    assert d is not None
    assert d.rollout.phase is Phase.HOLDING
    assert d.rollout.weight == 10 and d.publish is False
    assert d.rollout.message == "rollout deadline passed; holding (onInconclusive: pause)"
    assert d.rollout.verdict is None and d.events[0].kind == "verdict"
    # Holding already: the deadline does not fire again.
    assert m.on_tick(d.rollout, T0 + 9000) is None


def test_the_deadline_rolls_back_when_inconclusive_means_rollback():
    m = machine(deadline="10m", onInconclusive="rollback")
    r = running(m)
    assert m.on_tick(r, T0 + 599) is None
    d = m.on_tick(r, T0 + 600)
    assert (d.rollout.phase, d.rollout.weight, d.rollout.mirror, d.publish) == (Phase.ROLLING_BACK, 0, 0.0, True)
    assert d.events[0].kind == "phase"
    assert d.rollout.message == "rollout deadline passed; rolling back (onInconclusive: rollback)"


def test_the_deadline_never_fires_without_one_or_in_phases_it_does_not_govern():
    m = machine()
    r = running(m)
    assert r.deadline_at is None and m.on_tick(r, T0 + 1e9) is None
    m = machine(deadline="1h")
    past = T0 + 3600
    assert m.on_tick(fresh(deadline_at=T0), past) is None  # pending
    r = running(m)
    for phase in (Phase.ROLLING_BACK, Phase.SUCCEEDED, Phase.ROLLED_BACK, Phase.FAILED, Phase.HOLDING):
        assert m.on_tick(dataclasses.replace(r, phase=phase), past) is None, phase
    # Paused with onInconclusive: pause it waits for the operator; with rollback it rolls back.
    paused = m.act(r, "pause", T0 + 1).rollout
    assert m.on_tick(paused, past) is None
    m2 = machine(deadline="1h", onInconclusive="rollback")
    assert m2.on_tick(paused, past).rollout.phase is Phase.ROLLING_BACK
    # Shadowing is governed too.
    ms = machine(deadline="1h", shadow={"percent": 100, "minRequests": 10, "maxDuration": "2h"})
    shadowing = ms.start(fresh(), T0).rollout
    assert ms.on_tick(shadowing, past - 1) is None
    assert ms.on_tick(shadowing, past).rollout.phase is Phase.HOLDING


# ------------------------------------------------------------------------------------------- verdicts


def test_a_verdict_counts_only_once_the_step_converged_and_no_gate_waits():
    m = machine()
    started = m.start(fresh(), T0).rollout
    assert m.on_verdict(started, ok(), T0 + 1) is None  # not converged yet
    r = converged(m, started, T0 + 2)
    assert m.on_verdict(dataclasses.replace(r, gate=GATE_PROMOTION), ok(), T0 + 3) is None
    for phase in (Phase.PAUSED, Phase.HOLDING, Phase.PENDING, Phase.ROLLING_BACK, Phase.SUCCEEDED):
        assert m.on_verdict(dataclasses.replace(r, phase=phase), bad(), T0 + 3) is None, phase


def test_a_pass_moves_to_the_next_step_and_keeps_the_verdict():
    m = machine()
    r = running(m, T0 + 2)
    d = m.on_verdict(r, ok("fine"), T0 + 10)
    assert (d.rollout.phase, d.rollout.step, d.rollout.weight) == (Phase.PROGRESSING, 1, 50)
    assert d.rollout.verdict == {"outcome": "pass", "reason": "fine", "evidence": {"n": 1}, "samples_needed": None}
    assert d.events[0].verdict == d.rollout.verdict
    assert d.rollout.message == "step 1 passed: fine; step 2/3: 50% of live traffic to v2"
    assert d.rollout.converged_at is None and d.rollout.step_started_at == T0 + 10 and d.publish


def test_a_pass_of_the_shadow_phase_goes_to_step_one():
    m = machine(shadow={"percent": 50, "minRequests": 10, "maxDuration": "5m"})
    r = converged(m, m.start(fresh(), T0).rollout, T0 + 1)
    d = m.on_verdict(r, ok("same answers"), T0 + 5)
    assert (d.rollout.phase, d.rollout.step, d.rollout.weight, d.rollout.mirror) == (Phase.PROGRESSING, 0, 10, 0.0)
    assert d.rollout.message == "shadow analysis passed: same answers; step 1/3: 10% of live traffic to v2"


def test_a_failing_verdict_is_kept_and_rolls_back_or_pauses():
    m = machine()
    r = running(m, T0 + 2)
    d = m.on_verdict(r, bad("5xx"), T0 + 20)
    expected = {"outcome": "fail", "reason": "5xx", "evidence": {"n": 2}, "samples_needed": None}
    assert d.rollout.verdict == expected and d.events[0].verdict == expected
    assert (d.rollout.phase, d.rollout.weight, d.rollout.gate, d.publish) == (Phase.ROLLING_BACK, 0, None, True)
    assert d.events[0].kind == "verdict"
    assert d.rollout.message == "analysis failed: 5xx; rolling back (onFailure: rollback)"

    m = machine(onFailure="pause")
    r = running(m, T0 + 2)
    d = m.on_verdict(r, bad("5xx"), T0 + 20)
    assert d.rollout.verdict == expected and d.events[0].verdict == expected
    assert (d.rollout.phase, d.rollout.weight, d.publish) == (Phase.PAUSED, 10, False)
    assert d.rollout.message == "analysis failed: 5xx; paused (onFailure: pause)"


def test_an_inconclusive_verdict_waits_until_max_duration_then_is_kept():
    m = machine([{"weight": 10, "maxDuration": "60s"}, {"weight": 100}])
    r = running(m, T0 + 2)
    assert m.on_verdict(r, unsure(), T0 + 59.9) is None
    d = m.on_verdict(r, unsure("n=3"), T0 + 60)
    expected = {"outcome": "inconclusive", "reason": "n=3", "evidence": {"n": 3}, "samples_needed": None}
    assert d.rollout.phase is Phase.HOLDING
    assert d.rollout.verdict == expected and d.events[0].verdict == expected
    assert d.rollout.message == "no verdict within 60s: n=3; holding (onInconclusive: pause)"
    m = machine([{"weight": 10, "maxDuration": "60s"}, {"weight": 100}], onInconclusive="rollback")
    d = m.on_verdict(running(m, T0 + 2), unsure("n=3"), T0 + 61)
    assert d.rollout.phase is Phase.ROLLING_BACK and d.rollout.verdict == expected
    assert d.rollout.message == "no verdict within 60s: n=3; rolling back (onInconclusive: rollback)"
    # Without maxDuration an inconclusive step waits for ever (the deadline is the bound).
    m = machine()
    assert m.on_verdict(running(m), unsure(), T0 + 1e9) is None


# ------------------------------------------------------------------------------------------- promotion


def test_a_last_step_below_100_asks_to_promote_after_it_passes():
    m = machine([10, 50])
    r = running(m, T0 + 1)
    r = converged(m, m.on_verdict(r, ok(), T0 + 10).rollout, T0 + 11)
    d = m.on_verdict(r, ok("step two fine"), T0 + 20)
    r = d.rollout
    assert (r.phase, r.step, r.weight, r.gate) == (Phase.PROGRESSING, 1, 50, GATE_PROMOTION)
    assert d.gate == GATE_PROMOTION and d.publish is False
    assert r.message == "step 2 passed: step two fine; all steps passed: asking confirm-promotion before going to 100%"
    assert d.events[0].kind == "gate"
    done = m.on_gate(r, GATE_PROMOTION, True, "HTTP 200", T0 + 21)
    assert (done.rollout.phase, done.rollout.weight, done.rollout.gate, done.publish) == (Phase.SUCCEEDED, 100, None, True)
    assert done.webhooks == ["post-rollout"]
    assert done.rollout.message == "promoted: 100% of live traffic to v2"


def test_a_100_step_is_not_entered_but_asks_to_promote():
    m = machine([10, 100])
    d = m.on_verdict(running(m, T0 + 1), ok(), T0 + 10)
    assert (d.rollout.step, d.rollout.weight, d.rollout.gate, d.gate) == (1, 10, GATE_PROMOTION, GATE_PROMOTION)


def test_the_gate_answer():
    m = machine([10, 100])
    r = m.on_verdict(running(m, T0 + 1), ok(), T0 + 10).rollout
    with pytest.raises(InvalidAction):
        m.on_gate(r, "pre-rollout", True, "", T0)
    with pytest.raises(InvalidAction):
        m.on_gate(dataclasses.replace(r, gate=None), GATE_PROMOTION, True, "", T0)
    no = m.on_gate(r, GATE_PROMOTION, False, "HTTP 503", T0 + 11)
    assert (no.rollout.phase, no.rollout.gate, no.rollout.weight) == (Phase.HOLDING, GATE_PROMOTION, 10)
    assert no.rollout.message == "confirm-promotion refused, holding (never promotes without it): HTTP 503"
    assert no.webhooks == []
    again = m.on_gate(no.rollout, GATE_PROMOTION, False, "HTTP 503", T0 + 16)
    assert again.changed is False and again.rollout is no.rollout and again.events == []
    other = m.on_gate(no.rollout, GATE_PROMOTION, False, "HTTP 500", T0 + 16)
    assert other.changed and other.rollout.message.endswith("HTTP 500")
    yes = m.on_gate(dataclasses.replace(no.rollout, weight_override=30), GATE_PROMOTION, True, "ok", T0 + 20)
    assert (yes.rollout.phase, yes.rollout.weight, yes.rollout.weight_override) == (Phase.SUCCEEDED, 100, None)


# ------------------------------------------------------------------------------------------- convergence


def test_convergence_starts_counting_and_completes_a_rollback():
    m = machine()
    started = m.start(fresh(), T0).rollout
    d = m.on_converged(started, T0 + 3)
    assert d.rollout.converged_at == T0 + 3 and d.rollout.phase is Phase.PROGRESSING and d.publish is False
    assert d.events[0].kind == "converged" and d.rollout.segment == 0
    assert d.rollout.message == "every proxy ACKed this step's routing: counting samples from now"
    assert m.on_converged(d.rollout, T0 + 4) is None
    back = m.act(d.rollout, "abort", T0 + 5).rollout
    assert back.converged_at is None and back.segment == 1  # routing changed: the step's samples restart
    done = m.on_converged(back, T0 + 6)
    assert (done.rollout.phase, done.rollout.converged_at, done.webhooks) == (Phase.ROLLED_BACK, T0 + 6, ["rollback"])
    assert done.rollout.message == "rolled back: all traffic on v1"


# ------------------------------------------------------------------------------------------- operator actions


def test_resume_at_a_plain_pause_continues_the_same_step():
    m = machine([10, "pause", 50, 100])
    r = running(m, T0 + 1)
    paused = m.act(r, "pause", T0 + 10)
    assert (paused.rollout.phase, paused.rollout.weight, paused.publish) == (Phase.PAUSED, 10, False)
    assert paused.rollout.converged_at == T0 + 1 and paused.rollout.message == "paused"
    assert paused.events[0].kind == "action"
    assert m.act(paused.rollout, "pause", T0 + 11).changed is False
    d = m.act(paused.rollout, "resume", T0 + 20)
    r2 = d.rollout
    assert (r2.phase, r2.step, r2.weight, r2.gate) == (Phase.PROGRESSING, 0, 10, None)
    assert r2.step_started_at == T0 + 20 and r2.converged_at is None and r2.segment == 1
    assert r2.message == "resumed step 1" and d.events[0].kind == "action"


def test_resume_at_a_manual_gate_goes_past_it():
    m = machine([10, "pause", 50, 100])
    r = running(m, T0 + 1)
    gate = m.on_verdict(r, ok(), T0 + 10).rollout
    assert (gate.phase, gate.step, gate.gate, gate.weight) == (Phase.PAUSED, 1, GATE_PAUSE_STEP, 10)
    assert gate.message == "step 1 passed: looks fine; step 2: manual gate, waiting for promote (or resume to continue)"
    d = m.act(gate, "resume", T0 + 20)
    r2 = d.rollout
    assert (r2.phase, r2.step, r2.weight, r2.gate) == (Phase.PROGRESSING, 2, 50, None)
    assert r2.message == "resumed past the manual gate; step 3/4: 50% of live traffic to v2"
    assert d.publish is True


def test_resume_elsewhere():
    m = machine([10, 100], shadow={"percent": 100, "minRequests": 10, "maxDuration": "5m"})
    # Paused before it started: resume starts it.
    pending_paused = m.act(fresh(), "pause", T0).rollout
    assert pending_paused.phase is Phase.PAUSED
    d = m.act(pending_paused, "resume", T0 + 1)
    assert d.rollout.phase is Phase.PENDING and d.rollout.message == "resumed: starting the rollout"
    # Paused while shadowing: the shadow analysis resumes.
    shadow = converged(m, m.start(fresh(), T0).rollout, T0 + 1)
    d = m.act(m.act(shadow, "pause", T0 + 2).rollout, "resume", T0 + 3)
    assert (d.rollout.phase, d.rollout.step_started_at, d.rollout.converged_at) == (Phase.SHADOWING, T0 + 3, None)
    assert d.rollout.message == "resumed shadow analysis"
    # Holding on a refused confirm-promotion: resume asks again.
    m = machine([10, 100])
    r = m.on_verdict(running(m, T0 + 1), ok(), T0 + 2).rollout
    held = m.on_gate(r, GATE_PROMOTION, False, "no", T0 + 3).rollout
    d = m.act(held, "resume", T0 + 4)
    assert (d.rollout.phase, d.rollout.gate, d.gate) == (Phase.PROGRESSING, GATE_PROMOTION, GATE_PROMOTION)
    assert d.rollout.message == "resumed: asking confirm-promotion again" and d.events[0].kind == "action"
    # No-ops and refusals.
    for phase in (Phase.PROGRESSING, Phase.SHADOWING, Phase.PENDING):
        assert m.act(dataclasses.replace(r, phase=phase), "resume", T0).changed is False
    for phase in (Phase.SUCCEEDED, Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED):
        with pytest.raises(InvalidAction):
            m.act(dataclasses.replace(r, phase=phase), "resume", T0)


def test_pause_refused_once_finished_or_rolling_back():
    m = machine()
    r = running(m)
    for phase in (Phase.SUCCEEDED, Phase.ROLLING_BACK, Phase.ROLLED_BACK, Phase.FAILED):
        with pytest.raises(InvalidAction):
            m.act(dataclasses.replace(r, phase=phase), "pause", T0)
    held = dataclasses.replace(r, phase=Phase.HOLDING)
    assert m.act(held, "pause", T0).rollout.phase is Phase.PAUSED


def test_promote_asks_the_gate_and_never_revives_a_finished_rollout():
    m = machine([10, "pause", 50, 100])
    r = running(m, T0 + 1)
    d = m.act(r, "promote", T0 + 5)
    assert (d.rollout.phase, d.rollout.gate, d.gate, d.rollout.weight) == (Phase.PROGRESSING, GATE_PROMOTION, GATE_PROMOTION, 10)
    assert d.rollout.message == "promote requested: asking confirm-promotion before going to 100%"
    assert d.events[0].kind == "action" and d.publish is False
    assert m.act(d.rollout, "promote", T0 + 6).changed is False
    # At a manual gate (Paused) promote asks the gate too.
    gate = m.on_verdict(r, ok(), T0 + 10).rollout
    d = m.act(gate, "promote", T0 + 11)
    assert (d.rollout.phase, d.rollout.gate) == (Phase.PROGRESSING, GATE_PROMOTION)
    assert m.act(dataclasses.replace(r, phase=Phase.SUCCEEDED, weight=100), "promote", T0).changed is False
    for phase in (Phase.ROLLED_BACK, Phase.FAILED, Phase.ROLLING_BACK):
        with pytest.raises(InvalidAction):
            m.act(dataclasses.replace(r, phase=phase, weight=0), "promote", T0)


def test_abort_and_retry():
    m = machine(deadline="1h")
    r = running(m, T0 + 1)
    d = m.act(r, "abort", T0 + 5)
    assert (d.rollout.phase, d.rollout.weight, d.rollout.mirror, d.publish) == (Phase.ROLLING_BACK, 0, 0.0, True)
    assert d.rollout.message == "aborted: rolling back" and d.events[0].kind == "phase" and d.rollout.verdict is None
    assert m.act(d.rollout, "abort", T0 + 6).changed is False
    back = m.on_converged(d.rollout, T0 + 7).rollout
    assert m.act(back, "abort", T0 + 8).changed is False
    with pytest.raises(InvalidAction):
        m.act(dataclasses.replace(r, phase=Phase.SUCCEEDED), "abort", T0)
    with pytest.raises(InvalidAction):
        m.act(dataclasses.replace(r, phase=Phase.FAILED), "abort", T0)
    for finished in (back, dataclasses.replace(back, phase=Phase.FAILED)):
        again = m.act(dataclasses.replace(finished, verdict={"outcome": "fail"}), "retry", T0 + 9).rollout
        assert (again.phase, again.step, again.weight, again.verdict, again.deadline_at) == (Phase.PENDING, -1, 0, None, None)
        assert again.analysis_run == r.analysis_run + 1 and again.converged_at is None and again.step_started_at is None
        assert again.message == "retry requested: starting again from the first step"
        assert again.mirror == 0.0 and again.gate is None and again.weight_override is None
    for phase in (Phase.PROGRESSING, Phase.SUCCEEDED, Phase.PENDING, Phase.ROLLING_BACK):
        with pytest.raises(InvalidAction):
            m.act(dataclasses.replace(r, phase=phase), "retry", T0)


def test_set_weight():
    m = machine()
    r = running(m, T0 + 1)
    d = m.act(r, "set-weight", T0 + 5, weight=30)
    assert (d.rollout.weight, d.rollout.weight_override, d.rollout.step_started_at) == (30, 30, T0 + 5)
    assert d.publish is True and d.rollout.converged_at is None and d.rollout.segment == 1
    assert d.rollout.message == "weight set to 30% (analysis restarts)" and d.events[0].kind == "action"
    same = m.act(d.rollout, "set-weight", T0 + 6, weight=30)
    assert same.changed is False and same.rollout is d.rollout and same.events == []
    assert m.act(dataclasses.replace(r, weight_override=10), "set-weight", T0 + 6, weight=10).changed is False
    assert m.act(r, "set-weight", T0 + 6, weight=10).changed is True  # same weight, but now an override
    for w in (0, 100):
        assert m.act(r, "set-weight", T0, weight=w).rollout.weight == w
    for w in (None, -1, 101):
        with pytest.raises(ValueError):
            m.act(r, "set-weight", T0, weight=w)
    for phase in (Phase.PAUSED, Phase.HOLDING):
        assert m.act(dataclasses.replace(r, phase=phase), "set-weight", T0, weight=20).rollout.weight == 20
    for bad_state in (dataclasses.replace(r, phase=Phase.SHADOWING), dataclasses.replace(r, phase=Phase.PENDING),
                      dataclasses.replace(r, phase=Phase.SUCCEEDED), dataclasses.replace(r, step=-1)):
        with pytest.raises(InvalidAction):
            m.act(bad_state, "set-weight", T0, weight=20)
    with pytest.raises(ValueError, match="unknown action"):
        m.act(r, "skip", T0)


# ------------------------------------------------------------------------------------------- revisions


def revise(m, r, changes=("steps",), reason="policy updated", now=T0 + 100):
    return m.revise(r, policy_json={"new": True}, digest="h2", changes=changes, reason=reason, now=now)


def test_revise_keeps_the_step_and_follows_its_new_weight():
    r = running(machine(), T0 + 1)
    d = revise(machine([20, 50, 100]), r)
    assert (d.rollout.revision, d.rollout.policy, d.rollout.policy_hash) == (2, {"new": True}, "h2")
    assert (d.rollout.step, d.rollout.weight, d.publish) == (0, 20, True)
    assert d.rollout.message == "policy updated; staying at step 1"
    assert d.rollout.analysis_run == 1 and d.rollout.step_started_at == T0 and d.events[0].kind == "revised"
    # An operator's weight holds; so does the weight while a gate is asked.
    d = revise(machine([20, 50, 100]), dataclasses.replace(r, weight=30, weight_override=30))
    assert (d.rollout.weight, d.publish) == (30, False)
    d = revise(machine([20, 50, 100]), dataclasses.replace(r, gate=GATE_PROMOTION))
    assert d.rollout.weight == 10
    # The current step is now 100%: ask to promote instead.
    d = revise(machine([100]), r)
    assert (d.rollout.gate, d.gate, d.rollout.weight) == (GATE_PROMOTION, GATE_PROMOTION, 10)


def test_revise_with_changed_analysis_starts_the_test_again():
    r = running(machine(), T0 + 1)
    d = revise(machine(), r, changes=("analysis",), now=T0 + 50)
    assert d.rollout.analysis_run == 2 and d.rollout.step_started_at == T0 + 50
    not_converged = machine().start(fresh(), T0).rollout
    d = revise(machine(), not_converged, changes=("analysis",), now=T0 + 50)
    assert d.rollout.analysis_run == 2 and d.rollout.step_started_at == T0


def test_revise_the_deadline_counts_from_creation():
    r = running(machine(deadline="1h"), T0 + 1)
    assert r.deadline_at == T0 + 3600
    assert revise(machine(deadline="3h"), r, changes=("deadline",)).rollout.deadline_at == T0 + 3 * 3600
    assert revise(machine(), r, changes=("deadline",)).rollout.deadline_at is None
    assert revise(machine(deadline="3h"), r, changes=("steps",)).rollout.deadline_at == T0 + 3600
    pending = revise(machine(deadline="3h"), fresh(), changes=("deadline",))
    assert pending.rollout.deadline_at is None and pending.rollout.phase is Phase.PENDING
    assert pending.rollout.message == "policy updated" and pending.events[0].kind == "revised"


def test_revise_moves_off_steps_and_gates_that_changed():
    four = machine([10, 20, 50, 100])
    r = running(four, T0 + 1)
    at3 = dataclasses.replace(r, step=2, weight=50)
    d = revise(machine([10, 30]), at3)
    assert (d.rollout.step, d.rollout.weight) == (1, 30)
    assert d.rollout.message == "policy updated; step 3 no longer exists; step 2/2: 30% of live traffic to v2"
    assert d.rollout.updated_at == d.rollout.step_started_at == d.events[0].at == T0 + 100
    at2 = dataclasses.replace(r, step=1, weight=20)
    d = revise(machine([10, "pause", 100]), at2)
    assert (d.rollout.phase, d.rollout.gate, d.rollout.step) == (Phase.PAUSED, GATE_PAUSE_STEP, 1)
    assert d.rollout.message.startswith("policy updated; step 2 is now a manual gate; step 2: manual gate")
    gated = revise(machine([10, "pause", 100]), at2).rollout
    d = revise(machine([10, 40, 100]), gated)
    assert (d.rollout.phase, d.rollout.gate, d.rollout.weight) == (Phase.PROGRESSING, None, 40)
    assert d.rollout.message == "policy updated; step 2 is no longer a manual gate; step 2/3: 40% of live traffic to v2"
    # Still a manual gate: nothing moves.
    d = revise(machine([10, "pause", 50, 100]), gated)
    assert (d.rollout.phase, d.rollout.gate, d.rollout.step) == (Phase.PAUSED, GATE_PAUSE_STEP, 1)


def test_revise_the_shadow_phase():
    shadow = {"percent": 20, "minRequests": 10, "maxDuration": "5m"}
    m = machine(shadow=shadow)
    r = converged(m, m.start(fresh(), T0).rollout, T0 + 1)
    d = revise(machine(shadow={**shadow, "percent": 40}), r)
    assert (d.rollout.phase, d.rollout.mirror, d.publish) == (Phase.SHADOWING, 40.0, True)
    d = revise(machine(), r)
    assert (d.rollout.phase, d.rollout.step, d.rollout.weight, d.rollout.mirror) == (Phase.PROGRESSING, 0, 10, 0.0)
    assert d.rollout.message == "policy updated; the shadow phase was removed; step 1/3: 10% of live traffic to v2"
    assert d.rollout.updated_at == d.rollout.step_started_at == d.events[0].at == T0 + 100


def test_restart_starts_again_from_pending():
    m = machine(deadline="1h")
    r = dataclasses.replace(running(m, T0 + 1), verdict={"outcome": "pass"}, canary_endpoints=["10.0.0.9:80"])
    d = m.restart(r, policy_json={"v": 3}, digest="h3", canary_version="v3", stable_version="v1",
                  reason="canary changed", now=T0 + 9)
    x = d.rollout
    assert (x.phase, x.step, x.weight, x.mirror, x.gate, x.verdict) == (Phase.PENDING, -1, 0, 0.0, None, None)
    assert (x.canary_version, x.stable_version, x.revision, x.policy_hash, x.analysis_run) == ("v3", "v1", 2, "h3", 2)
    assert (x.deadline_at, x.step_started_at, x.converged_at, x.canary_endpoints) == (None, None, None, None)
    assert d.events[0].kind == "restarted" and x.message == "canary changed" and d.publish is True
