#!/usr/bin/env python3
"""The information limit of bench/reaction.py's errors-5% case: an SPRT that knows the onset and the alternative.

After the onset every canary request fails with probability 5% (stable: ~0%). The judge must keep its FAIL
side valid for every canary within the SLO's margin, so the least favourable null is a canary error rate of
stable's + the margin: 0% + 1 pp (the case's `error-rate` SLO, `maxIncrease: 1%`). The oracle is Wald's SPRT
of Bernoulli(5%) against Bernoulli(1%) on the canary's requests from the onset on, at the judge's alpha share
(alpha 0.05 over 2 SLOs x 1 analysed step = 0.025): it rejects when the log-likelihood ratio reaches
ln(1/0.025). It is an e-process for the null (so it keeps the same guarantee). No valid test that rejects
such a canary can need fewer canary requests on average than ln(1/alpha) / KL(5% || 1%) (Wald's identity and
the data-processing inequality); the oracle attains that up to its overshoot, and a test that must find the
onset and the size of the regression on its own can only be slower. Canary requests arrive as a Poisson stream
of rate x share.

Prints one JSON line: the oracle's canary requests and seconds from the onset to the decision (median, mean,
quantiles) and the chance it decides within 5 s; add Weir's decision-to-0% time (tens of ms, reaction.py)
for onset -> 0% at Envoy.
Usage: bench/reaction_oracle.py [--reps 20000] [--seed 1] [--alpha 0.025]
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import numpy as np


def oracle(p1: float, p0: float, alpha: float, rate: float, reps: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    thr = math.log(1.0 / alpha)
    up, down = math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))
    n = 4000  # canary requests simulated per run: every run crosses long before (checked)
    stops = np.empty(reps, dtype=np.int64)
    for a in range(0, reps, 2000):
        y = rng.random((min(2000, reps - a), n)) < p1
        llr = np.cumsum(np.where(y, up, down), axis=1)
        hit = llr >= thr
        if not hit.any(axis=1).all():
            raise SystemExit("a run did not cross within the simulated requests: raise n")
        stops[a : a + y.shape[0]] = np.argmax(hit, axis=1) + 1
    seconds = rng.gamma(stops, 1.0 / rate)  # the N-th arrival of a Poisson stream
    kl = p1 * up + (1.0 - p1) * down
    return {
        "threshold_nats": round(thr, 3), "kl_nats_per_canary_request": round(kl, 5),
        "wald_lower_bound_requests": round(thr / kl, 1), "wald_lower_bound_s": round(thr / kl / rate, 2),
        "requests_p50": float(np.median(stops)), "requests_mean": round(float(stops.mean()), 1),
        "decision_s_p50": round(float(np.median(seconds)), 2), "decision_s_mean": round(float(seconds.mean()), 2),
        "decision_s_p10": round(float(np.quantile(seconds, 0.1)), 2), "decision_s_p90": round(float(np.quantile(seconds, 0.9)), 2),
        "p_within_5s": round(float(np.mean(seconds <= 5.0)), 3),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--alpha", type=float, default=0.05 / 2, help="the judge's share: alpha / (n_slos x n_steps)")
    ap.add_argument("--rate", type=float, default=200.0, help="requests/s (reaction.py --rate)")
    ap.add_argument("--share", type=float, default=0.1)
    ap.add_argument("--error-rate", type=float, default=0.05, help="the canary's error rate after the onset")
    ap.add_argument("--margin", type=float, default=0.01, help="the error-rate SLO's maxIncrease (absolute)")
    args = ap.parse_args()
    out = {"bench": "reaction_oracle", "case": "errors-5%", "alpha": args.alpha, "canary_rps": args.rate * args.share,
           "alternative": args.error_rate, "null_boundary": args.margin, "reps": args.reps, "seed": args.seed,
           **oracle(args.error_rate, args.margin, args.alpha, args.rate * args.share, args.reps, args.seed)}
    sys.stdout.write(json.dumps(out, separators=(", ", ": ")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
