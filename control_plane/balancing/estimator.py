"""Per-endpoint load estimates and the weights they give: pure, no I/O.

Peak EWMA (as in Finagle and Linkerd): a sample above the estimate replaces
it at once (quick to react to a slowdown); a sample below pulls it down with
weight 1 - exp(-dt / tau) (slow to forget one). Errors count as slow: an
error is a sample of ``error_penalty_ms`` (by default several times the
version's typical latency), so a replica that fails fast - a 503 in 1 ms, the
classic weakness of RTT-only balancers - looks slow, never attractive.
An optional queue-depth signal (a model server's own waiting-requests gauge)
multiplies the estimate by (1 + queued requests).

Weights fall with the square of the estimates (``POWER``: a replica 3x slower
gets a ninth of a fair weight; proportional weights left it a third of one,
and its slow requests then made the p99), scaled so that a fair share is
``FAIR`` (100), with a floor (``min_share`` of a fair share) so a
slow or recovered replica still gets some requests and its estimate can come
back down. They live inside one version: they never change how much traffic a
version receives (the route's split does that), so they cannot bias a
canary's analysis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["FAIR", "PeakEwma", "weights_from_scores", "worth_pushing"]

FAIR = 100
POWER = 2.0


@dataclass
class PeakEwma:
    """One endpoint's latency estimate (ms)."""

    tau_s: float = 5.0
    value: float | None = None
    at: float | None = None
    samples: int = 0
    errors: int = 0

    def observe(self, latency_ms: float, at: float) -> None:
        if not math.isfinite(latency_ms) or latency_ms < 0:
            return
        self.samples += 1
        if self.value is None or self.at is None:
            self.value, self.at = latency_ms, at
            return
        if latency_ms >= self.value:
            self.value = latency_ms
        else:
            w = math.exp(-max(at - self.at, 0.0) / self.tau_s)
            self.value = self.value * w + latency_ms * (1.0 - w)
        self.at = max(self.at, at)

    def observe_error(self, penalty_ms: float, at: float) -> None:
        self.errors += 1
        self.observe(penalty_ms, at)


def weights_from_scores(scores: dict[str, float | None], *, min_share: float = 0.05, power: float = POWER) -> dict[str, int]:
    """Weights proportional to score^-power, a fair share = FAIR, at least ``min_share`` of it.

    Endpoints without a score yet get a fair share (they are probed like the rest).
    """
    known = {k: s for k, s in scores.items() if s is not None and s > 0}
    if not known:
        return {k: FAIR for k in scores}
    inverse = {k: s ** -power for k, s in known.items()}
    mean = sum(inverse.values()) / len(inverse)
    floor = max(1, int(round(FAIR * min_share)))
    out = {}
    for k in scores:
        if k in inverse:
            out[k] = max(floor, int(round(FAIR * inverse[k] / mean)))
        else:
            out[k] = FAIR
    return out


def worth_pushing(current: dict[str, int] | None, proposed: dict[str, int], *, hysteresis: float = 0.15) -> bool:
    """Push only a real change: a new or removed endpoint, or a weight that moved by more than ``hysteresis``."""
    if current is None or set(current) != set(proposed):
        return True
    for k, w in proposed.items():
        old = current[k]
        if abs(w - old) > hysteresis * max(old, w):
            return True
    return False
