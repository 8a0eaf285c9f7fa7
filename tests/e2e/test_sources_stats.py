"""Envoy admin stats and Prometheus sources against a real Envoy (and a real Prometheus).

One stack, one batch of traffic: 80/20 live split, 100% of it mirrored to v2,
v2 failing 1 request in 5. Both sources must count exactly what the backends
served (live from ``external`` stats, shadow from ``internal``), and their
latency quantiles must agree with the access log's per-request latencies to
within histogram-bucket resolution.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from analysis.sources import MetricSource
from analysis.sources.envoy_stats import EnvoyStatsSource
from analysis.sources.prometheus import PrometheusSource
from tests.conftest import require
from tests.e2e.prometheus import PrometheusProcess, ensure_prometheus
from tests.e2e.sources_stack import SERVICE, SourcesStack, eventually

pytestmark = pytest.mark.e2e

# Envoy's default histogram bucket bounds (ms), as in /stats/prometheus.
ENVOY_BOUNDS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000, math.inf]


def _prom_bucket(x: float) -> tuple[float, float]:
    lo = 0.0
    for hi in ENVOY_BOUNDS:
        if x <= hi:
            return lo, hi
        lo = hi
    return lo, math.inf


def _truth(stack: SourcesStack) -> dict:
    return {
        ("v1", False): (stack.v1.count("live"), stack.v1.count("live", 500)),
        ("v2", False): (stack.v2.count("live"), stack.v2.count("live", 500)),
        ("v2", True): (stack.v2.count("shadow"), stack.v2.count("shadow", 500)),
    }


async def _counts(source, since: float) -> dict:
    out = {}
    for version, shadow in (("v1", False), ("v2", False), ("v2", True)):
        s = await source.arm_samples(SERVICE, version, since, shadow=shadow)
        out[(version, shadow)] = (s.requests, s.errors)
    return out


async def test_envoy_stats_and_prometheus_agree_with_the_traffic_sent():
    prometheus_ok = ensure_prometheus() is not None
    stack = await SourcesStack(
        split=(80, 20), mirror=100, v1={"delay_ms": 3}, v2={"delay_ms": 30, "error_every": 5}
    ).start()
    stats = EnvoyStatsSource([stack.admin], interval_s=0.5)
    prom = prom_source = None
    try:
        assert isinstance(stats, MetricSource)
        if prometheus_ok:
            prom = PrometheusProcess([stack.admin.removeprefix("http://")]).start()
            prom_source = PrometheusSource(prom.url, scrape_interval_s=1.0)
            assert isinstance(prom_source, MetricSource)
            assert await prom_source.is_online()
            # Prometheus has seen the target once before the window starts.
            assert await eventually(lambda: prom_source._query('up{job="envoy"} == 1'), 10)
        await stats.start()
        assert await stats.is_online()

        since = time.time()
        await stats.poll_once()  # the window's baseline poll
        if prom is not None:  # ... and its first scrape (both sources count from the first look in the window)
            assert await eventually(lambda: prom_source._query(f'timestamp(up{{job="envoy"}}) > {since}'), 5)
        sent = await stack.send(300, concurrency=6)
        assert sum(sent.values()) == 300
        truth = _truth(stack)
        assert truth[("v2", True)][0] == 300 and truth[("v2", False)][0] > 20, truth

        # Counters: exact.
        assert await eventually(lambda: _counts_equal(stats, since, truth), 6), (await _counts(stats, since), truth)
        # Latency: histograms reach the admin on the next stats flush (1 s here).
        # Every arm's histogram: a mirrored request can finish after the client's answer, so the shadow
        # arm's last samples may reach the next flush only.
        for version, shadow in (("v1", False), ("v2", False), ("v2", True)):
            ready = await eventually(lambda: _latency_ready(stats, version, shadow, since, truth), 6)
            assert ready, f"envoy stats never showed every {version} {'shadow' if shadow else 'live'} latency sample"

        # The access log saw the same requests one by one: the exact reference.
        assert await eventually(lambda: _counts_equal(stack.als, since, truth), 5)
        for version, shadow in (("v1", False), ("v2", False), ("v2", True)):
            exact = stack.als.samples(SERVICE, version, since, traffic="shadow" if shadow else "live").latencies_ms
            s = await stats.arm_samples(SERVICE, version, since, shadow=shadow)
            assert s.latencies_ms.size == exact.size, (version, shadow)  # one sample per success
            for q in (0.5, 0.9):
                lo, hi = _reference(exact, q, truth[(version, shadow)][1])
                qs = float(np.quantile(s.latencies_ms, q))
                # Envoy's detailed bins: whole ms (truncated), 2 significant digits.
                width = 1.0 if hi < 10 else 10 ** (math.floor(math.log10(hi)) - 1)
                assert lo - width - 1.0 <= qs <= hi + width + 1.0, (version, shadow, q, (lo, hi), qs)
        cov = await stats.coverage(SERVICE, since)
        assert cov.complete, cov.reasons

        require(prometheus_ok, "prometheus (Debian package; installed by tests/e2e/prometheus.py when run as root)")
        assert await eventually(lambda: _counts_equal(prom_source, since, truth), 8), (await _counts(prom_source, since), truth)

        async def prom_latency_complete():
            s = await prom_source.arm_samples(SERVICE, "v1", since)
            return s.latencies_ms.size == s.successes

        assert await eventually(prom_latency_complete, 6)
        for version, shadow in (("v1", False), ("v2", False), ("v2", True)):
            exact = stack.als.samples(SERVICE, version, since, traffic="shadow" if shadow else "live").latencies_ms
            s = await prom_source.arm_samples(SERVICE, version, since, shadow=shadow)
            assert s.latencies_ms.size == exact.size
            for q in (0.5, 0.9):
                # The quantile is known to its bucket: the exact one must be in it (1 ms slack for truncation).
                lo, hi = _prom_bucket(float(np.quantile(s.latencies_ms, q)))
                qa_lo, qa_hi = _reference(exact, q, truth[(version, shadow)][1])
                assert qa_lo <= hi + 1.0 and qa_hi >= lo - 1.0, (version, shadow, q, (qa_lo, qa_hi), (lo, hi))
        cov = await prom_source.coverage(SERVICE, since)
        assert cov.complete, cov.reasons

        # A policy's custom query, {{version}} substituted: v2's live 5xx counter.
        query = 'sum(envoy_cluster_external_upstream_rq_xx{envoy_cluster_name="sentiment-{{ version }}", envoy_response_code_class="5"})'
        assert await prom_source.custom(query, "v2") == truth[("v2", False)][1]
        assert await prom_source.custom('sum(envoy_cluster_external_upstream_rq_xx{envoy_cluster_name="nope-{{version}}"})', "v9") is None
    finally:
        await stats.stop()
        if prom is not None:
            prom.stop()
        await stack.close()


def _reference(exact: np.ndarray, q: float, errors: int) -> tuple[float, float]:
    """Where the q-quantile of a histogram arm may be, from the access log's exact latencies.

    An arm without errors has the very same requests in both: the exact quantile.
    With errors, the histogram's samples are all timed responses thinned evenly to
    the successes, so its quantile is one of a slightly different sample: allow
    the exact quantiles at q -/+ 0.1.
    """
    if errors == 0:
        v = float(np.quantile(exact, q))
        return v, v
    return float(np.quantile(exact, max(0.0, q - 0.1))), float(np.quantile(exact, min(1.0, q + 0.1)))


async def _counts_equal(source, since, truth) -> bool:
    return await _counts(source, since) == truth


async def _latency_ready(source, version, shadow, since, truth):
    s = await source.arm_samples(SERVICE, version, since, shadow=shadow)
    n, e = truth[(version, shadow)]
    return s.latencies_ms.size == n - e and s

