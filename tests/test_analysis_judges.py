"""The judges: verdict semantics (nothing promotes on missing evidence), evidence, Kayenta and Flagger compatibility."""

from __future__ import annotations

import asyncio
import json
import math
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from analysis import (
    ArmSamples,
    SLO,
    MannWhitneyJudge,
    SequentialJudge,
    ThresholdJudge,
    Verdict,
    evaluate_async,
    make_judge,
    slos_from_policy,
)
from analysis.judges.mann_whitney import binary_mannwhitney, hodges_lehmann, kth_pairwise_difference

SLOS = [SLO("error-rate", 0.005), SLO("latency", 0.10, 0.99), SLO("latency", 0.05, 0.5)]


def strict_json(v: Verdict) -> dict:
    return json.loads(json.dumps(v.to_json(), allow_nan=False))


class Stream:
    """A randomly split request stream; `arms(t)` gives cumulative ArmSamples after t requests."""

    def __init__(self, n, share, seed=0, e_s=0.001, e_c=0.001, shift=0.0, sigma=0.5):
        rng = np.random.default_rng(seed)
        self.arm = rng.random(n) < share
        self.err = rng.random(n) < np.where(self.arm, e_c, e_s)
        self.lat = np.exp(math.log(100) + sigma * rng.normal(size=n) + shift * self.arm)

    def arms(self, t):
        a, e, lat = self.arm[:t], self.err[:t], self.lat[:t]
        s = ArmSamples(int((~a).sum()), int((e & ~a).sum()), lat[~a & ~e])
        c = ArmSamples(int(a.sum()), int((e & a).sum()), lat[a & ~e])
        return s, c


def run_looks(judge, stream, share, every, until):
    v = None
    for t in range(every, until + 1, every):
        s, c = stream.arms(t)
        v = judge.evaluate(s, c, canary_share=share)
        if v.outcome != "inconclusive":
            return v, t
    return v, until


# ---------------------------------------------------------------------------
# types
# ---------------------------------------------------------------------------


def test_types_validate_and_parse():
    assert SLO("latency", 0.1, 0.99).relative is True
    assert SLO("error-rate", 0.005).relative is False
    assert SLO("latency", 0.1, 0.99).key == "latency-p99"
    assert SLO("latency", 0.1, 0.999).key == "latency-p99.9"
    with pytest.raises(ValueError):
        SLO("latency", -0.1, 0.5)
    with pytest.raises(ValueError):
        SLO("latency", 0.1, 1.5)
    with pytest.raises(ValueError):
        ArmSamples(5, 6)
    got = slos_from_policy(
        [
            {"metric": "error-rate", "maxIncrease": "0.5%"},
            {"metric": "latency", "quantile": 0.99, "maxIncrease": "10%"},
            {"metric": "custom", "query": "x", "max": 1},
        ]
    )
    assert got == [SLO("error-rate", 0.005), SLO("latency", 0.1, 0.99)]


def test_make_judge_kinds_and_errors():
    assert isinstance(make_judge("sequential", SLOS, alpha=0.05), SequentialJudge)
    assert isinstance(make_judge("mann-whitney", SLOS, alpha=0.05), MannWhitneyJudge)
    assert isinstance(make_judge("threshold", SLOS, alpha=0.05), ThresholdJudge)
    with pytest.raises(ValueError, match="unknown judge"):
        make_judge("bayesian", SLOS, alpha=0.05)
    with pytest.raises(ValueError, match="alpha"):
        make_judge("sequential", SLOS, alpha=1.5)
    with pytest.raises(ValueError, match="at least one SLO"):
        make_judge("sequential", [], alpha=0.05)
    j = make_judge("sequential", SLOS, alpha=0.05)
    with pytest.raises(ValueError, match="canary_share"):
        j.evaluate(ArmSamples(), ArmSamples(), canary_share=10)


# ---------------------------------------------------------------------------
# sequential judge
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sequential", "mann-whitney", "threshold"])
def test_no_data_is_inconclusive_never_pass(kind):
    j = make_judge(kind, SLOS, alpha=0.05, min_requests=100)
    v = j.evaluate(ArmSamples(), ArmSamples(), canary_share=0.1)
    assert v.outcome == "inconclusive"
    assert "no canary requests" in v.reason
    strict_json(v)
    # stable only, canary silent
    v = j.evaluate(ArmSamples(1000, 1, np.full(999, 100.0)), ArmSamples(), canary_share=0.1)
    assert v.outcome == "inconclusive"


def test_sequential_below_min_requests_never_passes():
    # generous margins so that every SLO passes quickly, but min_requests is high
    slos = [SLO("error-rate", 0.05), SLO("latency", 1.0, 0.5)]
    j = make_judge("sequential", slos, alpha=0.05, min_requests=5000)
    st_ = Stream(60000, 0.1, seed=1)
    for t in range(2000, 60001, 2000):
        s, c = st_.arms(t)
        v = j.evaluate(s, c, canary_share=0.1)
        if c.requests < 5000:
            assert v.outcome == "inconclusive", (t, v.reason)
            assert "every SLO is within its margin, but only" in v.reason or t < 4000
        else:
            break
    assert v.outcome == "pass"
    assert c.requests >= 5000


def test_sequential_reason_for_min_requests():
    j = make_judge("sequential", SLOS, alpha=0.05, min_requests=500)
    s, c = Stream(1000, 0.1, seed=2).arms(1000)
    v = j.evaluate(s, c, canary_share=0.1)
    assert v.outcome == "inconclusive"
    assert f"only {c.requests} of the 500 canary requests" in v.reason
    assert v.samples_needed is not None and v.samples_needed >= 500 - c.requests


def test_sequential_fails_clear_latency_regression_with_evidence():
    j = make_judge("sequential", SLOS, alpha=0.05, min_requests=500)
    v, t = run_looks(j, Stream(20000, 0.1, seed=3, shift=math.log(1.3)), 0.1, 100, 20000)
    assert v.outcome == "fail"
    assert "latency is higher than stable's by more than" in v.reason
    assert "e-value" in v.reason and "1/alpha 60" in v.reason
    ev = strict_json(v)["evidence"]
    assert ev["alpha_per_test"] == pytest.approx(0.05 / 3)
    failing = [s for s in ev["slos"] if s["outcome"] == "fail"]
    assert failing
    f = failing[0]
    for key in ("counts", "estimate", "interval", "e_value_fail", "statistic", "alpha_spent", "samples_needed"):
        assert key in f
    assert f["e_value_fail"] >= 60
    assert v.samples_needed is None
    # sticky: a later look keeps the decision
    s, c = Stream(20000, 0.1, seed=3, shift=math.log(1.3)).arms(min(t + 100, 20000))
    assert j.evaluate(s, c, canary_share=0.1).outcome == "fail"


def test_sequential_fails_error_regression():
    j = make_judge("sequential", [SLO("error-rate", 0.0)], alpha=0.05)
    v, _ = run_looks(j, Stream(200000, 0.1, seed=4, e_c=0.02), 0.1, 2000, 200000)
    assert v.outcome == "fail"
    assert v.reason.startswith("canary error rate is higher than stable's (")
    e = v.evidence["slos"][0]
    assert e["interval"]["lower"] > 0


def test_sequential_passes_equal_canary_with_margins():
    j = make_judge("sequential", SLOS, alpha=0.05, min_requests=500)
    v, t = run_looks(j, Stream(300000, 0.1, seed=5), 0.1, 5000, 300000)
    assert v.outcome == "pass", v.reason
    assert "within the margin on all 3 SLOs" in v.reason
    assert all(s["interval"]["upper"] is not None for s in v.evidence["slos"])
    strict_json(v)


def test_sequential_zero_margin_equal_canary_stays_inconclusive():
    j = make_judge("sequential", [SLO("latency", 0.0, 0.5)], alpha=0.05)
    v, _ = run_looks(j, Stream(20000, 0.1, seed=6), 0.1, 2000, 20000)
    assert v.outcome == "inconclusive"
    assert "demonstrably better" in v.reason or "not enough evidence" in v.reason


def test_sequential_alpha_split_across_steps():
    j = make_judge("sequential", SLOS, alpha=0.06, n_steps=4)
    assert len(SLOS) == 3  # 3 SLOs x 4 steps share alpha 0.06: 0.005 each
    assert j.alpha_test == pytest.approx(0.005, rel=1e-12)
    assert make_judge("sequential", SLOS[:1], alpha=0.06, n_steps=1).alpha_test == pytest.approx(0.06, rel=1e-12)
    v = j.evaluate(*Stream(2000, 0.1).arms(2000), canary_share=0.1)
    assert v.evidence["alpha_per_test"] == pytest.approx(0.005)
    assert "n_slos * n_steps" in v.evidence["alpha_rule"]


def test_sequential_sample_ratio_mismatch_blocks():
    j = make_judge("sequential", [SLO("error-rate", 0.005), SLO("latency", 0.1, 0.99)], alpha=0.05)
    s, c = Stream(50000, 0.15, seed=7).arms(50000)  # routed 15%, configured 10%
    v = j.evaluate(s, c, canary_share=0.1)
    assert v.outcome == "inconclusive"
    assert "sample ratio mismatch" in v.reason
    assert v.evidence["srm"]["mismatch"] is True


def test_sequential_all_errors_and_tiny_samples_are_json_safe():
    j = make_judge("sequential", SLOS, alpha=0.05)
    v = j.evaluate(ArmSamples(10, 10, []), ArmSamples(3, 3, []), canary_share=0.2)
    strict_json(v)
    v = j.evaluate(ArmSamples(12, 10, [5.0, 0.0]), ArmSamples(4, 3, [1e9]), canary_share=0.2)
    strict_json(v)
    assert v.outcome in ("inconclusive", "fail")


def _stream_looks(stream, every, until):
    """Cumulative per-look counts and the latency arrays of a Stream, as run_stream takes them."""
    req, err, lc = [], [], []
    for t in range(every, until + 1, every):
        s, c = stream.arms(t)
        req.append((s.requests, c.requests)), err.append((s.errors, c.errors)), lc.append((s.latencies_ms.size, c.latencies_ms.size))
    s, c = stream.arms(until)
    return np.array(req), np.array(err), (s.latencies_ms, c.latencies_ms), np.array(lc)


def test_run_stream_decides_exactly_like_evaluate_look_by_look():
    # the simulations (bench/analysis_sim.py) use run_stream: it must be the same judge
    codes = {"inconclusive": 0, "fail": 1, "pass": 2}
    for seed, shift in ((31, 0.0), (32, math.log(1.25)), (33, 0.0)):
        st_ = Stream(30000, 0.1, seed=seed, shift=shift)
        j1 = make_judge("sequential", SLOS, alpha=0.05, min_requests=500)
        j2 = make_judge("sequential", SLOS, alpha=0.05, min_requests=500, interval=False)
        outs = [codes[j1.evaluate(*st_.arms(t), canary_share=0.1).outcome] for t in range(1000, 30001, 1000)]
        res = j2.run_stream(0.1, *_stream_looks(st_, 1000, 30000))
        assert res.outcome.tolist() == outs, seed


def test_sequential_false_rollback_rate_over_many_looks():
    """Through the judge: equal canary, 3 SLOs with zero margins (the null's boundary), a look every 100 requests."""
    fails, reps = 0, 200
    slos = [SLO("error-rate", 0.0), SLO("latency", 0.0, 0.99), SLO("latency", 0.0, 0.5)]
    for r in range(reps):
        j = make_judge("sequential", slos, alpha=0.05, interval=False)
        res = j.run_stream(0.1, *_stream_looks(Stream(12000, 0.1, seed=100 + r, e_s=0.002, e_c=0.002), 100, 12000))
        fails += res.first_decision()[1] == 1
    assert fails / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)


# ---------------------------------------------------------------------------
# issue 9: each defect found by the audit (these fail on the code before the fix)
# ---------------------------------------------------------------------------


def test_p50_slo_tests_the_median_not_the_geometric_mean():
    # the canary's slowest 40% take twice as long: its geometric mean is 1.32x stable's, its median is stable's
    rng = np.random.default_rng(40)
    n = 40000
    arm = rng.random(n) < 0.1
    lat = np.exp(math.log(100) + 0.5 * rng.normal(size=n))
    q60 = math.exp(math.log(100) + 0.5 * 0.2533)
    lat = np.where(arm & (lat > q60), 2 * lat, lat)
    j = make_judge("sequential", [SLO("latency", 0.10, 0.5)], alpha=0.05)
    outcomes = []
    for t in range(2000, n + 1, 2000):
        a = arm[:t]
        v = j.evaluate(ArmSamples(int((~a).sum()), 0, lat[:t][~a]), ArmSamples(int(a.sum()), 0, lat[:t][a]), canary_share=0.1)
        outcomes.append(v.outcome)
    assert "fail" not in outcomes
    assert outcomes[-1] == "pass"  # the median is within +10%: shown
    ev = v.evidence["slos"][0]
    assert ev["interval"]["of"] == "canary / stable p50 ratio" and ev["interval"]["upper"] <= 1.1


def test_tail_test_null_holds_when_the_error_rates_differ():
    # stable 20% errors, canary none, the same latency: the canary holds more than its share of latency samples
    fails, reps = 0, 60
    for r in range(reps):
        j = make_judge("sequential", [SLO("latency", 0.0, 0.9)], alpha=0.05)
        v, _ = run_looks(j, Stream(20000, 0.1, seed=500 + r, e_s=0.2, e_c=0.0), 0.1, 2000, 20000)
        fails += v.outcome == "fail"
    assert fails / reps <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / reps)


SLOS3 = [SLO("error-rate", 0.005), SLO("latency", 0.10, 0.99), SLO("latency", 0.10, 0.5)]


def _lat(rng, n, scale=1.0):
    return np.exp(math.log(100) + 0.5 * rng.normal(size=n)) * scale


def test_missing_canary_latency_never_passes_a_latency_slo():
    rng = np.random.default_rng(41)
    stable_lat = _lat(rng, 300000)
    # canary requests but no latency samples at all
    j = make_judge("sequential", SLOS3, alpha=0.05)
    for k in range(1, 11):
        v = j.evaluate(ArmSamples(9000 * k, 0, stable_lat[: 9000 * k]), ArmSamples(1000 * k, 0, []), canary_share=0.1)
        assert [e["outcome"] for e in v.evidence["slos"]][1:] == ["inconclusive", "inconclusive"]
    # a 10x slower canary with 5 latency samples
    j = make_judge("sequential", SLOS3, alpha=0.05)
    slow = _lat(rng, 5, 10.0)
    for k in range(1, 11):
        v = j.evaluate(ArmSamples(9000 * k, 0, stable_lat[: 9000 * k]), ArmSamples(1000 * k, 0, slow if k > 1 else []), canary_share=0.1)
        assert v.evidence["slos"][1]["outcome"] != "pass" and v.outcome != "pass"
    # canary latencies that stop arriving after 200
    j = make_judge("sequential", SLOS3, alpha=0.05)
    c_lat = _lat(rng, 200)
    for k in range(1, 31):
        v = j.evaluate(ArmSamples(9000 * k, 0, stable_lat[: 9000 * k]), ArmSamples(1000 * k, 0, c_lat), canary_share=0.1)
        assert v.evidence["slos"][1]["outcome"] != "pass" and v.evidence["slos"][2]["outcome"] != "pass", k
        assert v.outcome != "pass"


def test_no_slo_passes_without_canary_requests():
    rng = np.random.default_rng(42)
    j = make_judge("sequential", SLOS3, alpha=0.05)
    for k in range(1, 6):
        v = j.evaluate(ArmSamples(20000 * k, 20 * k, _lat(rng, 20000 * k - 20 * k)), ArmSamples(), canary_share=0.1)
        assert [e["outcome"] for e in v.evidence["slos"]] == ["inconclusive"] * 3
        assert v.outcome == "inconclusive"


def test_a_regression_that_starts_mid_step_does_not_pass_the_step():
    # healthy for 30k requests, then the canary is a third slower; min_requests is reached only after the change
    fails = passes = 0
    for r in range(20):
        st_ = Stream(80000, 0.1, seed=600 + r)
        st_.lat = np.where(st_.arm & (np.arange(80000) >= 30000), st_.lat * 4 / 3, st_.lat)
        j = make_judge("sequential", SLOS3, alpha=0.05, min_requests=3500)
        v, t = run_looks(j, st_, 0.1, 2000, 80000)
        passes += v.outcome == "pass"
        fails += v.outcome == "fail"
    assert passes == 0 and fails >= 18


def test_nan_and_bad_latencies_are_counted_never_crash_never_pass():
    rng = np.random.default_rng(43)
    s_lat, c_lat = _lat(rng, 90000), _lat(rng, 10000)
    ArmSamples(3, 0, [np.nan, -1.0, np.inf])  # accepted: the judges deal with bad values
    j = make_judge("sequential", [SLO("error-rate", 0.01), SLO("latency", 0.5, 0.5), SLO("latency", 0.5, 0.99)], alpha=0.05)
    for k in range(1, 11):
        c = ArmSamples(1000 * k, 0, c_lat[: 1000 * k].copy())
        c.latencies_ms[-1] = np.nan if k % 2 else -3.0  # written after construction, into the new part
        if k >= 2:
            c.latencies_ms[5] = np.inf  # and into the part judged already (not read again)
        v = j.evaluate(ArmSamples(9000 * k, 0, s_lat[: 9000 * k]), c, canary_share=0.1)
        strict_json(v)
        assert v.outcome != "pass"
    assert v.evidence["bad_samples"]["canary"] == 10
    assert v.evidence["slos"][1]["outcome"] == "inconclusive"
    assert "bad latency samples" in v.reason
    for kind in ("mann-whitney", "threshold"):
        other = make_judge(kind, [SLO("latency", 0.5, 0.5)], alpha=0.05)
        bad = ArmSamples(1000, 0, np.r_[c_lat[:999], np.nan])
        vv = other.evaluate(ArmSamples(9000, 0, s_lat[:9000]), bad, canary_share=0.1)
        assert vv.evidence["bad_samples"]["canary"] == 1 and vv.outcome != "pass"


def test_samples_needed_is_never_below_what_min_requests_still_needs():
    j = make_judge("sequential", [SLO("error-rate", 0.005), SLO("latency", 0.1, 0.5)], alpha=0.05, min_requests=200)
    v = j.evaluate(ArmSamples(36, 0, np.full(36, 100.0)), ArmSamples(4, 2, [100.0, 101.0]), canary_share=0.1)
    assert "only 4 of the 200 canary requests required" in v.reason
    assert v.samples_needed >= 196
    assert f"about {v.samples_needed} more canary requests needed" in v.reason


# ---------------------------------------------------------------------------
# Mann-Whitney (Kayenta-compatible)
# ---------------------------------------------------------------------------

RNG = np.random.default_rng(2024)
C_FIXED = np.round(RNG.lognormal(4.7, 0.5, 37), 1)
S_FIXED = np.round(RNG.lognormal(4.6, 0.5, 53), 1)


def test_hodges_lehmann_and_interval_match_brute_force():
    d = np.sort((C_FIXED[:, None] - S_FIXED[None, :]).ravel())
    hl = hodges_lehmann(C_FIXED, S_FIXED, 0.98)
    assert hl["estimate"] == pytest.approx(np.median(d))
    k = hl["rank_k"]
    assert hl["lower"] == d[k - 1]
    assert hl["upper"] == d[d.size - k]
    # the rank k is the normal-approximation quantile of U, by hand: m n = 37 * 53 = 1961, z(0.99) = 2.32635,
    # sd(U) = sqrt(1961 * 91 / 12) = 121.946, so k = floor(980.5 - 283.69) = 696
    assert (C_FIXED.size, S_FIXED.size) == (37, 53)
    assert k == 696
    # and that rank leaves about 1% in each tail of U's null distribution (random labels: U = canary rank sum - 37*38/2)
    rng = np.random.default_rng(5)
    ranks = rng.permuted(np.tile(np.arange(1, 91), (20000, 1)), axis=1)[:, :37]
    u = ranks.sum(axis=1) - 37 * 38 / 2
    assert 0.007 <= np.mean(u < k) <= 0.013


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 30), min_size=1, max_size=25),
    st.lists(st.integers(0, 30), min_size=1, max_size=25),
    st.data(),
)
def test_kth_pairwise_difference_with_ties(c, s, data):
    c, s = np.array(c, float), np.array(s, float)
    d = np.sort((c[:, None] - s[None, :]).ravel())
    k = data.draw(st.integers(1, d.size))
    assert kth_pairwise_difference(c, s, k) == d[k - 1]


def test_mann_whitney_judge_matches_scipy():
    j = make_judge("mann-whitney", [SLO("latency", 0.1, 0.5)], alpha=0.05)
    c = ArmSamples(C_FIXED.size, 0, C_FIXED)
    s = ArmSamples(S_FIXED.size, 0, S_FIXED)
    v = j.evaluate(s, c, canary_share=0.4)
    ref = stats.mannwhitneyu(C_FIXED, S_FIXED, alternative="two-sided")
    e = v.evidence["slos"][0]
    assert e["statistic"] == pytest.approx(ref.statistic)
    assert e["p_value"] == pytest.approx(ref.pvalue)
    strict_json(v)


def test_binary_mann_whitney_matches_scipy_on_expanded_data():
    for xc, nc, xs, ns in [(3, 40, 1, 200), (0, 10, 2, 30), (12, 500, 30, 4000)]:
        c = np.r_[np.ones(xc), np.zeros(nc - xc)]
        s = np.r_[np.ones(xs), np.zeros(ns - xs)]
        ref = stats.mannwhitneyu(c, s, alternative="two-sided", method="asymptotic")
        got = binary_mannwhitney(xc, nc, xs, ns)
        assert got["U"] == pytest.approx(ref.statistic)
        assert got["p_value"] == pytest.approx(ref.pvalue)
        assert got["estimate"] == pytest.approx(xc / nc - xs / ns)


def test_mann_whitney_classifies_regression_and_passes_equal():
    j = make_judge("mann-whitney", SLOS, alpha=0.05, min_requests=200)
    s, c = Stream(20000, 0.1, seed=11, shift=math.log(1.5)).arms(20000)
    v = j.evaluate(s, c, canary_share=0.1)
    assert v.outcome == "fail"
    assert "Mann-Whitney" in v.reason
    s, c = Stream(20000, 0.1, seed=12).arms(20000)
    v = j.evaluate(s, c, canary_share=0.1)
    assert v.outcome == "pass", v.reason
    s, c = Stream(1000, 0.1, seed=12).arms(1000)
    assert j.evaluate(s, c, canary_share=0.1).outcome == "inconclusive"  # below min_requests
    strict_json(v)


def test_mann_whitney_effect_size_check_blocks_tiny_shifts():
    # a significant shift that stays under the SLO's margin is not High
    j = make_judge("mann-whitney", [SLO("latency", 0.2, 0.5)], alpha=0.05)
    s, c = Stream(200000, 0.5, seed=13, shift=math.log(1.05)).arms(200000)
    v = j.evaluate(s, c, canary_share=0.5)
    e = v.evidence["slos"][0]
    assert e["p_value"] < 1e-6 and e["classification"] == "Pass"


# ---------------------------------------------------------------------------
# threshold (Flagger-compatible)
# ---------------------------------------------------------------------------


def _interval(prev_s, prev_c, n_s, n_c, lat_s, lat_c, err_s=0, err_c=0):
    s = ArmSamples(prev_s.requests + n_s, prev_s.errors + err_s, np.r_[prev_s.latencies_ms, lat_s])
    c = ArmSamples(prev_c.requests + n_c, prev_c.errors + err_c, np.r_[prev_c.latencies_ms, lat_c])
    return s, c


def test_threshold_counts_failed_checks_until_the_limit():
    j = make_judge("threshold", [SLO("latency", 0.1, 0.99)], alpha=0.05, failed_check_limit=3, iterations=5,
                   thresholds={"latency-p99": 500.0})
    s, c = ArmSamples(), ArmSamples()
    outcomes = []
    pattern = [100.0, 900.0, 100.0, 900.0, 900.0]  # canary latency per interval
    for lat in pattern:
        s, c = _interval(s, c, 10, 10, np.full(10, 100.0), np.full(10, lat))
        v = j.evaluate(s, c, canary_share=0.5)
        outcomes.append((v.outcome, v.evidence["failed_checks"]))
    assert outcomes == [("inconclusive", 0), ("inconclusive", 1), ("inconclusive", 1), ("inconclusive", 2), ("fail", 3)]
    assert "3 failed checks reached the limit of 3" in v.reason
    strict_json(v)


def test_threshold_passes_after_iterations_and_no_data_fails_a_check():
    j = make_judge("threshold", [SLO("error-rate", 0.01)], alpha=0.05, failed_check_limit=2, iterations=3, min_requests=25)
    s, c = ArmSamples(), ArmSamples()
    s, c = _interval(s, c, 100, 0, np.full(100, 1.0), [])  # no canary data: a failed check
    v = j.evaluate(s, c, canary_share=0.1)
    assert v.evidence["interval"]["checks"][0]["status"] == "no data"
    assert v.evidence["failed_checks"] == 1
    for _ in range(3):
        s, c = _interval(s, c, 90, 10, np.full(90, 1.0), np.full(10, 1.0))
        v = j.evaluate(s, c, canary_share=0.1)
    assert v.outcome == "pass"  # 3 good intervals, 30 canary requests >= 25


def test_threshold_relative_to_stable_when_no_absolute_threshold():
    j = make_judge("threshold", [SLO("error-rate", 0.0)], alpha=0.05, failed_check_limit=1)
    s, c = _interval(ArmSamples(), ArmSamples(), 1000, 100, np.full(999, 1.0), np.full(99, 1.0), err_s=1, err_c=1)
    v = j.evaluate(s, c, canary_share=0.1)
    assert v.outcome == "fail"  # 1% > 0.1%: one error in a small interval is enough
    assert v.evidence["interval"]["checks"][0]["threshold_source"] == "stable x (1 + margin)"


# ---------------------------------------------------------------------------
# asyncio
# ---------------------------------------------------------------------------


class _RecordingJudge:
    def __init__(self, work):
        self.work = work
        self.thread = None
        self.lock = threading.Lock()

    def work_estimate(self, stable, canary):
        return self.work

    def evaluate(self, stable, canary, *, canary_share):
        self.thread = threading.current_thread()
        return Verdict("inconclusive", "recorded")


async def test_evaluate_async_offloads_large_work():
    small, large = _RecordingJudge(10), _RecordingJudge(10**8)
    await evaluate_async(small, ArmSamples(), ArmSamples(), canary_share=0.1)
    await evaluate_async(large, ArmSamples(), ArmSamples(), canary_share=0.1)
    assert small.thread is threading.main_thread()
    assert large.thread is not threading.main_thread()


async def test_evaluate_async_same_verdict_as_sync():
    s, c = Stream(60000, 0.1, seed=14, shift=math.log(1.2)).arms(60000)
    j1 = make_judge("mann-whitney", SLOS, alpha=0.05)
    j2 = make_judge("mann-whitney", SLOS, alpha=0.05)
    v_async = await evaluate_async(j1, s, c, canary_share=0.1)
    v_sync = j2.evaluate(s, c, canary_share=0.1)
    assert v_async.to_json() == v_sync.to_json()
    j3 = make_judge("sequential", SLOS, alpha=0.05)
    s0, c0 = Stream(60000, 0.1, seed=14, shift=math.log(1.2)).arms(5000)  # the quantile tests' first threshold
    await evaluate_async(j3, s0, c0, canary_share=0.1)
    v = await evaluate_async(j3, s, c, canary_share=0.1)
    assert v.outcome == "fail"
    # Looking again at the same data decides the same (the judge's state does not drift between looks).
    again = await asyncio.wait_for(evaluate_async(j3, s, c, canary_share=0.1), 5)
    assert again.outcome == "fail" and again.reason == v.reason
