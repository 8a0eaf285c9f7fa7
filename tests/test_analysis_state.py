"""The sequential judge's state, segments and carry: restarts, resumed steps and new weights continue the same
e-processes (never counting a sample twice, never spending alpha twice), and later steps keep watching for harm.

Equality checks compare a run split by restarts with an uninterrupted run on the same stream; statistical checks
are seeded A/A simulations whose false-rollback rate must stay within alpha (Clopper-Pearson 95% interval).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from analysis import SLO, ArmSamples, make_judge
from analysis import sequential as sq
from analysis.judges import sequential as sq_judge

ALPHA = 0.05
SLOS = [SLO("error-rate", 0.005), SLO("latency", 0.10), SLO("latency", 0.10, 0.99), SLO("latency", 0.05, 0.5)]


def _cp_upper(k: int, n: int) -> float:
    return 1.0 if k == n else float(stats.beta.ppf(0.975, k + 1, n - k))


def _cp_lower(k: int, n: int) -> float:
    return 0.0 if k == 0 else float(stats.beta.ppf(0.025, k, n - k + 1))


class Stream:
    """Requests split at random (share may change between segments); cumulative arm samples of any window."""

    def __init__(self, n, share, seed=0, e_s=0.001, e_c=0.001, shift=0.0, shift_from=0):
        rng = np.random.default_rng(seed)
        share = np.broadcast_to(np.asarray(share, dtype=float), (n,))
        self.arm = rng.random(n) < share
        self.err = rng.random(n) < np.where(self.arm, e_c, e_s)
        slow = self.arm & (np.arange(n) >= shift_from)
        self.lat = np.exp(math.log(100) + 0.5 * rng.normal(size=n) + shift * slow)

    def window(self, a, b):
        arm, e, lat = self.arm[a:b], self.err[a:b], self.lat[a:b]
        s = ArmSamples(int((~arm).sum()), int((e & ~arm).sum()), lat[~arm & ~e])
        c = ArmSamples(int(arm.sum()), int((e & arm).sum()), lat[arm & ~e])
        return s, c


def _restore(judge, slos=SLOS, **kw):
    """state -> JSON -> a new judge -> load_state (what a restarted control plane does)."""
    saved = json.loads(json.dumps(judge.state(), allow_nan=False))
    fresh = make_judge("sequential", slos, alpha=ALPHA, **kw)
    fresh.load_state(saved)
    return fresh


def _e_values(v):
    return [(s["slo"], s["outcome"], s["e_value_fail"], s["e_value_pass"]) for s in v.evidence["slos"]]


@pytest.mark.parametrize("shift", [0.0, math.log(1.3)])
def test_split_run_reaches_the_same_decisions_as_an_uninterrupted_run(shift):
    n, look, share = 40000, 500, 0.1
    st_ = Stream(n, share, seed=3, shift=shift, shift_from=12000)
    whole = make_judge("sequential", SLOS, alpha=ALPHA, min_requests=500)
    split = make_judge("sequential", SLOS, alpha=ALPHA, min_requests=500)
    seg_start = 0
    restarts = {4000, 9000, 9500, 20000}
    decided = []
    for t in range(look, n + 1, look):
        v1 = whole.evaluate(*st_.window(0, t), canary_share=share)
        if t in restarts:
            split = _restore(split, min_requests=500)
            seg_start = t - look  # the source lost everything before the restart: the new segment starts here
        v2 = split.evaluate(*st_.window(seg_start, t), canary_share=share)
        assert v1.outcome == v2.outcome, t
        for a, b in zip(_e_values(v1), _e_values(v2)):
            assert a[:2] == b[:2], (t, a, b)
            assert a[2] == pytest.approx(b[2], rel=1e-9) and a[3] == pytest.approx(b[3], rel=1e-9), (t, a, b)
        assert v1.evidence["counts"] == v2.evidence["counts"]
        decided.append(v1.outcome)
    if shift:
        assert "fail" in decided  # the regression after 12k requests is caught, after the restarts too
    else:
        assert "fail" not in decided and "pass" in decided


def test_new_segment_adds_to_the_totals_and_a_new_share_keeps_the_tests():
    share = np.r_[np.full(10000, 0.05), np.full(10000, 0.2), np.full(10000, 0.5)]
    st_ = Stream(30000, share, seed=4, e_s=0.002, e_c=0.002)
    j = make_judge("sequential", SLOS, alpha=ALPHA)
    for seg, (a, b, p) in enumerate([(0, 10000, 0.05), (10000, 20000, 0.2), (20000, 30000, 0.5)]):
        if seg:
            j.new_segment()
        for t in range(a + 1000, b + 1, 1000):
            v = j.evaluate(*st_.window(a, t), canary_share=p)
    s, c = st_.window(0, 30000)
    assert v.evidence["counts"]["canary"]["requests"] == c.requests
    assert v.evidence["counts"]["stable"]["errors"] == s.errors
    assert v.evidence["segments"] == 3 and v.evidence["looks"] == 30
    assert v.evidence["srm"]["mismatch"] is False  # each share is checked against its own split


def test_share_changes_and_restarts_keep_the_false_rollback_rate():
    """A/A with three weights (new segments) and a restart in each: rollbacks <= alpha (CP interval)."""
    reps, fails = 60, 0
    slos = [SLO("error-rate", 0.0), SLO("latency", 0.0, 0.5), SLO("latency", 0.0, 0.99)]
    plan = [(0, 4000, 0.05), (4000, 8000, 0.25), (8000, 12000, 0.5)]
    for r in range(reps):
        share = np.concatenate([np.full(b - a, p) for a, b, p in plan])
        st_ = Stream(12000, share, seed=1000 + r, e_s=0.01, e_c=0.01)
        j = make_judge("sequential", slos, alpha=ALPHA)
        out = "inconclusive"
        for seg, (a, b, p) in enumerate(plan):
            if seg:
                j.new_segment()
            start = a
            for t in range(a + 1000, b + 1, 1000):
                if t == a + 2000:
                    j = _restore(j, slos)
                    start = t - 1000
                out = j.evaluate(*st_.window(start, t), canary_share=p).outcome
                if out == "fail":
                    break
            if out == "fail":
                break
        fails += out == "fail"
    assert _cp_lower(fails, reps) <= ALPHA and fails / reps <= ALPHA, fails


def _cumulative_looks(st_, ends):
    """(requests, errors, latency counts) per look and the latency arrays, for run_stream."""
    req, err, lc = [], [], []
    for t in ends:
        s, c = st_.window(0, t)
        req.append((s.requests, c.requests)), err.append((s.errors, c.errors)), lc.append((s.latencies_ms.size, c.latencies_ms.size))
    s, c = st_.window(0, ends[-1])
    return np.array(req), np.array(err), (s.latencies_ms, c.latencies_ms), np.array(lc)


def test_restarts_every_few_looks_spend_alpha_once():
    """Restarting after every 2nd look gives exactly the uninterrupted decisions (run_stream, the same code as
    evaluate, gives those), so the A/A rate with restarts is the uninterrupted one: <= alpha."""
    reps, look, n = 60, 1000, 8000
    slos = [SLO("error-rate", 0.0), SLO("latency", 0.0, 0.5), SLO("latency", 0.0, 0.99)]
    fails = 0
    for r in range(reps):
        st_ = Stream(n, 0.1, seed=2000 + r, e_s=0.005, e_c=0.005)
        ends = list(range(look, n + 1, look))
        whole = make_judge("sequential", slos, alpha=ALPHA).run_stream(0.1, *_cumulative_looks(st_, ends))
        split = make_judge("sequential", slos, alpha=ALPHA)
        start = 0
        out = []
        for k, t in enumerate(ends):
            if k and k % 2 == 0:
                split = _restore(split, slos)
                start = t - look
            out.append(split.evaluate(*st_.window(start, t), canary_share=0.1).outcome)
            if out[-1] == "fail":
                break
        codes = {"inconclusive": 0, "fail": 1, "pass": 2}
        assert [codes[o] for o in out] == whole.outcome[: len(out)].tolist()
        fails += out[-1] == "fail"
    assert _cp_lower(fails, reps) <= ALPHA and fails / reps <= ALPHA


def test_shrinking_arrays_start_a_new_segment_without_counting_twice():
    st_ = Stream(20000, 0.1, seed=5, e_s=0.01, e_c=0.03)
    j = make_judge("sequential", SLOS, alpha=ALPHA)
    v = None
    for t in (2000, 4000, 6000):
        v = j.evaluate(*st_.window(0, t), canary_share=0.1)
    before = v.evidence["counts"]
    lf_before = v.evidence["slos"][0]["e_value_fail"]
    # the source dropped its oldest 3000 requests: the arrays shrink
    v = j.evaluate(*st_.window(3000, 6500), canary_share=0.1)
    assert v.evidence["segment_resets"] and v.evidence["segments"] == 2
    assert v.evidence["counts"] == before  # nothing of the shrunk arrays is counted (it may be old)
    assert v.evidence["skipped_samples"]["canary"] > 0
    assert v.evidence["slos"][0]["e_value_fail"] == pytest.approx(lf_before)  # alpha not reset
    # the next look counts what arrived since
    v = j.evaluate(*st_.window(3000, 8000), canary_share=0.1)
    s_new, c_new = st_.window(6500, 8000)
    assert v.evidence["counts"]["canary"]["requests"] == before["canary"]["requests"] + c_new.requests


def test_carry_keeps_watching_for_harm_in_later_steps():
    # step 1 healthy; step 2 at a new weight with a canary 40% slower: step 2's own test and step 1's both watch
    slos = [SLO("error-rate", 0.005), SLO("latency", 0.1, 0.5)]
    st1 = Stream(20000, 0.1, seed=6)
    j1 = make_judge("sequential", slos, alpha=ALPHA, n_steps=3, min_requests=500)
    for t in range(2000, 20001, 2000):
        v = j1.evaluate(*st1.window(0, t), canary_share=0.1)
    carry = json.loads(json.dumps(j1.carry()))
    assert len(json.dumps(carry)) < 4000
    j2 = make_judge("sequential", slos, alpha=ALPHA, n_steps=3, min_requests=500, carry=carry)
    st2 = Stream(20000, 0.3, seed=7, shift=math.log(1.4))
    for t in range(1000, 20001, 1000):
        v = j2.evaluate(*st2.window(0, t), canary_share=0.3)
        if v.outcome == "fail":
            break
    assert v.outcome == "fail"
    ev = v.evidence["slos"][1]
    assert ev["outcome"] == "fail" and len(ev["earlier_steps"]) == 1 and ev["earlier_steps"][0]["started_at_step"] == 1
    assert v.evidence["step"] == 2


def test_a_chain_of_judges_never_starts_more_than_n_steps_e_processes():
    slos = [SLO("error-rate", 0.005)]
    carry = None
    for _ in range(5):
        j = make_judge("sequential", slos, alpha=ALPHA, n_steps=2, carry=carry)
        j.evaluate(*Stream(3000, 0.1, seed=8).window(0, 3000), canary_share=0.1)
        carry = j.carry()
    assert len(carry["slos"][0]["monitors"]) == 2
    v = make_judge("sequential", slos, alpha=ALPHA, n_steps=2, carry=carry).evaluate(*Stream(3000, 0.1).window(0, 3000), canary_share=0.1)
    assert v.evidence["slos"][0]["alpha_spent"] == 0.0


def test_rollout_false_rollback_rate_with_carry_over_three_steps():
    """A/A over a 3-step rollout (weights 5%, 20%, 50%), every earlier e-process carried: rollout rate <= alpha."""
    reps, fails = 60, 0
    slos = [SLO("error-rate", 0.0), SLO("latency", 0.0, 0.5), SLO("latency", 0.0, 0.99)]
    for r in range(reps):
        carry = None
        failed = False
        for step, p in enumerate((0.05, 0.2, 0.5)):
            st_ = Stream(5000, p, seed=3000 + 10 * r + step, e_s=0.01, e_c=0.01)
            j = make_judge("sequential", slos, alpha=ALPHA, n_steps=3, carry=carry)
            for t in range(1250, 5001, 1250):
                if j.evaluate(*st_.window(0, t), canary_share=p).outcome == "fail":
                    failed = True
                    break
            if failed:
                break
            carry = json.loads(json.dumps(j.carry()))
        fails += failed
    assert _cp_lower(fails, reps) <= ALPHA and fails / reps <= ALPHA, fails


def test_state_is_complete_bounded_json():
    st_ = Stream(100000, 0.1, seed=9)
    j = make_judge("sequential", SLOS, alpha=ALPHA)
    for t in range(10000, 100001, 10000):
        j.evaluate(*st_.window(0, t), canary_share=0.1)
    state = j.state()
    text = json.dumps(state, allow_nan=False)
    assert len(text) < 16000  # counts, thresholds, per-bet log-wealths and sketches: no samples
    k = make_judge("sequential", SLOS, alpha=ALPHA)
    k.load_state(json.loads(text))
    assert json.dumps(k.state(), allow_nan=False) == text
    with pytest.raises(ValueError, match="different SLOs"):
        make_judge("sequential", SLOS[:2], alpha=ALPHA).load_state(state)


@pytest.mark.parametrize("kind", ["mann-whitney", "threshold"])
def test_other_judges_accept_the_interface(kind):
    j = make_judge(kind, SLOS[:3], alpha=ALPHA, carry={"anything": 1})
    assert j.carry() is None
    s, c = Stream(5000, 0.1, seed=10).window(0, 5000)
    j.evaluate(s, c, canary_share=0.1)
    state = json.loads(json.dumps(j.state()))
    k = make_judge(kind, SLOS[:3], alpha=ALPHA)
    k.load_state(state)
    k.new_segment()
    assert k.evaluate(*Stream(5000, 0.1, seed=10).window(0, 1000), canary_share=0.1).outcome in ("inconclusive", "pass", "fail")


# ---------------------------------------------------------------------------
# version-2 states (before the FAIL e-processes became mixtures over start times, issue 8)
# ---------------------------------------------------------------------------

V2 = Path(__file__).parent / "fixtures" / "sequential_v2.json"


def _v2():
    """The fixture: states, a carry and the e-values of the version-2 judge (tests/fixtures/sequential_v2_make.py)."""
    fx = json.loads(V2.read_text())
    p = fx["plan"]
    st_ = Stream(p["n"], p["share"], seed=p["seed"], e_s=p["e_s"], e_c=p["e_c"], shift=p["shift"])
    return fx, [SLO.from_dict(s) for s in fx["slos"]], p, st_


def _empty_look(j, share):
    """A look that adds nothing (a new segment with no samples yet): the verdict shows the e-values as loaded."""
    return j.evaluate(ArmSamples(), ArmSamples(), canary_share=share)


def test_a_version_2_state_continues_value_preservingly():
    fx, slos, p, st_ = _v2()
    assert fx["state"]["version"] == 2
    j = make_judge("sequential", slos, alpha=0.05, n_steps=2)
    j.load_state(fx["state"])
    v = _empty_look(j, p["share"])
    c = v.evidence["counts"]["canary"]["requests"]
    assert c == sum(1 for a in st_.arm[: p["saved_at"]] if a)  # the step's totals as they were
    F = c / (c + sq.START_SCALE)
    ss, a_sh, a_ss = sq.START_SHARE, sq.ADAPTIVE_SHARE, sq.ADAPTIVE_START_SHARE
    for old, new, test in zip(fx["at_save"], v.evidence["slos"], ("counts", "location", "exceedance", "exceedance")):
        E = old["e_value_fail"]
        # 1 - START_SHARE of the old value stays in the component started with the step; the rest is kept for
        # later starts, and the first of them (after this look) gets the mass the counts so far would have
        # spread over earlier starts: E * (share of the bets) * F(c). Never more than E: no value is created.
        if test == "counts":  # a start after every look: fixed bets (weight 1 - a_sh) and the plug-in bet
            want = E * ((1 - ss) + F * ((1 - a_sh) * ss + a_sh * a_ss))
        elif test == "location":  # a start once the canary count grew by 20 (all of it, from 0)
            want = E * ((1 - ss) + F * ss)
        else:  # starts only after a closed block; this look closes none
            want = E * (1 - ss)
        assert new["e_value_fail"] == pytest.approx(want, rel=1e-9), (old["slo"], test)
        assert new["e_value_fail"] <= E
        assert new["e_value_pass"] == pytest.approx(old["e_value_pass"], rel=1e-9)  # the PASS side is as it was
        assert new["largest_component"]["step"] == 1
    state = j.state()
    assert state["version"] == sq_judge.STATE_VERSION and len(json.dumps(state)) < 24000
    # continuing on the same data as the version-2 judge did: the component started with the step follows the
    # old e-process exactly (1 - START_SHARE of it), so the mixture is never below that; PASS unchanged
    for t, old in zip(range(p["saved_at"] + p["looks"], p["continue_to"] + 1, p["looks"]), fx["continued"]):
        v = j.evaluate(*st_.window(p["saved_at"], t), canary_share=p["share"])
        for o, n in zip(old, v.evidence["slos"]):
            assert n["e_value_fail"] >= (1 - ss) * o["e_value_fail"] * (1 - 1e-9), (t, o["slo"])
            assert n["e_value_pass"] == pytest.approx(o["e_value_pass"], rel=1e-9), (t, o["slo"])
    # and a restart of the migrated judge is a plain version-3 restart (exactly the same e-values)
    k = _restore(j, slos, n_steps=2)
    a, b = _empty_look(j, p["share"]), _empty_look(k, p["share"])
    assert [s["e_value_fail"] for s in a.evidence["slos"]] == pytest.approx([s["e_value_fail"] for s in b.evidence["slos"]], rel=1e-12)


def test_a_version_2_carry_is_watched_by_the_next_step():
    fx, slos, p, st_ = _v2()
    assert fx["carry"]["version"] == 2
    j = make_judge("sequential", slos, alpha=0.05, n_steps=2, carry=fx["carry"])
    v = _empty_look(j, 0.3)
    for old, new in zip(fx["at_save"], v.evidence["slos"]):
        (earlier,) = new["earlier_steps"]
        assert earlier["started_at_step"] == 1 and earlier["alpha"] == pytest.approx(0.05 / 8)
        # nothing of step 2 seen yet, no start yet: the old value's component alone, 1 - START_SHARE of it
        assert earlier["e_value"] == pytest.approx((1 - sq.START_SHARE) * old["e_value_fail"], rel=1e-9), old["slo"]
        # step 2's own e-process, fresh: 1 - its share for later starts, per bet (location: one component)
        ss, a_sh, a_ss = sq.START_SHARE, sq.ADAPTIVE_SHARE, sq.ADAPTIVE_START_SHARE
        own = (1 - ss) if new["test"].startswith("half-normal") else (1 - a_sh) * (1 - ss) + a_sh * (1 - a_ss)
        assert new["e_value_fail"] == pytest.approx(own, rel=1e-9), old["slo"]
    assert v.evidence["step"] == 2
    # the carried e-processes keep watching: a clearly worse canary in step 2 fails, through them too
    st2 = Stream(20000, 0.3, seed=77, e_s=0.001, e_c=0.05)
    for t in range(1000, 20001, 1000):
        v = j.evaluate(*st2.window(0, t), canary_share=0.3)
        if v.outcome == "fail":
            break
    assert v.outcome == "fail"
    assert v.evidence["slos"][0]["earlier_steps"][0]["e_value"] > 1.0
    carry = json.loads(json.dumps(j.carry(), allow_nan=False))
    assert carry["version"] == sq_judge.STATE_VERSION and len(carry["slos"][0]["monitors"]) == 2


def test_states_of_unknown_versions_are_refused():
    fx, slos, p, st_ = _v2()
    for version in (1, 4):
        bad = {**fx["state"], "version": version}
        with pytest.raises(ValueError, match=f"version-{version} state"):
            make_judge("sequential", slos, alpha=0.05, n_steps=2).load_state(bad)
        with pytest.raises(ValueError, match=f"version-{version}"):
            make_judge("sequential", slos, alpha=0.05, n_steps=2, carry={**fx["carry"], "version": version})
