"""Absolute SLOs: bounds the canary must keep on its own, so a version broken on both arms still fails.

A relative SLO compares the canary with stable; when both are broken it can
only say "no worse", and the rollout holds forever. An absolute SLO bounds the
canary itself: its error rate at most ``max`` (``error-rate`` with ``max:
5%``), or its q-quantile at most ``max`` milliseconds (``latency``, ``ttfb`` or
``tpot`` with ``max: 800ms``).

Both reduce to one Bernoulli stream on the canary: X = 1 for an error (per
request), or for a sample above the bound (per successful request's time). The
bound holds exactly when P(X = 1) <= p0, with p0 = max for an error rate and
p0 = 1 - q for a quantile (the q-quantile is at most T exactly when at most a
1 - q share of samples exceed T).

**FAIL** when the betting e-process for H0: P(X=1) <= p0 reaches 1/alpha_test:
E = mean over bets lambda of prod (1 + lambda (X_i - p0)), lambda in (0, 1/p0).
Each factor has expectation <= 1 under H0 for any stream of independent or
predictable-given-the-past X's with P(X=1 | past) <= p0, so E is a test
supermartingale and Ville's inequality bounds the false-failure probability by
alpha_test however often it is looked at. **PASS** when the mirror e-process
for H0': P(X=1) >= p0 reaches 1/pass_alpha: the canary is *shown* within the
bound. Both are functions of the cumulative counts (k ones in n), so a new
segment (a restart, a resumed step) simply adds its counts: nothing is counted
twice, no alpha is spent twice. Alpha is split like the other judges: each
FAIL test at alpha / (n_slos x n_steps), where n_slos counts every SLO of the
policy (the caller passes the policy's total).

No data is never a pass: without canary samples every absolute SLO is
inconclusive, and the step needs ``min_requests`` canary requests to pass.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..samples import LABEL_WORDS, ArmSamples, _good_mask, _quantile_label
from ..verdict import Verdict

__all__ = ["AbsoluteJudge", "AbsoluteSLO", "bernoulli_log_evalues"]

_BETS = 20


@dataclass(frozen=True)
class AbsoluteSLO:
    """``kind`` error-rate (``bound`` a fraction) or a time (``label`` latency | ttfb | tpot, ``bound`` in ms)."""

    kind: str  # "error-rate" | "time"
    bound: float
    quantile: float | None = None
    label: str = "latency"

    @property
    def p0(self) -> float:
        return self.bound if self.kind == "error-rate" else 1.0 - float(self.quantile)

    @property
    def key(self) -> str:
        if self.kind == "error-rate":
            return "error-rate-max"
        return f"{self.label}-p{_quantile_label(float(self.quantile))}-max"

    def describe(self) -> str:
        if self.kind == "error-rate":
            return f"canary error rate at most {self.bound * 100:g}%"
        return f"canary p{_quantile_label(float(self.quantile))} {LABEL_WORDS.get(self.label, self.label)} at most {self.bound:g} ms"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "max": self.bound, "quantile": self.quantile, "label": self.label}


def _bet_grid(limit: float) -> np.ndarray:
    """Bets log-spaced from a small one to 0.9 of the largest admissible."""
    return np.geomspace(min(0.01, 0.05 * limit), 0.9 * limit, _BETS)


def bernoulli_log_evalues(k: int, n: int, p0: float) -> tuple[float, float]:
    """(log E against P(X=1) <= p0, log E against P(X=1) >= p0) after k ones in n, betting mixtures."""
    if n == 0:
        return 0.0, 0.0
    out = []
    for up in (True, False):
        # up: factors 1 + lam (X - p0), lam < 1/p0; down: 1 + lam (p0 - X), lam < 1/(1 - p0)
        limit = 1.0 / p0 if up else 1.0 / (1.0 - p0)
        lam = _bet_grid(limit)
        one = np.log1p(lam * ((1.0 - p0) if up else -(1.0 - p0)))
        zero = np.log1p(lam * (-p0 if up else p0))
        terms = k * one + (n - k) * zero
        top = float(terms.max())
        out.append(top + math.log(float(np.mean(np.exp(terms - top)))))
    return out[0], out[1]


class AbsoluteJudge:
    """Judges absolute SLOs on the canary arm (see the module docstring). One instance per step."""

    kind = "absolute"

    def __init__(self, slos: list[AbsoluteSLO], *, alpha: float, n_steps: int = 1, n_slos: int | None = None,
                 min_requests: int = 0, pass_alpha: float | None = None):
        if not slos:
            raise ValueError("an absolute judge needs at least one SLO")
        self.slos = list(slos)
        self.alpha = float(alpha)
        self.n_steps = int(n_steps)
        self.alpha_test = self.alpha / ((n_slos or len(self.slos)) * self.n_steps)
        self.pass_alpha = self.alpha if pass_alpha is None else float(pass_alpha)
        self.min_requests = int(min_requests)
        self._lock = threading.Lock()
        self._before = [(0, 0)] * len(self.slos)  # (k, n) of earlier segments, per SLO
        self._now = [(0, 0)] * len(self.slos)  # of the current segment (cumulative within it)
        self._requests_before = 0
        self._requests_now = 0
        self.looks = 0

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def work_estimate(self, stable: ArmSamples, canary: ArmSamples) -> int:
        return int(canary.latencies_ms.size + canary.ttfb_ms.size + canary.tpot_ms.size)

    # -- state --------------------------------------------------------------------------
    def new_segment(self) -> None:
        with self._lock:
            self._before = [(a + c, b + d) for (a, b), (c, d) in zip(self._before, self._now)]
            self._now = [(0, 0)] * len(self.slos)
            self._requests_before += self._requests_now
            self._requests_now = 0

    def state(self) -> dict:
        totals = [(a + c, b + d) for (a, b), (c, d) in zip(self._before, self._now)]
        return {"kind": self.kind, "slos": [s.to_json() for s in self.slos], "counts": totals,
                "requests": self._requests_before + self._requests_now, "looks": self.looks}

    def load_state(self, state: dict) -> None:
        """Continue from a stored state; the next evaluate's samples are a new segment."""
        with self._lock:
            if state.get("slos") != [s.to_json() for s in self.slos]:
                return  # another set of SLOs (the analysis changed): start afresh
            self._before = [tuple(c) for c in state["counts"]]
            self._now = [(0, 0)] * len(self.slos)
            self._requests_before = int(state.get("requests", 0))
            self._requests_now = 0
            self.looks = int(state.get("looks", 0))

    def carry(self) -> None:
        return None

    # -- evaluate -------------------------------------------------------------------------
    @staticmethod
    def _values(slo: AbsoluteSLO, canary: ArmSamples) -> np.ndarray:
        return {"latency": canary.latencies_ms, "ttfb": canary.ttfb_ms, "tpot": canary.tpot_ms}[slo.label]

    def evaluate(self, stable: ArmSamples, canary: ArmSamples, *, canary_share: float) -> Verdict:
        with self._lock:
            return self._evaluate(canary)

    def _evaluate(self, canary: ArmSamples) -> Verdict:
        self.looks += 1
        self._requests_now = canary.requests
        results = []
        for i, slo in enumerate(self.slos):
            if slo.kind == "error-rate":
                k, n = canary.errors, canary.requests
            else:
                values = self._values(slo, canary)
                good = values[_good_mask(values)]
                k, n = int(np.count_nonzero(good > slo.bound)), int(good.size)
            self._now[i] = (k, n)
            kt, nt = self._before[i][0] + k, self._before[i][1] + n
            log_fail, log_pass = bernoulli_log_evalues(kt, nt, slo.p0)
            if nt == 0:
                outcome = "inconclusive"
            elif log_fail >= math.log(1.0 / self.alpha_test):
                outcome = "fail"
            elif log_pass >= math.log(1.0 / self.pass_alpha):
                outcome = "pass"
            else:
                outcome = "inconclusive"
            rate = kt / nt if nt else None
            what = "errors" if slo.kind == "error-rate" else f"samples above {slo.bound:g} ms"
            detail = (f"{kt} {what} in {nt} ({rate * 100:.2f}% vs at most {slo.p0 * 100:g}%)" if nt
                      else "no canary samples yet")
            results.append({
                "slo": slo.key, "definition": slo.to_json(), "description": slo.describe(),
                "test": "one-sample betting e-process on the canary (absolute bound)", "outcome": outcome,
                "e_value_fail": math.exp(min(log_fail, 700)), "e_value_pass": math.exp(min(log_pass, 700)),
                "fail_threshold": 1.0 / self.alpha_test, "pass_threshold": 1.0 / self.pass_alpha,
                "alpha": self.alpha_test, "counts": {"canary": {"samples": nt, "above": kt}},
                "estimate": {"rate": rate, "bound": slo.p0}, "detail": detail,
                "samples_needed": self._needed(kt, nt, slo.p0, outcome),
            })
        n_c = self._requests_before + self._requests_now
        evidence = {"judge": self.kind, "alpha_per_test": self.alpha_test, "looks": self.looks, "slos": results,
                    "counts": {"canary": {"requests": n_c}}}
        failed = [r for r in results if r["outcome"] == "fail"]
        if failed:
            r = failed[0]
            return Verdict("fail", f"{r['description']} is broken: {r['detail']}; e-value {r['e_value_fail']:.3g} "
                                   f">= 1/alpha {r['fail_threshold']:.3g}", evidence)
        pending = [r for r in results if r["outcome"] != "pass"]
        short = max(self.min_requests - n_c, 0)
        if not pending and short == 0:
            return Verdict("pass", "the canary keeps every absolute bound (" + "; ".join(
                f"{r['slo']}: {r['detail']}" for r in results) + ")", evidence)
        needed = max([short] + [r["samples_needed"] or 0 for r in pending]) or None
        r = pending[0] if pending else results[0]
        return Verdict("inconclusive", f"not enough evidence yet for {r['description']} ({r['detail']})", evidence, needed)

    def _needed(self, k: int, n: int, p0: float, outcome: str) -> int | None:
        """Samples after which the test would decide if the observed rate were the truth (a KL estimate)."""
        if outcome != "inconclusive":
            return None
        p = (k + 0.5) / (n + 1.0)
        if abs(p - p0) < 1e-12:
            return None
        kl = p * math.log(p / p0) + (1 - p) * math.log((1 - p) / (1 - p0))
        target = math.log(1.0 / (self.alpha_test if p > p0 else self.pass_alpha)) + 1.5
        return max(int(math.ceil(target / max(kl, 1e-12))) - n, 1)
