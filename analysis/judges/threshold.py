"""Flagger-compatible judge: absolute thresholds per interval and a failed-check limit.

Every call to :meth:`ThresholdJudge.evaluate` is one analysis *interval*: the
judge looks only at the samples that arrived since the previous call (it keeps
the previous cumulative counts). For each SLO it computes the canary's value
over the interval - error rate, latency quantile (or mean) - and compares it
with the SLO's threshold:

* an absolute threshold from ``thresholds`` (``{"error-rate": 0.01,
  "latency-p99": 500}``: a fraction, milliseconds), as Flagger's
  ``thresholdRange.max``;
* otherwise (a Weir extension) stable's value over the same interval raised
  by the SLO's margin.

An interval with any SLO over its threshold - or with no canary data, which
Flagger reports as "no values found" - is a *failed check*. The step FAILS
once ``failed_check_limit`` checks have failed (Flagger's
``analysis.threshold``), PASSES after ``iterations`` successful intervals if
the canary has ``min_requests`` requests, and is INCONCLUSIVE in between.
There is no statistics here: with few requests per interval it rolls back
good canaries often (bench/analysis_sim.py measures how often).
"""

from __future__ import annotations

import threading

import numpy as np

from ..samples import SLO, ArmSamples, split_latencies
from ..verdict import Verdict
from ._common import check_arm, check_share, fnum, margin_words, subject

__all__ = ["ThresholdJudge"]


class ThresholdJudge:
    """Flagger-style judge (see the module docstring). Keeps interval state; one instance per step."""

    kind = "threshold"

    def __init__(
        self,
        slos: list[SLO],
        *,
        alpha: float = 0.05,
        n_steps: int = 1,
        min_requests: int = 0,
        failed_check_limit: int = 5,
        iterations: int = 10,
        thresholds: dict[str, float] | None = None,
        no_data_fails: bool = True,
        carry: dict | None = None,
    ):
        # ``carry`` is accepted for the common interface and ignored (per-interval checks carry nothing).
        if not slos:
            raise ValueError("a judge needs at least one SLO")
        if int(failed_check_limit) < 1:
            raise ValueError("failed_check_limit must be >= 1")
        if int(iterations) < 1:
            raise ValueError("iterations must be >= 1")
        self.slos = [SLO.from_dict(s) for s in slos]
        self.alpha = float(alpha)
        self.n_steps = int(n_steps)
        self.min_requests = int(min_requests)
        self.failed_check_limit = int(failed_check_limit)
        self.iterations = int(iterations)
        self.thresholds = dict(thresholds or {})
        unknown = set(self.thresholds) - {s.key for s in self.slos}
        if unknown:
            raise ValueError(f"thresholds for unknown SLOs {sorted(unknown)}; known: {[s.key for s in self.slos]}")
        self.no_data_fails = bool(no_data_fails)
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self._prev = {"stable": (0, 0, 0), "canary": (0, 0, 0)}  # requests, errors, latency samples
        self.failed_checks = 0
        self.successful_checks = 0
        self.intervals = 0
        self._failed = False
        self._bad_total = {"stable": 0, "canary": 0}
        self.history: list[dict] = []

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    # The common judge interface: the check counts survive a restart; a new segment's arrays start from zero.
    def state(self) -> dict:
        return {"judge": self.kind, "version": 1, "failed_checks": self.failed_checks,
                "successful_checks": self.successful_checks, "intervals": self.intervals, "failed": self._failed,
                "bad_samples": dict(self._bad_total)}

    def load_state(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("judge") != self.kind:
            raise ValueError("not a threshold judge state")
        with self._lock:
            self.reset()
            self.failed_checks = int(state["failed_checks"])
            self.successful_checks = int(state["successful_checks"])
            self.intervals = int(state["intervals"])
            self._failed = bool(state["failed"])
            self._bad_total = dict(state.get("bad_samples", self._bad_total))

    def new_segment(self) -> None:
        with self._lock:
            self._prev = {"stable": (0, 0, 0), "canary": (0, 0, 0)}

    def carry(self) -> None:
        return None

    def work_estimate(self, stable: ArmSamples, canary: ArmSamples) -> int:
        return int(stable.latencies_ms.size - self._prev["stable"][2] + canary.latencies_ms.size - self._prev["canary"][2])

    def evaluate(self, stable: ArmSamples, canary: ArmSamples, *, canary_share: float) -> Verdict:
        p = check_share(canary_share)
        check_arm("stable", stable)
        check_arm("canary", canary)
        with self._lock:
            return self._evaluate(stable, canary, p)

    def _interval(self, name: str, arm: ArmSamples) -> tuple[int, int, np.ndarray]:
        r0, e0, l0 = self._prev[name]
        return arm.requests - r0, arm.errors - e0, arm.latencies_ms[l0:]

    def _value(self, slo: SLO, requests: int, errors: int, lat: np.ndarray) -> float | None:
        if slo.metric == "error-rate":
            return errors / requests if requests > 0 else None
        if lat.size == 0:
            return None
        return float(np.quantile(lat, slo.quantile)) if slo.quantile is not None else float(np.mean(lat))

    def _threshold(self, slo: SLO, stable_value: float | None) -> float | None:
        if slo.key in self.thresholds:
            return float(self.thresholds[slo.key])
        if stable_value is None:
            return None
        if slo.metric == "error-rate":
            return stable_value * (1 + slo.max_increase) if slo.relative else stable_value + slo.max_increase
        return stable_value * (1 + slo.max_increase) if slo.relative else stable_value + slo.max_increase

    def _evaluate(self, stable: ArmSamples, canary: ArmSamples, p: float) -> Verdict:
        prev = self._prev
        if stable.requests < prev["stable"][0] or canary.requests < prev["canary"][0] or \
                stable.latencies_ms.size < prev["stable"][2] or canary.latencies_ms.size < prev["canary"][2]:
            # the source dropped data: a new segment (its content so far cannot be told apart, so this interval is empty)
            self._prev = {"stable": (stable.requests, stable.errors, stable.latencies_ms.size),
                          "canary": (canary.requests, canary.errors, canary.latencies_ms.size)}
        s_req, s_err, s_lat = self._interval("stable", stable)
        c_req, c_err, c_lat = self._interval("canary", canary)
        s_lat, s_bad = split_latencies(s_lat)
        c_lat, c_bad = split_latencies(c_lat)
        self._bad_total = {"stable": self._bad_total["stable"] + s_bad, "canary": self._bad_total["canary"] + c_bad}
        self._prev = {
            "stable": (stable.requests, stable.errors, stable.latencies_ms.size),
            "canary": (canary.requests, canary.errors, canary.latencies_ms.size),
        }
        self.intervals += 1
        checks = []
        for slo in self.slos:
            cv = self._value(slo, c_req, c_err, c_lat)
            sv = self._value(slo, s_req, s_err, s_lat)
            thr = self._threshold(slo, sv)
            if slo.metric == "latency" and (s_bad or c_bad):
                ok = False
                status = "bad data"
            elif cv is None or thr is None:
                ok = not self.no_data_fails
                status = "no data"
            else:
                ok = cv <= thr
                status = "ok" if ok else "over threshold"
            checks.append({"slo": slo.key, "canary_value": fnum(cv), "stable_value": fnum(sv), "threshold": fnum(thr),
                           "threshold_source": "absolute" if slo.key in self.thresholds else "stable x (1 + margin)",
                           "status": status, "ok": ok})
        interval_ok = all(c["ok"] for c in checks)
        if not self._failed:
            if interval_ok:
                self.successful_checks += 1
            else:
                self.failed_checks += 1
                if self.failed_checks >= self.failed_check_limit:
                    self._failed = True
        record = {"interval": self.intervals, "canary_requests": c_req, "stable_requests": s_req, "checks": checks, "ok": interval_ok}
        self.history.append(record)
        if len(self.history) > 50:
            self.history = self.history[-50:]
        evidence = {
            "judge": self.kind,
            "canary_share": p,
            "failed_checks": self.failed_checks,
            "failed_check_limit": self.failed_check_limit,
            "successful_checks": self.successful_checks,
            "iterations": self.iterations,
            "min_requests": self.min_requests,
            "counts": {"stable": stable.summary(), "canary": canary.summary()},
            "interval": record,
            "bad_samples": dict(self._bad_total),
            "note": "absolute per-interval checks (Flagger semantics): no statistical guarantee",
        }
        if self._failed:
            bad = [c for c in checks if not c["ok"]] or checks
            c = bad[0]
            slo = next(s for s in self.slos if s.key == c["slo"])
            if c["status"] == "no data":
                what = "had no data in the interval"
            elif c["status"] == "bad data":
                what = "had bad latency samples (NaN, inf or negative) in the interval"
            else:
                what = f"was {c['canary_value']:.4g}, over the threshold {c['threshold']:.4g}"
                if c["threshold_source"] != "absolute":
                    what += f" (stable's value raised{margin_words(slo) or ' by a zero margin'})".replace("raised by more than", "raised by")
            reason = f"{self.failed_checks} failed checks reached the limit of {self.failed_check_limit} (last: canary {subject(slo)} {what})"
            return Verdict("fail", reason, evidence, None)
        n_c = canary.requests
        short = max(self.min_requests - n_c, 0)
        if self.successful_checks >= self.iterations and short == 0 and n_c > 0:
            return Verdict("pass", f"{self.successful_checks} successful intervals ({self.failed_checks} failed of {self.failed_check_limit} allowed)", evidence, None)
        left = max(self.iterations - self.successful_checks, 0)
        per_interval = max(c_req, 1)
        needed = max(short, left * per_interval)
        if n_c == 0:
            reason = "no canary requests yet: nothing to judge, and nothing promotes on missing data"
        elif short:
            reason = f"only {n_c} of the {self.min_requests} canary requests required before a promotion ({self.successful_checks} of {self.iterations} intervals passed, {self.failed_checks} failed)"
        else:
            reason = f"{self.successful_checks} of {self.iterations} intervals passed so far ({self.failed_checks} failed of {self.failed_check_limit} allowed)"
        return Verdict("inconclusive", reason, evidence, needed)
