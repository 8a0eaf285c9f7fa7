"""The Prometheus source's Istio flavour and built-in Istio queries, against a real Prometheus.

A fixture exporter (tests/e2e/istio_exporter.py) emits istio_requests_total and
istio_request_duration_milliseconds_bucket with destination_version labels, as
both reporters of a mesh call would; Prometheus (the Debian package) scrapes it
every second. Counts must be exact (the window's traffic, one reporter, one
service), latencies inside the right Istio bucket.
"""

from __future__ import annotations

import time

import pytest

from analysis.sources import SourceError
from analysis.sources.prometheus import ISTIO_QUERIES, PrometheusSource
from tests.conftest import require
from tests.e2e.istio_exporter import IstioExporter
from tests.e2e.prometheus import PrometheusProcess, ensure_prometheus
from tests.e2e.sources_stack import eventually

pytestmark = pytest.mark.e2e


async def _scraped_total(src: PrometheusSource, expected: float) -> bool:
    rows = await src._query('sum(istio_requests_total{reporter="destination",destination_service_name="sentiment"})')
    return bool(rows) and float(rows[0]["value"][1]) == expected


async def test_istio_metrics_counted_exactly_from_a_real_prometheus():
    require(ensure_prometheus() is not None, "prometheus (Debian package; make test installs it as root)")
    exporter = IstioExporter().start()
    # Before the window: traffic that must not count, on every series (as in a busy mesh: rate() would
    # not extrapolate a series that starts at 0 the way it does the others, and ratios would drift).
    exporter.record("sentiment", "v1", 200, 3, n=100)
    exporter.record("sentiment", "v2", 200, 30, n=20)
    exporter.record("sentiment", "v1", 503, 3, n=1)
    exporter.record("sentiment", "v2", 0, 30, n=1)
    prom = PrometheusProcess([exporter.address], metrics_path="/metrics", job="istio").start()
    try:
        src = PrometheusSource(prom.url, flavour="istio", scrape_interval_s=1.0)
        assert await src.is_online()
        assert await eventually(lambda: src._query('up{job="istio"} == 1'), 20)
        since = time.time()
        assert await eventually(lambda: src._query(f'timestamp(up{{job="istio"}}) > {since}'), 10)

        exporter.record("sentiment", "v1", 200, 3, n=40)   # (1, 5] ms
        exporter.record("sentiment", "v1", 503, 3, n=2)
        exporter.record("sentiment", "v2", 200, 30, n=9)   # (25, 50] ms
        exporter.record("sentiment", "v2", 0, 30, n=1)     # no response (reset): an error
        exporter.record("fraud", "v1", 500, 3, n=50)       # another service: never counted
        assert await eventually(lambda: _scraped_total(src, 174.0), 10)

        v1 = await src.arm_samples("sentiment", "v1", since)
        v2 = await src.arm_samples("sentiment", "v2", since)
        assert (v1.requests, v1.errors, v2.requests, v2.errors) == (42, 2, 10, 1)
        assert v1.latencies_ms.size == 40 and all(1 < x <= 5 for x in v1.latencies_ms)
        assert v2.latencies_ms.size == 9 and all(25 < x <= 50 for x in v2.latencies_ms)
        coverage = await src.coverage("sentiment", since)
        assert coverage.complete and coverage.details["flavour"] == "istio"

        assert await src.istio_query("istio-requests", "sentiment") == [
            ({"destination_version": "v1", "response_code": "200"}, 140.0),
            ({"destination_version": "v1", "response_code": "503"}, 3.0),
            ({"destination_version": "v2", "response_code": "0"}, 2.0),
            ({"destination_version": "v2", "response_code": "200"}, 29.0),
        ]
        ratios = dict((labels["destination_version"], value) for labels, value in await src.istio_query("istio-error-ratio", "sentiment"))
        # rate() extrapolates each series on its own, so the ratio is an estimate (exact counts are above);
        # what matters here is what it selects: this service, one reporter, 5xx and 0 as errors.
        assert ratios == pytest.approx({"v1": 2 / 42, "v2": 1 / 10}, rel=0.5)
        p50 = dict((labels["destination_version"], value) for labels, value in await src.istio_query("istio-latency", "sentiment", quantile=0.5))
        assert 1 < p50["v1"] <= 5 and 25 < p50["v2"] <= 50
        rates = await src.istio_query("istio-request-rate", "sentiment", window="30s")
        assert {tuple(labels.values()) for labels, _ in rates} >= {("v1", "200"), ("v2", "200")}
    finally:
        prom.stop()
        exporter.stop()


async def test_built_in_queries_are_chosen_by_name():
    src = PrometheusSource("http://127.0.0.1:9", flavour="istio")
    assert set(ISTIO_QUERIES) == {"istio-requests", "istio-request-rate", "istio-error-ratio", "istio-latency"}
    with pytest.raises(SourceError, match=r"no built-in Istio query 'istio-p99' \(known: istio-requests, "):
        await src.istio_query("istio-p99", "sentiment")
    with pytest.raises(SourceError, match="window must be a Prometheus duration"):
        await src.istio_query("istio-latency", "sentiment", window="1 minute")
