"""Seeded request streams for the sequential judge: whole rollouts and regressions after a healthy past.

Shared by tests/test_analysis_changepoint.py (quick) and bench/analysis_sim.py --suite changepoint (full), so
the suite and the benchmark simulate the same thing. Every request is simulated: routed to the canary with the
share, failing with its arm's error rate, a log-normal latency (median 100 ms, sigma 0.5) if it succeeded.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable

import numpy as np

from analysis.judges.sequential import SequentialJudge
from analysis.samples import SLO

#: min_requests out of reach: the step never passes, so only a FAIL ends a run (as in bench/reaction.py)
NEVER = 10**9
#: regressions after a healthy past: the canary's error rate and latency factor from the onset on
DELAY_CASES = {
    "errors-5%": dict(e_c=0.05, lat_c=1.0),  # 0.1% -> 5% against a 1 pp margin (bench/reaction.py's errors-5%)
    "latency+50%": dict(e_c=0.001, lat_c=1.5),  # median x 1.5 against 10%
}
DELAY_SLOS = (SLO("error-rate", 0.01), SLO("latency", 0.10, 0.5))
HEALTHY_ERROR_RATE = 0.001
MU, SIGMA = math.log(100.0), 0.5


def segment(rng: np.random.Generator, n: int, per: int, share: float, e_s: float, e_c: float, lat_c: float,
            onset: int = 0):
    """``run_stream``'s arguments for n requests, a look every `per`: from request `onset` on the canary has error
    rate e_c and latency x lat_c (before it, stable's e_s and latency)."""
    arm = rng.random(n) < share
    bad = arm & (np.arange(n) >= onset)
    err = rng.random(n) < np.where(bad, e_c, e_s)
    lat = np.exp(MU + SIGMA * rng.normal(size=n)) * np.where(bad, lat_c, 1.0)
    ends = np.arange(per, n + 1, per) - 1
    ok = ~err
    req = np.stack([np.cumsum(~arm)[ends], np.cumsum(arm)[ends]], axis=1)
    errs = np.stack([np.cumsum(err & ~arm)[ends], np.cumsum(err & arm)[ends]], axis=1)
    lc = np.stack([np.cumsum(ok & ~arm)[ends], np.cumsum(ok & arm)[ends]], axis=1)
    return req, errs, (lat[ok & ~arm], lat[ok & arm]), lc


def rollout_fails(rng: np.random.Generator, slos: list[SLO], plan: list[tuple[float, int]], e_s: float, e_c: float,
                  lat_c: float, *, restart: bool, alpha: float = 0.05, per: int = 100) -> bool:
    """One rollout of len(plan) steps [(share, requests)], every earlier FAIL e-process carried (through JSON);
    with `restart` each step restarts the control plane halfway (state -> JSON -> a new judge, a new segment).
    True if any look failed."""
    carry = None
    kw = dict(alpha=alpha, n_steps=len(plan), min_requests=NEVER, interval=False)
    for share, n in plan:
        j = SequentialJudge(list(slos), carry=carry, **kw)
        parts = (n // 2, n - n // 2) if restart else (n,)
        for k, m in enumerate(parts):
            if k:
                saved = json.loads(json.dumps(j.state(), allow_nan=False))
                j = SequentialJudge(list(slos), carry=carry, **kw)
                j.load_state(saved)
            if (j.run_stream(share, *segment(rng, m, per, share, e_s, e_c, lat_c)).outcome == 1).any():
                return True
        carry = json.loads(json.dumps(j.carry(), allow_nan=False))
    return False


def delays(case: str, warmup: int, rngs: Iterable[np.random.Generator], *, horizon: int = 400, per: int = 50,
           share: float = 0.1, alpha: float = 0.05) -> tuple[list[int | None], int]:
    """Per run (one per generator): looks from the onset to the FAIL, counting the look that failed (None: none
    within `horizon` looks), after `warmup` healthy looks of `per` requests; and how many runs failed while the
    canary was still healthy (those count as None too)."""
    c = DELAY_CASES[case]
    out: list[int | None] = []
    early = 0
    for rng in rngs:
        j = SequentialJudge(list(DELAY_SLOS), alpha=alpha, min_requests=NEVER, interval=False)
        args = segment(rng, per * (warmup + horizon), per, share, HEALTHY_ERROR_RATE, c["e_c"], c["lat_c"], onset=per * warmup)
        i, outcome, _ = j.run_stream(share, *args).first_decision()
        if outcome == 1 and i < warmup:
            early += 1
            out.append(None)
        else:
            out.append(i - warmup + 1 if outcome == 1 else None)
    return out, early
