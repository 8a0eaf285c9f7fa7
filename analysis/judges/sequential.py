"""The default judge: anytime-valid sequential tests, safe to look at after every request.

How it decides (per SLO, then for the step):

* **FAIL** an SLO when its FAIL e-process reaches 1/alpha_test, i.e. the
  canary is worse than stable by more than the SLO's margin with confidence
  1 - alpha_test (for a zero margin: worse at all).
* **PASS** an SLO when its PASS e-process reaches 1/pass_alpha, i.e. the upper
  end of the anytime-valid confidence sequence for the canary's excess is below
  the margin: the canary is *shown* to be within it. With a zero margin this
  means "demonstrably not worse", which an identical canary reaches only by
  chance - so a zero-margin SLO holds an equal canary as inconclusive (the
  step's ``maxDuration`` / ``onInconclusive`` then apply). Give every SLO the
  margin you can live with.
* Otherwise the SLO is INCONCLUSIVE, with an estimate of the canary samples
  still needed.

The step FAILS as soon as one SLO fails; it PASSES when every SLO passes and
the canary has at least ``min_requests`` requests; anything else, including no
data, too little data and a traffic split that does not match the configured
share, is INCONCLUSIVE. Nothing promotes on missing evidence.

**Alpha split.** Each SLO's FAIL test runs at alpha_test = alpha / (n_slos *
n_steps). Each test is anytime-valid, so by Ville's inequality it crosses with
probability <= alpha_test over the whole step however often it is evaluated,
and by the union bound the probability that *any* SLO of *any* step fails a
canary that is within every margin is <= alpha: the whole rollout's
false-rollback rate. PASS tests run at ``pass_alpha`` (default alpha) each:
a canary worse than a margin passes that SLO (so can be promoted past the
step) with probability <= pass_alpha; no split is needed because a promotion
needs *every* SLO to pass.

**Looks and state.** Error-rate and location tests are functions of
cumulative sums, so the judge could be re-created at every look. Tail
(exceedance) tests keep a little state per instance (the predictable
threshold and counts, see :class:`analysis.sequential.ExceedanceTracker`), and
FAIL / PASS are sticky: the first crossing is the decision (that is what the
guarantee covers), later looks keep reporting it. Use one judge instance per
step (a shrinking sample or a new ``canary_share`` resets it). ``state()`` /
``load_state()`` persist that state so a restarted engine continues the same
e-processes instead of spending alpha twice.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import sequential as sq
from ..samples import SLO, ArmSamples
from ..verdict import Verdict
from ._common import check_arm, check_share, fmt_e, fnum, margin_words, pct, safe_exp, subject

__all__ = ["SequentialJudge", "SequentialSettings"]

# Latency samples below this are clipped before taking logs (0 ms responses exist).
MIN_LATENCY_MS = 1e-3
# Extra log-wealth the mixture typically needs beyond the best single bet (for "samples needed").
_MIXTURE_REGRET = 1.5


@dataclass(frozen=True)
class SequentialSettings:
    """Tuning of the sequential judge; defaults are what bench/analysis_sim.py measures."""

    tau: float = 0.2  # prior scale of the log-latency shift, in pooled standard deviations
    prior_df: float = 30.0  # pseudo-samples shrinking the canary's variance toward stable's
    min_latency_samples: int = 10  # per arm, before the location test is evaluated
    location_max_quantile: float = 0.75  # latency SLOs with quantile <= this use the location test
    latency_test: str = "auto"  # auto | location | exceedance
    srm_alpha: float = 1e-3  # level of the sample-ratio-mismatch guard (it only ever blocks)
    regrow: float = 1.1  # re-estimate a tail threshold when stable grew by 10%
    min_stable_tail: int | None = None  # stable samples before the first tail threshold; default max(30, 2/(1-q))

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ValueError("tau must be > 0")
        if self.latency_test not in ("auto", "location", "exceedance"):
            raise ValueError("latency_test must be auto, location or exceedance")
        if not 0 < self.srm_alpha < 1:
            raise ValueError("srm_alpha must be between 0 and 1")
        if self.regrow <= 1.0:
            raise ValueError("regrow must be > 1")


def choose_test(slo: SLO, settings: SequentialSettings) -> str:
    """'counts' (error rate), 'location' (log-latency mean shift) or 'exceedance' (tail)."""
    if slo.metric == "error-rate":
        return "counts"
    if settings.latency_test == "exceedance" or not slo.relative:
        return "exceedance"  # absolute (ms) margins are only expressible as a threshold
    if settings.latency_test == "location":
        return "location"
    if slo.quantile is None or slo.quantile <= settings.location_max_quantile:
        return "location"
    return "exceedance"


class SequentialJudge:
    """Anytime-valid judge (see the module docstring). Thread-safe; one instance per step."""

    kind = "sequential"

    def __init__(
        self,
        slos: list[SLO],
        *,
        alpha: float,
        n_steps: int = 1,
        min_requests: int = 0,
        pass_alpha: float | None = None,
        **settings: Any,
    ):
        if not slos:
            raise ValueError("a judge needs at least one SLO")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be between 0 and 1 (got {alpha})")
        if int(n_steps) < 1:
            raise ValueError(f"n_steps must be >= 1 (got {n_steps})")
        if int(min_requests) < 0:
            raise ValueError(f"min_requests must be >= 0 (got {min_requests})")
        self.slos = [SLO.from_dict(s) for s in slos]
        self.alpha = float(alpha)
        self.n_steps = int(n_steps)
        self.min_requests = int(min_requests)
        self.alpha_test = self.alpha / (len(self.slos) * self.n_steps)
        self.pass_alpha = self.alpha if pass_alpha is None else float(pass_alpha)
        if not 0.0 < self.pass_alpha < 1.0:
            raise ValueError(f"pass_alpha must be between 0 and 1 (got {pass_alpha})")
        self.settings = SequentialSettings(**settings)
        self.tests = [choose_test(s, self.settings) for s in self.slos]
        self._lock = threading.Lock()
        self.reset()

    # -- state -------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything (a new step)."""
        self._share: float | None = None
        self._requests = (0, 0)
        self._seen = [0, 0]  # latency samples already summed: stable, canary
        self._sums = np.zeros((2, 3))  # per arm: n, sum log, sum log^2
        self._trackers: dict[int, sq.ExceedanceTracker] = {}
        for i, (slo, test) in enumerate(zip(self.slos, self.tests)):
            if test == "exceedance":
                self._trackers[i] = sq.ExceedanceTracker(
                    slo.quantile if slo.quantile is not None else 0.5,
                    slo.max_increase,
                    bool(slo.relative),
                    min_stable=self.settings.min_stable_tail,
                    regrow=self.settings.regrow,
                )
        self._sticky: list[str | None] = [None] * len(self.slos)
        self._max_log_e = np.full((len(self.slos), 2), -np.inf)  # running max: fail, pass
        self._srm = False
        self.looks = 0

    def state(self) -> dict:
        """JSON-serialisable state: store it with the verdict to resume after a restart."""
        return {
            "share": self._share,
            "requests": list(self._requests),
            "trackers": {str(i): t.to_state() for i, t in self._trackers.items()},
            "sticky": list(self._sticky),
            "max_log_e": [[fnum(v) for v in row] for row in self._max_log_e],
            "srm": self._srm,
            "looks": self.looks,
        }

    def load_state(self, state: dict) -> None:
        with self._lock:
            self.reset()
            self._share = state.get("share")
            self._requests = tuple(state.get("requests", (0, 0)))
            for i, st in state.get("trackers", {}).items():
                self._trackers[int(i)].from_state(st)
            self._sticky = list(state.get("sticky", self._sticky))
            m = np.array([[(-np.inf if v is None else v) for v in row] for row in state.get("max_log_e", [])], dtype=float)
            if m.shape == self._max_log_e.shape:
                self._max_log_e = m
            self._srm = bool(state.get("srm", False))
            self.looks = int(state.get("looks", 0))

    def work_estimate(self, stable: ArmSamples, canary: ArmSamples) -> int:
        """Rough element count of the next evaluate (new samples, plus re-estimating tail thresholds)."""
        new = max(stable.latencies_ms.size - self._seen[0], 0) + max(canary.latencies_ms.size - self._seen[1], 0)
        if self._trackers:
            new += stable.latencies_ms.size + canary.latencies_ms.size
        return int(new)

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    # -- evaluate ----------------------------------------------------------

    def evaluate(self, stable: ArmSamples, canary: ArmSamples, *, canary_share: float) -> Verdict:
        p = check_share(canary_share)
        check_arm("stable", stable)
        check_arm("canary", canary)
        with self._lock:
            return self._evaluate(stable, canary, p)

    def _evaluate(self, stable: ArmSamples, canary: ArmSamples, p: float) -> Verdict:
        lat = (stable.latencies_ms, canary.latencies_ms)
        if self._share is not None and (
            p != self._share
            or stable.requests < self._requests[0]
            or canary.requests < self._requests[1]
            or lat[0].size < self._seen[0]
            or lat[1].size < self._seen[1]
        ):
            self.reset()
        self._share = p
        self._requests = (stable.requests, canary.requests)
        for a in (0, 1):
            new = lat[a][self._seen[a] :]
            if new.size:
                y = np.log(np.maximum(new, MIN_LATENCY_MS))
                self._sums[a] += (y.size, y.sum(), np.dot(y, y))
            self._seen[a] = lat[a].size
        for t in self._trackers.values():
            t.update(lat[0], lat[1])
        self.looks += 1

        results = [self._evaluate_slo(i, stable, canary, p) for i in range(len(self.slos))]

        n_total = stable.requests + canary.requests
        srm_log_e = float(sq.srm_log_evalue(canary.requests, n_total, p)) if n_total else 0.0
        if srm_log_e >= math.log(1.0 / self.settings.srm_alpha):
            self._srm = True
        srm = {
            "configured_share": p,
            "observed_share": fnum(canary.requests / n_total) if n_total else None,
            "e_value": safe_exp(srm_log_e),
            "threshold": 1.0 / self.settings.srm_alpha,
            "mismatch": self._srm,
        }
        evidence = {
            "judge": self.kind,
            "alpha": self.alpha,
            "n_slos": len(self.slos),
            "n_steps": self.n_steps,
            "alpha_per_test": self.alpha_test,
            "alpha_rule": "alpha / (n_slos * n_steps) per FAIL test (Bonferroni; each test anytime-valid), so the whole rollout's false-rollback rate <= alpha",
            "pass_alpha": self.pass_alpha,
            "canary_share": p,
            "min_requests": self.min_requests,
            "looks": self.looks,
            "counts": {"stable": stable.summary(), "canary": canary.summary()},
            "srm": srm,
            "slos": [r["evidence"] for r in results],
        }
        return self._combine(results, stable, canary, p, evidence)

    # -- per SLO -----------------------------------------------------------

    def _decide(self, i: int, log_fail: float, log_pass: float, usable: bool) -> str:
        if usable:
            self._max_log_e[i, 0] = max(self._max_log_e[i, 0], log_fail)
            self._max_log_e[i, 1] = max(self._max_log_e[i, 1], log_pass)
            if log_fail >= math.log(1.0 / self.alpha_test):
                self._sticky[i] = "fail"
            elif self._sticky[i] is None and log_pass >= math.log(1.0 / self.pass_alpha):
                self._sticky[i] = "pass"
        return self._sticky[i] or "inconclusive"

    def _evaluate_slo(self, i: int, stable: ArmSamples, canary: ArmSamples, p: float) -> dict:
        slo, test = self.slos[i], self.tests[i]
        if test == "counts":
            return self._errors(i, slo, stable, canary, p)
        if test == "location":
            return self._location(i, slo, p)
        return self._exceedance(i, slo, canary, p)

    def _common(self, i: int, slo: SLO, test: str, outcome: str, log_fail: float, log_pass: float) -> dict:
        return {
            "slo": slo.key,
            "definition": slo.to_json(),
            "description": slo.describe(),
            "test": test,
            "outcome": outcome,
            "e_value_fail": safe_exp(log_fail),
            "e_value_pass": safe_exp(log_pass),
            "fail_threshold": 1.0 / self.alpha_test,
            "pass_threshold": 1.0 / self.pass_alpha,
            "alpha": self.alpha_test,
            "alpha_spent": self.alpha_test,
            "anytime_p_value": fnum(min(1.0, safe_exp(-self._max_log_e[i, 0]))) if np.isfinite(self._max_log_e[i, 0]) else 1.0,
        }

    def _count_needed(self, log_fail, log_pass, e_c, e_s, p, ratio, margin, scale) -> tuple[str | None, int | None]:
        gap = e_c - ratio * e_s - margin
        if gap > 0:
            d, have, thr = "fail", log_fail, math.log(1.0 / self.alpha_test)
        elif gap < 0:
            d, have, thr = "pass", log_pass, math.log(1.0 / self.pass_alpha)
        else:
            return None, None
        g = sq.count_growth_rate(e_c, e_s, p, ratio=ratio, margin=margin, direction=d)
        if g <= 0:
            return d, None
        more_total = max(thr + _MIXTURE_REGRET - have, 0.0) / g
        return d, int(math.ceil(more_total * p * scale))

    def _errors(self, i: int, slo: SLO, stable: ArmSamples, canary: ArmSamples, p: float) -> dict:
        n_c, x_c, n_s, x_s = canary.requests, canary.errors, stable.requests, stable.errors
        ratio, margin = (1.0 + slo.max_increase, 0.0) if slo.relative else (1.0, slo.max_increase)
        n_other = (n_c - x_c) + (n_s - x_s)
        lf = float(sq.count_log_evalue(x_c, x_s, n_other, p, ratio=ratio, margin=margin, direction="fail"))
        lp = float(sq.count_log_evalue(x_c, x_s, n_other, p, ratio=ratio, margin=margin, direction="pass"))
        outcome = self._decide(i, lf, lp, usable=True)
        kind = "ratio" if slo.relative else "difference"
        lo = sq.count_bound(x_c, x_s, n_c, n_s, p, self.alpha_test, side="lower", kind=kind)
        hi = sq.count_bound(x_c, x_s, n_c, n_s, p, self.pass_alpha, side="upper", kind=kind)
        rate_c = x_c / n_c if n_c else None
        rate_s = x_s / n_s if n_s else None
        est_c = (x_c + 0.5) / (n_c + 1.0)
        est_s = (x_s + 0.5) / (n_s + 1.0)
        trend, needed = (None, None)
        if outcome == "inconclusive":
            trend, needed = self._count_needed(lf, lp, est_c, est_s, p, ratio, margin, 1.0)
        if rate_c is not None and rate_s is not None:
            stat = (rate_c / rate_s if rate_s > 0 else None) if slo.relative else rate_c - rate_s
        else:
            stat = None
        ev = self._common(i, slo, "conditional-binomial e-process on error counts (betting mixture, Lindon & Malek 2022)", outcome, lf, lp)
        ev.update(
            {
                "counts": {"stable": {"requests": n_s, "errors": x_s}, "canary": {"requests": n_c, "errors": x_c}},
                "estimate": {"canary_error_rate": fnum(rate_c), "stable_error_rate": fnum(rate_s)},
                "statistic": fnum(stat),
                "statistic_name": "error-rate ratio canary/stable" if slo.relative else "error-rate difference canary - stable",
                "interval": {
                    "of": "canary / stable error-rate ratio" if slo.relative else "canary - stable error rate",
                    "lower": fnum(lo),
                    "upper": fnum(hi),
                    "lower_confidence": 1 - self.alpha_test,
                    "upper_confidence": 1 - self.pass_alpha,
                    "margin": (1.0 + slo.max_increase) if slo.relative else slo.max_increase,
                },
                "samples_needed": needed,
                "trend": trend,
            }
        )
        if rate_c is not None and rate_s is not None:
            detail = f"canary {pct(rate_c)} vs stable {pct(rate_s)} errors"
        else:
            detail = "no requests in one arm yet"
        return {"outcome": outcome, "trend": trend, "needed": needed, "evidence": ev, "detail": detail, "lf": lf, "lp": lp}

    def _location(self, i: int, slo: SLO, p: float) -> dict:
        (n_s, s1_s, s2_s), (n_c, s1_c, s2_c) = self._sums
        lm = math.log1p(slo.max_increase)
        min_n = self.settings.min_latency_samples
        usable = n_c >= min_n and n_s >= min_n
        lf = lp = 0.0
        interval = {"of": "canary / stable geometric-mean latency ratio", "lower": None, "upper": None,
                    "lower_confidence": 1 - self.alpha_test, "upper_confidence": 1 - self.pass_alpha, "margin": 1.0 + slo.max_increase}
        estimate: dict[str, Any] = {}
        stat = None
        trend, needed = None, None
        if usable:
            ms = sq.mean_shift_stats(n_c, s1_c, s2_c, n_s, s1_s, s2_s, prior_df=self.settings.prior_df)
            lf_a, lp_a = sq.mean_shift_log_evalues(ms, lm, tau=self.settings.tau)
            lf, lp = float(lf_a), float(lp_a)
            sd = math.sqrt(float(ms.var))
            r = (self.settings.tau * float(ms.sd_pooled)) ** 2 / float(ms.var) if ms.var > 0 else 1e-12
            z_f = float(sq.halfnormal_boundary(r, math.log(1.0 / self.alpha_test)))
            z_p = float(sq.halfnormal_boundary(r, math.log(1.0 / self.pass_alpha)))
            diff = float(ms.diff)
            interval["lower"] = fnum(math.exp(diff - z_f * sd))
            interval["upper"] = fnum(math.exp(min(diff + z_p * sd, 700)))
            stat = (diff - lm) / sd if sd > 0 else None
            estimate = {
                "canary_geomean_ms": fnum(math.exp(s1_c / n_c)),
                "stable_geomean_ms": fnum(math.exp(s1_s / n_s)),
                "ratio": fnum(math.exp(diff)),
                "sd_log_latency": fnum(ms.sd_pooled),
            }
        outcome = self._decide(i, lf, lp, usable)
        if usable and outcome == "inconclusive":
            trend, needed = self._location_needed(ms, lm, p, n_c, n_s)
        ev = self._common(i, slo, "half-normal mixture SPRT on mean log-latency (asymptotic confidence sequence)", outcome, lf, lp)
        ev.update(
            {
                "counts": {"stable": {"latency_samples": int(n_s)}, "canary": {"latency_samples": int(n_c)}},
                "estimate": estimate,
                "statistic": fnum(stat),
                "statistic_name": "z of (log ratio - log(1 + margin))",
                "interval": interval,
                "samples_needed": needed if usable else max(min_n - int(n_c), 0),
                "trend": trend,
                "waiting_for": None if usable else f"{min_n} latency samples per arm",
            }
        )
        if usable:
            detail = f"canary/stable geometric-mean latency {math.exp(float(ms.diff)):.3f}x (interval {interval['lower']:.3f}-{interval['upper']:.3f})"
            needed_out = needed
        else:
            detail = f"waiting for {min_n} latency samples per arm (have {int(n_c)} canary, {int(n_s)} stable)"
            needed_out = max(min_n - int(n_c), 1)
        return {"outcome": outcome, "trend": trend if usable else "pass", "needed": needed_out, "evidence": ev, "detail": detail, "lf": lf, "lp": lp}

    def _location_needed(self, ms, lm: float, p: float, n_c: float, n_s: float) -> tuple[str | None, int | None]:
        diff = float(ms.diff)
        gap = abs(diff - lm)
        d = "fail" if diff > lm else "pass"
        if gap == 0:
            return None, None
        thr = math.log(1.0 / (self.alpha_test if d == "fail" else self.pass_alpha))
        vc, vs, sp = float(ms.var_c), float(ms.var_s), float(ms.sd_pooled)
        tau = self.settings.tau

        def decided(a: float) -> bool:
            nc = n_c + a
            ns = n_s + a * (1.0 - p) / p
            var = vc / nc + vs / ns
            r = (tau * sp) ** 2 / var
            return gap >= float(sq.halfnormal_boundary(r, thr)) * math.sqrt(var)

        hi = 1.0
        while not decided(hi):
            hi *= 2.0
            if hi > 1e10:
                return d, None
        lo = 0.0
        while hi - lo > max(1.0, 0.01 * hi):
            mid = 0.5 * (lo + hi)
            if decided(mid):
                hi = mid
            else:
                lo = mid
        return d, int(math.ceil(hi))

    def _exceedance(self, i: int, slo: SLO, canary: ArmSamples, p: float) -> dict:
        t = self._trackers[i]
        usable = t.threshold is not None and (t.counted_c + t.counted_s) > 0
        x_c, x_s, m_c, m_s = t.x_c, t.x_s, t.counted_c, t.counted_s
        lf = float(sq.count_log_evalue(x_c, x_s, 0, p, direction="fail"))
        lp = float(sq.count_log_evalue(x_c, x_s, 0, p, direction="pass"))
        outcome = self._decide(i, lf, lp, usable)
        q = slo.quantile if slo.quantile is not None else 0.5
        lo = hi = None
        trend, needed = None, None
        if usable:
            lo = sq.count_bound(x_c, x_s, m_c, m_s, p, self.alpha_test, side="lower", kind="ratio")
            hi = sq.count_bound(x_c, x_s, m_c, m_s, p, self.pass_alpha, side="upper", kind="ratio")
            if outcome == "inconclusive":
                est_c = (x_c + 0.5) / (m_c + 1.0)
                est_s = (x_s + 0.5) / (m_s + 1.0)
                trend, needed = self._count_needed(lf, lp, est_c, est_s, p, 1.0, 0.0, 1.0)
        lat_c = canary.latencies_ms
        canary_q = float(np.quantile(lat_c, q)) if lat_c.size else None
        ev = self._common(i, slo, "conditional-binomial e-process on exceedances of stable's running quantile (predictable threshold)", outcome, lf, lp)
        ev.update(
            {
                "counts": {
                    "stable": {"compared": m_s, "above_threshold": x_s},
                    "canary": {"compared": m_c, "above_threshold": x_c},
                },
                "estimate": {
                    "stable_quantile_ms": fnum(t.threshold),
                    "canary_threshold_ms": fnum(t.canary_threshold()),
                    "canary_quantile_ms": fnum(canary_q),
                    "canary_share_above": fnum(x_c / m_c) if m_c else None,
                    "stable_share_above": fnum(x_s / m_s) if m_s else None,
                    "threshold_estimates": t.estimates,
                },
                "statistic": fnum((x_c / m_c) / (x_s / m_s)) if m_c and m_s and x_s else None,
                "statistic_name": "ratio of the canary's share above (1+margin) x stable's quantile to stable's share above it",
                "interval": {
                    "of": "ratio of exceedance probabilities canary / stable",
                    "lower": fnum(lo),
                    "upper": fnum(hi),
                    "lower_confidence": 1 - self.alpha_test,
                    "upper_confidence": 1 - self.pass_alpha,
                    "margin": 1.0,
                },
                "samples_needed": needed,
                "trend": trend,
                "waiting_for": None if usable else f"{t.min_stable} stable latency samples to set the first threshold",
            }
        )
        if usable or t.threshold is not None:
            thr = t.canary_threshold()
            detail = (
                f"{pct(x_c / m_c if m_c else 0.0)} of canary requests above {thr:.1f} ms vs "
                f"{pct(x_s / m_s if m_s else 0.0)} of stable above its p{q * 100:g} {t.threshold:.1f} ms"
            )
            needed_out = needed
            if not usable:
                detail = f"threshold {t.threshold:.1f} ms (stable's p{q * 100:g}) set from {t.n_at_estimate} samples; exceedances count from the next look on"
            needed_out = needed
        else:
            detail = f"waiting for {t.min_stable} stable latency samples to set the first threshold"
            needed_out = max(int(math.ceil((t.min_stable - t.seen_s) * p / (1 - p))), 1)
        return {"outcome": outcome, "trend": trend if usable else "pass", "needed": needed_out, "evidence": ev, "detail": detail, "lf": lf, "lp": lp}

    # -- the step's verdict ----------------------------------------------------

    def _combine(self, results: list[dict], stable: ArmSamples, canary: ArmSamples, p: float, evidence: dict) -> Verdict:
        n_c = canary.requests
        fails = [(i, r) for i, r in enumerate(results) if r["outcome"] == "fail"]
        if fails:
            i, r = max(fails, key=lambda ir: ir[1]["lf"])
            slo = self.slos[i]
            e = safe_exp(max(r["lf"], self._max_log_e[i, 0]))
            reason = (
                f"canary {subject(slo)} is higher than stable's{margin_words(slo)} "
                f"({r['detail']}; e-value {fmt_e(e)} >= 1/alpha {fmt_e(1 / self.alpha_test)})"
            )
            return Verdict("fail", reason, evidence, None)
        if self._srm:
            obs = evidence["srm"]["observed_share"] or 0.0
            reason = (
                f"the canary received {pct(obs)} of requests but the configured split is {pct(p)}: the traffic split "
                "does not match (sample ratio mismatch), so the tests that rely on it cannot judge this step"
            )
            return Verdict("inconclusive", reason, evidence, None)
        if n_c == 0 or stable.requests == 0:
            which = "canary" if n_c == 0 else "stable"
            reason = f"no {which} requests yet: nothing to judge, and nothing promotes on missing data"
            return Verdict("inconclusive", reason, evidence, max(self.min_requests, 1) if n_c == 0 else None)
        pending = [(i, r) for i, r in enumerate(results) if r["outcome"] != "pass"]
        short = max(self.min_requests - n_c, 0)
        if not pending:
            if short == 0:
                reason = f"canary is within the margin on all {len(self.slos)} SLO{'s' if len(self.slos) > 1 else ''} after {n_c} canary requests (" + "; ".join(
                    f"{self.slos[i].key}: {r['detail']}" for i, r in enumerate(results)
                ) + ")"
                return Verdict("pass", reason, evidence, None)
            reason = f"every SLO is within its margin, but only {n_c} of the {self.min_requests} canary requests required before a promotion"
            return Verdict("inconclusive", reason, evidence, short)
        needed = self._needed(pending, short)
        i, r = self._most_informative(pending)
        slo = self.slos[i]
        if short > 0:
            head = f"only {n_c} of the {self.min_requests} canary requests required before a promotion, and no SLO has failed"
        else:
            head = "not enough evidence yet"
        tail = f"{subject(slo)}: {r['detail']}"
        if r.get("trend") == "pass" and slo.max_increase == 0 and not (r["evidence"].get("waiting_for")):
            tail += " (with a zero margin a pass needs the canary to be demonstrably better)"
        more = f"; about {needed} more canary requests needed" if needed is not None else ""
        return Verdict("inconclusive", f"{head} ({tail}){more}", evidence, needed)

    @staticmethod
    def _needed(pending: list[tuple[int, dict]], short: int) -> int | None:
        fail_trend = [r["needed"] for _, r in pending if r.get("trend") == "fail" and r["needed"] is not None]
        if fail_trend:
            return int(min(fail_trend))
        known = [r["needed"] for _, r in pending if r["needed"] is not None]
        if not known:
            return short or None
        return int(max(known + [short]))

    @staticmethod
    def _most_informative(pending: list[tuple[int, dict]]) -> tuple[int, dict]:
        fail_trend = [(i, r) for i, r in pending if r.get("trend") == "fail"]
        if fail_trend:
            return max(fail_trend, key=lambda ir: ir[1]["lf"])
        return max(pending, key=lambda ir: (ir[1]["needed"] is None, ir[1]["needed"] or 0))
