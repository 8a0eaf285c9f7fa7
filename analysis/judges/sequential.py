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

**FAIL e-processes over start times.** Each FAIL e-process is a mixture of
the same test started at different times (after every look for the error
rate, after every closed block for quantiles, every 12.5% more canary
requests for the geometric mean), the start after canary count c_k weighted
START_SHARE * (F(c_k) - F(c_{k-1})), F(c) = c / (c + START_SCALE), and the
start with the e-process 1 - START_SHARE; beside the fixed bet grid, a plug-in
bet chosen from earlier looks (:mod:`analysis.sequential`, section 4). Why it
is still a test supermartingale: add to the mixture the mass not yet given to
a start, counted at face value. A start moves mass from that reserve into a
component worth exactly its mass, and every started component is a product of
factors with conditional expectation <= 1 (predictable bets, masses fixed by
counts seen before their first factor; the geometric mean's components are
asymptotic e-processes, as its test always was), so the sum never grows in
expectation; it starts at <= 1 because the masses sum to < 1 on every path
(telescoping F). By Ville the mixture, which is below that sum, crosses
1/alpha with probability <= alpha, so the alpha bookkeeping above is
unchanged - while a regression that begins after a long healthy period is
caught by a component started near its onset, which never paid for the
healthy past. A version-2 state's e-process of value E becomes the same
mixture scaled by E: (1 - START_SHARE) E in its original component, the rest
reserved for later starts (nothing created).

**Segments and state.** ``evaluate`` receives cumulative samples of the
current *segment*. ``new_segment()`` (or ``load_state()`` after a restart)
starts a new one: the next arrays count from zero and are added to the step's
totals. Arrays that shrink within a segment start a new one too; their
content at that look is skipped rather than counted twice (reported in the
evidence). ``state()`` is complete and JSON-serialisable (about 12 KB for four SLOs).
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

STATE_VERSION = 3
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


# Location e-processes (not products of factors) keep explicit components: a new one once the canary count grew by
# max(LOCATION_MIN_GAP, LOCATION_GAP x the count at the previous start), the first and the LOCATION_COMPONENTS latest.
LOCATION_MIN_GAP = 20.0
LOCATION_GAP = 0.125
LOCATION_COMPONENTS = 16


def _floats(a) -> list:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(a, dtype=np.float64).ravel()]


def _unfloats(a) -> np.ndarray:
    return np.array([-np.inf if v is None else float(v) for v in a], dtype=np.float64)


class _LazySince:
    """Per-look 'which component' of a long location batch, described only when asked (a FAIL's evidence)."""

    def __init__(self, marks, vals, lv, bi):
        self.marks, self.vals, self.lv, self.bi = marks, vals, lv, bi

    def __getitem__(self, k: int) -> dict:
        b = int(self.bi[k])
        return _Monitor._describe(self.marks[b], float(self.vals[k, b]), float(self.lv[k]), False)


@dataclass
class _Monitor:
    """A FAIL e-process of one SLO, started by step ``step`` with budget ``alpha``: a mixture over start times.

    Products (counts, exceedance): ``v`` per bet (the fixed grid, then the plug-in bet) is the log of
    sum_k w_k E_k over every start k so far (see :func:`analysis.sequential.start_mixture`); ``best`` the log-value
    of the largest component per bet and ``best_mark`` where it started (an index into ``marks``). Location:
    ``comps``, the live components [log-mass, mark index, 6 sums since their start]. ``base``: canary requests
    the e-process saw before this step; ``clock``: its canary count when its latest component started;
    ``log_scale``: log of the scale of later starts' masses (0; for an e-process migrated from a version-2 state,
    its value then, so the migration moves value and creates none). ``log_e``: its log e-value now.
    """

    step: int
    alpha: float
    kind: str  # counts | exceedance | location
    v: np.ndarray | None = None
    best: np.ndarray | None = None
    best_mark: np.ndarray | None = None
    marks: list = field(default_factory=list)  # [step, look, stable requests, canary requests, *test counts]
    comps: list | None = None
    base: float = 0.0
    clock: float = 0.0
    log_scale: float = 0.0
    log_e: float = 0.0
    _pending: Any = None  # the last batch's inputs, for :meth:`since_at` (not state)
    _location_now: dict | None = None

    @classmethod
    def fresh(cls, step: int, alpha: float, kind: str, n_fixed: int, mark: list, base: float = 0.0) -> "_Monitor":
        if kind == "location":
            return cls(step, alpha, kind, marks=[mark], comps=[[math.log1p(-sq.START_SHARE), 0, [0.0] * 6]], base=base, clock=base)
        v = sq.initial_log_values(n_fixed)
        return cls(step, alpha, kind, v=v, best=v.copy(), best_mark=np.zeros(v.size, dtype=np.int64), marks=[mark],
                   base=base, clock=base, log_e=float(sq.mixture_log_value(v, sq.bet_log_weights(n_fixed))))

    # -- products: counts and exceedance --------------------------------------------------------------------------

    def advance(self, inc: np.ndarray, c_now: np.ndarray, mark_at) -> np.ndarray:
        """Add L start points' factors ``inc`` (L, B); ``c_now`` (L,) canary count at each (this e-process's clock).

        A component starts after each point with mass from :func:`analysis.sequential.start_log_mass`; returns the
        log e-value at each point (that point's new component included). ``mark_at(k)`` labels the start after point k.
        """
        L = inc.shape[0]
        if L == 0:
            self._pending = None
            return np.zeros(0)
        n_fixed = inc.shape[1] - 1
        c_prev = np.r_[self.clock, c_now[:-1]]
        log_new = sq.start_log_mass(c_prev, c_now, sq.start_shares(n_fixed), log_scale=self.log_scale)
        v, v_end = sq.start_mixture(self.v, inc, log_new)
        lv = sq.mixture_log_value(v, sq.bet_log_weights(n_fixed))
        self._pending = (self.best.copy(), self.best_mark.copy(), list(self.marks), self.v.copy(), inc, log_new, mark_at, self.log_e)
        best, idx = sq.start_mixture_best(self.best, inc, log_new)
        self.best_mark = self._relabel(self.best_mark, idx, mark_at)
        self.best = best
        self.v = v_end
        self.clock = float(c_now[-1])
        self.log_e = float(lv[-1])
        return lv

    def _relabel(self, old: np.ndarray, idx: np.ndarray, mark_at) -> np.ndarray:
        """Per bet: its old mark (idx -1) or a new one for the start after point idx; unused marks dropped."""
        labels: list = []
        out = np.empty(idx.size, dtype=np.int64)
        seen: dict = {}
        for b, k in enumerate(idx.tolist()):
            key = ("old", int(old[b])) if k < 0 else ("new", k)
            if key not in seen:
                seen[key] = len(labels)
                labels.append(self.marks[int(old[b])] if k < 0 else mark_at(k))
            out[b] = seen[key]
        self.marks = labels
        return out

    def since_at(self, k: int) -> dict | None:
        """The component carrying most of the e-value at point k of the last batch: where it started and its share."""
        if self.kind == "location":
            return self._pending[k] if self._pending is not None else None
        if self._pending is None:
            return self._since(self.best, self.best_mark, self.marks, self.log_e)
        best0, mark0, marks0, v0, inc, log_new, mark_at, e0 = self._pending
        if k < 0:
            return self._since(best0, mark0, marks0, e0)
        n_fixed = inc.shape[1] - 1
        lb = sq.bet_log_weights(n_fixed)
        val, idx = sq.start_mixture_best(best0, inc, log_new, at=k)
        v, _ = sq.start_mixture(v0, inc[: k + 1], log_new[: k + 1])
        b = int(np.argmax(val + lb))
        mark = marks0[int(mark0[b])] if idx[b] < 0 else mark_at(int(idx[b]))
        return self._describe(mark, float(val[b] + lb[b]), float(sq.mixture_log_value(v[k], lb)), b == n_fixed)

    def since(self) -> dict | None:
        """The component carrying most of the e-value now."""
        if self.kind == "location":
            return self._location_now
        return self._since(self.best, self.best_mark, self.marks, self.log_e)

    def _since(self, best, best_mark, marks, total) -> dict | None:
        if best is None or not marks:
            return None
        n_fixed = best.size - 1
        t = best + sq.bet_log_weights(n_fixed)
        b = int(np.argmax(t))
        return self._describe(marks[int(best_mark[b])], float(t[b]), total, b == n_fixed)

    @staticmethod
    def _describe(mark: list, log_part: float, log_total: float, adaptive: bool) -> dict:
        out = {"step": int(mark[0]), "after_look": int(mark[1]), "after_requests": int(mark[2] + mark[3]),
               "after_canary_requests": int(mark[3]), "e_value": safe_exp(log_part),
               "share_of_e_value": fnum(min(1.0, math.exp(log_part - log_total))) if math.isfinite(log_total) else None,
               "bet": "plug-in" if adaptive else "fixed grid"}
        if len(mark) > 4:
            out["counts_at_start"] = [int(v) for v in mark[4:]]
        return out

    # -- location: explicit components ------------------------------------------------------------------------

    def advance_location(self, sums_l: np.ndarray, sums0: np.ndarray, c_now: np.ndarray, evalues, mark_at) -> np.ndarray:
        """L looks of the location test: ``sums_l`` (L, 2, 3) the step's cumulative sums after each look, ``sums0``
        before the batch, ``c_now`` (L,) this e-process's canary count after each look. ``evalues(sums)`` gives the
        FAIL log e-value and usability of the test on (N, 2, 3) sums. Returns the log e-value at each look."""
        L = sums_l.shape[0]
        if L == 0:
            return np.zeros(0)
        starts, masses = [], []
        clk, k = self.clock, 0
        while k < L:
            gap = max(LOCATION_MIN_GAP, LOCATION_GAP * clk)
            k = int(np.searchsorted(c_now, clk + gap, side="left", sorter=None)) if c_now[k] < clk + gap else k
            if k >= L:
                break
            masses.append(float(sq.start_log_mass(clk, float(c_now[k]), sq.START_SHARE, log_scale=self.log_scale)))
            starts.append(k)
            clk = float(c_now[k])
            k += 1
        k0 = len(self.comps)
        anchors = [np.asarray(sums0, dtype=np.float64) - np.asarray(c[2], dtype=np.float64).reshape(2, 3) for c in self.comps]
        anchors += [sums_l[k] for k in starts]
        log_w = np.array([c[0] for c in self.comps] + masses)
        anchors_a = np.stack(anchors)  # (K, 2, 3)
        kt = log_w.size
        n_new = np.searchsorted(np.asarray(starts, dtype=np.int64), np.arange(L), side="right")  # new starts up to each look
        rank = np.r_[np.arange(k0 - 1), k0 - 1 + np.arange(len(starts))]  # order of the non-initial components
        live = np.ones((L, kt), dtype=bool)
        if kt > 1:
            started = np.r_[np.full(k0 - 1, -1), np.asarray(starts, dtype=np.int64)]
            last = (k0 - 1) + n_new  # non-initial components started up to each look
            live[:, 1:] = (started[None, :] <= np.arange(L)[:, None]) & (rank[None, :] >= (last - LOCATION_COMPONENTS)[:, None])
        vals = np.full((L, kt), -np.inf)
        for a in range(0, L, 2048):
            blk = sums_l[a : a + 2048, None] - anchors_a[None]  # (l, K, 2, 3)
            lf, usable = evalues(blk.reshape(-1, 2, 3))
            e = np.where(usable, lf, 0.0).reshape(blk.shape[0], kt)
            vals[a : a + 2048] = np.where(live[a : a + 2048], log_w[None] + e, -np.inf)
        m = vals.max(axis=1)
        lv = m + np.log(np.sum(np.exp(vals - m[:, None]), axis=1))
        bi = np.argmax(vals, axis=1)
        marks_all = [self.marks[int(c[1])] for c in self.comps] + [mark_at(k) for k in starts]
        self._pending = [self._describe(marks_all[int(bi[r])], float(vals[r, bi[r]]), float(lv[r]), False) for r in range(L)] if L <= 64 else _LazySince(marks_all, vals, lv, bi)
        self._location_now = self._describe(marks_all[int(bi[-1])], float(vals[-1, bi[-1]]), float(lv[-1]), False)
        keep = [0] + list(range(max(1, kt - LOCATION_COMPONENTS), kt))
        self.marks = [marks_all[i] for i in keep]
        self.comps = [[float(log_w[i]), r, [float(x) for x in (sums_l[-1] - anchors_a[i]).ravel()]] for r, i in enumerate(keep)]
        self.clock = clk
        self.log_e = float(lv[-1])
        return lv

    # -- state ------------------------------------------------------------------------------------------------

    def to_json(self) -> dict:
        d: dict[str, Any] = {"step": self.step, "alpha": self.alpha, "kind": self.kind, "base": self.base,
                             "clock": self.clock, "log_scale": self.log_scale, "marks": self.marks}
        if self.kind == "location":
            d["comps"] = [[float(c[0]), int(c[1]), [float(x) for x in c[2]]] for c in self.comps]
        else:
            d["v"] = _floats(self.v)
            d["best"] = _floats(self.best)
            d["best_mark"] = [int(x) for x in self.best_mark]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "_Monitor":
        m = cls(int(d["step"]), float(d["alpha"]), str(d["kind"]), marks=[list(x) for x in d["marks"]],
                base=float(d["base"]), clock=float(d["clock"]), log_scale=float(d["log_scale"]))
        if m.kind == "location":
            m.comps = [[float(c[0]), int(c[1]), [float(x) for x in c[2]]] for c in d["comps"]]
        else:
            m.v = _unfloats(d["v"])
            m.best = _unfloats(d["best"])
            m.best_mark = np.array(d["best_mark"], dtype=np.int64)
        return m

    @classmethod
    def migrate(cls, step: int, alpha: float, kind: str, log_w: np.ndarray | None, log_value: float, n_fixed: int,
                sums: np.ndarray | None = None) -> "_Monitor":
        """A version-2 e-process (one component since its step's start, per-bet log-wealth ``log_w`` or location
        ``sums``, log e-value ``log_value``) as a version-3 one of the same value: 1 - START_SHARE of it stays in that
        component, the rest funds later starts (``log_scale``). Value moved, none created: still a test supermartingale."""
        mark = [int(step), 0, 0, 0] + ([0, 0] if kind == "counts" else [0, 0, 0, 0] if kind == "exceedance" else [])
        if kind == "location":
            return cls(step, alpha, kind, marks=[mark], comps=[[math.log1p(-sq.START_SHARE), 0, [float(x) for x in np.asarray(sums).ravel()]]],
                       log_scale=float(log_value), log_e=float(log_value))
        keep = math.log1p(-sq.START_SHARE) - math.log1p(-sq.ADAPTIVE_SHARE)
        v = np.r_[np.asarray(log_w, dtype=np.float64) + keep, -np.inf]
        m = cls(step, alpha, kind, v=v, best=v.copy(), best_mark=np.zeros(v.size, dtype=np.int64), marks=[mark],
                log_scale=float(log_value))
        m.log_e = float(sq.mixture_log_value(v, sq.bet_log_weights(n_fixed)))
        return m


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
        """Forget everything of this step, carried e-processes included (``load_state`` / ``carry`` bring them)."""
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
        self._adapt = np.full(4, -np.inf)  # the count plug-in bet's discounted log (stable req, errors, canary req, errors)
        self._carried: list[list[_Monitor]] = [[] for _ in range(n)]
        self._step = 1
        self._own = [True] * n
        self._mon: list[_Monitor | None] = [self._fresh_monitor(i) for i in range(n)]  # this step's own e-processes
        self._bet_run: list = [None] * n  # per SLO: the plug-in bet's current run [mark it began after, log-factor]
        self._log_fail = np.zeros(n)  # this step's FAIL log e-value per SLO (own e-process)
        self._log_pass = np.zeros(n)
        self._max_log_fail = np.full(n, -np.inf)
        self._slo_failed = [False] * n
        self._slo_pass = [False] * n
        self._failed: dict | None = None
        self.looks = 0

    def _n_fixed(self, i: int) -> int:
        return sq.N_BETS if self.tests[i] == "counts" else self._qb.J if self.tests[i] == "exceedance" else 0

    def _mark_zero(self, i: int) -> list:
        """The mark of a start before any data of this step."""
        extra = {"counts": [0, 0], "exceedance": [0, 0, 0, 0], "location": []}[self.tests[i]]
        return [self._step, 0, 0, 0] + extra

    def _fresh_monitor(self, i: int) -> _Monitor:
        return _Monitor.fresh(self._step, self.alpha_test, self.tests[i], self._n_fixed(i), self._mark_zero(i))

    def _monitors(self, i: int) -> list[_Monitor]:
        """Every FAIL e-process watching SLO i: earlier steps' (carried), then this step's own."""
        own = self._mon[i]
        return self._carried[i] + ([own] if self._own[i] and own is not None else [])

    def _load_carry(self, carry: dict) -> None:
        """Continue the FAIL e-processes of earlier steps (see the module docstring)."""
        if not isinstance(carry, dict) or carry.get("judge") != self.kind:
            raise ValueError("carry must be the dict returned by a sequential judge's carry()")
        version = int(carry.get("version", STATE_VERSION))
        if version not in (2, STATE_VERSION):
            raise ValueError(f"cannot continue a version-{version} sequential judge's e-processes (this is version {STATE_VERSION})")
        self._step = int(carry.get("steps", 0)) + 1
        thresholds: list[float | None] = [None] * len(self._specs)
        for entry in carry.get("slos", []):
            try:
                slo = SLO.from_dict(entry["definition"])
            except (KeyError, TypeError, ValueError):
                continue
            for i, own in enumerate(self.slos):
                if own == slo and entry.get("test") == self.tests[i]:
                    mons = entry.get("monitors", [])
                    self._carried[i] = [self._migrate_monitor(i, m) for m in mons] if version == 2 else [_Monitor.from_json(m) for m in mons]
                    if i in self._q_of and entry.get("threshold_ms") is not None:
                        thresholds[self._q_of[i]] = float(entry["threshold_ms"])
        for i in range(len(self.slos)):
            # never more than n_steps e-processes per SLO over a chain of judges
            self._own[i] = len(self._carried[i]) < self.n_steps
            self._mon[i] = self._fresh_monitor(i) if self._own[i] else None
            self._log_fail[i] = self._mon[i].log_e if self._own[i] else self._carried_log_fail(i)
        if self._qb is not None:
            self._qb.seed_thresholds(thresholds)

    def _migrate_monitor(self, i: int, d: dict) -> _Monitor:
        """A version-2 carried e-process (per-bet log-wealth or location sums) as a version-3 one of the same value."""
        if self.tests[i] == "location":
            sums = np.array(d["sums"], dtype=np.float64).reshape(2, 3)
            lf, _, usable = self._location_evalues(i, sums[None])
            value = float(lf[0]) if bool(usable[0]) else 0.0
            return _Monitor.migrate(int(d["step"]), float(d["alpha"]), "location", None, value, 0, sums)
        lw = _unfloats(d["log_w"])
        return _Monitor.migrate(int(d["step"]), float(d["alpha"]), self.tests[i], lw, float(sq.logmeanexp(lw)), lw.size)

    def carry(self) -> dict:
        """What the next step's judge needs to keep watching this rollout for harm (JSON, a few KB)."""
        with self._lock:
            out = []
            for i, slo in enumerate(self.slos):
                mons = []
                for m in self._monitors(i):
                    d = m.to_json()
                    d["base"] = m.base + float(self._req[1])  # the next step counts its canary requests on top
                    mons.append(d)
                entry: dict[str, Any] = {"definition": slo.to_json(), "test": self.tests[i], "monitors": mons}
                if i in self._q_of:
                    t = self._qb.T[self._q_of[i]]
                    entry["threshold_ms"] = float(t) if math.isfinite(t) else None
                out.append(entry)
            return {"judge": self.kind, "version": STATE_VERSION, "steps": self._step, "slos": out}

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
            "adapt": _floats(self._adapt),
            "bet_runs": self._bet_run,
            "step": self._step,
            "own": list(self._own),
            "monitors": [m.to_json() if m is not None else None for m in self._mon],
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
        added to the stored totals; nothing is counted twice and no alpha is spent again.

        A version-2 state (one e-process per SLO and step, cumulative since the step's start) is migrated: each
        e-process keeps its value, 1 - START_SHARE of it in its original component and the rest funding later
        starts, so nothing is created and the guarantee carries over. Other versions are refused."""
        with self._lock:
            if not isinstance(state, dict) or state.get("judge") != self.kind:
                raise ValueError("not a state of the sequential judge")
            version = int(state.get("version", 0))
            if version not in (2, STATE_VERSION):
                raise ValueError(f"a version-{version} state of the sequential judge cannot be continued by version "
                                 f"{STATE_VERSION} (only versions 2 and {STATE_VERSION} are understood)")
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
            if version == 2:
                self._carried = [[self._migrate_monitor(i, m) for m in ms] for i, ms in enumerate(state["carried"])]
                self._mon = [self._migrate_own(i) if self._own[i] else None for i in range(len(self.slos))]
            else:
                self._adapt = _unfloats(state["adapt"])
                self._bet_run = [None if r is None else [list(r[0]), float(r[1])] for r in state["bet_runs"]]
                self._carried = [[_Monitor.from_json(m) for m in ms] for ms in state["carried"]]
                self._mon = [_Monitor.from_json(m) if m is not None else None for m in state["monitors"]]
            self._max_log_fail = np.array([-np.inf if v is None else v for v in state["max_log_fail"]], dtype=np.float64)
            self._slo_failed = [bool(v) for v in state["slo_failed"]]
            self._failed = state.get("failed")
            self._refresh_log_e()
            self._new_segment = True

    def _migrate_own(self, i: int) -> _Monitor:
        """A version-2 state's own e-process of SLO i (implicit in the step's statistics) as a version-3 one."""
        test = self.tests[i]
        if test == "counts":
            lw = self._count_terms(i, "fail")
        elif test == "exceedance":
            lw = self._qb.w_fail[self._q_of[i], self._qb.gi].copy()
        else:
            lf, _, usable = self._location_evalues(i, self._sums[None])
            value = float(lf[0]) if bool(usable[0]) else 0.0
            return _Monitor.migrate(self._step, self.alpha_test, "location", None, value, 0, self._sums)
        return _Monitor.migrate(self._step, self.alpha_test, test, lw, float(sq.logmeanexp(lw)), lw.size)

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

        log_fail = np.zeros((L, n_slo))  # own e-process
        log_pass = np.zeros((L, n_slo))
        fail_any = np.zeros((L, n_slo), dtype=bool)
        evid = np.zeros((L, n_slo), dtype=np.int64)  # the SLO's own canary observations
        crossing: dict[int, list] = {}  # SLO -> [(e-process, log e per look, look -> its start point, plug-in run)]
        runs: dict[int, Any] = {}

        def watch(i: int, m: _Monitor, lv: np.ndarray, point_of) -> None:
            hit = lv >= math.log(1.0 / m.alpha)
            fail_any[:, i] |= hit
            if m is self._mon[i] and self._own[i]:
                log_fail[:, i] = lv
            elif not self._own[i]:
                log_fail[:, i] = np.maximum(log_fail[:, i], lv) if crossing.get(i) else lv
            crossing.setdefault(i, []).append((m, lv, point_of, runs.get(i)))

        # error rate: every look can start a component (its factors are the same for all of them)
        if "counts" in self.tests:
            d_other = (lk.d_req - lk.d_err).sum(axis=1)
            d4 = np.stack([lk.d_req[:, 0], lk.d_err[:, 0], lk.d_req[:, 1], lk.d_err[:, 1]], axis=1)
            before, self._adapt = sq.discounted_log_sums(self._adapt, d4, np.cumsum(lk.d_req.sum(axis=1)), sq.COUNT_MEMORY)
            looks0, step = self.looks, self._step

            def count_mark(k: int) -> list:
                return [step, looks0 + k + 1, int(cum_req[k, 0]), int(cum_req[k, 1]), int(cum_err[k, 0]), int(cum_err[k, 1])]

            def same(f: int) -> int:
                return f

            n_o = (gc[:, 0] - gc[:, 1]) + (gc[:, 2] - gc[:, 3])
            for i, test in enumerate(self.tests):
                if test != "counts":
                    continue
                slo = self.slos[i]
                ratio, margin = (1.0 + slo.max_increase, 0.0) if slo.relative else (1.0, slo.max_increase)
                bets = sq.count_adaptive_bets(before, p, ratio=ratio, margin=margin)
                inc = sq.count_fail_increments(lk.d_err[:, 1], lk.d_err[:, 0], d_other, p, bets, ratio=ratio, margin=margin)
                mark0 = [step, looks0, int(self._req[0]), int(self._req[1]), int(self._err[0]), int(self._err[1])]
                runs[i] = self._track_run(i, bets >= 0, inc[:, -1], count_mark, mark0)
                for m in self._monitors(i):
                    watch(i, m, m.advance(inc, m.base + cum_req[:, 1].astype(np.float64), count_mark), same)
                # PASS: the step's cumulative counts (they change only at looks whose counts changed)
                key = np.stack([gc[:, 1], gc[:, 3]] + ([n_o] if margin != 0.0 else []), axis=1)
                change = np.ones(L, dtype=bool)
                change[1:] = (key[1:] != key[:-1]).any(axis=1)
                at = np.flatnonzero(change)
                pos = np.searchsorted(at, np.maximum.accumulate(np.where(change, np.arange(L), 0)))
                other = {q: g for q, g in self._groups.items() if q != p}
                tp = sq.count_log_terms(gc[at, 1], gc[at, 3], n_o[at], p, ratio=ratio, margin=margin, direction="pass")
                log_pass[:, i] = sq.logmeanexp(self._count_terms(i, "pass", other) + tp)[pos]
                evid[:, i] = cum_req[:, 1]

        # geometric mean (location): explicit components, each the test on the sums since its start
        if "location" in self.tests:
            sums_l = self._location_sums(lk)  # (L, 2, 3) cumulative over the step
            looks0, step = self.looks, self._step

            def loc_mark(k: int) -> list:
                return [step, looks0 + k + 1, int(cum_req[k, 0]), int(cum_req[k, 1])]

            for i, test in enumerate(self.tests):
                if test != "location":
                    continue
                _, lpv, _ = self._location_evalues(i, sums_l)
                log_pass[:, i] = lpv
                for m in self._monitors(i):
                    lv = m.advance_location(sums_l, self._sums, m.base + cum_req[:, 1].astype(np.float64),
                                            lambda x, i=i: self._location_fail(i, x), loc_mark)
                    watch(i, m, lv, lambda f: f)
                evid[:, i] = sums_l[:, 1, 0]
            self._sums = sums_l[-1].copy()

        # quantiles: a component can start after every closed block
        if self._qb is not None:
            qb = self._qb
            w0p = qb.w_pass[:, qb.gi].copy()
            m0 = qb.m_c.copy()
            c0 = np.stack([qb.m_s, qb.x_s, qb.m_c, qb.x_c], axis=1)  # (S, 4) closed-block counts at the margin
            res = qb.process(lk.s_vals, lk.s_cnt, lk.c_vals, lk.c_cnt)
            nbl = np.searchsorted(res.look, np.arange(L), side="right")  # closed blocks up to each look
            cp = np.concatenate([np.zeros((1,) + w0p.shape), np.cumsum(res.lr_pass, axis=0)], axis=0)
            cm = np.concatenate([np.zeros((1, len(self._specs)), dtype=np.int64), np.cumsum(res.n_a, axis=0)], axis=0)
            cblk = c0[None] + np.cumsum(np.stack([res.n_b, res.x_b, res.n_a, res.x_a], axis=2), axis=0)  # (K, S, 4)
            looks0, step = self.looks, self._step
            c_blk = cum_req[res.look, 1].astype(np.float64) if res.look.size else np.zeros(0)
            for i, j in self._q_of.items():
                def q_mark(k: int, j=j) -> list:
                    lo = int(res.look[k])
                    return [step, looks0 + lo + 1, int(cum_req[lo, 0]), int(cum_req[lo, 1])] + [int(v) for v in cblk[k, j]]

                def block_at(f: int) -> int:
                    return int(nbl[f]) - 1

                inc = np.concatenate([res.lr_fail[:, j, :], res.lr_adapt[:, j, None]], axis=1)
                mark0 = [step, looks0, int(self._req[0]), int(self._req[1])] + [int(v) for v in c0[j]]
                run = self._track_run(i, res.log_psi_adapt[:, j] > 0, res.lr_adapt[:, j], q_mark, mark0)
                runs[i] = run
                for m in self._monitors(i):
                    e0 = m.log_e
                    lvb = m.advance(inc, m.base + c_blk, q_mark)
                    watch(i, m, np.r_[e0, lvb][nbl], block_at)
                log_pass[:, i] = sq.logmeanexp(w0p[j][None] + cp[:, j])[nbl]
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
            self._failed = {"slo": first_slo, "look": self.looks + f + 1, **self._crossed(crossing[first_slo], f)}
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
        self._log_fail = log_fail[-1].copy() if L else self._log_fail
        self._log_pass = log_pass[-1].copy()
        own_max = np.where(self._own, log_fail.max(axis=0), -np.inf)
        self._max_log_fail = np.maximum(self._max_log_fail, own_max)
        self._slo_pass = [bool(v) for v in slo_pass[-1]]
        self._guards = {"coverage_ok": bool(coverage_ok[-1]), "bad_ok": bool(bad_ok[-1]), "evidence": evid[-1].tolist()}
        self.looks += L
        return outcome, fail_slo

    def _crossed(self, entries: list, f: int) -> dict:
        """Which e-process crossed at look f (the one furthest above its threshold) and the start carrying it.

        For the plug-in bet also where its current betting run began (it bets nothing while the data look healthy,
        so the evidence of that run is all from after it) and the factor the run contributed."""
        best = max(entries, key=lambda e: e[1][f] - math.log(1.0 / e[0].alpha))
        m, lv, point_of, run_at = best
        k = point_of(f)
        since = m.since_at(k)
        if since is not None and since.get("bet") == "plug-in" and run_at is not None:
            run = run_at(k)
            if run is not None and (run[0][0], run[0][2] + run[0][3]) > (since["step"], since["after_requests"]):
                since["betting_since"] = _Monitor._describe(run[0], 0.0, 0.0, True)
                for key in ("e_value", "share_of_e_value", "bet"):
                    since["betting_since"].pop(key, None)
                since["betting_run_e_factor"] = safe_exp(run[1])
        return {"by_step": m.step, "e_value": safe_exp(float(lv[f])), "threshold": 1.0 / m.alpha, "since": since}

    def _track_run(self, i: int, on: np.ndarray, inc_p: np.ndarray, mark_at, mark0: list):
        """Follow the plug-in bet's current run of bets (``on`` per point, its log-factors ``inc_p``); returns
        point -> [mark after which the run began, its log-factor so far] (None when not betting there)."""
        prev = self._bet_run[i]
        P = on.size
        if P == 0:
            return lambda k: prev
        last_off = np.maximum.accumulate(np.where(~on, np.arange(P), -1))
        csum = np.cumsum(np.where(on, inc_p, 0.0))

        def run_at(k: int):
            if k < 0:
                return prev
            if not on[k]:
                return None
            lo = int(last_off[k])
            if lo < 0:
                base = prev if prev is not None else [mark0, 0.0]
                return [base[0], base[1] + float(csum[k])]
            return [mark_at(lo), float(csum[k] - csum[lo])]

        self._bet_run[i] = run_at(P - 1)
        return run_at

    def _apply_blocks(self, res: sq.BlockResult) -> None:
        """Blocks closed outside a look (flush, before a new share): every FAIL e-process of a quantile SLO takes them."""
        if res.look.size == 0:
            return
        qb = self._qb
        after = np.stack([qb.m_s, qb.x_s, qb.m_c, qb.x_c], axis=1)  # the flushed block is the last one
        for i, j in self._q_of.items():
            inc = np.concatenate([res.lr_fail[:, j, :], res.lr_adapt[:, j, None]], axis=1)
            mark = [self._step, self.looks, int(self._req[0]), int(self._req[1])] + [int(v) for v in after[j]]
            for m in self._monitors(i):
                m.advance(inc, np.full(inc.shape[0], m.base + float(self._req[1])), lambda k, mark=mark: mark)
                m._pending = None

    def _carried_log_fail(self, i: int) -> float:
        return max((m.log_e for m in self._carried[i]), default=0.0)

    def _monitor_log_e(self, i: int, m: _Monitor) -> float:
        if m.kind != "location":
            return float(sq.mixture_log_value(m.v, sq.bet_log_weights(m.v.size - 1)))
        sums = np.array([c[2] for c in m.comps], dtype=np.float64).reshape(-1, 2, 3)
        lf, usable = self._location_fail(i, sums)
        t = np.array([c[0] for c in m.comps]) + np.where(usable, lf, 0.0)
        mx = float(t.max())
        return mx + math.log(float(np.sum(np.exp(t - mx))))

    def _refresh_log_e(self) -> None:
        """Recompute the step's current e-values from the stored statistics (after load_state)."""
        for i, test in enumerate(self.tests):
            for m in self._monitors(i):
                m.log_e = self._monitor_log_e(i, m)
            self._log_fail[i] = self._mon[i].log_e if self._own[i] and self._mon[i] is not None else self._carried_log_fail(i)
            if test == "counts":
                self._log_pass[i] = float(sq.logmeanexp(self._count_terms(i, "pass")))
            elif test == "exceedance":
                self._log_pass[i] = self._qb.log_evalues(self._q_of[i])[1]
            else:
                _, lp, _ = self._location_evalues(i, self._sums[None])
                self._log_pass[i] = float(lp[0])
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

    def _location_fail(self, i: int, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(FAIL log e-value, usable) of the location test on sums (N, 2, 3): a component's since its start."""
        lf, _, usable = self._location_evalues(i, sums)
        return lf, usable

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
                        "threshold": 1.0 / m.alpha, "crossed": m.log_e >= math.log(1.0 / m.alpha),
                        "largest_component": m.since()})
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
            "fail_e_process": ("mixture over start times: the test since this step's start plus tests started after "
                               "later looks (weights summing to <= 1), so a healthy past does not hold a FAIL back"),
            "largest_component": self._mon[i].since() if self._own[i] and self._mon[i] is not None else None,
            "failed_since": (self._failed or {}).get("since") if self._failed and self._failed.get("slo") == i else None,
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
            f = self._failed or {}
            since = f.get("since")
            if "e_value" in f:
                le, a, who = math.log(max(f["e_value"], 1e-300)), 1.0 / f["threshold"], f["by_step"]
            else:  # a state from before the start mixtures: the e-process values now
                mons = [(m.log_e, m.alpha, m.step) for m in self._monitors(i)] or [(self._log_fail[i], self.alpha_test, self._step)]
                le, a, who = max(mons, key=lambda m: m[0] - math.log(1.0 / m[1]))
            which = "" if who == self._step else f"; step {who}'s e-process, still watching"
            where = self._since_words(i, since)
            detail = f"{where[0]}; over the step: {r['detail']}" if where[0] else r["detail"]
            reason = (f"canary {subject(slo)} is higher than stable's{margin_words(slo)} "
                      f"({detail}; e-value {fmt_e(safe_exp(le))} >= 1/alpha {fmt_e(1 / a)}{where[1]}{which})")
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

    def _since_words(self, i: int, since: dict | None) -> tuple[str, str]:
        """("canary 5.1% vs stable 0.0% errors since request 20,104", ", 97% of it from the test started there")."""
        if not since:
            return "", ""
        run = since.get("betting_since")
        if run:
            since = {**since, **run}
        here = since["step"] == self._step
        at = f"request {since['after_requests']:,}" + ("" if here else f" of step {since['step']}")
        if since["after_requests"] == 0 and here:
            return "", ""  # the step's own start: the step-wide figures say it all
        share = since.get("share_of_e_value")
        if run:
            tail = f", from the plug-in bet, betting at every look since {at}"
        else:
            tail = f", {pct(share)} of it from the test started after {at}" if share is not None else f"; started after {at}"
        counts = since.get("counts_at_start")
        test = self.tests[i]
        if not here or counts is None:
            return f"since {at}", tail
        if test == "counts":
            n = self._req - np.array([since["after_requests"] - since["after_canary_requests"], since["after_canary_requests"]])
            x = self._err - np.array(counts[:2])
            if n[0] > 0 and n[1] > 0:
                return f"canary {pct(x[1] / n[1])} vs stable {pct(x[0] / n[0])} errors since {at}", tail
        elif test == "exceedance":
            j = self._q_of[i]
            qb = self._qb
            m_s, x_s, m_c, x_c = (int(qb.m_s[j]) - counts[0], int(qb.x_s[j]) - counts[1], int(qb.m_c[j]) - counts[2],
                                  int(qb.x_c[j]) - counts[3])
            if m_s > 0 and m_c > 0:
                return (f"{pct(x_c / m_c)} of {m_c} canary samples above the canary threshold vs {pct(x_s / m_s)} of "
                        f"stable above its own since {at}"), tail
        return f"since {at}", tail

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
