"""Metric sources: where the judges' samples come from.

One small interface, one file per implementation (the shape of flagger's
``pkg/metrics/providers``):

* :mod:`.access_log` - Envoy's gRPC access-log service (ALS), the default.
  Every request, exact counts, real latency samples, attributed to
  (service, version, endpoint) by the request's own ``start_time``.
* :mod:`.envoy_stats` - polls each Envoy's admin ``/stats`` (for when access
  logs are off): counters exact, latency only to histogram-bucket resolution.
* :mod:`.prometheus` - Envoy or Istio metrics (or a policy's custom query)
  through Prometheus: counts exact to the scrape interval, latency to bucket
  resolution.

The interface (:class:`MetricSource`)::

    async def arm_samples(service, version, since, *, shadow=False, until=None) -> ArmSamples
    async def coverage(service, since, *, until=None) -> Coverage
    async def is_online() -> bool

``arm_samples`` returns the *cumulative* samples of one arm (one version of one
service) for requests that started at or after ``since`` (epoch seconds, the
step's convergence) - ``analysis.samples.ArmSamples``: ``requests``,
``errors`` and ``latencies_ms`` (successful requests only). Asked again with
the same ``since``, a source returns arrays that only *grow at the end* (the
sequential judges rely on it). ``shadow=True`` asks for the mirrored traffic
that reached ``version`` instead of its live traffic: shadow requests are never
mixed into a live arm.

``coverage`` says whether data may be missing for that window (receiver
restarts, stream gaps, polls that failed, an Envoy restart, a window older than
what the source keeps). Sources count what arrives and never read a gap as
"zero errors": a caller that sees ``complete=False`` must treat the samples as
partial (the engine holds, it never promotes on them).

Errors, everywhere: a request is an error when its response code is 5xx, or it
got no response at all (code 0: reset/timeout before any response), or - for
the access log, which carries them - Envoy flagged an upstream failure
(:data:`.access_log.ERROR_FLAGS`: resets, connection failures, timeouts,
overflow, no healthy upstream, ...). 4xx are client errors and count as
successes (as in Flagger and Istio's success rate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from analysis.samples import ArmSamples

__all__ = ["ArmSamples", "Coverage", "MetricSource", "cluster_of", "SourceError"]


def cluster_of(service: str, version: str) -> str:
    """Envoy cluster name of one version of a service (``xds.routing.ServiceRouting.cluster_name``)."""
    return f"{service}-{version}"


class SourceError(RuntimeError):
    """A source could not answer (unreachable, bad query); the message says what to fix."""


@dataclass
class Coverage:
    """Whether a source saw everything in ``[since, until)``.

    ``complete`` is False as soon as one reason is known; ``reasons`` are
    sentences for the verdict's evidence. ``details`` carries the numbers
    (streams, gaps, polls) as JSON-ready values.
    """

    source: str
    since: float
    until: float | None
    complete: bool = True
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def missing(self, reason: str) -> None:
        self.complete = False
        if reason not in self.reasons:
            self.reasons.append(reason)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "since": self.since,
            "until": self.until,
            "complete": self.complete,
            "reasons": list(self.reasons),
            "details": self.details,
        }


@runtime_checkable
class MetricSource(Protocol):
    """What the analyzer asks a metric source (see the module docstring)."""

    name: str

    async def arm_samples(
        self, service: str, version: str, since: float, *, shadow: bool = False, until: float | None = None
    ) -> ArmSamples: ...

    async def coverage(self, service: str, since: float, *, until: float | None = None) -> Coverage: ...

    async def is_online(self) -> bool: ...
