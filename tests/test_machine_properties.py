"""Hypothesis state machine: random actions, verdicts, ticks and gate answers.

Invariants: the phase is always legal for what happened; promotion only ever
follows a "yes" from confirm-promotion; a rolled-back rollout sends nothing to
the canary; every change is explained by an event, and the events chain (each
event starts in the phase the previous one ended in), so none is lost.
"""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from analysis.analyzer import SimpleVerdict
from control_plane.rollouts.machine import GATE_PROMOTION, RolloutMachine
from control_plane.rollouts.model import ACTIONS, InvalidAction, Phase, Rollout
from policies import RolloutPolicy

BASE = yaml.safe_load(open("policies/examples/minimal.yaml"))


def make_policy(shadow: bool, on_failure: str, on_inconclusive: str) -> RolloutPolicy:
    data = copy.deepcopy(BASE)
    data["spec"]["strategy"]["canary"]["steps"] = [
        {"weight": 10, "maxDuration": "60s"}, {"pause": {}}, {"weight": 50}, {"weight": 100}
    ]
    if shadow:
        data["spec"]["strategy"]["shadow"] = {"percent": 100, "minRequests": 10, "maxDuration": "5m"}
    data["spec"]["onFailure"] = on_failure
    data["spec"]["onInconclusive"] = on_inconclusive
    data["spec"]["deadline"] = "2h"
    return RolloutPolicy.model_validate(data)


class RolloutMachineModel(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.now = 1000.0
        self.events = []
        self.machine = None
        self.rollout = None
        self.promotions_allowed = 0

    @rule(shadow=st.booleans(), on_failure=st.sampled_from(["rollback", "pause"]),
          on_inconclusive=st.sampled_from(["pause", "rollback"]))
    @precondition(lambda self: self.machine is None)
    def create(self, shadow, on_failure, on_inconclusive):
        policy = make_policy(shadow, on_failure, on_inconclusive)
        self.machine = RolloutMachine(policy)
        self.rollout = Rollout(name="echo", service="echo", group="*", policy={}, policy_hash="h",
                               stable_version="v1", canary_version="v2", created_at=self.now)

    def _apply(self, decision):
        if decision is None or not decision.changed:
            return
        before = self.rollout
        for event in decision.events:
            assert event.rollout == before.name
        self.events.extend(decision.events)
        if decision.rollout.phase is Phase.SUCCEEDED and before.phase is not Phase.SUCCEEDED:
            assert self.promotions_allowed > 0, "promoted without confirm-promotion"
            self.promotions_allowed -= 1
        self.rollout = decision.rollout

    @rule()
    @precondition(lambda self: self.machine is not None and self.rollout.phase is Phase.PENDING)
    def start(self):
        self._apply(self.machine.start(self.rollout, self.now))

    @rule(seconds=st.floats(0, 4000))
    @precondition(lambda self: self.machine is not None)
    def time_passes(self, seconds):
        self.now += seconds
        self._apply(self.machine.on_tick(self.rollout, self.now))

    @rule()
    @precondition(lambda self: self.machine is not None)
    def proxies_converge(self):
        if self.rollout.active:
            self._apply(self.machine.on_converged(self.rollout, self.now))

    @rule(outcome=st.sampled_from(["pass", "fail", "inconclusive"]))
    @precondition(lambda self: self.machine is not None)
    def verdict(self, outcome):
        self._apply(self.machine.on_verdict(self.rollout, SimpleVerdict(outcome, outcome), self.now))

    @rule(ok=st.booleans())
    @precondition(lambda self: self.machine is not None and self.rollout.gate == GATE_PROMOTION)
    def gate_answers(self, ok):
        if ok:
            self.promotions_allowed += 1
        self._apply(self.machine.on_gate(self.rollout, GATE_PROMOTION, ok, "hook says so", self.now))
        if ok:
            self.promotions_allowed = 0

    @rule(action=st.sampled_from(ACTIONS), weight=st.integers(-5, 105))
    @precondition(lambda self: self.machine is not None)
    def operator(self, action, weight):
        try:
            self._apply(self.machine.act(self.rollout, action, self.now, weight=weight))
        except InvalidAction as err:
            assert err.phase is self.rollout.phase
        except ValueError:
            assert action == "set-weight" and not 0 <= weight <= 100

    @invariant()
    def legal_state(self):
        r = self.rollout
        if r is None:
            return
        assert 0 <= r.weight <= 100 and 0 <= r.mirror <= 100
        if r.phase is Phase.SUCCEEDED:
            assert r.weight == 100 and r.mirror == 0
        if r.phase in (Phase.ROLLING_BACK, Phase.ROLLED_BACK):
            assert r.weight == 0 and r.mirror == 0
        if r.phase is Phase.SHADOWING:
            assert r.weight == 0 and r.step == -1
        if r.phase is Phase.PROGRESSING and r.gate is None:
            step = self.machine.current_step(r)
            assert step is not None and (step.kind == "weight" or r.weight_override is not None)
        assert -1 <= r.step < len(self.machine.steps)

    @invariant()
    def events_chain(self):
        previous = Phase.PENDING.value
        for event in self.events:
            assert event.phase_from == previous, (event.phase_from, previous)
            previous = event.phase_to
        if self.rollout is not None:
            assert previous == self.rollout.phase.value


TestRolloutMachine = RolloutMachineModel.TestCase
TestRolloutMachine.settings = settings(
    max_examples=int(__import__("os").environ.get("WEIR_HYPOTHESIS_EXAMPLES", "150")), stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
