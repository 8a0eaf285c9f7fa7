"""The anytime-valid tests themselves: known answers, and type-I error / power by seeded simulation.

Type-I checks monitor *continuously* (at every event or small batch) and assert
that the rejection rate over the whole run stays <= alpha + 3 standard errors.
"""

from __future__ import annotations

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


def _tail_run(rng, p, k, n, look, alpha, q=0.9):
    """One stream through ExceedanceTracker; canary has k x (1-q) of its mass above stable's q-quantile."""
    arm = rng.random(n) < p
    u = rng.random(n)
    t = 1 - k * (1 - q)
    zc = np.where(u < t, special.ndtri(np.clip(u * q / t, 1e-300, 1)), special.ndtri(np.clip(q + (u - t) * (1 - q) / (1 - t), 0, 1 - 1e-16)))
    z = np.where(arm, zc, special.ndtri(u))
    lat = np.exp(4.6 + 0.5 * z)
    tr = sq.ExceedanceTracker(q)
    for end in range(look, n + 1, look):
        a = arm[:end]
        tr.update(lat[:end][~a], lat[:end][a])
        if sq.count_log_evalue(tr.x_c, tr.x_s, 0, p) >= math.log(1 / alpha):
            return end
    return None


def test_tail_test_type1_with_moving_threshold():
    # identical arms; the threshold is re-estimated as stable grows; checked every 40 requests
    rng = np.random.default_rng(51)
    reps = 400
    hits = sum(_tail_run(rng, 0.2, 1, 4000, 40, ALPHA) is not None for _ in range(reps))
    assert hits / reps <= _max_rate(ALPHA, reps)


def test_tail_test_power():
    rng = np.random.default_rng(52)
    found = [_tail_run(rng, 0.1, 3, 12000, 100, 1 / 60, q=0.99) for _ in range(60)]
    assert sum(f is not None for f in found) >= 48  # 1% -> 3% above stable's p99 found in most runs
    assert np.median([f if f is not None else 10**9 for f in found]) <= 7000


def test_exceedance_tracker_is_predictable_and_resets():
    tr = sq.ExceedanceTracker(0.5, min_stable=4)
    tr.update(np.array([1.0, 2.0, 3.0]), np.array([10.0]))
    assert tr.threshold is None and tr.counted_c == 0  # still training
    tr.update(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 100.0]))
    assert tr.threshold == pytest.approx(2.5) and tr.counted_c == 0  # samples before the first threshold only train
    tr.update(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([10.0, 100.0, 0.5, 3.0]))
    # new samples compared with the threshold fixed at the previous look (2.5)
    assert (tr.x_s, tr.counted_s, tr.x_c, tr.counted_c) == (1, 1, 1, 2)
    st = tr.to_state()
    tr2 = sq.ExceedanceTracker(0.5, min_stable=4).from_state(st)
    assert tr2.to_state() == st
    tr.update(np.array([1.0]), np.array([]))  # arrays shrank: a new step
    assert tr.counted_s == 0 and tr.threshold is None


def test_relative_margin_on_tail_threshold():
    tr = sq.ExceedanceTracker(0.9, margin=0.1, relative=True, min_stable=2)
    tr.update(np.arange(1.0, 101.0), np.array([]))
    t = tr.threshold
    tr.update(np.arange(1.0, 101.0), np.array([t * 1.05, t * 1.2]))
    assert tr.canary_threshold() == pytest.approx(t * 1.1)
    assert tr.x_c == 1
    ab = sq.ExceedanceTracker(0.9, margin=20.0, relative=False)
    ab.threshold = 100.0
    assert ab.canary_threshold() == 120.0
