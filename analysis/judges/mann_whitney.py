"""Kayenta-compatible judge: Mann-Whitney U with a Hodges-Lehmann interval, for users who migrate.

Per SLO, like Kayenta's ``MannWhitneyClassifier`` (NetflixACAJudge):

* two-sample Mann-Whitney U test of canary against stable (scipy's
  ``mannwhitneyu``, two-sided);
* the Hodges-Lehmann shift (median of all canary - stable differences) and
  its ``confidence`` (default 98%) interval from the order statistics of the
  pairwise differences (normal approximation for the rank quantile);
* a tolerance band of +-``tolerance`` (default 25%) x |shift|: the metric is
  *High* when the interval's lower end lies above the band;
* an effect-size check: High also needs the canary's SLO quantile (or mean)
  to exceed stable's by more than the SLO's margin.

For the error rate each request is a 0/1 outcome. The Hodges-Lehmann shift of
0/1 data is degenerate (almost always 0), so the location measure is the
Mann-Whitney probabilistic index 2 U/(n_c n_s) - 1, which for 0/1 data equals
the error-rate difference e_c - e_s exactly, with its interval from U's
tie-corrected standard deviation.

The step FAILS if any SLO is High and PASSES otherwise - Kayenta's semantics:
*absence* of a significant regression - except that, as everywhere in Weir,
fewer than ``min_requests`` canary requests or an SLO without data is
INCONCLUSIVE. This judge re-runs a fixed-horizon test at every look: its
false-rollback rate grows with the number of looks (bench/analysis_sim.py
measures it). Use ``sequential`` for a guarantee.

Pairwise-difference order statistics are found by bisection on the shift with
sorted arrays (O(n log n) per step, never the n_c x n_s differences), so large
samples cost tens of milliseconds: ``evaluate_async`` moves them off the event
loop.
"""

from __future__ import annotations

import math
import threading
import numpy as np
from scipy import special, stats

from ..samples import SLO, ArmSamples, split_latencies
from ..verdict import Verdict
from ._common import check_arm, check_share, fnum, margin_words, subject

__all__ = ["MannWhitneyJudge", "hodges_lehmann", "kth_pairwise_difference", "binary_mannwhitney"]


def _count_le(c: np.ndarray, s: np.ndarray, d: float) -> int:
    """Number of pairs with c_i - s_j <= d (c, s sorted)."""
    return int(c.size * s.size - np.searchsorted(s, c - d, side="left").sum())


def kth_pairwise_difference(c: np.ndarray, s: np.ndarray, k: int, *, sorted_: bool = False) -> float:
    """The k-th smallest (1-indexed) of the n_c x n_s differences c_i - s_j, without forming them."""
    if not sorted_:
        c, s = np.sort(c), np.sort(s)
    total = c.size * s.size
    if not 1 <= k <= total:
        raise ValueError(f"k={k} outside 1..{total}")
    d_min = float(c[0] - s[-1])  # the smallest difference
    d_max = float(c[-1] - s[0])  # the largest
    pad = 1e-6 * (abs(d_min) + abs(d_max) + 1.0)
    lo, hi = d_min - pad, d_max + pad  # strictly outside every difference
    lo_count = 0
    # invariant: count_le(lo) < k <= count_le(hi)
    budget = 200_000
    for _ in range(200):
        hi_count = _count_le(c, s, hi)
        if hi_count - lo_count <= budget:
            break
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        m = _count_le(c, s, mid)
        if m >= k:
            hi = mid
        else:
            lo, lo_count = mid, m
    # gather the differences in (lo, hi] exactly and pick the right one
    i_lo = np.searchsorted(s, c - hi, side="left")  # s_j >= c_i - hi  <=> c_i - s_j <= hi
    i_hi = np.searchsorted(s, c - lo, side="left")  # s_j <  c_i - lo  <=> c_i - s_j > lo
    counts = i_hi - i_lo
    n = int(counts.sum())
    rows = np.repeat(np.arange(c.size), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    cols = i_lo[rows] + (np.arange(n) - starts)
    vals = c[rows] - s[cols]
    j = k - lo_count - 1
    return float(np.partition(vals, j)[j])


def hodges_lehmann(canary: np.ndarray, stable: np.ndarray, confidence: float = 0.98) -> dict:
    """Hodges-Lehmann shift (canary - stable) with its distribution-free interval."""
    c, s = np.sort(np.asarray(canary, float)), np.sort(np.asarray(stable, float))
    m, n = c.size, s.size
    nm = m * n
    if nm % 2:
        est = kth_pairwise_difference(c, s, (nm + 1) // 2, sorted_=True)
    else:
        est = 0.5 * (kth_pairwise_difference(c, s, nm // 2, sorted_=True) + kth_pairwise_difference(c, s, nm // 2 + 1, sorted_=True))
    z = stats.norm.ppf(1.0 - (1.0 - confidence) / 2.0)
    k = int(math.floor(nm / 2.0 - z * math.sqrt(nm * (m + n + 1) / 12.0)))
    if k < 1:
        lower, upper = -math.inf, math.inf
    else:
        lower = kth_pairwise_difference(c, s, k, sorted_=True)
        upper = kth_pairwise_difference(c, s, nm - k + 1, sorted_=True)
    return {"estimate": est, "lower": lower, "upper": upper, "rank_k": k, "confidence": confidence}


def binary_mannwhitney(x_c: int, n_c: int, x_s: int, n_s: int, confidence: float = 0.98) -> dict:
    """Mann-Whitney U of two 0/1 samples from their counts (what scipy gives on the expanded arrays)."""
    o_c, o_s = n_c - x_c, n_s - x_s
    nm = n_c * n_s
    u = x_c * o_s + 0.5 * (x_c * x_s + o_c * o_s)
    n = n_c + n_s
    mu = nm / 2.0
    ties = 0.0
    for t in (x_c + x_s, o_c + o_s):
        ties += t**3 - t
    var = nm / 12.0 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    sd = math.sqrt(max(var, 0.0))
    big = max(u, nm - u)
    if sd > 0:
        zc = (big - mu - 0.5) / sd
        p = min(1.0, 2.0 * float(special.ndtr(-zc)))
    else:
        p = 1.0
    d = 2.0 * u / nm - 1.0 if nm else 0.0
    z = stats.norm.ppf(1.0 - (1.0 - confidence) / 2.0)
    half = z * 2.0 * sd / nm if nm else math.inf
    return {"U": u, "p_value": p, "estimate": d, "lower": d - half, "upper": d + half, "confidence": confidence}


class MannWhitneyJudge:
    """Kayenta-style judge (see the module docstring). Stateless apart from a lock."""

    kind = "mann-whitney"

    def __init__(
        self,
        slos: list[SLO],
        *,
        alpha: float,
        n_steps: int = 1,
        min_requests: int = 0,
        confidence: float = 0.98,
        tolerance: float = 0.25,
        min_samples: int = 3,
        carry: dict | None = None,
    ):
        # ``carry`` is accepted for the common interface and ignored: a fixed-horizon test has nothing to continue.
        if not slos:
            raise ValueError("a judge needs at least one SLO")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be between 0 and 1 (got {alpha})")
        if not 0.5 < confidence < 1.0:
            raise ValueError(f"confidence must be between 0.5 and 1 (got {confidence})")
        if tolerance < 0:
            raise ValueError("tolerance must be >= 0")
        self.slos = [SLO.from_dict(s) for s in slos]
        self.alpha = float(alpha)
        self.n_steps = int(n_steps)
        self.min_requests = int(min_requests)
        self.confidence = float(confidence)
        self.tolerance = float(tolerance)
        self.min_samples = int(min_samples)
        self._lock = threading.Lock()

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    # The common judge interface. This judge re-runs a fixed-horizon test on the arrays it is given, so
    # after a restart or a new segment it judges that segment's data only; it has nothing to carry.
    def state(self) -> dict:
        return {"judge": self.kind, "version": 1}

    def load_state(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("judge") != self.kind:
            raise ValueError("not a mann-whitney judge state")

    def new_segment(self) -> None:
        return None

    def carry(self) -> None:
        return None

    def work_estimate(self, stable: ArmSamples, canary: ArmSamples) -> int:
        n = stable.latencies_ms.size + canary.latencies_ms.size
        return int(n * max(math.log2(n + 2), 1) * 4)

    def evaluate(self, stable: ArmSamples, canary: ArmSamples, *, canary_share: float) -> Verdict:
        p = check_share(canary_share)
        check_arm("stable", stable)
        check_arm("canary", canary)
        good_s, bad_s = split_latencies(stable.latencies_ms)
        good_c, bad_c = split_latencies(canary.latencies_ms)
        with self._lock:
            results = [self._classify(slo, stable, canary, good_s, good_c) for slo in self.slos]
        evidence = {
            "judge": self.kind,
            "alpha": self.alpha,
            "confidence": self.confidence,
            "tolerance": self.tolerance,
            "canary_share": p,
            "min_requests": self.min_requests,
            "note": "fixed-horizon test re-run at every look (Kayenta semantics): no false-rollback guarantee under repeated looks",
            "counts": {"stable": stable.summary(), "canary": canary.summary()},
            "bad_samples": {"stable": bad_s, "canary": bad_c},
            "slos": results,
        }
        high = [r for r in results if r["classification"] == "High"]
        if high:
            r = max(high, key=lambda r: r["effect"] or 0.0)
            slo = SLO.from_dict(r["definition"])
            reason = (
                f"canary {subject(slo)} is higher than stable's{margin_words(slo)} (Mann-Whitney p={r['p_value']:.2g}, "
                f"{self.confidence * 100:g}% interval of the shift [{r['interval']['lower']:.4g}, {r['interval']['upper']:.4g}] "
                f"above the +-{self.tolerance * 100:g}% band)"
            )
            return Verdict("fail", reason, evidence, None)
        n_c = canary.requests
        nodata = [r for r in results if r["classification"] == "Nodata"]
        short = max(self.min_requests - n_c, 0)
        if n_c == 0:
            return Verdict("inconclusive", "no canary requests yet: nothing to judge, and nothing promotes on missing data", evidence, max(self.min_requests, 1))
        if nodata:
            return Verdict("inconclusive", f"no data for {nodata[0]['slo']} in one of the arms: nothing promotes on missing data", evidence, max(short, self.min_samples))
        if short:
            return Verdict(
                "inconclusive",
                f"only {n_c} of the {self.min_requests} canary requests required before a promotion; no metric is High so far",
                evidence,
                short,
            )
        if bad_s or bad_c:
            return Verdict("inconclusive", f"{bad_s + bad_c} bad latency samples (NaN, inf or negative) from the source: "
                           "left out, and nothing promotes on bad data", evidence, None)
        return Verdict(
            "pass",
            f"no SLO metric is significantly higher on the canary (Mann-Whitney at {self.confidence * 100:g}% with a "
            f"+-{self.tolerance * 100:g}% band, {n_c} canary requests)",
            evidence,
            None,
        )

    def _classify(self, slo: SLO, stable: ArmSamples, canary: ArmSamples, s_lat: np.ndarray, c_lat: np.ndarray) -> dict:
        base = {
            "slo": slo.key,
            "definition": slo.to_json(),
            "description": slo.describe(),
            "alpha_spent_per_look": 1.0 - self.confidence,  # a fresh fixed-horizon test at every look
            "samples_needed": None,
        }
        if slo.metric == "error-rate":
            n_c, n_s = canary.requests, stable.requests
            if n_c < self.min_samples or n_s < self.min_samples:
                return {**base, "classification": "Nodata", "effect": None, "p_value": None, "interval": None}
            mw = binary_mannwhitney(canary.errors, n_c, stable.errors, n_s, self.confidence)
            rate_c, rate_s = canary.errors / n_c, stable.errors / n_s
            if slo.relative:
                effect = rate_c / rate_s if rate_s > 0 else (math.inf if rate_c > 0 else 1.0)
                effect_ok = effect > 1.0 + slo.max_increase
            else:
                effect = rate_c - rate_s
                effect_ok = effect > slo.max_increase
            est = mw["estimate"]
            band = self.tolerance * abs(est)
            high = mw["lower"] > band and effect_ok
            return {
                **base,
                "classification": "High" if high else "Pass",
                "statistic": mw["U"],
                "statistic_name": "Mann-Whitney U (0/1 outcomes)",
                "p_value": mw["p_value"],
                "shift": est,
                "shift_name": "probabilistic index 2U/(n_c n_s) - 1 = error-rate difference",
                "interval": {"lower": fnum(mw["lower"]), "upper": fnum(mw["upper"]), "confidence": self.confidence},
                "band": [-band, band],
                "effect": fnum(effect),
                "effect_name": "error-rate ratio canary/stable" if slo.relative else "error-rate difference canary - stable",
                "counts": {"stable": {"requests": n_s, "errors": stable.errors}, "canary": {"requests": n_c, "errors": canary.errors}},
                "estimate": {"canary_error_rate": rate_c, "stable_error_rate": rate_s},
            }
        c, s = c_lat, s_lat
        if c.size < self.min_samples or s.size < self.min_samples:
            return {**base, "classification": "Nodata", "effect": None, "p_value": None, "interval": None,
                    "counts": {"stable": {"latency_samples": int(s.size)}, "canary": {"latency_samples": int(c.size)}}}
        res = stats.mannwhitneyu(c, s, alternative="two-sided")
        hl = hodges_lehmann(c, s, self.confidence)
        if slo.quantile is not None:
            qc, qs = float(np.quantile(c, slo.quantile)), float(np.quantile(s, slo.quantile))
            effect_name = f"p{slo.key.split('-p', 1)[1]} ratio canary/stable" if slo.relative else f"p{slo.key.split('-p', 1)[1]} difference (ms)"
        else:
            qc, qs = float(np.mean(c)), float(np.mean(s))
            effect_name = "mean ratio canary/stable" if slo.relative else "mean difference (ms)"
        if slo.relative:
            effect = qc / qs if qs > 0 else math.inf
            effect_ok = effect > 1.0 + slo.max_increase
        else:
            effect = qc - qs
            effect_ok = effect > slo.max_increase
        band = self.tolerance * abs(hl["estimate"])
        high = hl["lower"] > band and effect_ok
        return {
            **base,
            "classification": "High" if high else "Pass",
            "statistic": float(res.statistic),
            "statistic_name": "Mann-Whitney U (canary vs stable)",
            "p_value": float(res.pvalue),
            "shift": hl["estimate"],
            "shift_name": "Hodges-Lehmann shift canary - stable (ms)",
            "interval": {"lower": fnum(hl["lower"]), "upper": fnum(hl["upper"]), "confidence": self.confidence},
            "band": [-band, band],
            "effect": fnum(effect),
            "effect_name": effect_name,
            "counts": {"stable": {"latency_samples": int(s.size)}, "canary": {"latency_samples": int(c.size)}},
            "estimate": {"canary": qc, "stable": qs},
        }
