#!/usr/bin/env python3
"""Canary-analysis benchmark: false rollbacks and detection speed of five decision methods on the same streams.

Every replication is one canary step: a stream of requests (Poisson arrivals), each routed to the
canary with probability `share`, failing with its arm's error rate, and - if successful - with a
latency from the cell's model. The step runs until the method rolls back, promotes, or the horizon
(a number of total requests) is reached. All methods see the same streams.

Methods
  weir-sequential     Weir's default judge itself (analysis.judges.sequential.SequentialJudge via
                      run_stream, the same code as evaluate), looked at every `look` seconds;
                      3 SLOs (error rate, p50, p99) at alpha/3 each; promotes only when every SLO
                      passes at the same look and the canary has min_requests (500) requests.
  kayenta-mw          Mann-Whitney on growing windows every minute: latency U test (98% interval,
                      +-25% tolerance band, effect-size check per SLO quantile), error rate as 0/1
                      outcomes; promotes at the horizon if never High.
  flagger-limit1/5    absolute per-minute thresholds (stable's true error rate / p50 / p99 raised by
                      the margin); a minute without canary data is a failed check (Flagger's "no
                      values found"); rollback at 1 or 5 failed checks, promotion after 10 good minutes.
  fixed-peek          the fixed-horizon tests (two-proportion z, Welch z on log latency, exceedance z)
                      at alpha/3 each, peeked every minute on cumulative data; promotes at the horizon.
  The baselines use per-minute histograms of log-latency (256 bins over the cell's range).

Suites
  power (the original cells): lognormal latency (sigma 0.5, median 100 ms), 0.1% errors, canary share
    5% / 10%, 1 / 10 / 100 requests/s, Weir looking every second. S0, S0-endpoints (20 request types
    with random log-latency offsets sd 0.3, Zipf popularity, shared), S0-diurnal (rate x (1 + 0.5 sin)
    and latency x exp(0.3 sin) over 24 h, random phase, shared), median +5/+10/+20%, tail (share above
    stable's p99 from 1% to 2% / 3%, the extra mass from stable's own tail), errors 0.1% -> 0.5% / 0.2%
    and S0-errors. Error scenarios simulate per-minute counts and, for Weir, every error event in random
    order within its minute (the error test depends on counts only); in them each method judges only
    its error-rate check (Weir still at alpha/3). Margins "0" and "5%" (relative).
  adversarial (A/A: both arms serve the same latency; every rollback is false), margin 0, 3 SLOs,
    share 10%, 10 requests/s, a look every 10 s (100 requests) unless stated:
      lognormal-1.5, pareto-1.5 (20 ms x Pareto(1.5): infinite variance), whole-ms (latency rounded to
      whole milliseconds, ~4% are 0 ms), cache-mix (5% hits ~2 ms, 95% misses ~80 ms), drift-bursts
      (latency x exp(0.5 sin) over an hour plus 30 s bursts of x3 latency and 5% errors, shared),
      autocorrelated (AR(1) log-latency across consecutive requests, rho 0.95), share-1%,
      look-every-request (Weir looks after every single request), rare-errors (0.01%), errors-differ
      (stable 20% errors, canary 0%), errors-differ-rev (canary 20%, stable 0%; latency SLOs only, since
      the error SLO rightly fails there).
  Each adversarial cell prints its false-rollback rate with a Clopper-Pearson 95% interval, per method.
  changepoint (issue 8; Weir only, looked at every 100 / 50 requests, min_requests out of reach so that only a
    FAIL ends a run):
      rollout-A/A: a whole rollout (quick: 10% then 30%, 6,000 requests a step; full: 5%, 20%, 50%, 10,000 a
      step), every earlier FAIL e-process carried, a restart (state -> JSON -> new judge) halfway through each
      step, canary equal to stable with zero margins (3 SLOs); rollout-at-margins: no restarts, canary worse by
      exactly each margin (errors +0.5 pp, latency x 1.1). Both sit on the FAIL null's boundary; each prints
      the rollout's false-rollback rate with its interval.
      delay: a healthy canary for W looks of 50 requests (share 10%), then errors 0.1% -> 5% (1 pp margin) or
      latency x 1.5 (10% margin on the median); looks from the onset to the FAIL, for W = 0 .. 10,000.

Output: tables on stderr; on stdout one JSON line per method (summary and targets) and one JSON line
per (adversarial cell, method).
Full run: 1,000 replications per cell, 50k-request horizon (1M for the error scenarios); --quick: 200
replications, 20k requests, the 10% share only (a few minutes). The changepoint suite: 1,000 (quick 200)
rollouts per type-I cell, 100 (quick 20) runs per delay cell.
Usage: bench/analysis_sim.py [--quick] [--reps N] [--seed S] [--suite all|power|adversarial|changepoint]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal, special, stats

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from analysis import sequential as sq  # noqa: E402
from analysis.judges.sequential import SequentialJudge  # noqa: E402
from analysis.samples import SLO  # noqa: E402
from devtools import judge_sim  # noqa: E402

ALPHA = 0.05
N_SLOS = 3
ALPHA_TEST = ALPHA / N_SLOS
LOG_FAIL = math.log(1.0 / ALPHA_TEST)
LOG_PASS = math.log(1.0 / ALPHA)
MU = math.log(100.0)
SIGMA = 0.5
E_S = 0.001
MIN_REQUESTS = 500
SHARES = (0.05, 0.10)
RATES = (1.0, 10.0, 100.0)
TAIL_Q = 0.99

# default histogram of log-latency used by the baselines (rank tests, per-minute quantiles)
NB = 256
LO = MU - 3.5
HI = MU + 3.5
BW = (HI - LO) / NB

Z_KAYENTA = stats.norm.ppf(0.99) / (1.0 - 0.25)  # 98% two-sided interval above a 25% band
Z_FIXED = stats.norm.ppf(1.0 - ALPHA_TEST)
FLAGGER_ITERATIONS = 10
METHODS = ("weir-sequential", "kayenta-mw", "flagger-limit1", "flagger-limit5", "fixed-peek")

N_ENDPOINTS = 20
ENDPOINT_SD = 0.3
DIURNAL_LAT = 0.3
DIURNAL_RATE = 0.5
DAY = 86400.0


@dataclass(frozen=True)
class Scenario:
    name: str
    family: str  # latency | errors
    null: bool
    shift: float = 0.0
    tail_k: int = 0
    e_c: float = E_S
    e_s: float = E_S
    endpoints: bool = False
    diurnal: bool = False
    model: str = "lognormal"
    share: float | None = None  # adversarial cells fix share, rate and look
    rate: float | None = None
    look_s: float = 1.0
    horizon_factor: float = 1.0
    slos: str = "all"  # all | latency (the error SLO left out)


SCENARIOS = (
    Scenario("S0", "latency", True),
    Scenario("S0-endpoints", "latency", True, endpoints=True),
    Scenario("S0-diurnal", "latency", True, diurnal=True),
    Scenario("median+5%", "latency", False, shift=math.log(1.05)),
    Scenario("median+10%", "latency", False, shift=math.log(1.10)),
    Scenario("median+20%", "latency", False, shift=math.log(1.20)),
    Scenario("tail-2%", "latency", False, tail_k=2),
    Scenario("tail-3%", "latency", False, tail_k=3),
    Scenario("S0-errors", "errors", True),
    Scenario("errors-0.5%", "errors", False, e_c=0.005),
    Scenario("errors-0.2%", "errors", False, e_c=0.002),
)

_ADV = dict(family="latency", null=True, share=0.10, rate=10.0, look_s=10.0)
ADVERSARIAL = (
    Scenario("lognormal-1.5", model="lognormal-1.5", **_ADV),
    Scenario("pareto-1.5", model="pareto-1.5", **_ADV),
    Scenario("whole-ms", model="whole-ms", **_ADV),
    Scenario("cache-mix", model="cache-mix", **_ADV),
    Scenario("drift-bursts", model="drift-bursts", **_ADV),
    Scenario("autocorrelated", model="ar1", **_ADV),
    Scenario("share-1%", model="lognormal", horizon_factor=4.0, **{**_ADV, "share": 0.01}),
    Scenario("look-every-request", model="lognormal", horizon_factor=0.4, **{**_ADV, "rate": 1.0, "look_s": 0.0}),
    Scenario("rare-errors", model="lognormal", e_s=1e-4, e_c=1e-4, **_ADV),
    Scenario("errors-differ", model="lognormal", e_s=0.2, e_c=0.0, **_ADV),
    Scenario("errors-differ-rev", model="lognormal", e_s=0.0, e_c=0.2, slos="latency", **_ADV),
)

MARGINS = {
    "0": {"lat": 0.0, "err": 0.0},
    "5%": {"lat": 0.05, "err": 0.05},  # error margin relative (x1.05)
}


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


@dataclass
class Outcome:
    """Per replication: 0 undecided at the horizon, 1 rollback, 2 promotion; requests when decided."""

    decision: np.ndarray
    canary: np.ndarray
    total: np.ndarray
    cause: np.ndarray  # which check rolled back: 0 none, 1 error rate, 2 p50/location, 3 p99/tail

    @classmethod
    def empty(cls, r: int) -> "Outcome":
        return cls(np.zeros(r, np.int8), np.full(r, np.nan), np.full(r, np.nan), np.zeros(r, np.int8))

    def record(self, mask: np.ndarray, decision, canary, total, cause=0) -> None:
        m = mask & (self.decision == 0)
        self.decision[m] = np.broadcast_to(decision, m.shape)[m]
        self.canary[m] = np.broadcast_to(canary, m.shape)[m]
        self.total[m] = np.broadcast_to(total, m.shape)[m]
        self.cause[m] = np.broadcast_to(cause, m.shape)[m]

    def concat(self, other: "Outcome") -> "Outcome":
        return Outcome(*(np.concatenate([getattr(self, f), getattr(other, f)]) for f in ("decision", "canary", "total", "cause")))


# ---------------------------------------------------------------------------
# histogram helpers (vectorised over leading axes)
# ---------------------------------------------------------------------------


class Hist:
    """Histograms h[..., NB] of log-latency (bins of width ``bw`` from ``lo``) with cumulative sums computed once."""

    def __init__(self, h: np.ndarray, lo: float = LO, bw: float = BW):
        self.h = np.ascontiguousarray(h, dtype=np.float64)
        self.cum = np.cumsum(self.h, axis=-1)
        self.n = self.cum[..., -1]
        self.lo, self.bw = lo, bw

    def quantile(self, q: float) -> np.ndarray:
        """Interpolated q-quantile (log-latency); NaN when empty."""
        target = q * self.n
        b = np.argmax(self.cum >= target[..., None], axis=-1)
        c_b = np.take_along_axis(self.cum, b[..., None], -1)[..., 0]
        h_b = np.take_along_axis(self.h, b[..., None], -1)[..., 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(h_b > 0, (target - (c_b - h_b)) / h_b, 0.5)
        out = self.lo + (b + np.clip(frac, 0.0, 1.0)) * self.bw
        return np.where(self.n > 0, out, np.nan)

    def above(self, x: np.ndarray) -> np.ndarray:
        """Mass above log-value x (linear within the bin)."""
        nb = self.h.shape[-1]
        pos = np.clip(np.nan_to_num((x - self.lo) / self.bw, nan=nb - 1e-9), 0.0, nb - 1e-9)
        b = pos.astype(np.int64)
        frac = pos - b
        c_b = np.take_along_axis(self.cum, b[..., None], -1)[..., 0]
        h_b = np.take_along_axis(self.h, b[..., None], -1)[..., 0]
        return (self.n - c_b) + (1.0 - frac) * h_b


def hist_quantile(h: np.ndarray, q: float) -> np.ndarray:
    return Hist(h).quantile(q)


def mw_z(hc: Hist, hs: Hist) -> np.ndarray:
    """Tie-corrected Mann-Whitney z (canary greater) from two histograms, with continuity correction."""
    u = np.sum(hc.h * (hs.cum - 0.5 * hs.h), axis=-1)
    m = hc.n
    n = hs.n
    t = hc.h + hs.h
    big_n = m + n
    with np.errstate(invalid="ignore", divide="ignore"):
        ties = np.sum(t**3 - t, axis=-1) / (big_n * (big_n - 1.0))
        var = m * n / 12.0 * ((big_n + 1.0) - ties)
        z = (u - m * n / 2.0 - 0.5) / np.sqrt(var)
    return np.where((m > 0) & (n > 0) & (var > 0), z, 0.0)


def binary_mw_z(x_c, n_c, x_s, n_s) -> np.ndarray:
    """Mann-Whitney z (canary more errors) for 0/1 outcomes from counts."""
    x_c, n_c, x_s, n_s = (np.asarray(a, dtype=np.float64) for a in (x_c, n_c, x_s, n_s))
    o_c, o_s = n_c - x_c, n_s - x_s
    u = x_c * o_s + 0.5 * (x_c * x_s + o_c * o_s)
    big_n = n_c + n_s
    t1, t0 = x_c + x_s, o_c + o_s
    with np.errstate(invalid="ignore", divide="ignore"):
        var = n_c * n_s / 12.0 * ((big_n + 1.0) - (t1**3 - t1 + t0**3 - t0) / (big_n * (big_n - 1.0)))
        z = (u - n_c * n_s / 2.0 - 0.5) / np.sqrt(var)
    return np.where(var > 0, z, 0.0)


def ratio_z(x_c, n_c, x_s, n_s, ratio: float) -> np.ndarray:
    """One-sided z for e_c > ratio * e_s (pooled under ratio == 1, unpooled otherwise)."""
    x_c, n_c, x_s, n_s = (np.asarray(a, dtype=np.float64) for a in (x_c, n_c, x_s, n_s))
    with np.errstate(invalid="ignore", divide="ignore"):
        pc, ps = x_c / n_c, x_s / n_s
        if ratio == 1.0:
            pp = (x_c + x_s) / (n_c + n_s)
            se = np.sqrt(pp * (1 - pp) * (1 / n_c + 1 / n_s))
        else:
            se = np.sqrt(pc * (1 - pc) / n_c + ratio**2 * ps * (1 - ps) / n_s)
        z = (pc - ratio * ps) / se
    return np.where(np.isfinite(z), z, 0.0)


def canary_tail_ppf(u: np.ndarray, k: int) -> np.ndarray:
    """Standard-normal quantile transform for a canary with k x 1% of its mass above stable's p99."""
    t = 1.0 - k * (1.0 - TAIL_Q)
    body = special.ndtri(np.clip(u * TAIL_Q / t, 1e-300, 1.0 - 1e-16))
    tail = special.ndtri(np.clip(TAIL_Q + (u - t) * (1.0 - TAIL_Q) / (1.0 - t), 0.0, 1.0 - 1e-16))
    return np.where(u < t, body, tail)


class CountTable:
    """log e-values of the count test for integer (canary events, stable events), tabulated.

    Values come from analysis.sequential.count_log_evalue itself (margin 0, optional ratio);
    the table grows by doubling as counts grow. Lookups make per-event evaluation cheap.
    """

    def __init__(self, share: float, ratio: float, direction: str):
        self.share, self.ratio, self.direction = share, ratio, direction
        self.t = np.zeros((0, 0))

    def _build(self, ni: int, nj: int) -> None:
        t = np.empty((ni, nj))
        j = np.arange(nj, dtype=np.float64)[None, :]
        for i0 in range(0, ni, 32):
            i = np.arange(i0, min(ni, i0 + 32), dtype=np.float64)[:, None]
            t[i0 : i0 + i.shape[0]] = sq.count_log_evalue(i, j, 0, self.share, ratio=self.ratio, direction=self.direction)
        self.t = t

    def __call__(self, xc, xs) -> np.ndarray:
        xc = np.asarray(xc).astype(np.int64)
        xs = np.asarray(xs).astype(np.int64)
        ni, nj = int(xc.max(initial=0)) + 1, int(xs.max(initial=0)) + 1
        if ni > self.t.shape[0] or nj > self.t.shape[1]:
            self._build(max(ni, 2 * self.t.shape[0], 64), max(nj, 2 * self.t.shape[1], 256))
        return self.t[xc, xs]


_TABLES: dict = {}


def count_table(share: float, ratio: float, direction: str) -> CountTable:
    key = (share, ratio, direction)
    if key not in _TABLES:
        _TABLES[key] = CountTable(share, ratio, direction)
    return _TABLES[key]


def first_true(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(any, index of first True) along the last axis."""
    anyv = mask.any(axis=-1)
    return anyv, np.argmax(mask, axis=-1)


def mixture_quantiles(u_off: np.ndarray, w: np.ndarray, q: float) -> np.ndarray:
    """Per-rep q-quantile (log) of sum_j w_j N(MU + u_j, SIGMA^2), by bisection."""
    lo = np.full(u_off.shape[0], MU - 6.0)
    hi = np.full(u_off.shape[0], MU + 6.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        f = np.sum(w * special.ndtr((mid[:, None] - MU - u_off) / SIGMA), axis=1)
        hi = np.where(f >= q, mid, hi)
        lo = np.where(f >= q, lo, mid)
    return 0.5 * (lo + hi)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for k successes in n trials."""
    a = (1.0 - level) / 2.0
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1.0 - a, k + 1, n - k))
    return lo, hi


# ---------------------------------------------------------------------------
# streams: every request simulated
# ---------------------------------------------------------------------------


@dataclass
class Streams:
    """R replications of a request stream, flat and in arrival order within each replication."""

    rep: np.ndarray  # replication of each request
    sec: np.ndarray  # arrival second
    arm: np.ndarray  # 1 canary, 0 stable
    err: np.ndarray  # bool
    lat: np.ndarray  # ms (NaN for errors)
    seconds: int
    true_p50: np.ndarray  # stable's true quantiles per rep (log ms), for the Flagger thresholds
    true_p99: np.ndarray


def _stable_latency(model: str, rng: np.random.Generator, n: int, z: np.ndarray) -> np.ndarray:
    """Log-latency (or ms for whole-ms) of stable-like requests from standard normals z (models without state)."""
    if model == "lognormal":
        return MU + SIGMA * z
    if model == "lognormal-1.5":
        return MU + 1.5 * z
    if model == "pareto-1.5":
        return np.log(20.0 * (1.0 + rng.pareto(1.5, n)))
    if model == "whole-ms":
        with np.errstate(divide="ignore"):
            return np.log(np.round(np.exp(math.log(2.0) + 0.8 * z)))  # log(0) = -inf: a 0 ms response
    if model == "cache-mix":
        hit = rng.random(n) < 0.05
        return np.where(hit, math.log(2.0), math.log(80.0)) + 0.3 * z
    raise ValueError(model)


_TRUE_Q_CACHE: dict = {}


def true_quantiles(scn: Scenario) -> tuple[float, float]:
    """Stable's p50 / p99 (log ms) of a model, from a large seeded sample (Flagger's absolute thresholds)."""
    key = scn.model
    if key not in _TRUE_Q_CACHE:
        rng = np.random.default_rng(12345)
        n = 1_000_000
        z = rng.standard_normal(n)
        if scn.model in ("drift-bursts", "ar1"):
            y = MU + SIGMA * z
        else:
            y = _stable_latency(scn.model, rng, n, z)
        y = np.where(np.isfinite(y), y, math.log(1e-3))
        _TRUE_Q_CACHE[key] = (float(np.quantile(y, 0.5)), float(np.quantile(y, TAIL_Q)))
    return _TRUE_Q_CACHE[key]


def make_streams(scn: Scenario, p: float, rate: float, horizon: int, r: int, rng: np.random.Generator) -> Streams:
    seconds = int(math.ceil(horizon / rate))
    t = np.arange(seconds, dtype=np.float64)
    phase = rng.uniform(0, DAY, r) if scn.diurnal else np.zeros(r)
    if scn.diurnal:
        lam = rate * (1.0 + DIURNAL_RATE * np.sin(2 * np.pi * (t[None, :] + phase[:, None]) / DAY))
    else:
        lam = np.full((r, seconds), rate)
    cnt = rng.poisson(lam)
    n_r = cnt.sum(axis=1)
    rep = np.repeat(np.arange(r), n_r)
    sec = np.repeat(np.tile(np.arange(seconds), r), cnt.ravel())
    n = rep.size
    arm = (rng.random(n) < p).astype(np.int8)
    e_rate = np.where(arm == 1, scn.e_c, scn.e_s)
    z = rng.standard_normal(n)
    if scn.tail_k:
        z = np.where(arm == 1, canary_tail_ppf(rng.random(n), scn.tail_k), z)
    true_p50 = np.full(r, np.nan)
    true_p99 = np.full(r, np.nan)
    if scn.model in ("lognormal", "lognormal-1.5", "pareto-1.5", "whole-ms", "cache-mix"):
        y = _stable_latency(scn.model, rng, n, z)
        if scn.endpoints:
            w = 1.0 / np.arange(1, N_ENDPOINTS + 1) ** 1.1
            w /= w.sum()
            u_off = rng.normal(0.0, ENDPOINT_SD, (r, N_ENDPOINTS))
            j = np.minimum(np.searchsorted(np.cumsum(w), rng.random(n)), N_ENDPOINTS - 1)
            y = y + u_off[rep, j]
            true_p50, true_p99 = mixture_quantiles(u_off, w, 0.5), mixture_quantiles(u_off, w, TAIL_Q)
        if scn.diurnal:
            y = y + DIURNAL_LAT * np.sin(2 * np.pi * (sec + phase[rep]) / DAY)
    elif scn.model == "drift-bursts":
        ph = rng.uniform(0, 2 * np.pi, r)
        y = MU + SIGMA * z + 0.5 * np.sin(2 * np.pi * sec / 3600.0 + ph[rep])
        # bursts: about one 30 s window every 10 minutes, x3 latency and 5% errors for both arms
        burst = np.zeros((r, seconds), dtype=bool)
        n_b = rng.poisson(seconds / 600.0, r)
        for i in range(r):
            for s0 in rng.integers(0, max(seconds - 30, 1), n_b[i]):
                burst[i, s0 : s0 + 30] = True
        b = burst[rep, sec]
        y = y + math.log(3.0) * b
        e_rate = np.where(b, np.maximum(e_rate, 0.05), e_rate)
    elif scn.model == "ar1":
        rho = 0.95
        eps = z * math.sqrt(1.0 - rho * rho)
        y = np.empty(n)
        starts = np.concatenate([[0], np.cumsum(n_r)])
        for i in range(r):
            a, bnd = starts[i], starts[i + 1]
            if bnd > a:
                e = eps[a:bnd].copy()
                e[0] = z[a]  # stationary start
                y[a:bnd] = MU + SIGMA * signal.lfilter([1.0], [1.0, -rho], e)
    else:
        raise ValueError(scn.model)
    if scn.shift:
        y = y + scn.shift * (arm == 1)
    err = rng.random(n) < e_rate
    lat = np.where(err, np.nan, np.exp(y))
    if scn.model == "whole-ms":
        lat = np.where(err, np.nan, np.round(lat))
    if not np.isfinite(true_p50).all():
        q50, q99 = (MU, MU + SIGMA * special.ndtri(TAIL_Q)) if scn.model == "lognormal" else true_quantiles(scn)
        true_p50[:] = q50
        true_p99[:] = q99
    return Streams(rep, sec, arm, err, lat, seconds, true_p50, true_p99)


def weir_slos(margin: dict, which: str = "all") -> list[SLO]:
    out = [SLO("error-rate", margin["err"], relative=True)] if which == "all" else []
    return out + [SLO("latency", margin["lat"], 0.5), SLO("latency", margin["lat"], TAIL_Q)]


def run_weir(st: Streams, i: int, p: float, look_s: float, slos: list[SLO], step: int = 4000) -> tuple[int, float, float, int]:
    """Weir's judge on replication i: (decision 0/1/2, canary requests, total requests, cause 0-3) at its first decision."""
    lo, hi = np.searchsorted(st.rep, [i, i + 1])
    sec, arm, err, lat = st.sec[lo:hi], st.arm[lo:hi], st.err[lo:hi], st.lat[lo:hi]
    if look_s > 0:
        n_looks = int(math.ceil(st.seconds / look_s))
        look_of = np.minimum((sec / look_s).astype(np.int64), n_looks - 1)
    else:  # a look after every request
        n_looks = max(int(sec.size), 1)
        look_of = np.arange(sec.size)
    judge = SequentialJudge(slos, alpha=ALPHA, n_steps=1, min_requests=MIN_REQUESTS, interval=False)
    ok = ~err
    counts = np.zeros((n_looks, 3, 2), dtype=np.int64)
    for a in (0, 1):
        m = arm == a
        counts[:, 0, a] = np.bincount(look_of[m], minlength=n_looks)
        counts[:, 1, a] = np.bincount(look_of[m & err], minlength=n_looks)
        counts[:, 2, a] = np.bincount(look_of[m & ok], minlength=n_looks)
    cum = np.cumsum(counts, axis=0)
    lat_s, lat_c = lat[(arm == 0) & ok], lat[(arm == 1) & ok]
    offset = 0 if len(slos) == 3 else 1  # cause codes: 1 error rate, 2 p50, 3 p99
    a = 0
    while a < n_looks:
        b = min(a + step, n_looks)
        res = judge.run_stream(p, cum[a:b, 0], cum[a:b, 1], (lat_s, lat_c), cum[a:b, 2])
        k, out, slo_i = res.first_decision()
        if k >= 0:
            kk = a + k
            return out, float(cum[kk, 0, 1]), float(cum[kk, 0].sum()), (slo_i + 1 + offset) if out == 1 else 0
        a, step = b, 4 * step  # undecided: longer batches
    return 0, math.nan, math.nan, 0


def simulate_latency_cell(scn: Scenario, p: float, rate: float, margin: dict, reps: int, horizon: int, rng: np.random.Generator,
                          look_s: float = 1.0) -> dict[str, Outcome]:
    """All methods on `reps` replications of one cell (streams generated in chunks of replications)."""
    out = {k: Outcome.empty(0) for k in METHODS}
    seconds = int(math.ceil(horizon / rate))
    n_min = int(math.ceil(seconds / 60.0))
    chunk = max(1, min(reps, 5_000 // max(n_min, 1), 2_000_000 // max(horizon, 1)))
    slos = weir_slos(margin, scn.slos)
    for start in range(0, reps, chunk):
        r = min(chunk, reps - start)
        st = make_streams(scn, p, rate, horizon, r, rng)
        o = {k: Outcome.empty(r) for k in METHODS}
        for i in range(r):
            d, c, t, cause = run_weir(st, i, p, look_s, slos)
            o["weir-sequential"].record(np.arange(r) == i, d, c, t, cause)
        baselines(st, r, margin, o, scn)
        out = {k: out[k].concat(o[k]) for k in METHODS}
    return out


def baselines(st: Streams, r: int, margin: dict, out: dict[str, Outcome], scn: Scenario) -> None:
    """Kayenta-style, Flagger-style and the peeked fixed-horizon tests every minute, vectorised over replications."""
    m_lat = margin["lat"]
    m_err = margin["err"]
    lm = math.log1p(m_lat)
    n_min = int(math.ceil(st.seconds / 60.0))
    minute = st.sec // 60
    ok = ~st.err
    y = np.log(np.clip(np.where(ok, st.lat, 1.0), 1e-3, None))
    q_lo, q_hi = float(np.min(st.true_p50)) - 4.0, float(np.max(st.true_p99)) + 4.0
    if scn.model == "lognormal" and not scn.diurnal and not scn.endpoints:
        q_lo, q_hi = LO, HI
    bw = (q_hi - q_lo) / NB
    b = np.clip(((y - q_lo) / bw).astype(np.int64), 0, NB - 1)
    key = (st.rep * n_min + minute) * 2 + st.arm
    size = r * n_min * 2
    req = np.bincount(key, minlength=size).reshape(r, n_min, 2).astype(np.float64)
    err = np.bincount(key[st.err], minlength=size).reshape(r, n_min, 2).astype(np.float64)
    yk = np.where(ok, y, 0.0)
    nsucc = np.bincount(key[ok], minlength=size).reshape(r, n_min, 2).astype(np.float64)
    s1 = np.bincount(key, weights=yk, minlength=size).reshape(r, n_min, 2)
    s2 = np.bincount(key, weights=yk * yk, minlength=size).reshape(r, n_min, 2)
    hseg = np.bincount(key[ok] * NB + b[ok], minlength=size * NB).reshape(r, n_min, 2, NB)
    h_cum = np.cumsum(hseg, axis=1)
    creq, cerr = np.cumsum(req, axis=1), np.cumsum(err, axis=1)
    cn, cs1, cs2 = np.cumsum(nsucc, axis=1), np.cumsum(s1, axis=1), np.cumsum(s2, axis=1)
    tot = creq.sum(-1)
    ri = np.arange(r)
    hc_cum, hs_cum = Hist(h_cum[:, :, 1], q_lo, bw), Hist(h_cum[:, :, 0], q_lo, bw)

    # Kayenta-style
    z_lat = mw_z(hc_cum, hs_cum)
    q50c, q50s = hc_cum.quantile(0.5), hs_cum.quantile(0.5)
    q99c, q99s = hc_cum.quantile(TAIL_Q), hs_cum.quantile(TAIL_Q)
    eff = ((q50c - q50s) > lm) | ((q99c - q99s) > lm)
    high_lat = (z_lat > Z_KAYENTA) & eff
    with np.errstate(invalid="ignore", divide="ignore"):
        rc, rs = cerr[..., 1] / creq[..., 1], cerr[..., 0] / creq[..., 0]
    if scn.slos == "all":
        z_e = binary_mw_z(cerr[..., 1], creq[..., 1], cerr[..., 0], creq[..., 0])
        eff_e = (rc > rs * (1.0 + m_err)) if m_err > 0 else (rc > rs)
        high = high_lat | ((z_e > Z_KAYENTA) & eff_e)
    else:
        high = high_lat
    anyd, idx = first_true(high)
    out["kayenta-mw"].record(anyd, 1, creq[ri, idx, 1], tot[ri, idx])

    # fixed-horizon tests peeked every minute
    ncs, nss = cn[..., 1], cn[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mc, msd = cs1[..., 1] / ncs, cs1[..., 0] / nss
        vc = (cs2[..., 1] - ncs * mc * mc) / (ncs - 1)
        vs = (cs2[..., 0] - nss * msd * msd) / (nss - 1)
        zw = (mc - msd - lm) / np.sqrt(vc / ncs + vs / nss)
    zw = np.where((ncs >= 2) & (nss >= 2) & np.isfinite(zw), zw, 0.0)
    ze = ratio_z(cerr[..., 1], creq[..., 1], cerr[..., 0], creq[..., 0], 1.0 + m_err) if scn.slos == "all" else np.zeros_like(zw)
    above_s = hs_cum.above(q99s)
    above_c = hc_cum.above(q99s + lm)
    zt = ratio_z(above_c, ncs, above_s, nss, 1.0)
    zt = np.where(np.isfinite(q99s), zt, 0.0)
    fx = (zw > Z_FIXED) | (ze > Z_FIXED) | (zt > Z_FIXED)
    anyd, idx = first_true(fx)
    out["fixed-peek"].record(anyd, 1, creq[ri, idx, 1], tot[ri, idx])

    # Flagger-style per-minute thresholds (stable's true values raised by the margin)
    mh = Hist(hseg[:, :, 1], q_lo, bw)
    with np.errstate(invalid="ignore", divide="ignore"):
        er = err[..., 1] / req[..., 1]
    m50, m99 = mh.quantile(0.5), mh.quantile(TAIL_Q)
    nodata = (req[..., 1] == 0) | ~np.isfinite(m50)
    e_thr = scn.e_s * (1.0 + m_err)
    bad = nodata | (m50 > (st.true_p50 + lm)[:, None]) | (m99 > (st.true_p99 + lm)[:, None])
    if scn.slos == "all":
        bad = bad | (er > e_thr)
    for limit in (1, 5):
        f_cum = np.cumsum(bad, axis=1)
        o_cum = np.cumsum(~bad, axis=1)
        roll = f_cum >= limit
        prom = (o_cum >= FLAGGER_ITERATIONS) & ~roll
        anyd, idx = first_true(roll | prom)
        decv = np.where(roll[ri, idx], 1, 2)
        out[f"flagger-limit{limit}"].record(anyd, decv, creq[ri, idx, 1], tot[ri, idx])

    # horizon reached: Kayenta / fixed-horizon promote if they never rolled back
    for k in ("kayenta-mw", "fixed-peek"):
        out[k].record(np.ones(r, bool), 2, creq[:, -1, 1], tot[:, -1])


# ---------------------------------------------------------------------------
# error family: per-minute counts, every error event for Weir
# ---------------------------------------------------------------------------


def simulate_error_cell(scn: Scenario, p: float, rate: float, margin: dict, reps: int, horizon: int, rng: np.random.Generator) -> dict[str, Outcome]:
    m_err = margin["err"]
    ratio = 1.0 + m_err
    n_min = int(math.ceil(horizon / (rate * 60.0)))
    r = reps
    out = {k: Outcome.empty(r) for k in METHODS}
    n = np.stack([rng.poisson(rate * 60 * (1 - p), (r, n_min)), rng.poisson(rate * 60 * p, (r, n_min))], axis=-1)
    x = rng.binomial(n, np.array([E_S, scn.e_c]))
    creq = np.cumsum(n, axis=1)
    cerr = np.cumsum(x, axis=1)
    tot = creq.sum(-1)
    ri = np.arange(r)

    # Weir: each error event in random order within its minute (the count test is a function of counts)
    ev_per = x.sum(-1)  # r, n_min
    grp = np.repeat(np.arange(r * n_min), ev_per.ravel())
    if grp.size:
        starts = np.concatenate([[0], np.cumsum(ev_per.ravel())[:-1]])
        pos = np.arange(grp.size) - starts[grp]
        lab = pos < x[..., 1].ravel()[grp]
        u = rng.random(grp.size)
        order = np.lexsort((u, grp))
        grp, lab, u = grp[order], lab[order], u[order]
        rep = grp // n_min
        minute = grp % n_min
        rep_start = np.searchsorted(rep, np.arange(r))
        k_in_rep = np.arange(grp.size) - rep_start[rep]
        cl = np.cumsum(lab)
        base = np.concatenate([[0], cl])[rep_start][rep]
        xc = cl - base
        xs = k_in_rep + 1 - xc
        lf = count_table(p, ratio, "fail")(xc, xs)
        hit = lf >= LOG_FAIL
        hit_idx = np.flatnonzero(hit)
        if hit_idx.size:
            first_rep, first_pos = np.unique(rep[hit_idx], return_index=True)
            e = hit_idx[first_pos]
            mi = minute[e]
            prev_c = np.where(mi > 0, creq[first_rep, np.maximum(mi - 1, 0), 1], 0)
            prev_s = np.where(mi > 0, creq[first_rep, np.maximum(mi - 1, 0), 0], 0)
            prev_xc = np.where(mi > 0, cerr[first_rep, np.maximum(mi - 1, 0), 1], 0)
            cerr_now = xc[e] - prev_xc
            non_err = n[first_rep, mi, 1] - x[first_rep, mi, 1]
            c_now = prev_c + cerr_now + rng.binomial(non_err, u[e])
            s_now = prev_s + rng.binomial(n[first_rep, mi, 0], u[e])
            mask = np.zeros(r, bool)
            mask[first_rep] = True
            cc = np.zeros(r)
            tt = np.zeros(r)
            cc[first_rep] = c_now
            tt[first_rep] = c_now + s_now
            out["weir-sequential"].record(mask, 1, cc, tt, 1)

    z = binary_mw_z(cerr[..., 1], creq[..., 1], cerr[..., 0], creq[..., 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        rc, rs = cerr[..., 1] / creq[..., 1], cerr[..., 0] / creq[..., 0]
    eff = rc > rs * ratio
    anyd, idx = first_true((z > Z_KAYENTA) & eff)
    out["kayenta-mw"].record(anyd, 1, creq[ri, idx, 1], tot[ri, idx])
    ze = ratio_z(cerr[..., 1], creq[..., 1], cerr[..., 0], creq[..., 0], ratio)
    anyd, idx = first_true(ze > Z_FIXED)
    out["fixed-peek"].record(anyd, 1, creq[ri, idx, 1], tot[ri, idx])
    with np.errstate(invalid="ignore", divide="ignore"):
        er = x[..., 1] / n[..., 1]
    bad = (n[..., 1] == 0) | (er > E_S * ratio)
    for limit in (1, 5):
        f_cum = np.cumsum(bad, axis=1)
        o_cum = np.cumsum(~bad, axis=1)
        roll = f_cum >= limit
        prom = (o_cum >= FLAGGER_ITERATIONS) & ~roll
        anyd, idx = first_true(roll | prom)
        decv = np.where(roll[ri, idx], 1, 2)
        out[f"flagger-limit{limit}"].record(anyd, decv, creq[ri, idx, 1], tot[ri, idx])
    for k in ("kayenta-mw", "fixed-peek"):
        out[k].record(np.ones(r, bool), 2, creq[:, -1, 1], tot[:, -1])
    return out


# ---------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------


def summarise(o: Outcome, null: bool) -> dict:
    r = o.decision.size
    roll = o.decision == 1
    prom = o.decision == 2
    res = {
        "reps": int(r),
        "rollback_rate": float(roll.mean()),
        "promotion_rate": float(prom.mean()),
        "undecided_rate": float((o.decision == 0).mean()),
        "promotions_below_min_requests": float((prom & (o.canary < MIN_REQUESTS)).mean()),
    }
    if o.cause.any():
        res["rollbacks_by_check"] = {name: int((o.cause == i).sum()) for i, name in ((1, "error-rate"), (2, "latency-p50"), (3, "latency-p99"))}
    if null:
        k = int(roll.sum())
        res["false_rollbacks"] = k
        res["false_rollback_rate"] = res["rollback_rate"]
        res["ci95"] = list(clopper_pearson(k, r))
        res["se"] = float(math.sqrt(max(res["rollback_rate"] * (1 - res["rollback_rate"]), 1.0 / r) / r))
    else:
        c = np.where(roll, o.canary, np.inf)
        t = np.where(roll, o.total, np.inf)
        res["missed_rate"] = float(1.0 - roll.mean())

        def q(a, qq):
            # a missed run counts as +inf: the quantile is None when it falls on a missed run
            srt = np.sort(a)
            v = float(srt[min(int(math.ceil(qq * srt.size)) - 1, srt.size - 1)]) if srt.size else math.inf
            return v if math.isfinite(v) else None

        res["median_canary_requests"] = q(c, 0.5)
        res["p90_canary_requests"] = q(c, 0.9)
        res["median_total_requests"] = q(t, 0.5)
        res["p90_total_requests"] = q(t, 0.9)
        fin = np.sort(t[np.isfinite(t)])
        if fin.size >= 20 and roll.mean() > 0.5:
            # distribution-free 95% interval of the median (order statistics), counting misses as +inf
            n = t.size
            lo_i = int(stats.binom.ppf(0.025, n, 0.5))
            hi_i = int(stats.binom.isf(0.025, n, 0.5))
            srt = np.sort(t)
            lo_v, hi_v = float(srt[max(lo_i - 1, 0)]), float(srt[min(hi_i, n - 1)])
            res["median_total_requests_ci95"] = [lo_v if math.isfinite(lo_v) else None, hi_v if math.isfinite(hi_v) else None]
    return res


# ---------------------------------------------------------------------------
# change points (issue 8): a healthy past, then a regression; and the whole rollout's type-I error
# ---------------------------------------------------------------------------

def run_changepoint(args) -> None:
    t_start = time.time()
    reps = args.reps or (200 if args.quick else 1000)
    delay_reps = max(10, reps // 10)
    plan = [(0.1, 6000), (0.3, 6000)] if args.quick else [(0.05, 10000), (0.2, 10000), (0.5, 10000)]
    zero = [SLO("error-rate", 0.0), SLO("latency", 0.0, 0.5), SLO("latency", 0.0, TAIL_Q)]
    margins = [SLO("error-rate", 0.005), SLO("latency", 0.10, 0.5), SLO("latency", 0.10, TAIL_Q)]
    t1 = {"rollout-A/A": (zero, 0.005, 0.005, 1.0, True), "rollout-at-margins": (margins, 0.01, 0.015, 1.1, False)}
    warmups = (0, 2000) if args.quick else (0, 200, 2000, 10000)
    seeds = iter(np.random.SeedSequence([args.seed, 8]).spawn(len(t1) + len(judge_sim.DELAY_CASES) * len(warmups)))
    lines = []
    for name, (slos, e_s, e_c, lat_c, restart) in t1.items():
        t0 = time.time()
        rng = np.random.default_rng(next(seeds))
        k = sum(judge_sim.rollout_fails(rng, slos, plan, e_s, e_c, lat_c, restart=restart) for _ in range(reps))
        lo, hi = clopper_pearson(k, reps)
        lines.append({"bench": "analysis_sim", "suite": "changepoint", "cell": name, "method": "weir-sequential",
                      "steps": [{"share": p, "requests": n} for p, n in plan], "look_requests": 100, "restarts": restart,
                      "alpha": ALPHA, "seed": args.seed, "quick": bool(args.quick), "reps": reps, "false_rollbacks": int(k),
                      "false_rollback_rate": round(k / reps, 4), "ci95": [round(lo, 4), round(hi, 4)],
                      "upper_below_alpha": hi <= ALPHA})
        log(f"  changepoint {name:<20} {time.time() - t0:6.1f}s  false rollbacks {k}/{reps} (95% CI {lo:.4f}-{hi:.4f})")
    for case in judge_sim.DELAY_CASES:
        for w in warmups:
            t0 = time.time()
            d, early = judge_sim.delays(case, w, itertools.repeat(np.random.default_rng(next(seeds)), delay_reps))
            got = np.array([x for x in d if x is not None], dtype=float)
            med = float(np.median(got)) if got.size else None
            lines.append({"bench": "analysis_sim", "suite": "changepoint", "cell": f"delay {case}", "method": "weir-sequential",
                          "warmup_looks": w, "warmup_requests": 50 * w, "look_requests": 50, "share": 0.1, "reps": delay_reps,
                          "seed": args.seed, "quick": bool(args.quick), "detected_within_400_looks": round(got.size / delay_reps, 3),
                          "fails_before_onset": early, "median_delay_looks": med,
                          "p90_delay_looks": float(np.quantile(got, 0.9)) if got.size else None,
                          "median_delay_s_at_200_rps": round(med * 50 / 200.0, 2) if med is not None else None})
            log(f"  changepoint delay {case:<12} warm-up {w:>5} looks  {time.time() - t0:6.1f}s  median {med} looks, "
                f"detected {got.size}/{delay_reps}")
    for line in lines:
        sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    log(f"changepoint suite: {time.time() - t_start:.0f} s")


def run(args) -> None:
    if args.suite in ("all", "changepoint"):
        run_changepoint(args)
        if args.suite == "changepoint":
            return
    t_start = time.time()
    reps = args.reps or (200 if args.quick else 1000)
    h_lat = args.horizon or (20_000 if args.quick else 50_000)
    h_err = 1_000_000
    h_adv = args.horizon or (20_000 if args.quick else 50_000)
    master = np.random.SeedSequence(args.seed)
    results: dict = {}  # (suite, margin, scenario, share, rate) -> method -> summary
    cells = []
    if args.suite in ("all", "power"):
        for mk in ("0", "5%"):
            for scn in SCENARIOS:
                if args.quick and mk == "5%" and (scn.null or scn.family == "errors"):
                    continue  # quick: the 5%-margin run only for the latency regressions
                for p in SHARES:
                    if args.quick and p != 0.10:
                        continue  # quick: the 10% share (the targets' cells) only
                    for rate in RATES:
                        if args.quick and mk == "5%" and rate != 10.0:
                            continue
                        cells.append(("power", mk, scn, p, rate))
    if args.suite in ("all", "adversarial"):
        for scn in ADVERSARIAL:
            cells.append(("adversarial", "0", scn, scn.share, scn.rate))
    seeds = master.spawn(len(cells))
    for (suite, mk, scn, p, rate), ss in zip(cells, seeds):
        t0 = time.time()
        rng = np.random.default_rng(ss)
        if scn.family == "latency":
            horizon = int((h_adv if suite == "adversarial" else h_lat) * scn.horizon_factor)
            agg = simulate_latency_cell(scn, p, rate, MARGINS[mk], reps, horizon, rng, look_s=scn.look_s)
        else:
            agg = None
            for start in range(0, reps, args.chunk):
                rr = min(args.chunk, reps - start)
                o = simulate_error_cell(scn, p, rate, MARGINS[mk], rr, h_err, rng)
                agg = o if agg is None else {k: agg[k].concat(o[k]) for k in METHODS}
        results[(suite, mk, scn.name, p, rate)] = {k: summarise(agg[k], scn.null) for k in METHODS}
        w = results[(suite, mk, scn.name, p, rate)]["weir-sequential"]
        extra = f"frr={w['false_rollback_rate']:.3f}" if scn.null else f"median_total={w['median_total_requests']}"
        log(f"  {suite:<11} margin={mk:>2} {scn.name:<18} share={p:.2f} rate={rate:>5g}  {time.time() - t0:6.1f}s  weir {extra}")
    elapsed = time.time() - t_start
    print_table(results)
    emit_json(results, reps, h_lat, h_err, h_adv, args, elapsed)


def cell_key(p: float, rate: float) -> str:
    return f"share={p:g},rps={rate:g}"


def print_table(results: dict) -> None:
    hdr = f"{'scenario':<19}{'cell':<22}" + "".join(f"{m:>17}" for m in METHODS)
    if any(k[0] == "power" for k in results):
        log("")
        log("False-rollback rate in S0 variants (alpha = 0.05), margin 0:")
        log(hdr)
        for (suite, mk, name, p, rate), row in results.items():
            if suite != "power" or mk != "0" or "false_rollback_rate" not in row[METHODS[0]]:
                continue
            log(f"{name:<19}{cell_key(p, rate):<22}" + "".join(f"{row[m]['false_rollback_rate']:>17.3f}" for m in METHODS))
        for mk in ("0", "5%"):
            log("")
            log(f"Detection, margin {mk}: median / p90 canary requests to rollback (missed %):")
            log(hdr)
            for (suite, mk2, name, p, rate), row in results.items():
                if suite != "power" or mk2 != mk or "missed_rate" not in row[METHODS[0]]:
                    continue

                def f(s):
                    med = s["median_canary_requests"]
                    p90 = s["p90_canary_requests"]
                    a = "-" if med is None else f"{med:.0f}"
                    b = "-" if p90 is None else f"{p90:.0f}"
                    return f"{a}/{b} ({s['missed_rate'] * 100:.0f}%)"

                log(f"{name:<19}{cell_key(p, rate):<22}" + "".join(f"{f(row[m]):>17}" for m in METHODS))
    if any(k[0] == "adversarial" for k in results):
        log("")
        log("Adversarial A/A cells (margin 0, alpha 0.05): false-rollback rate [Clopper-Pearson 95%]:")
        log(f"{'cell':<19}{'share/rps':<22}" + "".join(f"{m:>22}" for m in METHODS))
        for (suite, mk, name, p, rate), row in results.items():
            if suite != "adversarial":
                continue
            cells = []
            for m in METHODS:
                s = row[m]
                cells.append(f"{s['false_rollback_rate']:.3f} [{s['ci95'][0]:.3f},{s['ci95'][1]:.3f}]")
            log(f"{name:<19}{cell_key(p, rate):<22}" + "".join(f"{c:>22}" for c in cells))
    log("")
    log("Promotions with fewer than min_requests canary requests (share of all runs):")
    for m in METHODS:
        vals = [row[m]["promotions_below_min_requests"] for row in results.values()]
        log(f"  {m:<18}{np.mean(vals):.3f}")


def emit_json(results: dict, reps: int, h_lat: int, h_err: int, h_adv: int, args, elapsed: float) -> None:
    per_method = {}
    for m in METHODS:
        frr: dict = {}
        det: dict = {"0": {}, "5%": {}}
        missed = []
        below = []
        by_check: dict = {}
        promos_reg = []
        adv: dict = {}
        for (suite, mk, name, p, rate), row in results.items():
            s = row[m]
            below.append(s["promotions_below_min_requests"])
            if suite == "adversarial":
                adv[name] = {"rate": round(s["false_rollback_rate"], 4), "ci95": [round(v, 4) for v in s["ci95"]], "reps": s["reps"]}
                continue
            if "false_rollback_rate" in s:
                frr.setdefault(mk, {}).setdefault(name, {})[cell_key(p, rate)] = round(s["false_rollback_rate"], 4)
                for check, count in s.get("rollbacks_by_check", {}).items():
                    by_check[check] = by_check.get(check, 0) + count
            else:
                det[mk].setdefault(name, {})[cell_key(p, rate)] = {
                    k: s.get(k) for k in ("median_canary_requests", "p90_canary_requests", "median_total_requests",
                                          "median_total_requests_ci95", "p90_total_requests", "missed_rate")
                }
                if mk == "0":
                    missed.append(s["missed_rate"])
                    promos_reg.append(s["promotion_rate"])
        all_frr0 = [v for d in frr.get("0", {}).values() for v in d.values()]
        all_frr = [v for mk in frr for d in frr[mk].values() for v in d.values()]
        per_method[m] = {
            "bench": "analysis_sim",
            "method": m,
            "alpha": ALPHA,
            "reps_per_cell": reps,
            "quick": bool(args.quick),
            "seed": args.seed,
            "suite": args.suite,
            "horizon_total_requests": {"latency_scenarios": h_lat, "error_scenarios": h_err, "adversarial": h_adv},
            "min_requests": MIN_REQUESTS,
            "false_rollback_rate": frr.get("0", {}),
            "false_rollback_rate_max": max(all_frr) if all_frr else None,
            "false_rollback_rate_mean": float(np.mean(all_frr0)) if all_frr0 else None,
            "false_rollback_rate_margin_5pct": frr.get("5%", {}),
            "adversarial_false_rollback_rate": adv,
            "adversarial_max": max((v["rate"] for v in adv.values()), default=None),
            "detection": det["0"],
            "detection_margin_5pct": det["5%"],
            "false_rollbacks_by_check_all_S0_runs": by_check or None,
            "missed_regression_rate": float(np.mean(missed)) if missed else None,
            "regressions_promoted_rate": float(np.mean(promos_reg)) if promos_reg else None,
            "promotions_without_enough_evidence": float(np.mean(below)) if below else None,
            "seconds": round(elapsed, 1),
        }
    per_method["weir-sequential"]["targets"] = targets(per_method)
    for m in METHODS:
        sys.stdout.write(json.dumps(per_method[m], separators=(",", ":")) + "\n")
    for (suite, mk, name, p, rate), row in results.items():
        if suite != "adversarial":
            continue
        for m in METHODS:
            s = row[m]
            line = {"bench": "analysis_sim", "suite": "adversarial", "cell": name, "method": m, "share": p, "rps": rate,
                    "alpha": ALPHA, "seed": args.seed, "quick": bool(args.quick), "reps": s["reps"],
                    "false_rollbacks": s["false_rollbacks"], "false_rollback_rate": round(s["false_rollback_rate"], 4),
                    "ci95": [round(v, 4) for v in s["ci95"]], "within_alpha": s["ci95"][0] <= ALPHA,
                    "upper_below_alpha": s["ci95"][1] <= ALPHA, "promotion_rate": round(s["promotion_rate"], 4),
                    "rollbacks_by_check": s.get("rollbacks_by_check")}
            sys.stdout.write(json.dumps(line, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    log("")
    log("Targets (Weir):")
    for k, v in per_method["weir-sequential"]["targets"].items():
        log(f"  {'MET ' if v['met'] else 'MISS'} {k}: {v['value']} (target {v['target']})")


def targets(pm: dict) -> dict:
    w = pm["weir-sequential"]
    out = {}
    if w["false_rollback_rate_max"] is not None:
        out["false_rollback_rate_max_all_S0_cells_both_margins"] = {"value": w["false_rollback_rate_max"], "target": "<= 0.05",
                                                                    "met": w["false_rollback_rate_max"] <= 0.05}
    if w["adversarial_false_rollback_rate"]:
        worst = max(w["adversarial_false_rollback_rate"].items(), key=lambda kv: kv[1]["rate"])
        out["adversarial_worst_cell"] = {"value": {worst[0]: worst[1]}, "target": "rate <= 0.05 (interval's lower end <= 0.05)",
                                         "met": worst[1]["rate"] <= 0.05 and worst[1]["ci95"][0] <= 0.05}

    def worst_median(name):
        cells = w["detection"].get(name, {})
        vals = [c["median_total_requests"] for k, c in cells.items() if k.startswith("share=0.1,")]
        if not vals:
            return None
        return None if any(v is None for v in vals) else max(vals)

    for name, lim in (("median+10%", 2500), ("median+20%", 900), ("errors-0.5%", 15000), ("tail-3%", 5500)):
        v = worst_median(name)
        if w["detection"].get(name):
            out[f"median_total_requests_{name}_share10_worst_rate"] = {"value": v, "target": f"<= {lim}", "met": v is not None and v <= lim}
    if w["promotions_without_enough_evidence"] is not None:
        out["promotions_before_min_requests"] = {"value": w["promotions_without_enough_evidence"], "target": "0",
                                                 "met": w["promotions_without_enough_evidence"] == 0}
    for other in ("flagger-limit1", "flagger-limit5", "kayenta-mw"):
        o = pm[other]
        if w["false_rollback_rate_mean"] is None:
            continue
        fewer = (w["false_rollback_rate_mean"] or 0) < (o["false_rollback_rate_mean"] or 0)
        n_cells = n_faster = 0
        for name, cells in w["detection"].items():
            for ck, c in cells.items():
                oc = o["detection"][name][ck]
                n_cells += 1
                wm = c["median_canary_requests"]
                om = oc["median_canary_requests"]
                if wm is not None and (om is None or wm <= om):
                    n_faster += 1
        out[f"vs_{other}"] = {
            "value": {"weir_frr_mean": w["false_rollback_rate_mean"], "other_frr_mean": o["false_rollback_rate_mean"],
                      "cells_weir_median_detection_equal_or_faster": f"{n_faster}/{n_cells}"},
            "target": "fewer false rollbacks at equal or better detection speed (median, every regression cell)",
            "met": bool(fewer and n_faster == n_cells),
        }
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a few minutes: 200 reps, 20k-request horizon, 10% share only")
    ap.add_argument("--reps", type=int, default=None, help="replications per cell (default 1000, quick 200)")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--horizon", type=int, default=None, help="total requests per latency run (default 50k; quick 20k)")
    ap.add_argument("--chunk", type=int, default=250, help="replications simulated together in the error cells (memory)")
    ap.add_argument("--suite", choices=("all", "power", "adversarial", "changepoint"), default="all")
    args = ap.parse_args(argv)
    run(args)


if __name__ == "__main__":
    main()
