"""Issue 8: a healthy past does not hold a FAIL back, and the FAIL side keeps its alpha over a whole rollout.

The FAIL e-processes are mixtures over start times (analysis/sequential.py, section 4): a canary that turns bad
after a long healthy warm-up is caught about as fast as one judged from the onset, up to the logarithmic price
of the start's mass. A product e-process started at the step's start (the judge before issue 8) first has to
win back what it lost while the canary was healthy; the change-point tests here fail on that judge.

Seeded simulations (devtools/judge_sim.py) with Clopper-Pearson intervals (95%, two-sided);
bench/analysis_sim.py --suite changepoint runs the same simulations with more replications.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from analysis import SLO, ArmSamples, make_judge
from analysis import sequential as sq
from devtools.judge_sim import NEVER, delays, rollout_fails, segment

ALPHA = 0.05


def _cp_upper(k: int, n: int) -> float:
    return 1.0 if k == n else float(stats.beta.ppf(0.975, k + 1, n - k))


@pytest.mark.parametrize("case", ["A/A, zero margins, restarts", "at every margin"])
def test_whole_rollout_false_rollback_rate(case):
    """Two steps (10% then 30%), a look every 100 requests, 6,000 requests a step, every earlier e-process carried:
    the rollout's false-rollback rate is <= alpha with 95% confidence (the interval's upper end).

    Both cases sit on the FAIL null's boundary, where the e-processes are martingales: the canary equal to stable
    with zero margins, or worse by exactly each margin (errors +0.5 pp; latency x 1.1, so P(canary > 1.1 T) =
    P(stable > T) for every threshold T)."""
    reps = 500
    if case.startswith("A/A"):
        slos = [SLO("error-rate", 0.0), SLO("latency", 0.0, 0.5), SLO("latency", 0.0, 0.99)]
        e_s, e_c, lat_c, restart = 0.005, 0.005, 1.0, True
    else:
        slos = [SLO("error-rate", 0.005), SLO("latency", 0.10, 0.5), SLO("latency", 0.10, 0.99)]
        e_s, e_c, lat_c, restart = 0.01, 0.015, 1.1, False
    plan = [(0.1, 6000), (0.3, 6000)]
    fails = sum(rollout_fails(np.random.default_rng(7000 + r), slos, plan, e_s, e_c, lat_c, restart=restart) for r in range(reps))
    assert _cp_upper(fails, reps) <= ALPHA, (case, fails)


def test_count_fail_e_process_type1_at_the_boundary_over_many_looks():
    """The error-rate FAIL e-process alone, 1,200 runs of 1,000 looks of 50 requests (50,000 requests), canary
    worse than stable by exactly the 1 pp margin: it crosses 1/alpha in <= alpha of the runs (interval's upper end)."""
    reps, looks, per, share, e_s, margin = 1200, 1000, 50, 0.1, 0.01, 0.01
    rng = np.random.default_rng(17)
    hits = 0
    for _ in range(reps):
        n_c = rng.binomial(per, share, looks)
        n_s = per - n_c
        d_req = np.stack([n_s, n_c], axis=1)
        d_err = np.stack([rng.binomial(n_s, e_s), rng.binomial(n_c, e_s + margin)], axis=1)
        hits += sq.count_fail_log_evalues(d_req, d_err, share, margin=margin).max() >= math.log(1 / ALPHA)
    assert _cp_upper(hits, reps) <= ALPHA, hits
    assert hits > 0  # at the boundary the test spends some of its alpha (it is not vacuous)


# --------------------------------------------------------------------------------------- a healthy past, then a regression

WARMUP_LOOKS = 2000  # 100,000 requests (10,000 canary) of a healthy canary
# devtools.judge_sim.DELAY_CASES: errors 0.1% -> 5% against a 1 pp margin, latency x 1.5 against 10% on the median
MEDIAN_MAX = {"errors-5%": 120, "latency+50%": 40}


def _delays(case: str, warmup: int, reps: int) -> list[int | None]:
    d, early = delays(case, warmup, (np.random.default_rng(900 + r) for r in range(reps)))
    assert early == 0, "a FAIL while the canary was healthy"
    return d


@pytest.mark.parametrize("case", list(MEDIAN_MAX))
def test_a_regression_after_a_long_healthy_past_is_caught_promptly(case):
    """After 2,000 healthy looks the regression is caught within a bounded number of looks in every run.

    The price of the healthy past is the mass of a start near the onset: for c = 10,000 canary requests and a
    start within the next 50, 0.5 (F(c + 50) - F(c)) = 6e-5, i.e. ~10 nats more than a judge started at the onset
    needs (it needs ln(1/alpha_test) ~ 3.7 plus the grid's ln(20/0.75) ~ 3.3). With 5% errors against a 1 pp
    margin the best bet grows ~0.004 nats a request, so the fixed grid alone needs ~80 looks of 50 requests;
    the plug-in bet, which bets nothing while the canary looks healthy, is faster. Latency +50% against 10%
    grows far faster. The judge before issue 8 caught neither within 400 looks: its e-processes had lost
    hundreds of nats during the warm-up."""
    reps = 10
    d = _delays(case, WARMUP_LOOKS, reps)
    assert all(x is not None for x in d), d
    assert float(np.median(d)) <= MEDIAN_MAX[case], d
    # and the healthy past costs a bounded amount over a judge that starts at the onset
    fresh = _delays(case, 0, reps)
    assert all(x is not None for x in fresh)
    assert float(np.median(d)) <= 4 * float(np.median(fresh)) + 20, (d, fresh)


def test_the_fail_names_the_start_after_the_onset():
    slos = [SLO("error-rate", 0.01), SLO("latency", 0.10, 0.5)]
    rng = np.random.default_rng(4)
    warm, share = 40000, 0.1
    req, errs, (lat_s, lat_c), lc = segment(rng, 60000, 50, share, 0.001, 0.001, 1.5, onset=warm)
    j = make_judge("sequential", slos, alpha=ALPHA, min_requests=NEVER)
    for k in range(req.shape[0]):
        s = ArmSamples(int(req[k, 0]), int(errs[k, 0]), lat_s[: lc[k, 0]])
        c = ArmSamples(int(req[k, 1]), int(errs[k, 1]), lat_c[: lc[k, 1]])
        v = j.evaluate(s, c, canary_share=share)
        if v.outcome == "fail":
            break
    assert v.outcome == "fail"
    ev = v.evidence["slos"][1]
    assert ev["outcome"] == "fail"
    since = ev["failed_since"]
    start = since.get("betting_since") or since
    # the start the FAIL came from: this step, after the onset (the plug-in bet: where its betting run began)
    assert since["step"] == 1 and start["step"] == 1
    assert warm - 200 <= start["after_requests"] <= 50 * (k + 1)
    assert 0 < start["after_canary_requests"] <= start["after_requests"]
    assert since["e_value"] > 0 and 0 < since["share_of_e_value"] <= 1
    assert since["bet"] in ("fixed grid", "plug-in")
    assert f"request {start['after_requests']:,}" in v.reason
    # the quantile test's start carries its counts at the start (stable/canary compared and above)
    if since["bet"] == "fixed grid":
        assert len(since["counts_at_start"]) == 4
    # the e-value the FAIL reached is stored with it and crossed the threshold
    assert v.evidence["slos"][1]["e_value_fail"] >= 1 / ev["alpha"]
