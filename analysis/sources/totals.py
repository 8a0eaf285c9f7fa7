"""Cumulative per-arm totals since the process started: what ``/metrics`` exposes per version.

Why apart from the windows the judges read: those are dropped after the
retention time and restart per step; Prometheus counters must only grow. So
the sources keep, per (cluster, traffic), two integers and a fixed-bucket
latency histogram, updated where they count a request (O(1) per request).
The histogram observes the latency samples the source keeps: above a service's
``max_samples_per_s`` that is a uniform thinning (the same probability for all
arms of a service), so its quantiles stay unbiased while its ``_count`` is
lower than the requests counter.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

__all__ = ["ArmTotals", "LATENCY_BUCKETS_MS"]

#: Upper bounds (ms) of the latency histograms; model servers range from a few ms to tens of seconds.
LATENCY_BUCKETS_MS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
                      30000.0, 60000.0)


@dataclass
class ArmTotals:
    """Requests, errors and a latency histogram of one arm, cumulative."""

    requests: int = 0
    errors: int = 0
    #: observations per bucket of :data:`LATENCY_BUCKETS_MS` (not cumulative), the last one for +Inf
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))
    latency_sum_ms: float = 0.0

    def observe(self, latency_ms: float) -> None:
        if latency_ms != latency_ms or latency_ms < 0:  # NaN or negative: judged as bad samples, not plotted
            return
        self.buckets[bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
        self.latency_sum_ms += latency_ms

    @property
    def observations(self) -> int:
        return sum(self.buckets)
