"""FAIL e-processes as mixtures over start times (issue 8), pinned against values derived another way.

analysis/sequential.py computes the mixture sum_k w_k prod_{k<i<=l} f_i in O(L) with running sums and keeps the
plug-in bet's rate estimates as discounted sums in log space. Here the same quantities come from their
definitions, term by term: explicit components, explicit discount weights, the masses by hand. The judge's own
count e-process is re-implemented from the docstrings (factors 1 + lam Z, the plug-in bet, the start masses, the
bet weights) and must report the same e-value and the same largest component at every look.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import SLO, ArmSamples, make_judge
from analysis import sequential as sq

from .test_analysis_exact import block_lr_by_pmf

# --------------------------------------------------------------------------------------- the masses of the starts


def test_start_masses_by_hand():
    # F(c) = c / (c + 250): a start after the canary count moved 0 -> 250 gets share * (1/2 - 0)
    assert math.exp(sq.start_log_mass(0.0, 250.0, 0.5)) == pytest.approx(0.25, rel=1e-12)
    # 250 -> 750: share * (3/4 - 1/2)
    assert math.exp(sq.start_log_mass(250.0, 750.0, 0.5)) == pytest.approx(0.125, rel=1e-12)
    # the count did not move: no start (mass 0)
    assert sq.start_log_mass(100.0, 100.0, 0.5) == -np.inf
    # a scale (a migrated e-process spends its own value): times exp(log_scale)
    assert math.exp(sq.start_log_mass(0.0, 250.0, 0.5, log_scale=math.log(3.0))) == pytest.approx(0.75, rel=1e-12)
    # per-bet shares on a last axis
    out = sq.start_log_mass(np.array([0.0, 250.0]), np.array([250.0, 750.0]), np.array([0.5, 0.25]))
    np.testing.assert_allclose(np.exp(out), [[0.25, 0.125], [0.125, 0.0625]], rtol=1e-12)
    np.testing.assert_allclose(sq.start_shares(3), [0.5, 0.5, 0.5, 0.25])
    # the component started with the e-process keeps 1 - share; the bets weigh 0.75 / n each and 0.25 (plug-in)
    np.testing.assert_allclose(np.exp(sq.initial_log_values(2)), [0.5, 0.5, 0.75])
    np.testing.assert_allclose(np.exp(sq.bet_log_weights(3)), [0.25, 0.25, 0.25, 0.25])
    np.testing.assert_allclose(np.exp(sq.bet_log_weights(20)), [0.75 / 20] * 20 + [0.25])


def test_start_masses_never_sum_to_one_however_long_the_rollout():
    rng = np.random.default_rng(3)
    c = np.cumsum(rng.integers(0, 50, 20000)).astype(float)  # a long rollout, including looks without canary traffic
    masses = np.exp(sq.start_log_mass(np.r_[0.0, c[:-1]], c, sq.START_SHARE))
    total = (1 - sq.START_SHARE) + masses.sum()
    # telescoping: 1 - share + share * F(c_last), below 1 for every finite count
    assert total == pytest.approx(1 - sq.START_SHARE + sq.START_SHARE * c[-1] / (c[-1] + sq.START_SCALE), rel=1e-9)
    assert total < 1.0
    # and for every bet of the mixture, weighted: the whole e-process starts at <= 1
    shares = sq.start_shares(sq.N_BETS)
    w = np.exp(sq.bet_log_weights(sq.N_BETS))
    assert float(np.sum(w * (1 - shares + shares))) == pytest.approx(1.0, rel=1e-12)


# --------------------------------------------------------------------------------------- the mixture, term by term


def explicit_mixture(v0, inc, log_new):
    """sum_k w_k prod_{k<i<=l} f_i with one explicit component per start (and e^{v0} for the components before)."""
    L, B = inc.shape
    comps = [np.exp(v0)]  # the mass before the batch, as one component
    out = np.empty((L, B))
    for l in range(L):
        comps = [c * np.exp(inc[l]) for c in comps]
        comps.append(np.exp(np.broadcast_to(log_new[l], (B,))))
        out[l] = np.sum(comps, axis=0)
    return np.log(out), comps


@pytest.mark.parametrize("shape", ["per look", "per bet"])
def test_start_mixture_equals_explicit_components(shape):
    rng = np.random.default_rng(5)
    L, B = 40, 4
    v0 = np.log(rng.uniform(0.1, 1.0, B))
    inc = rng.normal(0.0, 0.4, (L, B))
    log_new = np.log(rng.uniform(0.001, 0.05, L if shape == "per look" else (L, B)))
    log_new[[3, 7]] = -np.inf  # looks without a start
    v, v_end = sq.start_mixture(v0, inc, log_new)
    ref, _ = explicit_mixture(v0, inc, log_new)
    np.testing.assert_allclose(v, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(v_end, ref[-1], rtol=1e-10)
    # a batch split in two gives the same values
    a, a_end = sq.start_mixture(v0, inc[:15], log_new[:15])
    b, _ = sq.start_mixture(a_end, inc[15:], log_new[15:])
    np.testing.assert_allclose(np.r_[a, b], v, rtol=1e-10)
    empty, same = sq.start_mixture(v0, np.zeros((0, B)), np.zeros(0))
    assert empty.shape == (0, B) and np.array_equal(same, v0)
    # the e-value: the bets' values weighted by beta
    lb = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    np.testing.assert_allclose(sq.mixture_log_value(v, lb), np.log(np.exp(ref + lb).sum(axis=1)), rtol=1e-10)
    with np.errstate(divide="ignore"):
        assert sq.mixture_log_value(np.full(3, -np.inf), np.zeros(3)) == -np.inf


def test_start_mixture_best_is_the_largest_explicit_component():
    rng = np.random.default_rng(6)
    L, B = 30, 3
    best0 = np.log(rng.uniform(0.2, 0.6, B))
    inc = rng.normal(0.05, 0.5, (L, B))
    log_new = np.log(rng.uniform(0.001, 0.2, L))
    for at in (None, 0, 9, L - 1):
        last = L - 1 if at is None else at
        val, idx = sq.start_mixture_best(best0, inc, log_new, at=at)
        # explicit: the component before the batch, then one per look k <= last (started after look k)
        s = np.cumsum(inc, axis=0)
        cand = [best0 + s[last]] + [log_new[k] + s[last] - s[k] for k in range(last + 1)]
        cand = np.array(cand)
        np.testing.assert_allclose(val, cand.max(axis=0), rtol=1e-12)
        np.testing.assert_array_equal(idx, cand.argmax(axis=0) - 1)
    assert idx.dtype == np.int64
    val, idx = sq.start_mixture_best(best0, np.zeros((0, B)), np.zeros(0))
    assert np.array_equal(val, best0) and idx.tolist() == [-1] * B and idx.dtype == np.int64


# --------------------------------------------------------------------------------------- the plug-in bet's memory


def explicit_discounted(log0, d, clock, memory):
    """Before look l: e^{log0} e^{-clock_{l-1}/memory} + sum_{i<l} d_i e^{-(clock_{l-1} - clock_i)/memory}."""
    L, C = d.shape
    before = np.empty((L, C))
    prev = 0.0
    for l in range(L):
        tot = np.exp(log0) * math.exp(-prev / memory)
        for i in range(l):
            tot = tot + d[i] * math.exp(-(prev - clock[i]) / memory)
        before[l] = tot
        prev = clock[l]
    after = np.exp(log0) * math.exp(-clock[-1] / memory) + sum(d[i] * math.exp(-(clock[-1] - clock[i]) / memory) for i in range(L))
    return before, after


def test_discounted_sums_by_their_definition():
    rng = np.random.default_rng(8)
    d = rng.integers(0, 30, (25, 4)).astype(float)
    d[4] = 0.0
    clock = np.cumsum(rng.integers(1, 200, 25)).astype(float)
    with np.errstate(divide="ignore"):
        log0 = np.log(np.array([5.0, 1.0, 0.0, 2.5]))
        before, after = sq.discounted_log_sums(log0, d, clock, 300.0)
        ref_b, ref_a = explicit_discounted(log0, d, clock, 300.0)
        np.testing.assert_allclose(np.exp(before), ref_b, rtol=1e-10, atol=1e-300)
        np.testing.assert_allclose(np.exp(after), ref_a, rtol=1e-10)
    # nothing before, no counts: -inf throughout (log 0), and an empty batch changes nothing
    b, a = sq.discounted_log_sums(np.full(2, -np.inf), np.zeros((3, 2)), np.arange(1.0, 4.0), 10.0)
    assert np.all(b == -np.inf) and np.all(a == -np.inf)
    b, a = sq.discounted_log_sums(log0, np.zeros((0, 4)), np.zeros(0), 10.0)
    assert b.shape == (0, 4) and np.array_equal(a, log0)
    # a very long batch stays finite (log space)
    b, a = sq.discounted_log_sums(np.zeros(1), np.ones((3, 1)), np.array([1e6, 2e6, 3e6]), 500.0)
    assert np.isfinite(a).all() and a[0] == pytest.approx(0.0, abs=1e-9)


def count_growth(share, margin, e_c, e_s, lam_fr, ratio=1.0):
    """Expected log-factor per request of each fail bet (Z = 1/p - m, -ratio/(1-p) - m or -m)."""
    dec = ratio / (1.0 - share) + margin
    lam = lam_fr / dec
    pc, ps = share * e_c, (1 - share) * e_s
    return pc * np.log1p(lam * (1 / share - margin)) + ps * np.log1p(-lam * dec) + (1 - pc - ps) * np.log1p(-lam * margin)


@pytest.mark.parametrize("margin, ratio", [(0.01, 1.0), (0.0, 1.0), (0.0, 1.5)])
def test_count_plug_in_bet_is_the_best_grid_bet_for_the_pulled_estimate(margin, ratio):
    share = 0.1
    fr = sq.bet_fractions(share)
    cases = [
        # (stable requests, errors, canary requests, errors): what the bet should be
        (1000.0, 1.0, 100.0, 0.0),  # healthy: no bet
        (1000.0, 1.0, 100.0, 8.0),  # 8% vs 0.1%: a bet
        (0.0, 0.0, 0.0, 0.0),  # nothing seen
        (1000.0, 10.0, 5.0, 1.0),  # one canary error in 5: pulled toward stable by 10 pseudo-requests
        (1800.0, 0.0, 200.0, 10.0),  # 5% vs 0%: the errors-5% case of bench/reaction.py
        (0.0, 0.0, 100.0, 30.0),  # no stable requests in memory: stable's rate counts as 0
    ]
    with np.errstate(divide="ignore"):
        sums = np.log(np.array(cases))
    kw = {} if (margin, ratio) == (0.0, 1.0) else {"margin": margin, "ratio": ratio}  # the defaults: ratio 1, margin 0
    bets = sq.count_adaptive_bets(sums, share, **kw)
    for (ns, xs, nc, xc), b in zip(cases, bets):
        e_s = xs / ns if ns > 0 else 0.0
        e_c = (xc + 10 * e_s) / (nc + 10)  # 10 pseudo-requests at stable's rate
        g = count_growth(share, margin, e_c, e_s, fr, ratio)
        want = int(np.argmax(g)) if g.max() > 0 else -1
        assert b == want, (ns, xs, nc, xc)
    assert bets[0] == -1 and bets[2] == -1 and bets[1] >= 0 and bets[4] >= 0 and bets[5] >= 0
    # the factors: the chosen grid bet's (the smallest one, 0, included), or 1 (log 0) without a bet
    inc = sq.count_fail_increments(np.array([2.0, 1.0, 3.0]), np.array([0.0, 1.0, 2.0]), np.array([98.0, 50.0, 70.0]), share,
                                   np.array([3, -1, 0]), **kw)
    dec = ratio / (1 - share) + margin
    for row, (xc, xs, xo) in enumerate([(2, 0, 98), (1, 1, 50), (3, 2, 70)]):
        lam = fr / dec
        want = xc * np.log1p(lam * (1 / share - margin)) + xs * np.log1p(-lam * dec) + xo * (np.log1p(-lam * margin) if margin else 0.0)
        np.testing.assert_allclose(inc[row, :20], want, rtol=1e-12)
    assert inc.shape == (3, 21)
    assert inc[0, -1] == inc[0, 3] and inc[1, -1] == 0.0 and inc[2, -1] == inc[2, 0] != 0.0


# --------------------------------------------------------------------------------------- the judge's count e-process


def reference_count_fail(d_req, d_err, share, margin, ratio=1.0):
    """The judge's error-rate FAIL e-value after each look, from the docstrings, one component per start.

    Factors per look and bet: (1 + lam (1/p - m))^canary errors (1 - lam (r/(1-p) + m))^stable errors
    (1 - lam m)^non-errors, lam = u / (r/(1-p) + m) for the 20 grid fractions u; the plug-in bet is the grid bet
    with the best expected log-factor for the discounted (memory 500 requests) rates seen before the look, the
    canary's rate pulled toward stable's by 10 pseudo-requests, or no bet. Components: the one started with the
    e-process (mass 1 - share_b) and one after every look (share_b (F(c_l) - F(c_{l-1})), F(c) = c/(c+250), c the
    canary count); bets weighted 0.75/20 each and 0.25 (plug-in). Returns e-values and (look, bet) of the
    largest weighted component.
    """
    fr = sq.bet_fractions(share)
    dec = ratio / (1.0 - share) + margin
    lam = fr / dec
    la, lb, lc = np.log1p(lam * (1 / share - margin)), np.log1p(-lam * dec), np.log1p(-lam * margin)
    w_bet = np.r_[np.full(20, 0.75 / 20), 0.25]
    sh = np.r_[np.full(20, 0.5), 0.25]
    hist = []  # (clock after the look, 4 counts)
    clock, c_prev = 0.0, 0.0
    comps = [(-1, (1 - sh) * np.ones(21))]  # (started after look, value per bet)
    out, largest = [], []
    for l in range(d_req.shape[0]):
        # the plug-in bet from looks before this one
        s = np.zeros(4)
        for t, cnt in hist:
            s = s + cnt * math.exp(-(clock - t) / 500.0)
        e_s = s[1] / s[0] if s[0] > 0 else 0.0
        e_c = (s[3] + 10 * e_s) / (s[2] + 10)
        g = count_growth(share, margin, e_c, e_s, fr, ratio)
        j = int(np.argmax(g)) if g.max() > 0 else -1
        xs, xc = d_err[l]
        xo = d_req[l].sum() - d_err[l].sum()
        f = np.exp(xc * la + xs * lb + xo * lc)
        f = np.r_[f, f[j] if j >= 0 else 1.0]
        comps = [(k, v * f) for k, v in comps]
        c = c_prev + d_req[l, 1]
        comps.append((l, sh * (c / (c + 250.0) - c_prev / (c_prev + 250.0))))
        c_prev = c
        clock += d_req[l].sum()
        hist.append((clock, np.array([d_req[l, 0], d_err[l, 0], d_req[l, 1], d_err[l, 1]], dtype=float)))
        out.append(math.log(sum(float(np.sum(w_bet * v)) for _, v in comps)))
        weighted = np.array([v * w_bet for _, v in comps])  # (components, bets)
        r, b = np.unravel_index(int(np.argmax(weighted)), weighted.shape)
        largest.append((comps[r][0], int(b)))
    return np.array(out), largest


def _count_looks(seed, looks, per_look, share, rates):
    """Per look (stable, canary) new requests and errors; `rates` (look -> (e_s, e_c))."""
    rng = np.random.default_rng(seed)
    d_req = np.zeros((looks, 2))
    d_err = np.zeros((looks, 2))
    for l in range(looks):
        n_c = rng.binomial(per_look, share)
        e_s, e_c = rates(l)
        d_req[l] = (per_look - n_c, n_c)
        d_err[l] = (rng.binomial(per_look - n_c, e_s), rng.binomial(n_c, e_c))
    return d_req, d_err


@pytest.mark.parametrize("slo", [SLO("error-rate", 0.01), SLO("error-rate", 0.5, relative=True)], ids=["1 pp", "x 1.5"])
def test_the_judges_count_e_process_equals_the_reference_at_every_look(slo):
    share = 0.1
    margin, ratio = (0.0, 1.0 + slo.max_increase) if slo.relative else (slo.max_increase, 1.0)
    # healthy for 60 looks, then 6% canary errors
    d_req, d_err = _count_looks(11, 120, 100, share, lambda l: (0.002, 0.002 if l < 60 else 0.06))
    ref, largest = reference_count_fail(d_req, d_err, share, margin, ratio)
    j = make_judge("sequential", [slo], alpha=1e-12)  # a threshold it never reaches
    cum_r, cum_e = np.cumsum(d_req, axis=0).astype(int), np.cumsum(d_err, axis=0).astype(int)
    got, comp = [], []
    for l in range(d_req.shape[0]):
        s = ArmSamples(int(cum_r[l, 0]), int(cum_e[l, 0]), np.full(int(cum_r[l, 0] - cum_e[l, 0]), 10.0))
        c = ArmSamples(int(cum_r[l, 1]), int(cum_e[l, 1]), np.full(int(cum_r[l, 1] - cum_e[l, 1]), 10.0))
        ev = j.evaluate(s, c, canary_share=share).evidence["slos"][0]
        got.append(math.log(ev["e_value_fail"]))
        comp.append(ev["largest_component"])
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-9)
    assert ref[59] < 0 and ref[-1] > math.log(100)  # the case means something: decayed, then large
    for l in (30, 70, 119):
        k, b = largest[l]
        assert comp[l]["after_look"] == k + 1, l  # looks count from 1; the start after look k
        assert comp[l]["after_canary_requests"] == (int(cum_r[k, 1]) if k >= 0 else 0)
        assert comp[l]["bet"] == ("plug-in" if b == 20 else "fixed grid")
    # with the 1 pp margin the plug-in bet's first component bet nothing while the canary was healthy: it carries
    # the FAIL here
    if not slo.relative:
        assert largest[-1] == (-1, 20) and comp[-1]["bet"] == "plug-in"


def test_the_fresh_count_e_process_helper_equals_the_reference():
    share = 0.2
    d_req, d_err = _count_looks(12, 50, 40, share, lambda l: (0.01, 0.01 if l < 25 else 0.05))
    for kw in ({"margin": 0.005}, {"ratio": 1.5}, {}):
        ref, _ = reference_count_fail(d_req, d_err, share, kw.get("margin", 0.0), kw.get("ratio", 1.0))
        np.testing.assert_allclose(sq.count_fail_log_evalues(d_req, d_err, share, **kw), ref, rtol=1e-9, atol=1e-9, err_msg=str(kw))


# --------------------------------------------------------------------------------------- the quantile plug-in bet


@pytest.mark.parametrize("slow", [1.4, 3.0])
def test_quantile_plug_in_bet_by_its_definition(slow):
    rng = np.random.default_rng(13)
    spec = sq.QuantileSpec(0.5, 0.1, True, min_stable=40)
    qb = sq.QuantileBlocks([spec], block=20, interval=False)
    n = 4000
    arm = rng.random(n) < 0.3
    lat = np.exp(rng.normal(3.0, 0.3, n)) * np.where(arm & (np.arange(n) > 2000), slow, 1.0)
    s_cnt, c_cnt = [], []
    for a in range(0, n, 10):
        s_cnt.append(int((~arm[a:a + 10]).sum())), c_cnt.append(int(arm[a:a + 10].sum()))
    # process in three batches: the discounted counts carry across calls
    res_all = []
    cuts = [0, 50, 51, 400]
    for a, b in zip(cuts[:-1], cuts[1:]):
        sl = slice(10 * a, 10 * b)  # ten samples a look
        seg_arm, seg_lat = arm[sl], lat[sl]
        res_all.append(qb.process(seg_lat[~seg_arm], np.array(s_cnt[a:b]), seg_lat[seg_arm], np.array(c_cnt[a:b])))
    na = np.concatenate([r.n_a[:, 0] for r in res_all])
    nb = np.concatenate([r.n_b[:, 0] for r in res_all])
    xa = np.concatenate([r.x_a[:, 0] for r in res_all])
    xb = np.concatenate([r.x_b[:, 0] for r in res_all])
    lpsi = np.concatenate([r.log_psi_adapt[:, 0] for r in res_all])
    lr = np.concatenate([r.lr_adapt[:, 0] for r in res_all])
    cap = 2.0 * float(qb.log_psi[0, : qb.J].max())
    S = np.zeros(4)  # discounted (stable compared, exceeded, canary compared, exceeded), memory 200 samples
    for k in range(na.size):
        r_s = (S[1] + 0.5) / (S[0] + 1.0)
        r_c = (S[3] + 10 * r_s) / (S[2] + 10)
        want = min(max(math.log(r_c / (1 - r_c)) - math.log(r_s / (1 - r_s)), 0.0), cap)
        assert lpsi[k] == pytest.approx(want, abs=1e-9), k
        assert lr[k] == pytest.approx(block_lr_by_pmf(xa[k], na[k], nb[k], xa[k] + xb[k], math.exp(want)), abs=1e-9)
        S = S * math.exp(-(na[k] + nb[k]) / 200.0) + np.array([nb[k], xb[k], na[k], xa[k]])
    assert (lpsi[: na.size // 3] == 0).mean() > 0.8  # healthy: mostly no bet
    assert (lpsi[-20:] > 0).all()  # slower: betting
    if slow > 2:  # far slower: the odds ratio is capped at twice the grid's largest
        np.testing.assert_allclose(lpsi[-20:], cap, rtol=1e-12)
        assert cap == pytest.approx(2 * math.log(2.5))
    # the discounted counts survive the state
    back = sq.QuantileBlocks([spec], block=20, interval=False).load_state(qb.to_state())
    np.testing.assert_allclose(np.exp(back.adapt[0]), S, rtol=1e-9)
