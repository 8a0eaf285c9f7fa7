"""Prometheus metrics for ``GET /metrics``, on the ``prometheus_client`` library (text 0.0.4 or OpenMetrics).

Two kinds of series:

* **fed by the engine** (Metrics is one of its observers): verdicts and the xDS
  convergence time. These are the library's own Counter and Histogram, so they
  are multiprocess-safe as its docs describe: with ``PROMETHEUS_MULTIPROC_DIR``
  set before Weir starts, their values live in that directory and ``/metrics``
  aggregates every process's through ``MultiProcessCollector``.
* **read at scrape time** from where the state lives (a custom collector, the
  library's pattern for that): rollouts from the store, proxies from the
  StatusRegistry, the latest verdict of each rollout from the engine, and the
  per-version request, error and latency totals from the access-log source.

Families, their labels and what they mean (``docs/dashboard.md`` has the same table):

- ``weir_rollout_phase{rollout,service,phase}`` gauge, 1 for the current phase, 0 for the others
- ``weir_rollout_canary_weight{rollout}`` gauge, % of live traffic on the canary
- ``weir_rollout_step{rollout}`` gauge, the current step **1-based, as the CLI shows it** (``2`` of ``2/3``);
  0 before the first step and while shadowing
- ``weir_rollout_steps{rollout}`` gauge, how many steps the policy has (the ``3`` of ``2/3``)
- ``weir_rollout_version{rollout,service,version,role}`` gauge, 1 per active rollout's stable and canary
  (join on ``service,version`` to label per-version series as stable or canary)
- ``weir_rollout_step_requests{rollout,role}`` gauge, requests the latest analysis counted in this step
- ``weir_rollout_min_requests{rollout}`` gauge, the step's minimum canary requests
- ``weir_slo_statistic{rollout,slo,direction}`` gauge, the SLO's test statistic (an e-value) toward
  ``direction`` = ``fail`` or ``pass``; the SLO is decided when it reaches ``weir_slo_threshold``
- ``weir_slo_threshold{rollout,slo,direction}`` gauge, 1/alpha of that test
- ``weir_slo_samples_needed{rollout,slo}`` gauge, about how many more canary samples a decision needs
- ``weir_version_requests_total{service,version,traffic}`` counter, requests by start time
  (``traffic`` = live, shadow or pinned), from Envoy's access logs
- ``weir_version_errors_total{service,version,traffic}`` counter, 5xx, resets and upstream failures
- ``weir_version_latency_seconds{service,version,traffic}`` histogram, successful requests' latency
  (the samples the source keeps: above its per-service cap a uniform thinning, so ``_count`` may be
  below the requests counter while the quantiles stay unbiased)
- ``weir_version_ttfb_seconds{service,version,traffic}`` histogram, time to first body byte (streaming:
  first token), when Envoy's timing log is on
- ``weir_endpoint_weight{service,version,endpoint}`` gauge, the load-balancing weight latency-aware
  balancing gives each replica now (latency-aware services only)
- ``weir_endpoint_latency_estimate_seconds{service,version,endpoint}`` gauge, the latency estimate behind
  that weight (absent while a replica has too few samples)
- ``weir_verdicts_total{rollout,outcome}`` counter, every verdict the analyzer returned
- ``weir_xds_convergence_seconds`` histogram, publish -> every proxy ACKed
- ``weir_xds_nacks_total{type}`` counter, responses proxies rejected, by resource type
- ``weir_xds_connected_proxies`` gauge
"""

from __future__ import annotations

import math
import os
from typing import Any, Iterable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram, exposition, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.openmetrics import exposition as openmetrics

from ..rollouts.model import Event, Phase, Rollout
from ..ui.evidence import counts, slo_progress

# A `_created` sample per counter would double every family for no dashboard's use.
prometheus_client.disable_created_metrics()

#: The classic text format: every Prometheus (2.x and 3.x) scrapes it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = openmetrics.CONTENT_TYPE_LATEST

#: Seconds; xDS convergence is usually sub-second on a LAN, slow proxies take tens of seconds.
CONVERGENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

__all__ = ["CONTENT_TYPE", "CONVERGENCE_BUCKETS", "METRIC_NAMES", "Metrics", "OPENMETRICS_CONTENT_TYPE"]


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    """The engine's observer for ``/metrics`` and the renderer of the whole exposition."""

    def __init__(self, buckets: Iterable[float] = CONVERGENCE_BUCKETS):
        self._own = CollectorRegistry(auto_describe=True)
        self.verdicts = Counter("weir_verdicts", "Verdicts returned by the analyzer, by outcome.",
                                ["rollout", "outcome"], registry=self._own)
        self.convergence = Histogram("weir_xds_convergence_seconds",
                                     "Time from publishing routing until every proxy ACKed it.",
                                     buckets=tuple(sorted(buckets)), registry=self._own)
        self.engine: Any = None
        self.access_log: Any = None
        self.balancer: Any = None

    def bind(self, *, engine: Any = None, access_log: Any = None, balancer: Any = None) -> None:
        """Where the scrape-time series come from (the API does this; each is optional)."""
        if engine is not None:
            self.engine = engine
        if access_log is not None:
            self.access_log = access_log
        if balancer is not None:
            self.balancer = balancer

    # -- inputs (EngineObserver) ----------------------------------------------------------------
    def observe_event(self, event: Event) -> None:
        """Stored events need no counter of their own: the store serves them."""

    def observe_verdict(self, rollout: str, outcome: str) -> None:
        """One verdict of the analyzer (inconclusive ones included)."""
        self.verdicts.labels(rollout=rollout, outcome=outcome).inc()

    def observe_convergence(self, seconds: float) -> None:
        """One publish took `seconds` until every proxy of its group ACKed it."""
        if seconds < 0 or math.isnan(seconds):
            return
        self.convergence.observe(seconds)

    # -- output ---------------------------------------------------------------------------------
    def registry_for(self, rollouts: Iterable[Rollout], registry=None) -> CollectorRegistry:
        """A registry holding everything one scrape shows."""
        scrape = CollectorRegistry(auto_describe=False)
        if _multiprocess():
            multiprocess.MultiProcessCollector(scrape)
        else:
            scrape.register(_Forward(self._own))
        scrape.register(_StateCollector(list(rollouts), registry, self.engine, self.access_log))
        if self.balancer is not None:
            scrape.register(_BalancingCollector(self.balancer))
        return scrape

    def render(self, rollouts: Iterable[Rollout], registry=None) -> str:
        """The text exposition (format 0.0.4) for the given rollouts and (optionally) a StatusRegistry."""
        return exposition.generate_latest(self.registry_for(rollouts, registry)).decode("utf-8")

    def exposition(self, rollouts: Iterable[Rollout], registry=None, accept: str = "") -> tuple[bytes, str]:
        """(body, content type): OpenMetrics when the scraper's ``Accept`` asks for it, else text 0.0.4."""
        scrape = self.registry_for(rollouts, registry)
        if "application/openmetrics-text" in (accept or ""):
            return openmetrics.generate_latest(scrape), OPENMETRICS_CONTENT_TYPE
        return exposition.generate_latest(scrape), CONTENT_TYPE


class _Forward:
    """The Metrics' own counters and histograms inside a per-scrape registry."""

    def __init__(self, registry: CollectorRegistry):
        self.registry = registry

    def collect(self):
        return self.registry.collect()


def _seconds_histogram(name: str, help_text: str, totals: dict, access_log: Any) -> HistogramMetricFamily:
    from analysis.sources.totals import LATENCY_BUCKETS_MS

    family = HistogramMetricFamily(name, help_text, labels=["service", "version", "traffic"])
    for (cluster, traffic), tot in sorted(totals.items()):
        service, version = access_log.service_version(cluster)
        cumulative, buckets = 0, []
        for bound, count in zip(LATENCY_BUCKETS_MS, tot.buckets):
            cumulative += count
            buckets.append((_float(bound / 1000.0), cumulative))
        cumulative += tot.buckets[-1]
        buckets.append(("+Inf", cumulative))
        family.add_metric([service, version, traffic], buckets, tot.latency_sum_ms / 1000.0)
    return family


def _float(value: float) -> str:
    return repr(float(value))


class _StateCollector:
    """Series read at scrape time from the store's rollouts, the registry, the engine and the access log."""

    def __init__(self, rollouts: list[Rollout], registry: Any, engine: Any, access_log: Any):
        self.rollouts, self.registry, self.engine, self.access_log = rollouts, registry, engine, access_log

    def collect(self):
        phase = GaugeMetricFamily("weir_rollout_phase", "1 for the phase each rollout is in, 0 for the others.",
                                  labels=["rollout", "service", "phase"])
        weight = GaugeMetricFamily("weir_rollout_canary_weight", "Percent of live traffic sent to the canary.",
                                   labels=["rollout"])
        step = GaugeMetricFamily("weir_rollout_step", "Current step, 1-based as the CLI shows it (0 before the first "
                                 "step or while shadowing).", labels=["rollout"])
        steps = GaugeMetricFamily("weir_rollout_steps", "Number of steps of the rollout's policy.", labels=["rollout"])
        version = GaugeMetricFamily("weir_rollout_version", "1 for each active rollout's stable and canary version.",
                                    labels=["rollout", "service", "version", "role"])
        step_requests = GaugeMetricFamily("weir_rollout_step_requests",
                                          "Requests the latest analysis counted in the current step, per arm.",
                                          labels=["rollout", "role"])
        min_requests = GaugeMetricFamily("weir_rollout_min_requests", "The current step's minimum canary requests.",
                                         labels=["rollout"])
        statistic = GaugeMetricFamily("weir_slo_statistic", "An SLO's test statistic (e-value) toward a decision; "
                                      "decided at weir_slo_threshold.", labels=["rollout", "slo", "direction"])
        threshold = GaugeMetricFamily("weir_slo_threshold", "The e-value an SLO's test must reach (1/alpha).",
                                      labels=["rollout", "slo", "direction"])
        needed = GaugeMetricFamily("weir_slo_samples_needed", "About how many more canary samples an SLO needs.",
                                   labels=["rollout", "slo"])
        latest = getattr(self.engine, "latest_verdicts", {}) if self.engine is not None else {}
        for r in self.rollouts:
            for p in Phase:
                phase.add_metric([r.name, r.service, p.value], 1 if r.phase is p else 0)
            weight.add_metric([r.name], r.weight)
            step.add_metric([r.name], r.step + 1 if r.step >= 0 else 0)
            machine = None
            if self.engine is not None:
                try:
                    machine = self.engine.machine(r)
                except Exception:  # a stored policy the current model rejects: still list the rollout
                    machine = None
            if machine is not None:
                steps.add_metric([r.name], len(machine.steps))
                current = machine.current_step(r) if r.active else None
                if current is not None:
                    min_requests.add_metric([r.name], current.min_requests)
            if not r.active:
                continue
            version.add_metric([r.name, r.service, r.stable_version, "stable"], 1)
            version.add_metric([r.name, r.service, r.canary_version, "canary"], 1)
            verdict = latest.get(r.name) or r.verdict
            for role, arm in counts(verdict).items():
                step_requests.add_metric([r.name, role], arm["requests"])
            for entry in slo_progress(verdict):
                for direction, e, thr in (("fail", entry["e_fail"], entry["fail_threshold"]),
                                          ("pass", entry["e_pass"], entry["pass_threshold"])):
                    if e is not None:
                        statistic.add_metric([r.name, entry["slo"], direction], e)
                    if thr is not None:
                        threshold.add_metric([r.name, entry["slo"], direction], thr)
                if isinstance(entry["samples_needed"], (int, float)):
                    needed.add_metric([r.name, entry["slo"]], entry["samples_needed"])
        yield from (phase, weight, step, steps, version, step_requests, min_requests, statistic, threshold, needed)
        if self.access_log is not None:
            yield from self._versions()
        if self.registry is not None:
            from xds.snapshot import SHORT_NAMES

            nacks = CounterMetricFamily("weir_xds_nacks", "xDS responses rejected (NACKed) by proxies, by resource type.",
                                        labels=["type"])
            for type_url, count in sorted(self.registry.nack_total.items()):
                nacks.add_metric([SHORT_NAMES.get(type_url, type_url)], count)
            connected = GaugeMetricFamily("weir_xds_connected_proxies", "Proxies with an open xDS stream.")
            connected.add_metric([], len(self.registry))
            yield nacks
            yield connected

    def _versions(self):
        source = self.access_log
        requests = CounterMetricFamily("weir_version_requests", "Requests per version, by start time, from Envoy's "
                                       "access logs.", labels=["service", "version", "traffic"])
        errors = CounterMetricFamily("weir_version_errors", "Failed requests per version (5xx, resets, upstream "
                                     "failures).", labels=["service", "version", "traffic"])
        for (cluster, traffic), tot in sorted(source.totals.items()):
            service, version = source.service_version(cluster)
            requests.add_metric([service, version, traffic], tot.requests)
            errors.add_metric([service, version, traffic], tot.errors)
        yield requests
        yield errors
        yield _seconds_histogram("weir_version_latency_seconds", "Latency of successful requests per version.",
                                 source.totals, source)
        timing = getattr(source, "timing", None)
        yield _seconds_histogram("weir_version_ttfb_seconds", "Time to the first byte of the response body per "
                                 "version (streaming: the first token).", timing.totals if timing is not None else {},
                                 source)


class _BalancingCollector:
    """Latency-aware weights and the estimates behind them, read from the balancer at scrape time."""

    def __init__(self, balancer: Any):
        self.balancer = balancer

    def collect(self):
        weight = GaugeMetricFamily("weir_endpoint_weight", "Load-balancing weight latency-aware balancing gives a "
                                   "replica.", labels=["service", "version", "endpoint"])
        estimate = GaugeMetricFamily("weir_endpoint_latency_estimate_seconds", "The latency estimate behind a "
                                     "replica's weight.", labels=["service", "version", "endpoint"])
        for service, versions in sorted(self.balancer.snapshot().items()):
            for version, rows in sorted(versions.items()):
                for row in rows:
                    labels = [service, version, row["endpoint"]]
                    if row["weight"] is not None:
                        weight.add_metric(labels, row["weight"])
                    if row["estimate_ms"] is not None:
                        estimate.add_metric(labels, row["estimate_ms"] / 1000.0)
        yield weight
        yield estimate


#: Every family name ``/metrics`` may show (the Grafana dashboard's test checks against it).
METRIC_NAMES = frozenset({
    "weir_rollout_phase", "weir_rollout_canary_weight", "weir_rollout_step", "weir_rollout_steps",
    "weir_rollout_version", "weir_rollout_step_requests", "weir_rollout_min_requests", "weir_slo_statistic",
    "weir_slo_threshold", "weir_slo_samples_needed", "weir_version_requests_total", "weir_version_errors_total",
    "weir_version_latency_seconds", "weir_version_ttfb_seconds", "weir_verdicts_total",
    "weir_endpoint_weight", "weir_endpoint_latency_estimate_seconds",
    "weir_xds_convergence_seconds", "weir_xds_nacks_total", "weir_xds_connected_proxies",
})
