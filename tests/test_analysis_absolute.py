"""Absolute SLOs (a version broken on both arms fails) and the composite judge (ttfb, tpot beside latency)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from scipy import stats

from analysis.composite import CompositeJudge, make_policy_judge, plan_slos
from analysis.judges.absolute import AbsoluteJudge, AbsoluteSLO, bernoulli_log_evalues
from analysis.samples import ArmSamples
from policies import RolloutPolicy

ALPHA = 0.05


def test_the_e_values_are_the_betting_products():
    """Independently: multiply the bet factors observation by observation, then average over the bets."""
    from analysis.judges.absolute import _bet_grid

    xs = [1, 0, 0, 1, 1, 0, 1, 1]
    p0 = 0.2
    for up, limit in ((True, 1 / p0), (False, 1 / (1 - p0))):
        lams = _bet_grid(limit)
        wealth = []
        for lam in lams:
            w = 1.0
            for x in xs:
                w *= 1 + lam * ((x - p0) if up else (p0 - x))
            wealth.append(w)
        expected = math.log(sum(wealth) / len(wealth))
        got = bernoulli_log_evalues(sum(xs), len(xs), p0)[0 if up else 1]
        assert got == pytest.approx(expected, rel=1e-12)


def _stream(judge, rng, n_looks, per_look, p, share=0.1):
    requests = errors = 0
    for _ in range(n_looks):
        requests += per_look
        errors += int(rng.binomial(per_look, p))
        v = judge.evaluate(ArmSamples(), ArmSamples(requests, errors), canary_share=share)
        if v.outcome != "inconclusive":
            return v
    return v


def test_a_canary_broken_like_stable_fails_its_absolute_bound():
    """Defect: a service failing every request on both versions stayed 'inconclusive' forever."""
    judge = AbsoluteJudge([AbsoluteSLO("error-rate", 0.05)], alpha=ALPHA, n_steps=3, n_slos=2)
    v = _stream(judge, np.random.default_rng(1), 50, 20, p=1.0)
    assert v.outcome == "fail" and "canary error rate at most 5% is broken" in v.reason


def test_false_failures_stay_below_alpha_at_the_bound():
    """A/A at the bound itself (p = p0, the worst case of the null), looked at after every 10 requests."""
    reps, fails = 300, 0
    rng = np.random.default_rng(20261201)
    for _ in range(reps):
        judge = AbsoluteJudge([AbsoluteSLO("error-rate", 0.05)], alpha=ALPHA)
        v = _stream(judge, rng, 200, 10, p=0.05)
        fails += v.outcome == "fail"
    upper = stats.beta.ppf(0.975, fails + 1, reps - fails) if fails < reps else 1.0
    lower = stats.beta.ppf(0.025, fails, reps - fails + 1) if fails else 0.0
    assert lower <= ALPHA, (fails, reps, lower, upper)


def test_a_healthy_canary_passes_and_no_data_never_does():
    judge = AbsoluteJudge([AbsoluteSLO("error-rate", 0.05), AbsoluteSLO("time", 800.0, 0.99)], alpha=ALPHA,
                          min_requests=100)
    empty = judge.evaluate(ArmSamples(), ArmSamples(), canary_share=0.1)
    assert empty.outcome == "inconclusive"
    rng = np.random.default_rng(2)
    lat = rng.lognormal(math.log(100), 0.3, 3000)
    v = judge.evaluate(ArmSamples(), ArmSamples(3000, 0, lat), canary_share=0.1)
    assert v.outcome == "pass", v.reason
    slow = AbsoluteJudge([AbsoluteSLO("time", 800.0, 0.99)], alpha=ALPHA)
    v = slow.evaluate(ArmSamples(), ArmSamples(3000, 0, lat * 10), canary_share=0.1)
    assert v.outcome == "fail" and "p99 latency at most 800 ms" in v.reason


def test_segments_add_their_counts_and_a_restart_continues():
    slo = [AbsoluteSLO("error-rate", 0.05)]
    whole = AbsoluteJudge(slo, alpha=ALPHA)
    whole.evaluate(ArmSamples(), ArmSamples(200, 30), canary_share=0.1)
    split = AbsoluteJudge(slo, alpha=ALPHA)
    split.evaluate(ArmSamples(), ArmSamples(120, 18), canary_share=0.1)
    restored = AbsoluteJudge(slo, alpha=ALPHA)
    restored.load_state(split.state())  # what a restarted control plane does; new samples follow
    v = restored.evaluate(ArmSamples(), ArmSamples(80, 12), canary_share=0.1)
    w = whole.evaluate(ArmSamples(), ArmSamples(200, 30), canary_share=0.1)
    assert v.evidence["slos"][0]["counts"] == w.evidence["slos"][0]["counts"] == {"canary": {"samples": 200, "above": 30}}
    assert v.evidence["slos"][0]["e_value_fail"] == pytest.approx(w.evidence["slos"][0]["e_value_fail"])


POLICY = yaml.safe_load(open("policies/examples/minimal.yaml"))


def policy_slos(slos):
    data = dict(POLICY, spec={**POLICY["spec"], "analysis": {"slos": slos}})
    return RolloutPolicy.model_validate(data).spec.analysis.slos


def test_plan_groups_slos_by_what_they_measure():
    plan = plan_slos(policy_slos([
        {"metric": "error-rate", "maxIncrease": "1%"}, {"metric": "error-rate", "max": "5%"},
        {"metric": "latency", "quantile": 0.99, "maxIncrease": "10%"},
        {"metric": "ttfb", "quantile": 0.5, "maxIncrease": "20%"}, {"metric": "ttfb", "quantile": 0.99, "max": "2s"},
    ]))
    assert sorted(plan.relative) == ["latency", "ttfb"] and plan.n_slos == 5
    assert [s.key for s in plan.relative["ttfb"]] == ["ttfb-p50"]
    assert [(a.key, a.bound) for a in plan.absolute] == [("error-rate-max", 0.05), ("ttfb-p99-max", 2000.0)]


def test_a_canary_slow_to_its_first_token_fails_on_ttfb_alone():
    """Defect: a streaming canary with 3.9x the time to first chunk and equal total time was promoted."""
    judge = make_policy_judge("sequential", policy_slos([
        {"metric": "error-rate", "maxIncrease": "1%"},
        {"metric": "latency", "quantile": 0.5, "maxIncrease": "10%"},
        {"metric": "ttfb", "quantile": 0.5, "maxIncrease": "20%"},
    ]), alpha=ALPHA, n_steps=2, min_requests=200)
    assert isinstance(judge, CompositeJudge)
    rng = np.random.default_rng(5)
    verdict = None
    for look in range(1, 40):
        n_s, n_c = 900 * look, 100 * look
        total_s = rng.lognormal(math.log(1000), 0.2, n_s)
        total_c = rng.lognormal(math.log(1000), 0.2, n_c)  # the same total time ...
        stable = ArmSamples(n_s, 0, total_s, ttfb_ms=rng.lognormal(math.log(102), 0.2, n_s))
        canary = ArmSamples(n_c, 0, total_c, ttfb_ms=rng.lognormal(math.log(402), 0.2, n_c))  # ... 3.9x the first token
        verdict = judge.evaluate(stable, canary, canary_share=0.1)
        if verdict.outcome != "inconclusive":
            break
    assert verdict.outcome == "fail", verdict.reason
    assert "time to first byte" in verdict.reason
    keys = [s["slo"] for s in verdict.evidence["slos"]]
    assert "ttfb-p50" in keys and "latency-p50" in keys


def test_without_ttfb_samples_a_ttfb_slo_holds_the_step():
    judge = make_policy_judge("sequential", policy_slos([
        {"metric": "error-rate", "maxIncrease": "1%"}, {"metric": "ttfb", "quantile": 0.5, "maxIncrease": "20%"},
    ]), alpha=ALPHA, min_requests=100)
    rng = np.random.default_rng(6)
    lat = rng.lognormal(math.log(100), 0.2, 20000)
    v = judge.evaluate(ArmSamples(18000, 0, lat[:18000]), ArmSamples(2000, 0, lat[18000:]), canary_share=0.1)
    assert v.outcome == "inconclusive" and v.reason.startswith("time to first byte: ")
    state = judge.state()
    assert set(state["composite"]) == {"latency", "ttfb"}
