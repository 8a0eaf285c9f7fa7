#!/usr/bin/env python3
"""Canary-analysis benchmark: false rollbacks and detection speed of five decision methods.

Simulated request streams (Poisson arrivals, lognormal latency with sigma 0.5,
0.1% errors on stable), canary share 5% and 10%, total rates 1, 10 and 100
requests/s. Every replication is one canary step that runs until the method
rolls back, promotes, or the horizon (a number of total requests) is reached.

Methods
  weir-sequential     Weir's default judge: anytime-valid e-processes (analysis.sequential),
                      looked at every simulated second; 3 SLOs (error rate, p50, p99) at
                      alpha/3 each; promotes only when every SLO passes and the canary has
                      min_requests (500) requests.
  kayenta-mw          Mann-Whitney on growing windows every minute: latency U test (98%
                      interval, +-25% tolerance band, effect-size check per SLO quantile),
                      error rate as 0/1 outcomes; promotes at the horizon if never High.
  flagger-limit1/5    absolute per-minute thresholds (stable's true error rate / p50 / p99
                      raised by the margin); a minute without canary data is a failed check
                      (Flagger's "no values found"); rollback at 1 or 5 failed checks, promotion
                      after 10 successful minutes.
  fixed-peek          the fixed-horizon tests (two-proportion z, Welch z on log latency,
                      exceedance z) at alpha/3 each, peeked every minute on cumulative data;
                      promotes at the horizon.

Scenarios
  S0, S0-endpoints (20 request types with random log-latency offsets sd 0.3, Zipf popularity,
  shared by both arms), S0-diurnal (rate x (1 + 0.5 sin) and latency x exp(0.3 sin) over 24 h,
  random phase, shared), median +5/+10/+20%, tail (share above stable's p99 from 1% to 2% / 3%,
  the extra mass drawn from stable's own tail), errors 0.1% -> 0.5% / 0.2%, and S0-errors.
  Latency scenarios simulate every request (histograms with 256 log bins, 2.7% wide, for the rank and
  quantile statistics of the baselines; Weir's statistics use exact sums and counts). Error
  scenarios simulate per-minute counts and, for Weir, every error event in random order
  within its minute; in them each method judges only its error-rate check (Weir still at
  alpha/3), so promotions are counted in the latency scenarios only. Weir's sample-ratio
  guard is not simulated (arrivals are split exactly at random; it could only turn a
  decision into "inconclusive").

Margins: "0" (any regression counts; the detection targets) and "5%" (latency +5% relative,
error rate +5% relative).

Output: a table on stderr; one JSON line per method on stdout.
Usage: bench/analysis_sim.py [--quick] [--reps N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import special, stats

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from analysis import sequential as sq  # noqa: E402
from analysis.judges.sequential import SequentialSettings  # noqa: E402

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
SETTINGS = SequentialSettings()
MIN_STABLE_TAIL = SETTINGS.min_stable_tail or max(30, math.ceil(2.0 / (1.0 - TAIL_Q)))

# histogram of log-latency used by the baselines (rank tests, per-minute quantiles) and
# for the running quantile behind Weir's tail threshold
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
    endpoints: bool = False
    diurnal: bool = False


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
    """Histograms h[..., NB] of log-latency with their cumulative sums computed once."""

    def __init__(self, h: np.ndarray):
        self.h = np.ascontiguousarray(h, dtype=np.float64)
        self.cum = np.cumsum(self.h, axis=-1)
        self.n = self.cum[..., -1]

    def quantile(self, q: float) -> np.ndarray:
        """Interpolated q-quantile (log-latency); NaN when empty."""
        target = q * self.n
        b = np.argmax(self.cum >= target[..., None], axis=-1)
        c_b = np.take_along_axis(self.cum, b[..., None], -1)[..., 0]
        h_b = np.take_along_axis(self.h, b[..., None], -1)[..., 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(h_b > 0, (target - (c_b - h_b)) / h_b, 0.5)
        out = LO + (b + np.clip(frac, 0.0, 1.0)) * BW
        return np.where(self.n > 0, out, np.nan)

    def above(self, x: np.ndarray) -> np.ndarray:
        """Mass above log-value x (linear within the bin)."""
        pos = np.clip(np.nan_to_num((x - LO) / BW, nan=NB - 1e-9), 0.0, NB - 1e-9)
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
    the table grows by doubling as counts grow. Lookups make per-second evaluation cheap.
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


# ---------------------------------------------------------------------------
# latency family: every request simulated
# ---------------------------------------------------------------------------


def block_schedule(rate: float, horizon_s: float) -> list[tuple[int, int]]:
    """(start, length) in seconds; blocks grow by ~10% of elapsed time, are cut at minute
    boundaries, and are at most max(60 s, 600 requests) long (whole minutes)."""
    dmax = max(60, int(round(600.0 / rate / 60.0)) * 60)
    out = []
    t = 0
    end = int(math.ceil(horizon_s))
    while t < end:
        d = max(1, int(0.1 * t))
        if d >= 60:
            d = min(dmax, (d // 60) * 60)
        nxt = (t // 60 + 1) * 60
        if t % 60 != 0 or d < 60:
            d = min(d, nxt - t)
        d = min(d, end - t)
        out.append((t, d))
        t += d
    return out


def simulate_latency_cell(scn: Scenario, p: float, rate: float, margin: dict, reps: int, horizon: int, rng: np.random.Generator) -> dict[str, Outcome]:
    m_lat = margin["lat"]
    m_err = margin["err"]
    err_ratio = 1.0 + m_err  # the bench's error margins are relative
    lm = math.log1p(m_lat)
    e_c = scn.e_c
    horizon_s = horizon / rate
    r = reps
    out = {k: Outcome.empty(r) for k in METHODS}

    # per-rep random effects
    if scn.endpoints:
        w = 1.0 / np.arange(1, N_ENDPOINTS + 1) ** 1.1
        w /= w.sum()
        cw = np.cumsum(w)
        u_off = rng.normal(0.0, ENDPOINT_SD, (r, N_ENDPOINTS))
        true_p50 = mixture_quantiles(u_off, w, 0.5)
        true_p99 = mixture_quantiles(u_off, w, TAIL_Q)
    else:
        true_p50 = np.full(r, MU)
        true_p99 = np.full(r, MU + SIGMA * special.ndtri(TAIL_Q))
    phase = rng.uniform(0, DAY, r) if scn.diurnal else None

    # --- state ---
    req = np.zeros((r, 2))  # stable, canary
    err = np.zeros((r, 2))
    lat_n = np.zeros((r, 2))
    lat_s1 = np.zeros((r, 2))
    lat_s2 = np.zeros((r, 2))
    tail_x = np.zeros((r, 2))
    tail_thr = np.full(r, np.nan)  # log threshold
    tail_n_at = np.zeros(r)
    passed = np.zeros((r, 3), bool)  # sticky passes: errors, p50, p99
    hist = np.zeros((r, 2, NB), np.int64)  # cumulative
    minute_acc = np.zeros((r, NB), np.int64)  # canary histogram of the current minute
    minute_req = np.zeros((r, 2))
    minute_err = np.zeros((r, 2))
    fl_failed = {1: np.zeros(r), 5: np.zeros(r)}
    fl_ok = {1: np.zeros(r), 5: np.zeros(r)}
    flagger_err_thr = E_S * (1.0 + m_err)
    fl_p50_thr = true_p50 + lm
    fl_p99_thr = true_p99 + lm

    for t0, d in block_schedule(rate, horizon_s):
        looks = np.arange(t0, t0 + d, dtype=np.float64)
        if scn.diurnal:
            rm = 1.0 + DIURNAL_RATE * np.sin(2 * np.pi * (looks[None, :] + phase[:, None]) / DAY)
        else:
            rm = np.ones((1, d))
        lam = rate * rm
        cnt = np.stack([rng.poisson(lam * (1 - p) * np.ones((r, 1))), rng.poisson(lam * p * np.ones((r, 1)))], axis=-1)  # r,d,2
        ers = rng.binomial(cnt, np.array([E_S, e_c]))
        ok = cnt - ers
        g = np.repeat(np.arange(r * d * 2), ok.ravel())
        n = g.size
        arm = g & 1
        look = (g >> 1) % d
        rep = g // (2 * d)
        y = np.empty(n)
        is_c = arm == 1
        if scn.tail_k:
            nc = int(is_c.sum())
            y[~is_c] = rng.standard_normal(n - nc)
            y[is_c] = canary_tail_ppf(rng.random(nc), scn.tail_k)
            y = MU + SIGMA * y
        else:
            y = MU + SIGMA * rng.standard_normal(n)
            if scn.shift:
                y += scn.shift * is_c
        if scn.endpoints:
            j = np.searchsorted(cw, rng.random(n))
            y += u_off[rep, np.minimum(j, N_ENDPOINTS - 1)]
        if scn.diurnal:
            y += DIURNAL_LAT * np.sin(2 * np.pi * (t0 + look + phase[rep]) / DAY)

        size = r * d * 2
        s1 = np.bincount(g, weights=y, minlength=size).reshape(r, d, 2)
        s2 = np.bincount(g, weights=y * y, minlength=size).reshape(r, d, 2)
        thr_y = tail_thr[rep] + lm * arm
        ex = np.bincount(g, weights=(y > thr_y), minlength=size).reshape(r, d, 2)

        # --- Weir: every second ---
        c_req = req[:, None, :] + np.cumsum(cnt, axis=1)
        c_err = err[:, None, :] + np.cumsum(ers, axis=1)
        c_n = lat_n[:, None, :] + np.cumsum(ok, axis=1)
        c_s1 = lat_s1[:, None, :] + np.cumsum(s1, axis=1)
        c_s2 = lat_s2[:, None, :] + np.cumsum(s2, axis=1)
        c_x = tail_x[:, None, :] + np.cumsum(ex, axis=1)
        lf_e = count_table(p, err_ratio, "fail")(c_err[..., 1], c_err[..., 0])
        lp_e = count_table(p, err_ratio, "pass")(c_err[..., 1], c_err[..., 0])
        ms = sq.mean_shift_stats(c_n[..., 1], c_s1[..., 1], c_s2[..., 1], c_n[..., 0], c_s1[..., 0], c_s2[..., 0], prior_df=SETTINGS.prior_df)
        lf_l, lp_l = sq.mean_shift_log_evalues(ms, lm, tau=SETTINGS.tau)
        use_l = (c_n[..., 1] >= SETTINGS.min_latency_samples) & (c_n[..., 0] >= SETTINGS.min_latency_samples)
        lf_t = count_table(p, 1.0, "fail")(c_x[..., 1], c_x[..., 0])
        lp_t = count_table(p, 1.0, "pass")(c_x[..., 1], c_x[..., 0])
        use_t = np.isfinite(tail_thr)[:, None]
        f_e = lf_e >= LOG_FAIL
        f_l = use_l & (lf_l >= LOG_FAIL)
        f_t = use_t & (lf_t >= LOG_FAIL)
        fail = f_e | f_l | f_t
        pe = passed[:, None, 0] | np.logical_or.accumulate(lp_e >= LOG_PASS, axis=1)
        pl = passed[:, None, 1] | np.logical_or.accumulate(use_l & (lp_l >= LOG_PASS), axis=1)
        pt = passed[:, None, 2] | np.logical_or.accumulate(use_t & (lp_t >= LOG_PASS), axis=1)
        promote = pe & pl & pt & (c_req[..., 1] >= MIN_REQUESTS)
        decide = fail | promote
        anyd, idx = first_true(decide)
        ri = np.arange(r)
        dec = np.where(fail[ri, idx], 1, 2)
        cause = np.where(f_e[ri, idx], 1, np.where(f_l[ri, idx], 2, np.where(f_t[ri, idx], 3, 0)))
        out["weir-sequential"].record(anyd, dec, c_req[ri, idx, 1], c_req[ri, idx].sum(-1), cause)
        passed = np.stack([pe[:, -1], pl[:, -1], pt[:, -1]], axis=1)

        req, err, lat_n, lat_s1, lat_s2, tail_x = (a[:, -1, :] for a in (c_req, c_err, c_n, c_s1, c_s2, c_x))

        # --- per-minute segments for the baselines ---
        bounds = [s for s in range(t0 + 1, t0 + d + 1) if s % 60 == 0]
        ends = [b - t0 for b in bounds]  # in looks
        if not ends or ends[-1] != d:
            seg_ends = ends + [d]
        else:
            seg_ends = ends
        seg_of_look = np.searchsorted(np.array(seg_ends), np.arange(d), side="right")
        n_seg = len(seg_ends)
        b = np.clip(((y - LO) / BW).astype(np.int64), 0, NB - 1)
        hidx = ((rep * n_seg + seg_of_look[look]) * 2 + arm) * NB + b
        hseg = np.bincount(hidx, minlength=r * n_seg * 2 * NB).reshape(r, n_seg, 2, NB)
        starts = np.array([0] + seg_ends[:-1])
        seg_cnt = np.add.reduceat(cnt, starts, axis=1)  # r, n_seg, 2
        seg_err = np.add.reduceat(ers, starts, axis=1)
        h_cum = hist[:, None] + np.cumsum(hseg, axis=1)  # r, n_seg, 2, NB
        hist = h_cum[:, -1]
        # Weir tail threshold: re-estimated at block ends (after this block's looks) when stable grew by 10%
        ns_end = lat_n[:, 0]
        upd = (ns_end >= MIN_STABLE_TAIL) & (~np.isfinite(tail_thr) | (ns_end >= SETTINGS.regrow * tail_n_at))
        if upd.any():
            tail_thr = np.where(upd, hist_quantile(hist[:, 0], TAIL_Q), tail_thr)
            tail_n_at = np.where(upd, ns_end, tail_n_at)
        look_end = np.array(seg_ends) - 1
        cum_req_seg = c_req[:, look_end]  # r, n_seg, 2
        cum_err_seg = c_err[:, look_end]
        cum_n_seg = c_n[:, look_end]
        cum_s1_seg = c_s1[:, look_end]
        cum_s2_seg = c_s2[:, look_end]
        # minute data: the first segment continues the running minute
        min_hc = hseg[:, :, 1].copy()
        min_req = seg_cnt.astype(np.float64)
        min_err = seg_err.astype(np.float64)
        min_hc[:, 0] += minute_acc
        min_req[:, 0] += minute_req
        min_err[:, 0] += minute_err
        n_min = len(ends)
        if n_min < n_seg:  # trailing partial minute
            minute_acc = min_hc[:, -1]
            minute_req = min_req[:, -1]
            minute_err = min_err[:, -1]
        else:
            minute_acc = np.zeros((r, NB), np.int64)
            minute_req = np.zeros((r, 2))
            minute_err = np.zeros((r, 2))
        if n_min == 0:
            continue
        sl = slice(0, n_min)
        hc_cum, hs_cum = Hist(h_cum[:, sl, 1]), Hist(h_cum[:, sl, 0])
        creq, cerr = cum_req_seg[:, sl], cum_err_seg[:, sl]
        tot = creq.sum(-1)

        # Kayenta-style
        z_lat = mw_z(hc_cum, hs_cum)
        q50c, q50s = hc_cum.quantile(0.5), hs_cum.quantile(0.5)
        q99c, q99s = hc_cum.quantile(TAIL_Q), hs_cum.quantile(TAIL_Q)
        eff = ((q50c - q50s) > lm) | ((q99c - q99s) > lm)
        high_lat = (z_lat > Z_KAYENTA) & eff
        z_e = binary_mw_z(cerr[..., 1], creq[..., 1], cerr[..., 0], creq[..., 0])
        with np.errstate(invalid="ignore", divide="ignore"):
            rc, rs = cerr[..., 1] / creq[..., 1], cerr[..., 0] / creq[..., 0]
        eff_e = (rc > rs * (1.0 + m_err)) if m_err > 0 else (rc > rs)
        high = high_lat | ((z_e > Z_KAYENTA) & eff_e)
        anyd, idx = first_true(high)
        ri = np.arange(r)
        out["kayenta-mw"].record(anyd, 1, creq[ri, idx, 1], tot[ri, idx])

        # fixed-horizon tests peeked every minute
        ncs, nss = cum_n_seg[:, sl, 1], cum_n_seg[:, sl, 0]
        with np.errstate(invalid="ignore", divide="ignore"):
            mc, msd = cum_s1_seg[:, sl, 1] / ncs, cum_s1_seg[:, sl, 0] / nss
            vc = (cum_s2_seg[:, sl, 1] - ncs * mc * mc) / (ncs - 1)
            vs = (cum_s2_seg[:, sl, 0] - nss * msd * msd) / (nss - 1)
            zw = (mc - msd - lm) / np.sqrt(vc / ncs + vs / nss)
        zw = np.where((ncs >= 2) & (nss >= 2) & np.isfinite(zw), zw, 0.0)
        ze = ratio_z(cerr[..., 1], creq[..., 1], cerr[..., 0], creq[..., 0], 1.0 + m_err)
        above_s = hs_cum.above(q99s)
        above_c = hc_cum.above(q99s + lm)
        zt = ratio_z(above_c, ncs, above_s, nss, 1.0)
        zt = np.where(np.isfinite(q99s), zt, 0.0)
        fx = (zw > Z_FIXED) | (ze > Z_FIXED) | (zt > Z_FIXED)
        anyd, idx = first_true(fx)
        out["fixed-peek"].record(anyd, 1, creq[ri, idx, 1], tot[ri, idx])

        # Flagger-style per-minute thresholds
        mh = Hist(min_hc[:, sl])
        mreq, merr = min_req[:, sl], min_err[:, sl]
        with np.errstate(invalid="ignore", divide="ignore"):
            er = merr[..., 1] / mreq[..., 1]
        m50, m99 = mh.quantile(0.5), mh.quantile(TAIL_Q)
        nodata = (mreq[..., 1] == 0) | ~np.isfinite(m50)
        bad = nodata | (er > flagger_err_thr) | (m50 > fl_p50_thr[:, None]) | (m99 > fl_p99_thr[:, None])
        for limit in (1, 5):
            f_cum = fl_failed[limit][:, None] + np.cumsum(bad, axis=1)
            o_cum = fl_ok[limit][:, None] + np.cumsum(~bad, axis=1)
            roll = f_cum >= limit
            prom = (o_cum >= FLAGGER_ITERATIONS) & ~roll
            decide = roll | prom
            anyd, idx = first_true(decide)
            decv = np.where(roll[ri, idx], 1, 2)
            out[f"flagger-limit{limit}"].record(anyd, decv, creq[ri, idx, 1], tot[ri, idx])
            fl_failed[limit] = f_cum[:, -1]
            fl_ok[limit] = o_cum[:, -1]


    # horizon reached: Kayenta / fixed-horizon promote if they never rolled back
    for k in ("kayenta-mw", "fixed-peek"):
        o = out[k]
        o.record(np.ones(r, bool), 2, req[:, 1], req.sum(-1))
    return out


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

    # Weir: each error event in random order within its minute
    ev_per = x.sum(-1)  # r, n_min
    grp = np.repeat(np.arange(r * n_min), ev_per.ravel())
    if grp.size:
        # labels: canary events first within the group, then shuffled by a random time
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
            # canary requests at the event: earlier minutes + this minute's canary errors so far
            # + the minute's non-error canary requests that arrived before the event
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

    # Kayenta-style: binary Mann-Whitney on cumulative counts every minute
    z = binary_mw_z(cerr[..., 1], creq[..., 1], cerr[..., 0], creq[..., 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        rc, rs = cerr[..., 1] / creq[..., 1], cerr[..., 0] / creq[..., 0]
    eff = rc > rs * ratio
    anyd, idx = first_true((z > Z_KAYENTA) & eff)
    out["kayenta-mw"].record(anyd, 1, creq[ri, idx, 1], tot[ri, idx])
    # fixed-horizon z-test peeked every minute
    ze = ratio_z(cerr[..., 1], creq[..., 1], cerr[..., 0], creq[..., 0], ratio)
    anyd, idx = first_true(ze > Z_FIXED)
    out["fixed-peek"].record(anyd, 1, creq[ri, idx, 1], tot[ri, idx])
    # Flagger-style: minute error rate over stable's (true) rate x (1 + margin); no data fails
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
        res["false_rollback_rate"] = res["rollback_rate"]
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
    return res


def run(args) -> None:
    t_start = time.time()
    reps = args.reps or (200 if args.quick else 2000)
    h_lat = args.horizon or (30_000 if args.quick else 100_000)
    h_err = 1_000_000
    margins = ["0", "5%"]
    chunk = args.chunk
    master = np.random.SeedSequence(args.seed)
    results: dict = {}  # (margin, scenario, share, rate) -> method -> summary
    cells = []
    for mk in margins:
        for scn in SCENARIOS:
            if args.quick and mk == "5%" and (scn.null or scn.family == "errors"):
                continue  # quick: the 5%-margin run only for the latency regressions
            for p in SHARES:
                for rate in RATES:
                    if args.quick and mk == "5%" and rate != 10.0:
                        continue
                    cells.append((mk, scn, p, rate))
    seeds = master.spawn(len(cells))
    for (mk, scn, p, rate), ss in zip(cells, seeds):
        t0 = time.time()
        rng = np.random.default_rng(ss)
        agg: dict[str, Outcome] | None = None
        for start in range(0, reps, chunk):
            rr = min(chunk, reps - start)
            if scn.family == "latency":
                o = simulate_latency_cell(scn, p, rate, MARGINS[mk], rr, h_lat, rng)
            else:
                o = simulate_error_cell(scn, p, rate, MARGINS[mk], rr, h_err, rng)
            agg = o if agg is None else {k: agg[k].concat(o[k]) for k in METHODS}
        results[(mk, scn.name, p, rate)] = {k: summarise(agg[k], scn.null) for k in METHODS}
        log(f"  cell margin={mk:>2} {scn.name:<12} share={p:.2f} rate={rate:>5g}  {time.time() - t0:5.1f}s")
    elapsed = time.time() - t_start
    print_table(results)
    emit_json(results, reps, h_lat, h_err, args, elapsed)


def cell_key(p: float, rate: float) -> str:
    return f"share={p:g},rps={rate:g}"


def print_table(results: dict) -> None:
    log("")
    log("False-rollback rate in S0 variants (alpha = 0.05), margin 0:")
    hdr = f"{'scenario':<13}{'cell':<22}" + "".join(f"{m:>17}" for m in METHODS)
    log(hdr)
    for (mk, name, p, rate), row in results.items():
        if mk != "0" or "false_rollback_rate" not in row[METHODS[0]]:
            continue
        log(f"{name:<13}{cell_key(p, rate):<22}" + "".join(f"{row[m]['false_rollback_rate']:>17.3f}" for m in METHODS))
    for mk in ("0", "5%"):
        log("")
        log(f"Detection, margin {mk}: median / p90 canary requests to rollback (missed %):")
        log(hdr)
        for (mk2, name, p, rate), row in results.items():
            if mk2 != mk or "missed_rate" not in row[METHODS[0]]:
                continue

            def f(s):
                med = s["median_canary_requests"]
                p90 = s["p90_canary_requests"]
                a = "-" if med is None else f"{med:.0f}"
                b = "-" if p90 is None else f"{p90:.0f}"
                return f"{a}/{b} ({s['missed_rate'] * 100:.0f}%)"

            log(f"{name:<13}{cell_key(p, rate):<22}" + "".join(f"{f(row[m]):>17}" for m in METHODS))
    log("")
    log("Promotions with fewer than min_requests canary requests (share of all margin-0 runs):")
    for m in METHODS:
        vals = [row[m]["promotions_below_min_requests"] for (mk, name, p, rate), row in results.items() if mk == "0"]
        log(f"  {m:<18}{np.mean(vals):.3f}")


def emit_json(results: dict, reps: int, h_lat: int, h_err: int, args, elapsed: float) -> None:
    weir_targets = None
    per_method = {}
    for m in METHODS:
        frr: dict = {}
        det: dict = {"0": {}, "5%": {}}
        missed = []
        below = []
        by_check: dict = {}
        promos_reg = []
        for (mk, name, p, rate), row in results.items():
            s = row[m]
            below.append(s["promotions_below_min_requests"])
            if "false_rollback_rate" in s:
                frr.setdefault(mk, {}).setdefault(name, {})[cell_key(p, rate)] = round(s["false_rollback_rate"], 4)
                for check, count in s.get("rollbacks_by_check", {}).items():
                    by_check[check] = by_check.get(check, 0) + count
            else:
                det[mk].setdefault(name, {})[cell_key(p, rate)] = {
                    k: s[k] for k in ("median_canary_requests", "p90_canary_requests", "median_total_requests", "p90_total_requests", "missed_rate")
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
            "horizon_total_requests": {"latency_scenarios": h_lat, "error_scenarios": h_err},
            "min_requests": MIN_REQUESTS,
            "false_rollback_rate": frr.get("0", {}),
            "false_rollback_rate_max": max(all_frr) if all_frr else None,
            "false_rollback_rate_mean": float(np.mean(all_frr0)) if all_frr0 else None,
            "false_rollback_rate_margin_5pct": frr.get("5%", {}),
            "detection": det["0"],
            "detection_margin_5pct": det["5%"],
            "false_rollbacks_by_check_all_S0_runs": by_check or None,
            "missed_regression_rate": float(np.mean(missed)) if missed else None,
            "regressions_promoted_rate": float(np.mean(promos_reg)) if promos_reg else None,
            "promotions_without_enough_evidence": float(np.mean(below)),
            "seconds": round(elapsed, 1),
        }
    weir_targets = targets(per_method)
    per_method["weir-sequential"]["targets"] = weir_targets
    for m in METHODS:
        sys.stdout.write(json.dumps(per_method[m], separators=(",", ":")) + "\n")
    sys.stdout.flush()
    log("")
    log("Targets (Weir):")
    for k, v in weir_targets.items():
        log(f"  {'MET ' if v['met'] else 'MISS'} {k}: {v['value']} (target {v['target']})")


def targets(pm: dict) -> dict:
    w = pm["weir-sequential"]
    out = {}
    out["false_rollback_rate_max_all_S0_cells_both_margins"] = {"value": w["false_rollback_rate_max"], "target": "<= 0.05", "met": w["false_rollback_rate_max"] is not None and w["false_rollback_rate_max"] <= 0.05}

    def worst_median(name):
        cells = w["detection"].get(name, {})
        vals = [c["median_total_requests"] for k, c in cells.items() if k.startswith("share=0.1,")]
        if not vals:
            return None
        return None if any(v is None for v in vals) else max(vals)

    for name, lim in (("median+10%", 3000), ("median+20%", 1200), ("errors-0.5%", 30000), ("tail-3%", 7000)):
        v = worst_median(name)
        out[f"median_total_requests_{name}_share10_worst_rate"] = {"value": v, "target": f"<= {lim}", "met": v is not None and v <= lim}
    out["promotions_before_min_requests"] = {"value": w["promotions_without_enough_evidence"], "target": "0", "met": w["promotions_without_enough_evidence"] == 0}
    for other in ("flagger-limit1", "flagger-limit5", "kayenta-mw"):
        o = pm[other]
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
    ap.add_argument("--quick", action="store_true", help="~1 minute version: 200 reps, 30k-request horizon for latency scenarios")
    ap.add_argument("--reps", type=int, default=None, help="replications per cell (default 2000, quick 200)")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--horizon", type=int, default=None, help="total requests per latency-scenario run (default 100k, quick 30k)")
    ap.add_argument("--chunk", type=int, default=250, help="replications simulated together (memory)")
    args = ap.parse_args(argv)
    run(args)


if __name__ == "__main__":
    main()
