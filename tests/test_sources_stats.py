"""Envoy-stats and Prometheus sources without a proxy: parsing, differencing, histograms.

The admin is an httpx mock transport serving JSON in the exact shape Envoy 1.40
returns for ``/stats?format=json&histogram_buckets=detailed``; Prometheus is
a fake ``PrometheusConnect`` answering ``custom_query`` from canned series.
"""

from __future__ import annotations

import math

import httpx
import numpy as np
import pytest

from analysis.sources import SourceError
from analysis.sources._histogram import (
    GrowingSamples,
    buckets_from_cumulative,
    quantile_bounds,
    representative,
    samples_from_buckets,
)
from analysis.sources.envoy_stats import EnvoyStatsSource, parse_stats_json
from analysis.sources.prometheus import PrometheusSource, series_increase, substitute

T0 = 1_790_000_000.0


# --------------------------------------------------------------------------- histograms


def test_representatives_and_buckets():
    assert representative(0.0, 0.5) == 0.25
    assert representative(100, 250) == pytest.approx(158.1, abs=0.1)
    assert representative(3_600_000, math.inf) == 3_600_000
    counts = buckets_from_cumulative([(5, 10), (0.5, 0), (1, 0), (10, 12), (math.inf, 12)])
    assert counts == {(0.0, 0.5): 0, (0.5, 1): 0, (1, 5): 10, (5, 10): 2, (10, math.inf): 0}
    assert quantile_bounds(counts, 0.5) == (1, 5) and quantile_bounds(counts, 0.99) == (5, 10)
    s = samples_from_buckets(counts)
    assert s.size == 12 and np.all(s[:10] == pytest.approx(math.sqrt(5)))


def test_growing_samples_only_append_and_restart_on_a_reset():
    g = GrowingSamples()
    a, restarted = g.update("k", {(1, 2): 3})
    assert a.size == 3 and not restarted
    b, _ = g.update("k", {(1, 2): 4, (4, 8): 2})
    assert list(b[:3]) == list(a) and b.size == 6
    c, restarted = g.update("k", {(1, 2): 1})  # a counter went down: start over
    assert restarted and c.size == 1
    # The limit (successes) holds the array back, evenly across buckets.
    d, _ = g.update("j", {(1, 2): 10, (4, 8): 10}, limit=10)
    assert d.size == 10 and 4 <= np.count_nonzero(d > 3) <= 6
    e, _ = g.update("j", {(1, 2): 12, (4, 8): 10}, limit=11)
    assert e.size == 11 and list(e[:10]) == list(d)


# --------------------------------------------------------------------------- envoy admin


def admin_doc(uptime: int, clusters: dict) -> dict:
    """Envoy's JSON: counters as {name, value}; histograms in one {"histograms": {...}} item."""
    stats = [{"name": "server.uptime", "value": uptime}]
    details = []
    for cluster, arms in clusters.items():
        for prefix, (codes, bins) in arms.items():
            p = f"cluster.{cluster}." + (f"{prefix}." if prefix else "")
            for cls, n in codes.items():
                stats.append({"name": f"{p}upstream_rq_{cls}", "value": n})
            details.append(
                {
                    "name": f"{p}upstream_rq_time",
                    "totals": [{"lower_bound": lo, "width": w, "count": c} for lo, w, c in bins],
                    "intervals": [],
                    "percentiles": [],
                }
            )
    stats.append({"histograms": {"supported_percentiles": [0, 50, 100], "details": details}})
    return {"stats": stats}


def test_parse_stats_json_splits_live_and_shadow_and_keeps_dotted_names():
    doc = admin_doc(
        30,
        {
            "sentiment-v1.2": {
                "external": ({"2xx": 90, "5xx": 10}, [(0, 0, 5), (3, 1, 80), (120, 10, 15)]),
                "internal": ({"2xx": 4}, [(7, 1, 4)]),
                "": ({"2xx": 94, "5xx": 10}, []),
            }
        },
    )
    uptime, arms = parse_stats_json(doc)
    assert uptime == 30
    live = arms[("sentiment-v1.2", "live")]
    assert (live.requests, live.errors) == (100, 10)
    assert live.buckets == {(0, 1): 5, (3, 4): 80, (120, 130): 15}
    assert live.reps[(120, 130)] == 125 and live.reps[(0, 1)] == 0.5
    shadow = arms[("sentiment-v1.2", "shadow")]
    assert (shadow.requests, shadow.errors, shadow.buckets) == (4, 0, {(7, 8): 4})
    assert arms[("sentiment-v1.2", "all")].requests == 104


class FakeAdmin:
    """An admin endpoint whose document the test changes between polls."""

    def __init__(self):
        self.doc = admin_doc(10, {})
        self.fail = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.fail:
            return httpx.Response(503)
        assert request.url.path == "/stats" and "histogram_buckets=detailed" in str(request.url)
        return httpx.Response(200, json=self.doc)


class Clock:
    def __init__(self, t: float):
        self.t = t

    def __call__(self) -> float:
        return self.t


def stats_source(admin: FakeAdmin, clock: Clock) -> EnvoyStatsSource:
    client = httpx.AsyncClient(transport=httpx.MockTransport(admin.handler))
    return EnvoyStatsSource(["http://envoy-1:9901"], interval_s=1.0, client=client, clock=clock)


def live(ok: int, err: int, bins=()) -> dict:
    return {"external": ({"2xx": ok, "5xx": err}, list(bins))}


async def test_differences_from_the_first_poll_in_the_window():
    admin, clock = FakeAdmin(), Clock(T0)
    src = stats_source(admin, clock)
    admin.doc = admin_doc(100, {"sentiment-v2": live(50, 5, [(10, 1, 55)])})
    await src.poll_once()  # before the window: not counted
    since = T0 + 0.5
    clock.t = T0 + 1
    await src.poll_once()  # the baseline
    clock.t = T0 + 2
    admin.doc = admin_doc(102, {"sentiment-v2": live(80, 8, [(10, 1, 70), (20, 1, 18)])})
    await src.poll_once()
    s = await src.arm_samples("sentiment", "v2", since)
    assert (s.requests, s.errors) == (33, 3)
    assert s.latencies_ms.size == 30  # 33 timed responses, at most one sample per success
    assert set(np.unique(s.latencies_ms)) <= {10.5, 20.5}
    assert (await src.arm_samples("sentiment", "v2", since, shadow=True)).requests == 0
    clock.t = T0 + 3
    admin.doc = admin_doc(103, {"sentiment-v2": live(90, 8, [(10, 1, 80), (20, 1, 18)])})
    await src.poll_once()
    s2 = await src.arm_samples("sentiment", "v2", since)
    assert s2.requests == 43 and list(s2.latencies_ms[:30]) == list(s.latencies_ms)
    assert (await src.coverage("sentiment", since)).complete
    with pytest.raises(SourceError):
        await src.arm_samples("sentiment", "v2", since, until=T0 + 2)
    await src.stop()


async def test_a_restart_is_counted_across_and_reported():
    admin, clock = FakeAdmin(), Clock(T0)
    src = stats_source(admin, clock)
    admin.doc = admin_doc(500, {"sentiment-v1": live(1000, 0)})
    await src.poll_once()  # baseline (since == T0)
    clock.t = T0 + 1
    admin.doc = admin_doc(501, {"sentiment-v1": live(1010, 1)})
    await src.poll_once()
    clock.t = T0 + 3
    admin.doc = admin_doc(1, {"sentiment-v1": live(4, 0)})  # restarted: counts from zero
    await src.poll_once()
    s = await src.arm_samples("sentiment", "v1", T0)
    assert (s.requests, s.errors) == (15, 1)
    cov = await src.coverage("sentiment", T0)
    assert not cov.complete and any("restarted" in r for r in cov.reasons)
    # An unreachable admin: its latest requests are not counted, and coverage says so.
    admin.fail = True
    clock.t = T0 + 4
    await src.poll_once()
    cov = await src.coverage("sentiment", T0 + 3.5)
    assert any("has not answered" in r for r in cov.reasons)
    await src.stop()


async def test_a_proxy_started_inside_the_window_counts_from_zero():
    admin, clock = FakeAdmin(), Clock(T0 + 30)
    src = stats_source(admin, clock)
    admin.doc = admin_doc(10, {"sentiment-v1": live(7, 0)})  # up for 10 s: started at T0 + 20
    await src.poll_once()
    s = await src.arm_samples("sentiment", "v1", T0)
    assert s.requests == 7
    assert (await src.coverage("sentiment", T0)).complete
    await src.stop()


# --------------------------------------------------------------------------- prometheus


def test_series_increase():
    since = 100.0
    # Existing series: counted from the first sample at/after since, across a reset.
    vals = [(90.0, 50.0), (99.0, 55.0), (101.0, 60.0), (102.0, 70.0), (103.0, 3.0), (104.0, 5.0)]
    assert series_increase(vals, since) == (15.0, 1, 101.0)
    # A series born in the window (Envoy creates 5xx lazily): its first value counts.
    assert series_increase([(101.0, 2.0), (102.0, 4.0)], since, born=True)[0] == 4.0
    # ... but not when its target was not scraped before (a gap, or a new proxy).
    assert series_increase([(101.0, 2.0), (102.0, 4.0)], since, born=False)[0] == 2.0
    assert series_increase([(90.0, 1.0)], since) == (0.0, 0, None)


def test_substitute():
    assert substitute('x{version="{{version}}"} + y{v="{{ version }}"}', "v8") == 'x{version="v8"} + y{v="v8"}'
    with pytest.raises(SourceError):
        substitute("{{service}}", "v1")


class FakeProm:
    def __init__(self, answers):
        self.answers = answers
        self.queries: list[str] = []

    def custom_query(self, query, params=None):
        self.queries.append(query)
        for key, answer in self.answers.items():
            if query.startswith(key):
                return answer
        return []

    def check_prometheus_connection(self, params=None):
        return True


def _series(labels, points):
    return {"metric": labels, "values": [[t, str(v)] for t, v in points]}


async def test_istio_flavour_queries_and_counts():
    since = T0
    up = [_series({"instance": "pod-a"}, [(T0 - 5, 1), (T0 + 5, 1)])]
    req = [
        _series({"instance": "pod-a", "response_code": "200"}, [(T0 - 5, 100), (T0 + 1, 100), (T0 + 5, 130)]),
        _series({"instance": "pod-a", "response_code": "503"}, [(T0 + 2, 2), (T0 + 5, 3)]),  # born in the window
        _series({"instance": "pod-a", "response_code": "0"}, [(T0 - 5, 1), (T0 + 1, 1), (T0 + 5, 2)]),
    ]
    buckets = [
        _series({"instance": "pod-a", "le": le}, [(T0 - 5, c0), (T0 + 1, c0), (T0 + 5, c1)])
        for le, c0, c1 in (("10", 50, 60), ("100", 100, 128), ("+Inf", 101, 134))
    ]
    fake = FakeProm({"up": up, "istio_requests_total": req, "istio_request_duration_milliseconds_bucket": buckets})
    src = PrometheusSource("http://prom:9090", flavour="istio", scrape_interval_s=1, client=fake, clock=lambda: T0 + 6)
    s = await src.arm_samples("fraud", "v8", since)
    assert (s.requests, s.errors) == (34, 4)
    assert s.latencies_ms.size == 30  # 33 observations, at most one sample per success
    q = next(q for q in fake.queries if q.startswith("istio_requests_total"))
    assert 'reporter="destination"' in q and 'destination_service_name="fraud"' in q and 'destination_version="v8"' in q
    with pytest.raises(SourceError, match="mirrored"):
        await src.arm_samples("fraud", "v8", since, shadow=True)
    assert await src.is_online()


async def test_envoy_flavour_selectors():
    fake = FakeProm({})
    src = PrometheusSource("http://prom:9090", client=fake, labels={"namespace": "ml"}, clock=lambda: T0 + 60)
    s = await src.arm_samples("fraud", "v8", T0, shadow=True)
    assert s.requests == 0
    assert any(q.startswith('envoy_cluster_internal_upstream_rq_xx{namespace="ml",envoy_cluster_name="fraud-v8"}[') for q in fake.queries)
    assert any(q.startswith("envoy_cluster_internal_upstream_rq_time_bucket{") for q in fake.queries)
    await src.arm_samples("fraud", "v8", T0)
    assert any(q.startswith("envoy_cluster_external_upstream_rq_xx{") for q in fake.queries)


async def test_custom_query_results():
    fake = FakeProm(
        {
            "one": [{"metric": {}, "value": [T0, "0.25"]}],
            "scalar": [T0, "2"],
            "nan": [{"metric": {}, "value": [T0, "NaN"]}],
            "two": [{"metric": {"a": "1"}, "value": [T0, "1"]}, {"metric": {"a": "2"}, "value": [T0, "1"]}],
        }
    )
    src = PrometheusSource("http://prom:9090", client=fake)
    assert await src.custom("one{v='{{version}}'}", "v1") == 0.25
    assert fake.queries[-1] == "one{v='v1'}"
    assert await src.custom("scalar", "v1") == 2.0
    assert await src.custom("nan", "v1") is None
    assert await src.custom("none", "v1") is None
    with pytest.raises(SourceError, match="sum"):
        await src.custom("two", "v1")


async def test_prometheus_down_is_a_clear_error():
    class Down(FakeProm):
        def custom_query(self, query, params=None):
            raise ConnectionError("connection refused")

        def check_prometheus_connection(self, params=None):
            raise ConnectionError("connection refused")

    src = PrometheusSource("http://prom:9090", client=Down({}))
    with pytest.raises(SourceError, match="http://prom:9090"):
        await src.arm_samples("fraud", "v8", T0)
    assert not await src.is_online()
    cov = await src.coverage("fraud", T0)
    assert not cov.complete
