"""The anytime-valid tests themselves: known answers, and type-I error / power by seeded simulation.

Type-I checks monitor *continuously* (at every event or small batch) and assert
that the rejection rate over the whole run stays <= alpha + 3 standard errors.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from analysis import sequential as sq

ALPHA = 0.05


def _max_rate(alpha: float, reps: int) -> float:
    return alpha + 3.0 * math.sqrt(alpha * (1 - alpha) / reps)


# ---------------------------------------------------------------------------
# known answers
# ---------------------------------------------------------------------------


def test_count_evalue_single_bet_by_hand():
    # share 1/2, one bet at half the maximum: lam = 0.5 / (1/(1-p)) = 0.25
    # canary error: 1 + 0.25 * 2 = 1.5 ; stable error: 1 - 0.25 * 2 = 0.5
    e = math.exp(sq.count_log_evalue(3, 1, 0, 0.5, fractions=np.array([0.5])))
    assert e == pytest.approx(1.5**3 * 0.5)
    # a mixture of bets is their average
    e2 = math.exp(sq.count_log_evalue(3, 1, 0, 0.5, fractions=np.array([0.5, 0.25])))
    lam2 = 0.25 / 2.0
    assert e2 == pytest.approx(0.5 * (1.5**3 * 0.5 + (1 + 2 * lam2) ** 3 * (1 - 2 * lam2)))


def test_count_evalue_with_margins_by_hand():
    p, m, rho, f = 0.2, 0.01, 1.0, 0.4
    # absolute margin: Z = y(1[c]/p - 1[s]/(1-p)) - m
    lam = f / (rho / (1 - p) + m)
    want = (1 + lam * (1 / p - m)) ** 2 * (1 - lam * (1 / (1 - p) + m)) ** 3 * (1 - lam * m) ** 100
    got = math.exp(sq.count_log_evalue(2, 3, 100, p, margin=m, fractions=np.array([f])))
    assert got == pytest.approx(want)
    # pass direction (bet against): mu = f / (1/p - m)
    mu = f / (1 / p - m)
    want = (1 - mu * (1 / p - m)) ** 2 * (1 + mu * (1 / (1 - p) + m)) ** 3 * (1 + mu * m) ** 100
    got = math.exp(sq.count_log_evalue(2, 3, 100, p, margin=m, direction="pass", fractions=np.array([f])))
    assert got == pytest.approx(want)
    # ratio margin: stable errors weigh ratio/(1-p)
    rho = 1.5
    lam = f / (rho / (1 - p))
    want = (1 + lam / p) ** 4 * (1 - lam * rho / (1 - p)) ** 7
    got = math.exp(sq.count_log_evalue(4, 7, 10**6, p, ratio=rho, fractions=np.array([f])))
    assert got == pytest.approx(want)


def test_count_evalue_is_conditional_binomial_likelihood_ratio():
    # with margin 0 each bet is the likelihood ratio of theta = p + lam against theta = p
    p, f = 0.1, 0.3
    theta = p + f * (1 - p)
    xc, xs = 7, 20
    lr = stats.binom.pmf(xc, xc + xs, theta) / stats.binom.pmf(xc, xc + xs, p)
    assert math.exp(sq.count_log_evalue(xc, xs, 0, p, fractions=np.array([f]))) == pytest.approx(lr)


def test_halfnormal_mixture_matches_numerical_integral():
    for z, r in [(0.0, 1.0), (2.5, 10.0), (-1.0, 0.3), (4.0, 200.0)]:
        v, tau = 1.0, math.sqrt(r)  # D ~ N(delta, V=1): z = D
        f = lambda d: math.exp(d * z - d * d / 2) * 2 * stats.norm.pdf(d / tau) / tau  # noqa: E731
        want, _ = integrate.quad(f, 0, np.inf)
        assert math.exp(sq.halfnormal_log_evalue(z, r)) == pytest.approx(want, rel=1e-7)


def test_halfnormal_boundary_inverts_the_evalue():
    r = np.array([0.01, 1.0, 30.0, 1e4])
    for t in (math.log(20), math.log(60), math.log(1000)):
        z = sq.halfnormal_boundary(r, t)
        np.testing.assert_allclose(sq.halfnormal_log_evalue(z, r), t, atol=1e-8)


def test_srm_evalue_is_betabinomial_over_binomial():
    n, x, p = 400, 61, 0.1
    want = np.mean([stats.betabinom.pmf(x, n, k * p, k * (1 - p)) for k in sq.SRM_CONCENTRATIONS]) / stats.binom.pmf(x, n, p)
    assert math.exp(sq.srm_log_evalue(x, n, p)) == pytest.approx(want, rel=1e-9)
    assert sq.srm_log_evalue(1000, 10_000, 0.1) < 0  # exact split: no evidence
    assert sq.srm_log_evalue(1300, 10_000, 0.1) > math.log(1e3)  # 13% vs 10%: mismatch


def test_count_bounds_agree_with_the_tests():
    xc, xs, nc, ns, p = 30, 80, 5000, 45000, 0.1
    lo = sq.count_bound(xc, xs, nc, ns, p, 0.05, side="lower")
    hi = sq.count_bound(xc, xs, nc, ns, p, 0.05, side="upper")
    est = xc / nc - xs / ns
    assert lo < est < hi
    n_other = nc - xc + ns - xs
    # just below the lower bound the fail test rejects, just above it does not
    assert sq.count_log_evalue(xc, xs, n_other, p, margin=lo - 1e-4) >= math.log(20)
    assert sq.count_log_evalue(xc, xs, n_other, p, margin=lo + 1e-4) < math.log(20)
    assert sq.count_log_evalue(xc, xs, n_other, p, margin=hi + 1e-4, direction="pass") >= math.log(20)
    rlo = sq.count_bound(xc, xs, nc, ns, p, 0.05, side="lower", kind="ratio")
    rhi = sq.count_bound(xc, xs, nc, ns, p, 0.05, side="upper", kind="ratio")
    assert rlo < (xc / nc) / (xs / ns) < rhi


# ---------------------------------------------------------------------------
# type-I error under continuous monitoring, and power
# ---------------------------------------------------------------------------


def _event_stream_rejections(theta: float, p: float, reps: int, events: int, seed: int, **kw) -> np.ndarray:
    """Max over every event of the count e-value; labels Bernoulli(theta)."""
    rng = np.random.default_rng(seed)
    out = np.empty(reps)
    for i in range(0, reps, 100):
        lab = rng.random((min(100, reps - i), events)) < theta
        xc = np.cumsum(lab, axis=1)
        xs = np.cumsum(~lab, axis=1)
        out[i : i + lab.shape[0]] = sq.count_log_evalue(xc, xs, 0, p, **kw).max(axis=1)
    return out


@pytest.mark.parametrize("p", [0.05, 0.5])
def test_error_test_type1_at_every_event(p):
    reps = 600
    m = _event_stream_rejections(p, p, reps, 1500, seed=11)
    assert (m >= math.log(1 / ALPHA)).mean() <= _max_rate(ALPHA, reps)
    # canary better than stable (composite null): even fewer rejections
    better = p * 0.5 / (p * 0.5 + (1 - p))
    m = _event_stream_rejections(better, p, reps, 1500, seed=12)
    assert (m >= math.log(1 / ALPHA)).mean() <= 0.02


def test_error_test_pass_direction_type1():
    reps, p = 600, 0.1
    m = _event_stream_rejections(p, p, reps, 1500, seed=13, direction="pass")
    assert (m >= math.log(1 / ALPHA)).mean() <= _max_rate(ALPHA, reps)


def _batched_counts(rng, reps, batches, size, p, e_s, e_c):
    """Cumulative (canary errors, stable errors, non-error requests) after each batch of `size` requests."""
    n_c = rng.binomial(size, p, (reps, batches))
    n_s = size - n_c
    x_c = rng.binomial(n_c, e_c)
    x_s = rng.binomial(n_s, e_s)
    xc, xs = np.cumsum(x_c, 1), np.cumsum(x_s, 1)
    other = np.cumsum(n_c - x_c + n_s - x_s, 1)
    return xc, xs, other


@pytest.mark.parametrize(
    "kind, e_s, e_c, kw",
    [
        ("absolute margin at the boundary", 0.01, 0.015, {"margin": 0.005}),
        ("ratio margin at the boundary", 0.01, 0.015, {"ratio": 1.5}),
    ],
)
def test_error_test_type1_with_margins(kind, e_s, e_c, kw):
    reps, p = 500, 0.2
    rng = np.random.default_rng(21)
    xc, xs, other = _batched_counts(rng, reps, 300, 200, p, e_s, e_c)
    lf = sq.count_log_evalue(xc, xs, other, p, direction="fail", **kw)
    assert (lf.max(1) >= math.log(1 / ALPHA)).mean() <= _max_rate(ALPHA, reps), kind
    lp = sq.count_log_evalue(xc, xs, other, p, direction="pass", **kw)
    assert (lp.max(1) >= math.log(1 / ALPHA)).mean() <= _max_rate(ALPHA, reps), kind


def test_error_test_power_and_pass():
    p, reps = 0.1, 200
    rng = np.random.default_rng(31)
    # 0.1% -> 0.5%: detected well within 60k requests
    xc, xs, other = _batched_counts(rng, reps, 60, 1000, p, 0.001, 0.005)
    lf = sq.count_log_evalue(xc, xs, other, p)
    assert (lf.max(1) >= math.log(60)).mean() >= 0.95
    # equal rates with a 0.5 pp margin: shown within the margin
    xc, xs, other = _batched_counts(rng, reps, 60, 1000, p, 0.001, 0.001)
    lp = sq.count_log_evalue(xc, xs, other, p, margin=0.005, direction="pass")
    assert (lp[:, -1] >= math.log(20)).mean() >= 0.95


def _location_max_evalues(y, arm, min_n=10, tau=0.2, log_margin=0.0):
    nc = np.cumsum(arm, 1)
    ns = np.cumsum(~arm, 1)
    s1c = np.cumsum(y * arm, 1)
    s2c = np.cumsum(y * y * arm, 1)
    s1s = np.cumsum(y * ~arm, 1)
    s2s = np.cumsum(y * y * ~arm, 1)
    ms = sq.mean_shift_stats(nc, s1c, s2c, ns, s1s, s2s)
    lf, lp = sq.mean_shift_log_evalues(ms, log_margin, tau=tau)
    ok = (nc >= min_n) & (ns >= min_n)
    return np.where(ok, lf, -np.inf).max(1), np.where(ok, lp, -np.inf).max(1), np.where(ok, lf, -np.inf)


@pytest.mark.parametrize("dist", ["lognormal", "endpoint-mixture", "student-t3"])
def test_location_test_type1_at_every_request(dist):
    reps, n, p = 400, 6000, 0.1
    rng = np.random.default_rng(41)
    arm = rng.random((reps, n)) < p
    if dist == "lognormal":
        y = rng.normal(0, 0.5, (reps, n))
    elif dist == "endpoint-mixture":
        u = rng.normal(0, 0.3, (reps, 20))
        j = rng.integers(0, 20, (reps, n))
        y = np.take_along_axis(u, j, 1) + rng.normal(0, 0.5, (reps, n))
    else:
        y = 0.5 * rng.standard_t(3, (reps, n))
    mf, mp, _ = _location_max_evalues(y, arm)
    assert (mf >= math.log(1 / ALPHA)).mean() <= _max_rate(ALPHA, reps)
    assert (mp >= math.log(1 / ALPHA)).mean() <= _max_rate(ALPHA, reps)


def test_location_test_margin_boundary_and_power():
    reps, n, p = 300, 4000, 0.1
    rng = np.random.default_rng(42)
    arm = rng.random((reps, n)) < p
    y = rng.normal(0, 0.5, (reps, n)) + math.log(1.1) * arm
    # exactly +10% with a 10% margin: the null boundary
    mf, mp, _ = _location_max_evalues(y, arm, log_margin=math.log(1.1))
    assert (mf >= math.log(1 / ALPHA)).mean() <= _max_rate(ALPHA, reps)
    assert (mp >= math.log(1 / ALPHA)).mean() <= _max_rate(ALPHA, reps)
    # +20% with no margin: found, typically within ~1,000 requests at a 10% share
    y = rng.normal(0, 0.5, (reps, n)) + math.log(1.2) * arm
    mf, _, lf = _location_max_evalues(y, arm)
    hit = lf >= math.log(60)
    assert hit.any(1).mean() >= 0.97
    first = np.where(hit.any(1), hit.argmax(1), n)
    assert np.median(first) <= 1200


# ---------------------------------------------------------------------------
# quantile test: exceedances of a predictable threshold, conditional on block counts
# ---------------------------------------------------------------------------


def test_block_lr_known_answers_and_exact_expectation():
    # one canary and one stable sample, one exceedance: X ~ Bernoulli(1/2), E[psi^X] = (1 + psi) / 2
    for psi in (1.5, 3.0, 0.4):
        lp = np.array([math.log(psi)])
        assert math.exp(sq.block_log_lr(1, 1, 1, 1, lp)[0]) == pytest.approx(2 * psi / (1 + psi))
        assert math.exp(sq.block_log_lr(0, 1, 1, 1, lp)[0]) == pytest.approx(2 / (1 + psi))
    # against scipy's hypergeometric pmf: the mgf, and E[e-value] = 1 exactly under the null
    rng = np.random.default_rng(1)
    lp = np.log(np.array([0.3, 0.8, 1.2, 2.0, 6.0]))
    for _ in range(300):
        na, nb = (int(v) for v in rng.integers(0, 40, 2))
        k = int(rng.integers(0, na + nb + 1))
        xs = np.arange(0, na + 1)
        pmf = stats.hypergeom.pmf(xs, na + nb, k, na)
        want = np.log((pmf[:, None] * np.exp(xs[:, None] * lp)).sum(0))
        np.testing.assert_allclose(sq.hypergeom_log_mgf(na, nb, k, lp), want, atol=1e-9)
        support = xs[pmf > 0]
        e = np.exp(sq.block_log_lr(support, na, nb, k, lp))  # (x, bets)
        np.testing.assert_allclose((pmf[pmf > 0][:, None] * e).sum(0), 1.0, atol=1e-9)


def test_block_lr_removing_canary_exceedances_never_raises_a_fail_bet():
    # the margin argument: a canary event X > (1+m)T is inside X > T, so canary exceedances are removed;
    # the e-value of psi > 1 must not grow (brute force over small blocks)
    lp = np.log(np.array([1.2, 2.0, 5.0]))
    for na in range(1, 7):
        for nb in range(0, 7):
            for k in range(0, na + nb + 1):
                for x in range(max(0, k - nb), min(na, k) + 1):
                    base = sq.block_log_lr(x, na, nb, k, lp)
                    for d in range(1, x + 1):
                        assert np.all(sq.block_log_lr(x - d, na, nb, k - d, lp) <= base + 1e-12)


def _qb_stream(rng, n, p, look, *, e_s=0.0, e_c=0.0, shift=0.0, drift=0.0, scale=1.0):
    """Requests split at random; only successes have latency; returns per-look batches for QuantileBlocks."""
    arm = rng.random(n) < p
    ok = rng.random(n) >= np.where(arm, e_c, e_s)
    t = np.arange(n) / n
    y = 4.6 + 0.5 * rng.normal(size=n) + drift * np.sin(6 * math.pi * t) + shift * arm
    lat = np.exp(y) * np.where(arm, scale, 1.0)
    looks = np.arange(0, n, look)
    s_vals, c_vals, s_cnt, c_cnt = [], [], [], []
    for a in looks:
        sl = slice(a, a + look)
        s = lat[sl][~arm[sl] & ok[sl]]
        c = lat[sl][arm[sl] & ok[sl]]
        s_vals.append(s), c_vals.append(c), s_cnt.append(s.size), c_cnt.append(c.size)
    return np.concatenate(s_vals), np.array(s_cnt), np.concatenate(c_vals), np.array(c_cnt)


def _qb_max_log_e(stream, spec, direction="fail", block=20):
    qb = sq.QuantileBlocks([spec], block=block, interval=False)
    res = qb.process(*stream)
    lr = res.lr_fail if direction == "fail" else res.lr_pass
    if lr.shape[0] == 0:
        return -np.inf
    return float(sq.logmeanexp(np.cumsum(lr[:, 0, :], axis=0)).max())


@pytest.mark.parametrize("case", ["errors differ (20% vs 0%)", "drift shared, look every request"])
def test_quantile_test_type1_whatever_the_error_rates(case):
    # identical latency, but the canary's share of *latency samples* is not the traffic share (or latency moves)
    reps = 200
    rng = np.random.default_rng(61)
    hits = {0.5: 0, 0.99: 0}
    for _ in range(reps):
        if case.startswith("errors"):
            st_ = _qb_stream(rng, 6000, 0.1, 50, e_s=0.2, e_c=0.0)
        else:
            st_ = _qb_stream(rng, 2000, 0.1, 1, drift=1.0)
        for q in hits:
            hits[q] += _qb_max_log_e(st_, sq.QuantileSpec(q)) >= math.log(1 / ALPHA)
    for q, h in hits.items():
        assert h / reps <= _max_rate(ALPHA, reps), (case, q, h)


def test_quantile_pass_test_type1_at_the_margin():
    # canary exactly 1.1 x stable and a 10% margin: the PASS null holds with equality
    reps = 300
    rng = np.random.default_rng(62)
    hits = 0
    for _ in range(reps):
        st_ = _qb_stream(rng, 6000, 0.2, 100, scale=1.1)
        hits += _qb_max_log_e(st_, sq.QuantileSpec(0.5, 0.1), direction="pass") >= math.log(1 / ALPHA)
    assert hits / reps <= _max_rate(ALPHA, reps)


def _first_detection(rng, n, p, look, q, k=None, shift=0.0, alpha=1 / 60):
    arm = rng.random(n) < p
    if k:
        u = rng.random(n)
        t = 1 - k * (1 - q)
        zc = np.where(u < t, special.ndtri(np.clip(u * q / t, 1e-300, 1)), special.ndtri(np.clip(q + (u - t) * (1 - q) / (1 - t), 0, 1 - 1e-16)))
        z = np.where(arm, zc, special.ndtri(u))
    else:
        z = rng.normal(size=n) + shift / 0.5 * arm
    lat = np.exp(4.6 + 0.5 * z)
    idx = np.arange(n) // look
    s_cnt = np.bincount(idx[~arm], minlength=idx[-1] + 1)
    c_cnt = np.bincount(idx[arm], minlength=idx[-1] + 1)
    qb = sq.QuantileBlocks([sq.QuantileSpec(q)], interval=False)
    res = qb.process(lat[~arm], s_cnt, lat[arm], c_cnt)
    le = sq.logmeanexp(np.cumsum(res.lr_fail[:, 0, :], axis=0))
    hit = np.flatnonzero(le >= math.log(1 / alpha))
    return (res.look[hit[0]] + 1) * look if hit.size else None


def test_quantile_test_power():
    rng = np.random.default_rng(52)
    found = [_first_detection(rng, 14000, 0.1, 100, 0.99, k=3) for _ in range(60)]
    assert sum(f is not None for f in found) >= 54  # 1% -> 3% above stable's p99
    assert np.median([f if f is not None else 10**9 for f in found]) <= 6000
    found = [_first_detection(rng, 6000, 0.1, 100, 0.5, shift=math.log(1.2)) for _ in range(60)]
    assert sum(f is not None for f in found) >= 54  # median +20%
    assert np.median([f if f is not None else 10**9 for f in found]) <= 2000


def test_quantile_thresholds_are_predictable_and_survive_state():
    spec = sq.QuantileSpec(0.5, min_stable=4)
    qb = sq.QuantileBlocks([spec], block=4, interval=False)
    # look 1: 3 stable + 1 canary = a full block, but no threshold yet: it only trains
    r = qb.process(np.array([1.0, 2.0, 3.0]), np.array([3]), np.array([10.0]), np.array([1]))
    assert r.look.tolist() == [0] and r.n_a.tolist() == [[0]] and np.isnan(qb.T[0])
    # look 2: 4 stable seen at the end of block 2 -> threshold set after it, from the sketch (~2.5 ms)
    r = qb.process(np.array([4.0, 5.0]), np.array([2]), np.array([20.0, 0.1]), np.array([2]))
    assert r.n_a.tolist() == [[0]]
    t = qb.T[0]
    assert 2.0 <= t <= 3.2
    # look 3: compared with the threshold fixed before it (block of 4: 2 + 2)
    r = qb.process(np.array([0.5, 9.0]), np.array([2]), np.array([100.0, 1.0]), np.array([2]))
    assert (r.n_a.tolist(), r.n_b.tolist()) == ([[2]], [[2]])
    assert (qb.x_c[0], qb.x_s[0]) == (1, 1)
    # a block of x_a = 1 of n_a = 2, n_b = 2, k = 2 has e-value psi / E[psi^X], X ~ Hyp(4, 2, 2)
    h = stats.hypergeom.pmf([0, 1, 2], 4, 2, 2)
    psi = np.exp(qb.log_psi[0, : qb.J])
    np.testing.assert_allclose(np.exp(r.lr_fail[0, 0]), psi / (h[0] + h[1] * psi + h[2] * psi**2))
    st_ = json.loads(json.dumps(qb.to_state()))
    qb2 = sq.QuantileBlocks([spec], block=4, interval=False).load_state(st_)
    assert qb2.to_state() == st_


def test_quantile_canary_thresholds_with_margins():
    qb = sq.QuantileBlocks([sq.QuantileSpec(0.99, 0.1, True), sq.QuantileSpec(0.99, 20.0, False)])
    qb.seed_thresholds([100.0, 100.0])
    thr = qb.canary_thresholds(qb.T)
    assert thr[0, qb.gi] == pytest.approx(110.0)
    assert thr[1, qb.gi] == pytest.approx(120.0)
    np.testing.assert_allclose(qb.grid_values(0)[qb.gi], 1.1)
    assert qb.grid_values(1)[qb.gi] == pytest.approx(20.0)
    assert np.all(np.diff(thr, axis=1) > 0)  # the interval grid is increasing


def test_sketch_quantile_close_to_exact():
    rng = np.random.default_rng(4)
    x = rng.lognormal(4.6, 1.5, 20000)
    sk = np.bincount(sq.sketch_index(x), minlength=sq.N_SKETCH)
    for q in (0.5, 0.9, 0.99):
        assert sq.sketch_quantile(sk, q) == pytest.approx(np.quantile(x, q), rel=0.03)
    assert sq.sketch_index(np.array([0.0]))[0] == 0
    d = sq.sketch_to_json(sk)
    assert np.array_equal(sq.sketch_from_json(d), sk)
