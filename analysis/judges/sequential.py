"""The default judge: anytime-valid sequential tests, safe to look at after every request.

How it decides (per SLO, then for the step):

* **FAIL** an SLO when one of its FAIL e-processes reaches 1/alpha_m (alpha_m
  is that e-process's share of the budget, see below): the canary is worse
  than stable by more than the SLO's margin with confidence 1 - alpha_m. A
  FAIL is final.
* **PASS** an SLO *at this look* when its PASS e-process over the step is at
  or above 1/pass_alpha now -- the upper end of the anytime-valid confidence
  sequence for the canary's excess is below the margin -- and the SLO has
  evidence of its own: at least ``min_slo_samples`` canary observations in
  its test, no sample-ratio mismatch (error rate), canary latency samples for
  (at least ``min_latency_coverage`` of stable's share of) its successful
  requests, and no bad latency samples. A pass is not sticky: a canary that
  slows down mid-step loses it. With a zero margin "within" means
  "demonstrably not worse", which an identical canary reaches only by chance.
* Otherwise the SLO is INCONCLUSIVE, with an estimate of the canary requests
  still needed.

The step FAILS as soon as one SLO fails; it PASSES at a look where every SLO
passes and the canary has at least ``min_requests`` requests; anything else,
including no data, too little data and a traffic split that does not match
the configured share, is INCONCLUSIVE. Nothing promotes on missing evidence.

**Tests.** Error rate: the conditional-binomial betting e-process on counts
(exact; each request's factor uses the share in force). Quantile SLOs
(``quantile: 0.5`` tests the median, 0.99 the p99): exceedances of a
predictable threshold, conditional on the arms' latency-sample counts in
blocks of ``block`` samples (exact when the arms serve the same latency,
whatever their error rates; see :mod:`analysis.sequential`). SLOs without a
quantile: the half-normal mixture SPRT on mean log-latency (asymptotic).

**Alpha.** Each SLO's FAIL e-process started by a step's judge runs at
alpha / (n_slos * n_steps) and, through ``carry()`` / ``make_judge(carry=...)``,
keeps running in every later step of the rollout: a later step watches its
own new e-process *and* every earlier step's. Each of them is a test
supermartingale over the whole rollout, so by Ville's inequality it ever
crosses its threshold with probability <= its alpha, and by the union bound
the probability that any SLO of any step fails a canary that is within every
margin is <= alpha - however often the engine looks, across restarts and new
segments. A judge never starts more than ``n_steps`` e-processes per SLO over
a chain of carries. PASS e-processes run at ``pass_alpha`` (default alpha)
each, one per step: a canary worse than a margin passes that SLO at a given
step with probability <= pass_alpha; no split is needed because a promotion
needs every SLO to pass.

**Segments and state.** ``evaluate`` receives cumulative samples of the
current *segment*. ``new_segment()`` (or ``load_state()`` after a restart)
starts a new one: the next arrays count from zero and are added to the step's
totals. Arrays that shrink within a segment start a new one too; their
content at that look is skipped rather than counted twice (reported in the
evidence). ``state()`` is complete and JSON-serialisable (a few KB).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import sequential as sq
from ..samples import SLO, ArmSamples, split_latencies
from ..verdict import Verdict
from ._common import check_arm, check_share, fmt_e, fnum, margin_words, pct, safe_exp, subject

__all__ = ["SequentialJudge", "SequentialSettings", "StreamResult", "STATE_VERSION"]

STATE_VERSION = 2
# Latency samples below this are clipped before taking logs (0 ms responses exist).
MIN_LATENCY_MS = 1e-3
# Extra log-wealth the mixture typically needs beyond the best single bet (for "samples needed").
_MIXTURE_REGRET = 1.5
_INCONCLUSIVE, _FAIL, _PASS = 0, 1, 2


@dataclass(frozen=True)
class SequentialSettings:
    """Tuning of the sequential judge; defaults are what bench/analysis_sim.py measures."""

    tau: float = 0.2  # prior scale of the log-latency shift, in pooled standard deviations (location test)
    prior_df: float = 30.0  # pseudo-samples shrinking the canary's variance toward stable's (location test)
    min_latency_samples: int = 10  # per arm, before the location test is evaluated
    latency_test: str = "auto"  # auto (quantile SLOs: exceedance, no quantile: location) | location | exceedance
    srm_alpha: float = 1e-3  # level of the sample-ratio-mismatch guard (it only ever blocks)
    regrow: float = 1.1  # re-estimate a quantile threshold when stable grew by 10%
    min_stable_tail: int | None = None  # stable samples before the first threshold; default max(30, 2/min(q, 1-q))
    block: int = 20  # latency samples (both arms) per block of the quantile test
    min_slo_samples: int = 30  # canary observations an SLO's own test needs before it may pass
    min_latency_coverage: float = 0.5  # canary's latency samples per success, relative to stable's, for a latency pass
    max_bad_fraction: float = 0.0  # bad (NaN/inf/negative) latency samples tolerated for a pass, per arm
    interval: bool = True  # keep the interval grid of the quantile test (evidence); off in simulations

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ValueError("tau must be > 0")
        if self.latency_test not in ("auto", "location", "exceedance"):
            raise ValueError("latency_test must be auto, location or exceedance")
        if not 0 < self.srm_alpha < 1:
            raise ValueError("srm_alpha must be between 0 and 1")
        if self.regrow <= 1.0:
            raise ValueError("regrow must be > 1")
        if int(self.block) < 2:
            raise ValueError("block must be >= 2")
        if int(self.min_slo_samples) < 1:
            raise ValueError("min_slo_samples must be >= 1")
        if not 0 <= self.min_latency_coverage <= 1:
            raise ValueError("min_latency_coverage must be between 0 and 1")
        if not 0 <= self.max_bad_fraction < 1:
            raise ValueError("max_bad_fraction must be in [0, 1)")


def choose_test(slo: SLO, settings: SequentialSettings) -> str:
    """'counts' (error rate), 'location' (geometric mean of latency) or 'exceedance' (a latency quantile)."""
    if slo.metric == "error-rate":
        return "counts"
    if settings.latency_test == "exceedance" or not slo.relative:
        return "exceedance"  # absolute (ms) margins are only expressible as a threshold
    if settings.latency_test == "location" or slo.quantile is None:
        return "location"
    return "exceedance"


@dataclass
class StreamResult:
    """:meth:`SequentialJudge.run_stream`: per-look outcome (0 inconclusive, 1 fail, 2 pass) and the failing SLO (-1 none)."""

    outcome: np.ndarray
    fail_slo: np.ndarray

    def first_decision(self) -> tuple[int, int, int]:
        """(look index, outcome, failing SLO) of the first decided look, or (-1, 0, -1)."""
        d = np.flatnonzero(self.outcome != _INCONCLUSIVE)
        if d.size == 0:
            return -1, 0, -1
        i = int(d[0])
        return i, int(self.outcome[i]), int(self.fail_slo[i])


@dataclass
class _Monitor:
    """A FAIL e-process of one SLO carried across steps: started by step ``step`` with budget ``alpha``."""

    step: int
    alpha: float
    log_w: np.ndarray | None = None  # per-bet log-wealth (counts, exceedance)
    sums: np.ndarray | None = None  # (2, 3) log-latency sums since its start (location)
    log_e: float = 0.0

    def to_json(self) -> dict:
        d: dict[str, Any] = {"step": self.step, "alpha": self.alpha}
        if self.log_w is not None:
            d["log_w"] = [float(v) if math.isfinite(v) else None for v in self.log_w]
        if self.sums is not None:
            d["sums"] = self.sums.tolist()
        return d

    @classmethod
    def from_json(cls, d: dict) -> "_Monitor":
        lw = d.get("log_w")
        sums = d.get("sums")
        return cls(int(d["step"]), float(d["alpha"]),
                   None if lw is None else np.array([-np.inf if v is None else v for v in lw], dtype=np.float64),
                   None if sums is None else np.array(sums, dtype=np.float64).reshape(2, 3))


@dataclass
class _Look:
    """One batch of new data (L looks) in the judge's own units."""

    d_req: np.ndarray  # (L, 2) new requests: stable, canary
    d_err: np.ndarray  # (L, 2)
    s_vals: np.ndarray  # good stable latencies, concatenated
    s_cnt: np.ndarray  # (L,)
    c_vals: np.ndarray
    c_cnt: np.ndarray
    d_bad: np.ndarray  # (L, 2)
    skipped: np.ndarray = field(default_factory=lambda: np.zeros(2, dtype=np.int64))


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
        carry: dict | None = None,
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
        self._q_of: dict[int, int] = {}
        specs = []
        for i, (slo, test) in enumerate(zip(self.slos, self.tests)):
            if test == "exceedance":
                self._q_of[i] = len(specs)
                specs.append(sq.QuantileSpec(slo.quantile if slo.quantile is not None else 0.5, slo.max_increase,
                                             bool(slo.relative), self.settings.min_stable_tail))
        self._specs = specs
        self._lock = threading.Lock()
        self._carry_in = carry
        self.reset()
        if carry is not None:
            self._load_carry(carry)

    # -- lifecycle -------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything of this step (carried monitors from earlier steps are kept)."""
        n = len(self.slos)
        self._share: float | None = None
        self._new_segment = True
        self._seen = np.zeros((3, 2), dtype=np.int64)  # segment's last-seen requests, errors, latency sizes (stable, canary)
        self._segments = 0
        self._resets: list[str] = []
        self._req = np.zeros(2, dtype=np.int64)  # step totals
        self._err = np.zeros(2, dtype=np.int64)
        self._lat = np.zeros(2, dtype=np.int64)  # good latency samples
        self._bad = np.zeros(2, dtype=np.int64)
        self._skipped = np.zeros(2, dtype=np.int64)
        self._groups: dict[float, np.ndarray] = {}  # share -> [n_c, x_c, n_s, x_s]
        self._srm = False
        self._srm_log_e = 0.0
        self._sums = np.zeros((2, 3))  # per arm: n, sum log, sum log^2
        self._qb = sq.QuantileBlocks(self._specs, block=self.settings.block, regrow=self.settings.regrow,
                                     interval=self.settings.interval) if self._specs else None
        self._carried: list[list[_Monitor]] = [[] for _ in range(n)]
        self._step = 1
        self._own = [True] * n
        self._log_fail = np.zeros(n)  # this step's FAIL log e-value per SLO (own monitor)
        self._log_pass = np.zeros(n)
        self._max_log_fail = np.full(n, -np.inf)
        self._slo_failed = [False] * n
        self._slo_pass = [False] * n
        self._failed: dict | None = None
        self.looks = 0

    def _load_carry(self, carry: dict) -> None:
        """Continue the FAIL e-processes of earlier steps (see the module docstring)."""
        if not isinstance(carry, dict) or carry.get("judge") != self.kind:
            raise ValueError("carry must be the dict returned by a sequential judge's carry()")
        self._step = int(carry.get("steps", 0)) + 1
        thresholds: list[float | None] = [None] * len(self._specs)
        for entry in carry.get("slos", []):
            try:
                slo = SLO.from_dict(entry["definition"])
            except (KeyError, TypeError, ValueError):
                continue
            for i, own in enumerate(self.slos):
                if own == slo and entry.get("test") == self.tests[i]:
                    self._carried[i] = [_Monitor.from_json(m) for m in entry.get("monitors", [])]
                    if i in self._q_of and entry.get("threshold_ms") is not None:
                        thresholds[self._q_of[i]] = float(entry["threshold_ms"])
        for i in range(len(self.slos)):
            # never more than n_steps e-processes per SLO over a chain of judges
            self._own[i] = len(self._carried[i]) < self.n_steps
        if self._qb is not None:
            self._qb.seed_thresholds(thresholds)

    def carry(self) -> dict:
        """What the next step's judge needs to keep watching this rollout for harm (JSON, a few KB)."""
        with self._lock:
            out = []
            for i, slo in enumerate(self.slos):
                mons = [m.to_json() for m in self._carried[i]]
                if self._own[i]:
                    mons.append(self._own_monitor(i).to_json())
                entry: dict[str, Any] = {"definition": slo.to_json(), "test": self.tests[i], "monitors": mons}
                if i in self._q_of:
                    t = self._qb.T[self._q_of[i]]
                    entry["threshold_ms"] = float(t) if math.isfinite(t) else None
                out.append(entry)
            return {"judge": self.kind, "version": STATE_VERSION, "steps": self._step, "slos": out}

    def _own_monitor(self, i: int) -> _Monitor:
        test = self.tests[i]
        if test == "counts":
            return _Monitor(self._step, self.alpha_test, log_w=self._count_terms(i, "fail"))
        if test == "exceedance":
            return _Monitor(self._step, self.alpha_test, log_w=self._qb.w_fail[self._q_of[i], self._qb.gi].copy())
        return _Monitor(self._step, self.alpha_test, sums=self._sums.copy())

    def new_segment(self) -> None:
        """The next evaluate's arrays start from zero (resumed step, new weight, new source): they add to the totals."""
        with self._lock:
            self._new_segment = True

    def state(self) -> dict:
        """Complete JSON-serialisable state (no raw samples); :meth:`load_state` continues from it."""
        with self._lock:
            return self._state()

    def _state(self) -> dict:
        return {
            "judge": self.kind,
            "version": STATE_VERSION,
            "config": self._config(),
            "share": self._share,
            "segments": self._segments,
            "resets": list(self._resets),
            "looks": self.looks,
            "totals": {"requests": self._req.tolist(), "errors": self._err.tolist(), "latency_samples": self._lat.tolist(),
                       "bad_samples": self._bad.tolist(), "skipped_samples": self._skipped.tolist()},
            "groups": [[float(p)] + [int(v) for v in g] for p, g in self._groups.items()],
            "srm": {"mismatch": self._srm, "log_e": self._srm_log_e},
            "sums": self._sums.tolist(),
            "quantiles": self._qb.to_state() if self._qb is not None else None,
            "step": self._step,
            "own": list(self._own),
            "carried": [[m.to_json() for m in ms] for ms in self._carried],
            "max_log_fail": [fnum(v) for v in self._max_log_fail],
            "slo_failed": list(self._slo_failed),
            "failed": self._failed,
        }

    def _config(self) -> dict:
        return {"slos": [s.to_json() for s in self.slos], "tests": list(self.tests), "alpha": self.alpha,
                "n_steps": self.n_steps, "pass_alpha": self.pass_alpha, "block": self.settings.block,
                "interval": self.settings.interval}

    def load_state(self, state: dict) -> None:
        """Restore after a restart. The next evaluate receives a NEW segment (arrays from zero): its samples are
        added to the stored totals; nothing is counted twice and no alpha is spent again."""
        with self._lock:
            if not isinstance(state, dict) or state.get("judge") != self.kind or int(state.get("version", 0)) != STATE_VERSION:
                raise ValueError("not a state of this version of the sequential judge")
            cfg = state.get("config", {})
            if cfg.get("slos") != [s.to_json() for s in self.slos] or cfg.get("tests") != list(self.tests):
                raise ValueError("the state belongs to a judge with different SLOs")
            if cfg.get("block") != self.settings.block or cfg.get("interval") != self.settings.interval:
                raise ValueError("the state belongs to a judge with different settings")
            self.reset()
            self._share = state["share"]
            self._segments = int(state["segments"])
            self._resets = list(state.get("resets", []))
            self.looks = int(state["looks"])
            t = state["totals"]
            self._req = np.array(t["requests"], dtype=np.int64)
            self._err = np.array(t["errors"], dtype=np.int64)
            self._lat = np.array(t["latency_samples"], dtype=np.int64)
            self._bad = np.array(t["bad_samples"], dtype=np.int64)
            self._skipped = np.array(t["skipped_samples"], dtype=np.int64)
            self._groups = {float(g[0]): np.array(g[1:], dtype=np.int64) for g in state["groups"]}
            self._srm = bool(state["srm"]["mismatch"])
            self._srm_log_e = float(state["srm"]["log_e"])
            self._sums = np.array(state["sums"], dtype=np.float64).reshape(2, 3)
            if self._qb is not None:
                self._qb.load_state(state["quantiles"])
            self._step = int(state["step"])
            self._own = [bool(v) for v in state["own"]]
            self._carried = [[_Monitor.from_json(m) for m in ms] for ms in state["carried"]]
            self._max_log_fail = np.array([-np.inf if v is None else v for v in state["max_log_fail"]], dtype=np.float64)
            self._slo_failed = [bool(v) for v in state["slo_failed"]]
            self._failed = state.get("failed")
            self._refresh_log_e()
            self._new_segment = True

    # Work units of evaluate (about 10 ns each, the scale of judge.INLINE_WORK_LIMIT): a fixed part for the
    # evidence (confidence bounds, interval grid) and a part per new sample and quantile SLO (comparisons
    # with the interval grid's thresholds, the block's hypergeometric support). Measured, not guessed.
    _WORK_FIXED = 150_000
    _WORK_PER_SAMPLE = 10
    _WORK_PER_SAMPLE_QUANTILE = 25

    def work_estimate(self, stable: ArmSamples, canary: ArmSamples) -> int:
        """Rough cost of the next evaluate, in ~10 ns units (evaluate_async moves large ones off the loop)."""
        base = self._seen[2] if not self._new_segment else np.zeros(2, dtype=np.int64)
        if stable.latencies_ms.size < base[0] or canary.latencies_ms.size < base[1]:
            new = 0  # a shrunk segment: its content is skipped
        else:
            new = (stable.latencies_ms.size - int(base[0])) + (canary.latencies_ms.size - int(base[1]))
        per = self._WORK_PER_SAMPLE + self._WORK_PER_SAMPLE_QUANTILE * len(self._specs)
        return int(self._WORK_FIXED + new * per)

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    # -- evaluate ----------------------------------------------------------------

    def evaluate(self, stable: ArmSamples, canary: ArmSamples, *, canary_share: float) -> Verdict:
        p = check_share(canary_share)
        check_arm("stable", stable)
        check_arm("canary", canary)
        with self._lock:
            look = self._segment_delta(stable, canary)
            out, _ = self._run(p, look)
            return self._verdict(int(out[0]), p, stable, canary)

    def _segment_delta(self, stable: ArmSamples, canary: ArmSamples) -> _Look:
        """This look's new data relative to the segment's last look (a new or shrunk segment handled here)."""
        cur = np.array([[stable.requests, canary.requests], [stable.errors, canary.errors],
                        [stable.latencies_ms.size, canary.latencies_ms.size]], dtype=np.int64)
        skipped = np.zeros(2, dtype=np.int64)
        if self._new_segment:
            base = np.zeros((3, 2), dtype=np.int64)
            self._segments += 1
            self._new_segment = False
        else:
            base = self._seen
            if (cur < base).any():
                # a source dropped data within the segment: a new segment whose content so far is skipped
                # (which of it is new cannot be told, and counting a sample twice would void the tests)
                skipped = cur[2].copy()
                self._segments += 1
                self._resets.append(f"look {self.looks + 1}: the source's arrays shrank; new segment, {int(skipped.sum())} latency samples skipped")
                self._resets = self._resets[-10:]
                base = cur.copy()
        self._seen = cur
        d = cur - base
        vals = []
        bad = np.zeros(2, dtype=np.int64)
        for a, arm in enumerate((stable, canary)):
            good, n_bad = split_latencies(arm.latencies_ms[int(base[2, a]):])
            vals.append(good)
            bad[a] = n_bad
        return _Look(d[0][None], d[1][None], vals[0], np.array([vals[0].size]), vals[1], np.array([vals[1].size]),
                     bad[None], skipped)

    def run_stream(self, canary_share: float, requests: np.ndarray, errors: np.ndarray, latencies: tuple[np.ndarray, np.ndarray],
                   latency_counts: np.ndarray) -> StreamResult:
        """Feed one segment of L looks at once, for simulations: same decisions as L calls of :meth:`evaluate`.

        ``requests``, ``errors``, ``latency_counts``: (L, 2) cumulative (stable, canary) at each look;
        ``latencies``: (stable, canary) arrays of the segment's latency samples in arrival order.
        """
        p = check_share(canary_share)
        requests = np.asarray(requests, dtype=np.int64).reshape(-1, 2)
        errors = np.asarray(errors, dtype=np.int64).reshape(-1, 2)
        lc = np.asarray(latency_counts, dtype=np.int64).reshape(-1, 2)
        with self._lock:
            base = np.zeros((3, 2), dtype=np.int64) if self._new_segment else self._seen
            self._segments += int(self._new_segment)
            self._new_segment = False
            cur = np.stack([requests, errors, lc], axis=1)  # (L, 3, 2)
            prev = np.concatenate([base[None], cur[:-1]], axis=0)
            d = cur - prev
            if (d < 0).any():
                raise ValueError("run_stream needs cumulative, non-decreasing counts")
            vals, cnts, bads = [], [], []
            for a in (0, 1):
                lat = np.asarray(latencies[a], dtype=np.float64)[int(base[2, a]) : int(lc[-1, a])]
                bad_mask = ~(np.isfinite(lat) & (lat >= 0))
                per = d[:, 2, a]
                look_of = np.repeat(np.arange(per.size), per)
                bads.append(np.bincount(look_of[bad_mask], minlength=per.size))
                cnts.append(per - bads[-1])
                vals.append(lat[~bad_mask])
            self._seen = cur[-1]
            look = _Look(d[:, 0], d[:, 1], vals[0], cnts[0], vals[1], cnts[1], np.stack(bads, axis=1))
            out, fail_slo = self._run(p, look)
            return StreamResult(out, fail_slo)

    # -- the batch core (one look from evaluate, many from run_stream) ---------------

    def _count_terms(self, i: int, direction: str, groups: dict | None = None) -> np.ndarray:
        slo = self.slos[i]
        ratio, margin = (1.0 + slo.max_increase, 0.0) if slo.relative else (1.0, slo.max_increase)
        total = np.zeros(sq.N_BETS)
        for p, (n_c, x_c, n_s, x_s) in (groups if groups is not None else self._groups).items():
            total = total + sq.count_log_terms(x_c, x_s, (n_c - x_c) + (n_s - x_s), p, ratio=ratio, margin=margin, direction=direction)
        return total

    def _run(self, p: float, lk: _Look) -> tuple[np.ndarray, np.ndarray]:
        n_slo = len(self.slos)
        L = lk.d_req.shape[0]
        log_thr_pass = math.log(1.0 / self.pass_alpha)
        if self._share is not None and p != self._share and self._qb is not None:
            # a new share: the open block must not mix two shares
            self._apply_blocks(self._qb.flush())
        self._share = p

        cum_req = self._req[None] + np.cumsum(lk.d_req, axis=0)  # (L, 2)
        cum_err = self._err[None] + np.cumsum(lk.d_err, axis=0)
        cum_lat = self._lat[None] + np.cumsum(np.stack([lk.s_cnt, lk.c_cnt], axis=1), axis=0)
        cum_bad = self._bad[None] + np.cumsum(lk.d_bad, axis=0)
        g0 = self._groups.get(p, np.zeros(4, dtype=np.int64))
        gc = g0[None] + np.cumsum(np.stack([lk.d_req[:, 1], lk.d_err[:, 1], lk.d_req[:, 0], lk.d_err[:, 0]], axis=1), axis=0)

        # sample ratio mismatch: one beta-binomial e-process per share, multiplied
        others = sum(float(sq.srm_log_evalue(g[0], g[0] + g[2], q)) for q, g in self._groups.items() if q != p)
        srm_l = others + np.where(gc[:, 0] + gc[:, 2] > 0, sq.srm_log_evalue(gc[:, 0], gc[:, 0] + gc[:, 2], p), 0.0)
        srm_hit = srm_l >= math.log(1.0 / self.settings.srm_alpha)
        srm = np.logical_or.accumulate(srm_hit | self._srm)

        log_fail = np.zeros((L, n_slo))  # own monitor
        log_pass = np.zeros((L, n_slo))
        fail_any = np.zeros((L, n_slo), dtype=bool)
        evid = np.zeros((L, n_slo), dtype=np.int64)  # the SLO's own canary observations

        # error rate (the e-values only change at looks whose counts changed: computed there, carried forward)
        n_o = (gc[:, 0] - gc[:, 1]) + (gc[:, 2] - gc[:, 3])
        for i, test in enumerate(self.tests):
            if test != "counts":
                continue
            slo = self.slos[i]
            ratio, margin = (1.0 + slo.max_increase, 0.0) if slo.relative else (1.0, slo.max_increase)
            key = np.stack([gc[:, 1], gc[:, 3]] + ([n_o] if margin != 0.0 else []), axis=1)
            change = np.ones(L, dtype=bool)
            change[1:] = (key[1:] != key[:-1]).any(axis=1)
            at = np.flatnonzero(change)
            fill = np.maximum.accumulate(np.where(change, np.arange(L), 0))
            pos = np.searchsorted(at, fill)
            other = {q: g for q, g in self._groups.items() if q != p}
            tf = sq.count_log_terms(gc[at, 1], gc[at, 3], n_o[at], p, ratio=ratio, margin=margin, direction="fail")  # (U, J)
            tp = sq.count_log_terms(gc[at, 1], gc[at, 3], n_o[at], p, ratio=ratio, margin=margin, direction="pass")
            n_o0 = (g0[0] - g0[1]) + (g0[2] - g0[3])
            tf0 = sq.count_log_terms(g0[1], g0[3], n_o0, p, ratio=ratio, margin=margin, direction="fail")
            log_fail[:, i] = sq.logmeanexp(self._count_terms(i, "fail", other) + tf)[pos]
            log_pass[:, i] = sq.logmeanexp(self._count_terms(i, "pass", other) + tp)[pos]
            fail_any[:, i] = self._own[i] & (log_fail[:, i] >= math.log(1.0 / self.alpha_test))
            for m in self._carried[i]:
                le = sq.logmeanexp(m.log_w[None] + (tf - tf0))[pos]
                fail_any[:, i] |= le >= math.log(1.0 / m.alpha)
                m.log_w = m.log_w + (tf[-1] - tf0)
                m.log_e = float(le[-1])
            evid[:, i] = cum_req[:, 1]

        # geometric mean (location)
        if any(t == "location" for t in self.tests):
            sums_l = self._location_sums(lk)  # (L, 2, 3) cumulative over the step
            for i, test in enumerate(self.tests):
                if test != "location":
                    continue
                lf, lpv, usable = self._location_evalues(i, sums_l)
                log_fail[:, i], log_pass[:, i] = lf, lpv
                fail_any[:, i] = usable & self._own[i] & (lf >= math.log(1.0 / self.alpha_test))
                for m in self._carried[i]:
                    mf, _, mu = self._location_evalues(i, m.sums[None] + sums_l)
                    fail_any[:, i] |= mu & (mf >= math.log(1.0 / m.alpha))
                    m.log_e = float(mf[-1])
                evid[:, i] = sums_l[:, 1, 0]
            d_sums = sums_l[-1] - self._sums
            for i, test in enumerate(self.tests):
                if test == "location":
                    for m in self._carried[i]:
                        m.sums = m.sums + d_sums
            self._sums = sums_l[-1].copy()

        # quantiles
        if self._qb is not None:
            qb = self._qb
            w0f = qb.w_fail[:, qb.gi].copy()
            w0p = qb.w_pass[:, qb.gi].copy()
            m0 = qb.m_c.copy()
            carried0 = {i: [m.log_w.copy() for m in self._carried[i]] for i in self._q_of}
            res = qb.process(lk.s_vals, lk.s_cnt, lk.c_vals, lk.c_cnt)
            nbl = np.searchsorted(res.look, np.arange(L), side="right")  # closed blocks up to each look
            cf = np.concatenate([np.zeros((1,) + w0f.shape), np.cumsum(res.lr_fail, axis=0)], axis=0)  # (K+1, S, J)
            cp = np.concatenate([np.zeros((1,) + w0p.shape), np.cumsum(res.lr_pass, axis=0)], axis=0)
            cm = np.concatenate([np.zeros((1, len(self._specs)), dtype=np.int64), np.cumsum(res.n_a, axis=0)], axis=0)
            for i, j in self._q_of.items():
                # values per closed block, then per look (a look sees the blocks closed up to it)
                lf = sq.logmeanexp(w0f[j][None] + cf[:, j])[nbl]
                log_fail[:, i] = lf
                log_pass[:, i] = sq.logmeanexp(w0p[j][None] + cp[:, j])[nbl]
                fail_any[:, i] = self._own[i] & (lf >= math.log(1.0 / self.alpha_test))
                for m, base in zip(self._carried[i], carried0[i]):
                    le = sq.logmeanexp(base[None] + cf[:, j])[nbl]
                    fail_any[:, i] |= le >= math.log(1.0 / m.alpha)
                    m.log_w = base + cf[-1, j]
                    m.log_e = float(le[-1])
                evid[:, i] = m0[j] + cm[nbl, j]

        # evidence guards for a pass (per look)
        succ = cum_req - cum_err
        with np.errstate(divide="ignore", invalid="ignore"):
            cov_c = np.where(succ[:, 1] > 0, cum_lat[:, 1] / succ[:, 1], 0.0)
            cov_s = np.where(succ[:, 0] > 0, cum_lat[:, 0] / succ[:, 0], 0.0)
        coverage_ok = (cum_lat[:, 1] > 0) & (cov_c >= self.settings.min_latency_coverage * cov_s)
        mbf = self.settings.max_bad_fraction
        bad_ok = (cum_bad[:, 0] <= mbf * (cum_lat[:, 0] + cum_bad[:, 0])) & (cum_bad[:, 1] <= mbf * (cum_lat[:, 1] + cum_bad[:, 1]))
        slo_pass = (log_pass >= log_thr_pass) & (evid >= self.settings.min_slo_samples)
        for i, test in enumerate(self.tests):
            if test == "counts":
                slo_pass[:, i] &= ~srm
            else:
                slo_pass[:, i] &= coverage_ok & bad_ok
                if test == "location":
                    slo_pass[:, i] &= evid[:, i] >= self.settings.min_latency_samples

        # the step, look by look
        fail_look = fail_any.any(axis=1)
        already = self._failed is not None
        outcome = np.full(L, _INCONCLUSIVE, dtype=np.int8)
        fail_slo = np.full(L, -1, dtype=np.int64)
        step_pass = slo_pass.all(axis=1) & (cum_req[:, 1] >= max(self.min_requests, 1)) & (cum_req[:, 0] > 0) & ~srm
        outcome[step_pass] = _PASS
        if already:
            outcome[:] = _FAIL
            fail_slo[:] = int(self._failed["slo"])
        elif fail_look.any():
            f = int(np.argmax(fail_look))
            first_slo = int(np.argmax(fail_any[f]))
            outcome[f:] = _FAIL
            fail_slo[f:] = first_slo
            self._failed = {"slo": first_slo, "look": self.looks + f + 1}
        for i in range(n_slo):
            if fail_any[:, i].any():
                self._slo_failed[i] = True

        # keep the step's totals
        self._req = cum_req[-1].copy()
        self._err = cum_err[-1].copy()
        self._lat = cum_lat[-1].copy()
        self._bad = cum_bad[-1].copy()
        self._skipped = self._skipped + lk.skipped
        self._groups[p] = gc[-1].copy()
        self._srm_log_e = float(srm_l[-1])
        self._srm = bool(srm[-1])
        self._log_fail = log_fail[-1].copy()
        self._log_pass = log_pass[-1].copy()
        own_max = np.where(self._own, log_fail.max(axis=0), -np.inf)
        self._max_log_fail = np.maximum(self._max_log_fail, own_max)
        self._slo_pass = [bool(v) for v in slo_pass[-1]]
        self._guards = {"coverage_ok": bool(coverage_ok[-1]), "bad_ok": bool(bad_ok[-1]), "evidence": evid[-1].tolist()}
        self.looks += L
        return outcome, fail_slo

    def _apply_blocks(self, res: sq.BlockResult) -> None:
        """Blocks closed outside a look (flush): only the carried monitors need the update (the step's own wealth is in qb)."""
        if res.look.size == 0:
            return
        for i, j in self._q_of.items():
            for m in self._carried[i]:
                m.log_w = m.log_w + res.lr_fail[:, j].sum(axis=0)

    def _refresh_log_e(self) -> None:
        """Recompute the step's current e-values from the stored statistics (after load_state)."""
        for i, test in enumerate(self.tests):
            if test == "counts":
                self._log_fail[i] = float(sq.logmeanexp(self._count_terms(i, "fail")))
                self._log_pass[i] = float(sq.logmeanexp(self._count_terms(i, "pass")))
                for m in self._carried[i]:
                    m.log_e = float(sq.logmeanexp(m.log_w))
            elif test == "exceedance":
                self._log_fail[i], self._log_pass[i] = self._qb.log_evalues(self._q_of[i])
                for m in self._carried[i]:
                    m.log_e = float(sq.logmeanexp(m.log_w))
            else:
                lf, lp, _ = self._location_evalues(i, self._sums[None])
                self._log_fail[i], self._log_pass[i] = float(lf[0]), float(lp[0])
                for m in self._carried[i]:
                    mf, _, _ = self._location_evalues(i, (m.sums + self._sums)[None])
                    m.log_e = float(mf[0])
        self._slo_pass = [False] * len(self.slos)
        self._guards = {"coverage_ok": False, "bad_ok": True, "evidence": [0] * len(self.slos)}

    def _location_sums(self, lk: _Look) -> np.ndarray:
        L = lk.s_cnt.size
        out = np.zeros((L, 2, 3))
        for a, (vals, cnt) in enumerate(((lk.s_vals, lk.s_cnt), (lk.c_vals, lk.c_cnt))):
            y = np.log(np.maximum(vals, MIN_LATENCY_MS))
            look_of = np.repeat(np.arange(L), cnt)
            out[:, a, 0] = cnt
            out[:, a, 1] = np.bincount(look_of, weights=y, minlength=L)
            out[:, a, 2] = np.bincount(look_of, weights=y * y, minlength=L)
        return self._sums[None] + np.cumsum(out, axis=0)

    def _location_evalues(self, i: int, sums: np.ndarray):
        """(log e FAIL, log e PASS, usable) per row of cumulative sums (L, 2, 3)."""
        slo = self.slos[i]
        lm = math.log1p(slo.max_increase)
        n_s, s1_s, s2_s = sums[:, 0, 0], sums[:, 0, 1], sums[:, 0, 2]
        n_c, s1_c, s2_c = sums[:, 1, 0], sums[:, 1, 1], sums[:, 1, 2]
        min_n = self.settings.min_latency_samples
        usable = (n_c >= min_n) & (n_s >= min_n)
        ms = sq.mean_shift_stats(n_c, s1_c, s2_c, n_s, s1_s, s2_s, prior_df=self.settings.prior_df)
        lf, lp = sq.mean_shift_log_evalues(ms, lm, tau=self.settings.tau)
        return np.where(usable, lf, 0.0), np.where(usable, lp, 0.0), usable

    # -- evidence and the verdict ----------------------------------------------------

    def _verdict(self, out: int, p: float, stable: ArmSamples, canary: ArmSamples) -> Verdict:
        results = [self._slo_evidence(i, p) for i in range(len(self.slos))]
        n_c, n_s = int(self._req[1]), int(self._req[0])
        srm = {
            "configured_share": p,
            "observed_share": fnum(n_c / (n_c + n_s)) if n_c + n_s else None,
            "e_value": safe_exp(self._srm_log_e),
            "threshold": 1.0 / self.settings.srm_alpha,
            "mismatch": self._srm,
        }
        bad = {"stable": int(self._bad[0]), "canary": int(self._bad[1])}
        evidence = {
            "judge": self.kind,
            "alpha": self.alpha,
            "n_slos": len(self.slos),
            "n_steps": self.n_steps,
            "step": self._step,
            "alpha_per_test": self.alpha_test,
            "alpha_rule": ("alpha / (n_slos * n_steps) per FAIL e-process (Bonferroni); each step starts one per SLO and "
                           "later steps keep running the earlier ones (carry), each anytime-valid over the whole rollout, "
                           "so the whole rollout's false-rollback rate <= alpha"),
            "pass_alpha": self.pass_alpha,
            "canary_share": p,
            "min_requests": self.min_requests,
            "looks": self.looks,
            "segments": self._segments,
            "segment_resets": list(self._resets),
            "counts": {
                "stable": {"requests": n_s, "errors": int(self._err[0]), "latency_samples": int(self._lat[0]), "bad_samples": bad["stable"]},
                "canary": {"requests": n_c, "errors": int(self._err[1]), "latency_samples": int(self._lat[1]), "bad_samples": bad["canary"]},
            },
            "this_segment": {"stable": stable.summary(), "canary": canary.summary()},
            "bad_samples": bad,
            "skipped_samples": {"stable": int(self._skipped[0]), "canary": int(self._skipped[1])},
            "srm": srm,
            "slos": [r["evidence"] for r in results],
        }
        return self._combine(out, results, p, evidence)

    def _monitors_evidence(self, i: int) -> list[dict]:
        out = []
        for m in self._carried[i]:
            out.append({"started_at_step": m.step, "alpha": m.alpha, "e_value": safe_exp(m.log_e),
                        "threshold": 1.0 / m.alpha, "crossed": m.log_e >= math.log(1.0 / m.alpha)})
        return out

    def _common(self, i: int, test: str, outcome: str) -> dict:
        slo = self.slos[i]
        return {
            "slo": slo.key,
            "definition": slo.to_json(),
            "description": slo.describe(),
            "test": test,
            "outcome": outcome,
            "e_value_fail": safe_exp(self._log_fail[i]) if self._own[i] else None,
            "e_value_pass": safe_exp(self._log_pass[i]),
            "fail_threshold": 1.0 / self.alpha_test,
            "pass_threshold": 1.0 / self.pass_alpha,
            "alpha": self.alpha_test if self._own[i] else 0.0,
            "alpha_spent": self.alpha_test if self._own[i] else 0.0,
            "anytime_p_value": fnum(min(1.0, safe_exp(-self._max_log_fail[i]))) if np.isfinite(self._max_log_fail[i]) else 1.0,
            "earlier_steps": self._monitors_evidence(i),
        }

    def _outcome(self, i: int) -> str:
        if self._slo_failed[i]:
            return "fail"
        return "pass" if self._slo_pass[i] else "inconclusive"

    def _blocker(self, i: int) -> str | None:
        """Why an SLO whose PASS e-value is high enough still does not pass (evidence of its own)."""
        test = self.tests[i]
        ev = self._guards["evidence"][i]
        if test == "counts" and self._srm:
            return "the traffic split does not match"
        if test != "counts":
            if self._bad[0] or self._bad[1]:
                return f"{int(self._bad.sum())} bad latency samples (NaN, inf or negative) from the source"
            if not self._guards["coverage_ok"]:
                return "canary latency samples are missing for many of its successful requests"
        if ev < self.settings.min_slo_samples:
            what = "canary requests" if test == "counts" else "canary latency samples in its test"
            return f"only {ev} {what} (needs {self.settings.min_slo_samples})"
        return None

    def _count_needed(self, log_fail, log_pass, e_c, e_s, p, ratio, margin) -> tuple[str | None, int | None]:
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
        return d, int(math.ceil(more_total * p))

    def _slo_evidence(self, i: int, p: float) -> dict:
        test = self.tests[i]
        if test == "counts":
            return self._errors_evidence(i, p)
        if test == "location":
            return self._location_evidence(i, p)
        return self._exceedance_evidence(i, p)

    def _errors_evidence(self, i: int, p: float) -> dict:
        slo = self.slos[i]
        n_s, n_c = int(self._req[0]), int(self._req[1])
        x_s, x_c = int(self._err[0]), int(self._err[1])
        ratio, margin = (1.0 + slo.max_increase, 0.0) if slo.relative else (1.0, slo.max_increase)
        outcome = self._outcome(i)
        groups = [(q, g[1], g[3], g[0], g[2]) for q, g in self._groups.items()]
        kind = "ratio" if slo.relative else "difference"
        lo = sq.count_bound(0, 0, 0, 0, p, self.alpha_test, side="lower", kind=kind, groups=groups)
        hi = sq.count_bound(0, 0, 0, 0, p, self.pass_alpha, side="upper", kind=kind, groups=groups)
        rate_c = x_c / n_c if n_c else None
        rate_s = x_s / n_s if n_s else None
        trend, needed = None, None
        if outcome == "inconclusive":
            est_c = (x_c + 0.5) / (n_c + 1.0)
            est_s = (x_s + 0.5) / (n_s + 1.0)
            trend, needed = self._count_needed(self._log_fail[i], self._log_pass[i], est_c, est_s, p, ratio, margin)
            short = max(self.settings.min_slo_samples - n_c, 0)
            if short and (needed is None or needed < short) and trend != "fail":
                needed = short
        if rate_c is not None and rate_s is not None:
            stat = (rate_c / rate_s if rate_s > 0 else None) if slo.relative else rate_c - rate_s
        else:
            stat = None
        ev = self._common(i, "conditional-binomial e-process on error counts (betting mixture, Lindon & Malek 2022)", outcome)
        ev.update({
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
            "blocked_by": self._blocker(i) if self._log_pass[i] >= math.log(1.0 / self.pass_alpha) and outcome != "pass" else None,
        })
        detail = f"canary {pct(rate_c)} vs stable {pct(rate_s)} errors" if rate_c is not None and rate_s is not None else "no requests in one arm yet"
        return {"outcome": outcome, "trend": trend, "needed": needed, "evidence": ev, "detail": detail, "lf": self._log_fail[i]}

    def _location_evidence(self, i: int, p: float) -> dict:
        slo = self.slos[i]
        (n_s, s1_s, s2_s), (n_c, s1_c, s2_c) = self._sums
        lm = math.log1p(slo.max_increase)
        min_n = self.settings.min_latency_samples
        usable = n_c >= min_n and n_s >= min_n
        interval = {"of": "canary / stable geometric-mean latency ratio", "lower": None, "upper": None,
                    "lower_confidence": 1 - self.alpha_test, "upper_confidence": 1 - self.pass_alpha, "margin": 1.0 + slo.max_increase}
        estimate: dict[str, Any] = {}
        stat = None
        trend, needed = None, None
        outcome = self._outcome(i)
        if usable:
            ms = sq.mean_shift_stats(n_c, s1_c, s2_c, n_s, s1_s, s2_s, prior_df=self.settings.prior_df)
            sd = math.sqrt(float(ms.var))
            r = (self.settings.tau * float(ms.sd_pooled)) ** 2 / float(ms.var) if ms.var > 0 else 1e-12
            z_f = float(sq.halfnormal_boundary(r, math.log(1.0 / self.alpha_test)))
            z_p = float(sq.halfnormal_boundary(r, math.log(1.0 / self.pass_alpha)))
            diff = float(ms.diff)
            interval["lower"] = fnum(math.exp(diff - z_f * sd))
            interval["upper"] = fnum(math.exp(min(diff + z_p * sd, 700)))
            stat = (diff - lm) / sd if sd > 0 else None
            estimate = {"canary_geomean_ms": fnum(math.exp(s1_c / n_c)), "stable_geomean_ms": fnum(math.exp(s1_s / n_s)),
                        "ratio": fnum(math.exp(diff)), "sd_log_latency": fnum(ms.sd_pooled)}
            if outcome == "inconclusive":
                trend, needed = self._location_needed(ms, lm, p, n_c, n_s)
        ev = self._common(i, "half-normal mixture SPRT on mean log-latency (asymptotic confidence sequence; tests the geometric mean)", outcome)
        ev.update({
            "counts": {"stable": {"latency_samples": int(n_s)}, "canary": {"latency_samples": int(n_c)}},
            "estimate": estimate,
            "statistic": fnum(stat),
            "statistic_name": "z of (log ratio - log(1 + margin))",
            "interval": interval,
            "samples_needed": needed if usable else max(min_n - int(n_c), 0),
            "trend": trend,
            "waiting_for": None if usable else f"{min_n} latency samples per arm",
            "blocked_by": self._blocker(i) if self._log_pass[i] >= math.log(1.0 / self.pass_alpha) and outcome != "pass" else None,
        })
        if usable:
            detail = f"canary/stable geometric-mean latency {math.exp(float(ms.diff)):.3f}x (interval {interval['lower']:.3f}-{interval['upper']:.3f})"
            needed_out = needed
        else:
            detail = f"waiting for {min_n} latency samples per arm (have {int(n_c)} canary, {int(n_s)} stable)"
            needed_out = max(int(math.ceil((min_n - n_c) / self._success_fraction())), 1)
        return {"outcome": outcome, "trend": trend if usable else "pass", "needed": needed_out, "evidence": ev, "detail": detail, "lf": self._log_fail[i]}

    def _success_fraction(self) -> float:
        """Canary latency samples per canary request so far (to turn samples into requests)."""
        if self._req[1] > 0 and self._lat[1] > 0:
            return float(self._lat[1]) / float(self._req[1])
        return 1.0

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
        return d, int(math.ceil(hi / self._success_fraction()))

    def _exceedance_evidence(self, i: int, p: float) -> dict:
        slo = self.slos[i]
        qb = self._qb
        j = self._q_of[i]
        q = qb.q[j]
        t = qb.T[j]
        have_t = bool(math.isfinite(t))
        m_c, m_s, x_c, x_s = int(qb.m_c[j]), int(qb.m_s[j]), int(qb.x_c[j]), int(qb.x_s[j])
        outcome = self._outcome(i)
        lo, hi = qb.interval(j, math.log(1.0 / self.alpha_test), math.log(1.0 / self.pass_alpha)) if self.settings.interval else (None, None)
        trend, needed = None, None
        if outcome == "inconclusive" and have_t:
            trend, needed = self._exceedance_needed(i, j)
        if outcome == "inconclusive":
            short = max(self.settings.min_slo_samples - m_c, 0)
            if short and trend != "fail":
                needed = max(needed or 0, int(math.ceil(short / self._success_fraction())))
        label = f"p{slo.key.split('-p', 1)[1]}" if slo.quantile is not None else "p50"
        thr_c = float(qb.canary_thresholds(np.array(qb.T))[j, qb.gi]) if have_t else None
        ev = self._common(i, "exceedances of stable's running quantile (predictable threshold), conditional on the arms' "
                             "latency-sample counts per block (Fisher noncentral hypergeometric mixture)", outcome)
        ev.update({
            "counts": {
                "stable": {"compared": m_s, "above_threshold": x_s, "latency_samples": int(qb.n_stable)},
                "canary": {"compared": m_c, "above_threshold": x_c, "latency_samples": int(qb.n_canary)},
            },
            "estimate": {
                "stable_quantile_ms": fnum(qb.quantile_ms("stable", q)),
                "canary_quantile_ms": fnum(qb.quantile_ms("canary", q)),
                "threshold_ms": fnum(t),
                "canary_threshold_ms": fnum(thr_c),
                "canary_share_above": fnum(x_c / m_c) if m_c else None,
                "stable_share_above": fnum(x_s / m_s) if m_s else None,
                "threshold_estimates": int(qb.estimates),
                "blocks": int(qb.blocks),
            },
            "statistic": fnum((x_c / m_c) / (x_s / m_s)) if m_c and m_s and x_s else None,
            "statistic_name": f"canary's share above (1+margin) x stable's {label} over stable's share above it",
            "interval": {
                "of": f"canary / stable {label} ratio" if slo.relative else f"canary - stable {label} (ms)",
                "lower": fnum(lo),
                "upper": fnum(hi),
                "lower_confidence": 1 - self.alpha_test,
                "upper_confidence": 1 - self.pass_alpha,
                "margin": (1.0 + slo.max_increase) if slo.relative else slo.max_increase,
                "grid": [fnum(v) for v in qb.grid_values(j)],
                "note": "read off a grid: the quantity is above `lower` and below `upper`; null where the grid rejects nothing",
            },
            "samples_needed": needed,
            "trend": trend,
            "waiting_for": None if have_t else f"{qb.min_stable[j]} stable latency samples to set the first threshold",
            "blocked_by": self._blocker(i) if self._log_pass[i] >= math.log(1.0 / self.pass_alpha) and outcome != "pass" else None,
        })
        if have_t:
            detail = (f"{pct(x_c / m_c if m_c else 0.0)} of {m_c} canary samples above {thr_c:.1f} ms vs "
                      f"{pct(x_s / m_s if m_s else 0.0)} of stable above its {label} {t:.1f} ms")
            if lo is not None or hi is not None:
                what = "ratio" if slo.relative else "difference"
                detail += f"; {label} {what} " + (f"> {lo:.3g}" if lo is not None else "") + (" and " if lo is not None and hi is not None else "") + (f"< {hi:.3g}" if hi is not None else "")
            needed_out = needed
        else:
            detail = f"waiting for {qb.min_stable[j]} stable latency samples to set the first threshold (have {int(qb.n_stable)})"
            needed_out = max(int(math.ceil((qb.min_stable[j] - qb.n_stable) * p / (1 - p) / self._success_fraction())), 1)
        return {"outcome": outcome, "trend": trend if have_t else "pass", "needed": needed_out, "evidence": ev, "detail": detail, "lf": self._log_fail[i]}

    def _exceedance_needed(self, i: int, j: int) -> tuple[str | None, int | None]:
        """Canary requests until a decision if the current exceedance rates were the truth (binomial approximation)."""
        qb = self._qb
        est_c = (qb.x_c[j] + 0.5) / (qb.m_c[j] + 1.0)
        est_s = (qb.x_s[j] + 0.5) / (qb.m_s[j] + 1.0)
        if est_c == est_s:
            return None, None
        lp = qb.log_psi[j, : qb.J]
        if est_c > est_s:
            d, have, thr, bets = "fail", self._log_fail[i], math.log(1.0 / self.alpha_test), lp
        else:
            d, have, thr, bets = "pass", self._log_pass[i], math.log(1.0 / self.pass_alpha), -lp
        g = float(np.max(est_c * bets - np.log1p(est_s * np.expm1(bets))))
        if g <= 0:
            return d, None
        more = max(thr + _MIXTURE_REGRET - have, 0.0) / g
        return d, int(math.ceil(more / self._success_fraction()))

    def _combine(self, out: int, results: list[dict], p: float, evidence: dict) -> Verdict:
        n_c, n_s = int(self._req[1]), int(self._req[0])
        if out == _FAIL:
            i = int(self._failed["slo"]) if self._failed else max(range(len(results)), key=lambda k: results[k]["lf"])
            r = results[i]
            slo = self.slos[i]
            mons = [(self._log_fail[i], self.alpha_test, "this step's")] if self._own[i] else []
            mons += [(m.log_e, m.alpha, f"step {m.step}'s") for m in self._carried[i]]
            crossed = [m for m in mons if m[0] >= math.log(1.0 / m[1])] or mons
            le, a, who = max(crossed, key=lambda m: m[0] - math.log(1.0 / m[1]))
            which = "" if who == "this step's" else f" ({who} e-process, still watching)"
            reason = (f"canary {subject(slo)} is higher than stable's{margin_words(slo)} "
                      f"({r['detail']}; e-value {fmt_e(safe_exp(le))} >= 1/alpha {fmt_e(1 / a)}{which})")
            return Verdict("fail", reason, evidence, None)
        if self._srm:
            obs = evidence["srm"]["observed_share"] or 0.0
            reason = (f"the canary received {pct(obs)} of requests but the configured split is {pct(p)}: the traffic split "
                      "does not match (sample ratio mismatch), so the tests that rely on it cannot judge this step")
            return Verdict("inconclusive", reason, evidence, None)
        if n_c == 0 or n_s == 0:
            which = "canary" if n_c == 0 else "stable"
            reason = f"no {which} requests yet: nothing to judge, and nothing promotes on missing data"
            return Verdict("inconclusive", reason, evidence, max(self.min_requests, self.settings.min_slo_samples, 1) if n_c == 0 else None)
        if out == _PASS:
            reason = f"canary is within the margin on all {len(self.slos)} SLO{'s' if len(self.slos) > 1 else ''} at this look, after {n_c} canary requests (" + "; ".join(
                f"{self.slos[i].key}: {r['detail']}" for i, r in enumerate(results)) + ")"
            return Verdict("pass", reason, evidence, None)
        short = max(self.min_requests - n_c, 0)
        pending = [(i, r) for i, r in enumerate(results) if r["outcome"] != "pass"]
        if not pending:
            reason = f"every SLO is within its margin, but only {n_c} of the {self.min_requests} canary requests required before a promotion"
            return Verdict("inconclusive", reason, evidence, max(short, 1))
        needed = self._needed(pending, short)
        i, r = self._most_informative(pending)
        slo = self.slos[i]
        blocker = r["evidence"].get("blocked_by")
        if short > 0:
            head = f"only {n_c} of the {self.min_requests} canary requests required before a promotion, and no SLO has failed"
        elif blocker:
            head = f"{slo.key} would pass but lacks evidence of its own"
        else:
            head = "not enough evidence yet"
        tail = f"{subject(slo)}: {r['detail']}"
        if blocker:
            tail += f"; {blocker}"
        if r.get("trend") == "pass" and slo.max_increase == 0 and not r["evidence"].get("waiting_for"):
            tail += " (with a zero margin a pass needs the canary to be demonstrably better)"
        more = f"; about {needed} more canary requests needed" if needed is not None else ""
        return Verdict("inconclusive", f"{head} ({tail}){more}", evidence, needed)

    @staticmethod
    def _needed(pending: list[tuple[int, dict]], short: int) -> int | None:
        """The smallest need among SLOs heading for FAIL, else the largest among the rest -- never less than what
        ``min_requests`` still needs (a reason must not say 4 of 200 are there and 73 more are needed)."""
        fail_trend = [r["needed"] for _, r in pending if r.get("trend") == "fail" and r["needed"] is not None]
        if fail_trend:
            return int(max(min(fail_trend), short)) or None
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
