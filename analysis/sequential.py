"""Anytime-valid tests: e-processes and confidence sequences for canary analysis.

Everything here is pure numpy/scipy, vectorised (arguments broadcast), with no
state except :class:`ExceedanceTracker`. An *e-process* is a non-negative
process whose expectation stays <= 1 under the null hypothesis at every
stopping time; Ville's inequality then gives

    P(sup_t E_t >= 1/alpha) <= alpha,

so a test that rejects the first time E_t >= 1/alpha keeps its type-I error
<= alpha however often (and whenever) it is looked at. Confidence sequences
are the sets of parameter values whose e-process has not (yet) crossed 1/alpha.

Three tests, each with a FAIL direction (canary worse than stable by more than
the margin) and a PASS direction (canary shown to be within the margin):

1. **Counts** (:func:`count_log_evalue`): error counts, or exceedance counts,
   of two arms sharing one randomly split request stream. Each request goes to
   the canary with probability ``share`` (the configured split). For request i
   with outcome y_i in {0, 1} (error, or "slow") let

       Z_i = y_i * (1[canary]/share - ratio * 1[stable]/(1 - share)) - margin

   Then E[Z_i | past] = e_c - ratio * e_s - margin, which is <= 0 under
   H0: e_c <= ratio * e_s + margin, whatever e_s is and however it drifts
   over time (diurnal load changes both arms alike). For every bet
   0 <= lam < 1/(ratio/(1-share) + margin) the product prod_i (1 + lam * Z_i) is
   a non-negative supermartingale under H0 (Waudby-Smith & Ramdas, betting
   confidence sequences), and a fixed mixture over a grid of bets is one too.
   Z takes three values only, so the product depends on three cumulative
   counts (canary errors, stable errors, non-errors): the test is stateless.
   With ``ratio=1, margin=0`` each factor is exactly the conditional-binomial
   likelihood ratio theta/share (canary error) or (1-theta)/(1-share) (stable
   error) with theta = share + lam: the test of Lindon & Malek (NeurIPS 2022)
   used for canaries by Lindon, Sanden & Shirikian (KDD 2022), with a
   discrete mixture over theta instead of a Beta prior, extended to absolute
   (``margin``) and relative (``ratio``) margins.

2. **Mean shift of log-latency** (:func:`mean_shift_log_evalues`): a
   one-sided (half-normal) mixture SPRT on the difference of the two arms'
   mean log-latency, i.e. on the geometric-mean latency ratio, which equals the
   ratio of every quantile when the canary is a multiplicative slowdown. For
   Gaussian data with known variance the likelihood ratio of the contrast
   (nuisance level integrated out with its right-Haar prior, as in Lindon, Ham,
   Tingley & Bojinov 2022, "Anytime-valid linear models") mixed over a
   half-normal prior on the shift is an e-process; here the variance is
   estimated (plug-in), which makes it an *asymptotic* confidence sequence
   (Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas, "Time-uniform central limit
   theory and asymptotic confidence sequences", 2024). Tests in
   ``tests/test_analysis_sequential.py`` check its type-I error under
   continuous monitoring from 10 samples per arm, with normal and with
   heavy-tailed mixtures.

3. **Exceedances of stable's quantile** (:class:`ExceedanceTracker` + the
   count test): for tail quantiles. Each new sample is compared with a
   threshold T fixed *before* it arrived (stable's empirical q-quantile from
   earlier looks; the canary's threshold is (1 + margin) * T). Because T is
   predictable and, when both arms serve the same latency distribution, the
   arm label of a request is independent of its latency, every exceedance is a
   canary one with probability ``share`` given the past: the count test above
   is exactly valid, however T moves. At T = stable's q-quantile the null
   P(canary > (1+m) T) <= P(stable > T) is "canary's q-quantile <= (1+m) x
   stable's". No quantile estimate enters the test statistic itself, which is
   why estimating T does not void the guarantee.

All of them are valid only if the arm label is random with the configured
probability: :func:`srm_log_evalue` tests that (sample ratio mismatch).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

__all__ = [
    "bet_fractions",
    "count_log_evalue",
    "count_bound",
    "count_growth_rate",
    "halfnormal_log_evalue",
    "halfnormal_boundary",
    "mean_shift_stats",
    "mean_shift_log_evalues",
    "srm_log_evalue",
    "ExceedanceTracker",
]

LOG2 = math.log(2.0)

# Bets of the count test, as fractions of the largest bet that keeps every factor
# positive; equal weights. With margin 0 the fraction u is the bet's excess share
# of events on the canary, u = (theta - share)/(1 - share); a relative increase r
# of the canary's rate is best bet on at u ~ share*r/(1 + share*r). The grid is
# log-spaced from r = 10% (the smallest increase worth detecting) up to 0.85, so
# every effect from +10% to ~x50 has a bet near its growth-optimal one.
# Fixed by the configured share before any data is seen. (Tuned with bench/analysis_sim.py.)
N_BETS = 20
MIN_RELATIVE_INCREASE = 0.1
MAX_BET_FRACTION = 0.85


@functools.lru_cache(maxsize=64)
def bet_fractions(share: float) -> np.ndarray:
    """The default bet grid for a given canary share (see above)."""
    u_min = share * MIN_RELATIVE_INCREASE / (1.0 + share * MIN_RELATIVE_INCREASE)
    u_min = min(max(u_min, 1e-5), MAX_BET_FRACTION / 10)
    out = np.geomspace(u_min, MAX_BET_FRACTION, N_BETS)
    out.flags.writeable = False
    return out


# ---------------------------------------------------------------------------
# 1. counts
# ---------------------------------------------------------------------------


def _logmeanexp(terms: np.ndarray) -> np.ndarray:
    """log(mean(exp(terms), axis=-1)), stable; plain numpy (scipy's logsumexp is slow on big arrays)."""
    m = np.max(terms, axis=-1, keepdims=True)
    return (m + np.log(np.mean(np.exp(terms - m), axis=-1, keepdims=True)))[..., 0]


def _count_log_factors(share: float, ratio: float, margin: float, direction: str, fractions: np.ndarray):
    """log(1 + lam * Z) for the three values of Z (canary error, stable error, non-error), per bet."""
    p = float(share)
    if not 0.0 < p < 1.0:
        raise ValueError(f"share must be strictly between 0 and 1 (got {share})")
    inc_c = 1.0 / p - margin  # Z for a canary error
    dec_s = ratio / (1.0 - p) + margin  # -Z for a stable error
    if direction == "fail":
        lam = fractions / dec_s
        return np.log1p(lam * inc_c), np.log1p(-lam * dec_s), np.log1p(-lam * margin)
    if direction == "pass":
        if inc_c <= 0:
            raise ValueError("margin too large for the pass test")
        mu = fractions / inc_c
        return np.log1p(-mu * inc_c), np.log1p(mu * dec_s), np.log1p(mu * margin)
    raise ValueError(f"direction must be 'fail' or 'pass' (got {direction!r})")


def count_log_evalue(
    x_c: Any,
    x_s: Any,
    n_other: Any,
    share: float,
    *,
    ratio: float = 1.0,
    margin: float = 0.0,
    direction: str = "fail",
    fractions: np.ndarray | None = None,
) -> np.ndarray:
    """log of the mixture e-value of the count test (see the module docstring).

    ``x_c``/``x_s``: cumulative events (errors, or exceedances) of canary and
    stable; ``n_other``: cumulative requests of both arms without an event
    (only matters when ``margin`` != 0). ``direction="fail"`` tests
    H0: e_c <= ratio*e_s + margin (large values: canary worse);
    ``direction="pass"`` tests H0: e_c >= ratio*e_s + margin (large values:
    canary within the margin). Arrays broadcast.
    """
    fr = bet_fractions(float(share)) if fractions is None else np.asarray(fractions, dtype=np.float64)
    a, b, c = _count_log_factors(share, float(ratio), float(margin), direction, fr)
    x_c = np.asarray(x_c, dtype=np.float64)[..., None]
    x_s = np.asarray(x_s, dtype=np.float64)[..., None]
    terms = x_c * a + x_s * b
    if margin != 0.0:
        terms = terms + np.asarray(n_other, dtype=np.float64)[..., None] * c
    return _logmeanexp(terms)


def count_bound(
    x_c: int,
    x_s: int,
    n_c: int,
    n_s: int,
    share: float,
    alpha: float,
    *,
    side: str,
    kind: str = "difference",
    fractions: np.ndarray | None = None,
) -> float:
    """One side of the anytime-valid confidence sequence for the canary's excess.

    ``kind="difference"``: bounds on e_c - e_s (absolute); ``kind="ratio"``: on
    e_c / e_s. ``side="lower"`` inverts the fail test, ``side="upper"`` the pass
    test, by bisection on the margin (the tests are monotone in it).
    """
    n_other = (n_c - x_c) + (n_s - x_s)
    target = math.log(1.0 / alpha)
    if kind == "difference":
        lo, hi = -1.0 + 1e-9, 1.0 - 1e-9
        p = share
        hi = min(hi, 1.0 / p - 1e-9)

        def stat(m: float) -> float:
            d = "fail" if side == "lower" else "pass"
            return float(count_log_evalue(x_c, x_s, n_other, share, margin=m, direction=d, fractions=fractions))
    elif kind == "ratio":
        lo, hi = 1e-6, 1e6

        def stat(m: float) -> float:
            d = "fail" if side == "lower" else "pass"
            return float(count_log_evalue(x_c, x_s, n_other, share, ratio=m, direction=d, fractions=fractions))
    else:
        raise ValueError(kind)

    if side == "lower":
        # fail-test e-value decreases in the margin: LCB = inf{m : E(m) < 1/alpha}
        if stat(lo) < target:
            return lo if kind == "difference" else 0.0
        while not _close(lo, hi, kind):
            mid = 0.5 * (lo + hi) if kind == "difference" else math.sqrt(lo * hi)
            if stat(mid) >= target:
                lo = mid
            else:
                hi = mid
        return lo
    if side == "upper":
        # pass-test e-value increases in the margin: UCB = sup{m : E(m) < 1/alpha}
        if stat(hi) < target:
            return hi if kind == "difference" else math.inf
        while not _close(lo, hi, kind):
            mid = 0.5 * (lo + hi) if kind == "difference" else math.sqrt(lo * hi)
            if stat(mid) >= target:
                hi = mid
            else:
                lo = mid
        return hi
    raise ValueError(side)


def _close(lo: float, hi: float, kind: str) -> bool:
    """Bisection precision of the confidence bounds: 1e-4 relative (plus 1e-9 absolute for differences)."""
    if kind == "ratio":
        return hi <= lo * (1.0 + 1e-4)
    return hi - lo <= 1e-9 + 1e-4 * max(abs(lo), abs(hi))


def count_growth_rate(e_c: float, e_s: float, share: float, *, ratio: float = 1.0, margin: float = 0.0, direction: str = "fail") -> float:
    """Expected log-wealth gained per request by the best bet of the grid if the rates were (e_c, e_s).

    Used to estimate how many more requests a decision needs.
    """
    a, b, c = _count_log_factors(share, ratio, margin, direction, bet_fractions(float(share)))
    pc = share * e_c
    ps = (1.0 - share) * e_s
    g = pc * a + ps * b + (1.0 - pc - ps) * c
    return float(max(np.max(g), 0.0))


# ---------------------------------------------------------------------------
# 2. mean shift (half-normal mixture SPRT)
# ---------------------------------------------------------------------------


def halfnormal_log_evalue(z: Any, r: Any) -> np.ndarray:
    """log of  int_0^inf LR(delta) 2 phi(delta/tau)/tau d delta  for D ~ N(delta, V), z = D/sqrt(V), r = tau^2/V.

    Closed form: 2 (1+r)^(-1/2) exp(z^2 r / (2(1+r))) Phi(z sqrt(r/(1+r))).
    """
    z = np.asarray(z, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    k = r / (1.0 + r)
    return LOG2 - 0.5 * np.log1p(r) + 0.5 * z * z * k + special.log_ndtr(z * np.sqrt(k))


def halfnormal_boundary(r: Any, log_threshold: float) -> np.ndarray:
    """The z at which :func:`halfnormal_log_evalue` reaches ``log_threshold`` (Newton; vectorised)."""
    r = np.asarray(r, dtype=np.float64)
    k = r / (1.0 + r)
    sk = np.sqrt(k)
    z = np.sqrt(np.maximum(2.0 * log_threshold + np.log1p(r) - 2 * LOG2, 0.0) / np.maximum(k, 1e-300))
    z = np.minimum(z, 1e6)
    for _ in range(30):
        f = halfnormal_log_evalue(z, r) - log_threshold
        # d/dz log Phi(z sk) = sk * phi/Phi = sk * exp(log_phi - log_Phi)
        u = z * sk
        dlogphi = sk * np.exp(-0.5 * u * u - 0.5 * math.log(2 * math.pi) - special.log_ndtr(u))
        fp = z * k + dlogphi
        step = f / np.maximum(fp, 1e-12)
        z = z - step
        if np.all(np.abs(step) < 1e-10):
            break
    return z


@dataclass
class MeanShift:
    """Sufficient statistics of the log-latency contrast (arrays or floats)."""

    diff: Any  # mean log-latency of canary minus stable
    var: Any  # variance of diff (plug-in)
    sd_pooled: Any  # pooled within-arm sd of log-latency
    var_c: Any = None  # per-sample variance used for the canary arm (shrunk toward stable's)
    var_s: Any = None  # per-sample variance of the stable arm


def mean_shift_stats(n_c, s1_c, s2_c, n_s, s1_s, s2_s, *, prior_df: float = 30.0) -> MeanShift:
    """Contrast and its variance from per-arm counts, sums and sums of squares of log-latency.

    The canary's variance is shrunk toward stable's with ``prior_df`` pseudo
    samples (stable has far more data early on); with more data it becomes the
    Welch (unpooled) variance, so unequal variances are allowed.
    """
    n_c = np.asarray(n_c, dtype=np.float64)
    n_s = np.asarray(n_s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        m_c = s1_c / n_c
        m_s = s1_s / n_s
        ss_c = np.maximum(s2_c - s1_c * m_c, 0.0)
        ss_s = np.maximum(s2_s - s1_s * m_s, 0.0)
        var_s = ss_s / np.maximum(n_s - 1.0, 1.0)
        var_c = (ss_c + prior_df * var_s) / np.maximum(n_c - 1.0 + prior_df, 1.0)
        var = var_c / n_c + var_s / n_s
        pooled = np.sqrt((ss_c + ss_s) / np.maximum(n_c + n_s - 2.0, 1.0))
    return MeanShift(m_c - m_s, var, pooled, var_c, var_s)


def mean_shift_log_evalues(ms: MeanShift, log_margin: float, *, tau: float = 0.2):
    """(log e-value FAIL, log e-value PASS) for H0: shift <= log_margin and H0: shift >= log_margin.

    ``tau`` is the prior scale of the shift in units of the pooled sd of
    log-latency (a standardised effect size, so the test is scale-free).
    """
    sd = np.sqrt(ms.var)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (ms.diff - log_margin) / sd
        r = (tau * ms.sd_pooled) ** 2 / ms.var
    z = np.where(np.isfinite(z), z, 0.0)
    r = np.where(np.isfinite(r) & (r > 0), r, 1e-12)
    return halfnormal_log_evalue(z, r), halfnormal_log_evalue(-z, r)


# ---------------------------------------------------------------------------
# sample ratio mismatch
# ---------------------------------------------------------------------------

SRM_CONCENTRATIONS = (30.0, 300.0, 3000.0, 30000.0)


def srm_log_evalue(n_c: Any, n: Any, share: float) -> np.ndarray:
    """Two-sided e-value that the canary's share of requests is not ``share``.

    Beta-binomial mixture (Beta centred on ``share``, several concentrations,
    equal weights) against the point null Binomial(n, share): the multinomial
    test of Lindon & Malek with two categories.
    """
    n_c = np.asarray(n_c, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    p = float(share)
    out = []
    for k in SRM_CONCENTRATIONS:
        a, b = k * p, k * (1.0 - p)
        out.append(special.betaln(a + n_c, b + n - n_c) - special.betaln(a, b) - n_c * math.log(p) - (n - n_c) * math.log1p(-p))
    return special.logsumexp(np.stack(out, axis=-1), axis=-1) - math.log(len(SRM_CONCENTRATIONS))


# ---------------------------------------------------------------------------
# 3. exceedances of a predictable threshold
# ---------------------------------------------------------------------------


class ExceedanceTracker:
    """Counts samples above a threshold that is always fixed before they arrive.

    Call :meth:`update` with the cumulative latency arrays at every look. New
    samples (those beyond the lengths seen at the previous look) are compared
    with the current threshold T: stable ones with T, canary ones with
    (1 + margin) * T (relative) or T + margin (absolute). Only then is T
    re-estimated, as stable's empirical ``quantile`` over all its samples so
    far - when stable's count has grown by ``regrow`` since the last estimate,
    starting once stable has ``min_stable`` samples. Samples that arrive before
    the first threshold only train it.

    The state is a few numbers (:meth:`to_state` / :meth:`from_state`), so it
    can be stored with a verdict and survive a restart.
    """

    def __init__(self, quantile: float, margin: float = 0.0, relative: bool = True, *, min_stable: int | None = None, regrow: float = 1.1):
        self.quantile = float(quantile)
        self.margin = float(margin)
        self.relative = bool(relative)
        self.min_stable = int(min_stable if min_stable is not None else max(30, math.ceil(2.0 / (1.0 - self.quantile))))
        self.regrow = float(regrow)
        self.reset()

    def reset(self) -> None:
        self.threshold: float | None = None
        self.seen_s = 0
        self.seen_c = 0
        self.counted_s = 0  # samples compared with a threshold
        self.counted_c = 0
        self.x_s = 0  # exceedances
        self.x_c = 0
        self.n_at_estimate = 0
        self.estimates = 0

    def canary_threshold(self, t: float | None = None) -> float | None:
        t = self.threshold if t is None else t
        if t is None:
            return None
        return t * (1.0 + self.margin) if self.relative else t + self.margin

    def update(self, stable: np.ndarray, canary: np.ndarray) -> None:
        if stable.size < self.seen_s or canary.size < self.seen_c:
            self.reset()  # the arrays shrank: a new step started
        new_s = stable[self.seen_s :]
        new_c = canary[self.seen_c :]
        if self.threshold is not None:
            self.x_s += int(np.count_nonzero(new_s > self.threshold))
            self.x_c += int(np.count_nonzero(new_c > self.canary_threshold()))
            self.counted_s += new_s.size
            self.counted_c += new_c.size
        self.seen_s = stable.size
        self.seen_c = canary.size
        n = stable.size
        if n >= self.min_stable and (self.threshold is None or n >= self.regrow * self.n_at_estimate):
            self.threshold = float(np.quantile(stable, self.quantile))
            self.n_at_estimate = n
            self.estimates += 1

    def to_state(self) -> dict:
        return {k: getattr(self, k) for k in ("threshold", "seen_s", "seen_c", "counted_s", "counted_c", "x_s", "x_c", "n_at_estimate", "estimates")}

    def from_state(self, state: dict) -> "ExceedanceTracker":
        for k, v in state.items():
            setattr(self, k, v)
        return self
