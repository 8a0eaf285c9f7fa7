"""Latency-aware balancing: estimates, weights, guard rails, and the queue-depth scrape of a real endpoint."""

from __future__ import annotations

import asyncio
import math

import pytest

from control_plane.balancing.balancer import BalancedService, LatencyAwareBalancer
from control_plane.balancing.estimator import FAIR, PeakEwma, weights_from_scores, worth_pushing
from control_plane.balancing.queue import QueueScraper, gauge_value
from policies.model import LatencyAware


def test_peak_ewma_reacts_at_once_and_forgets_slowly():
    e = PeakEwma(tau_s=5.0)
    e.observe(10, 0.0)
    e.observe(30, 0.1)  # a slowdown: taken at once
    assert e.value == 30
    e.observe(10, 5.1)  # five seconds later a fast sample: 1 - 1/e of the way down
    assert e.value == pytest.approx(30 * math.exp(-1) + 10 * (1 - math.exp(-1)))
    e.observe(float("nan"), 6.0)
    e.observe(-1, 6.0)
    assert e.samples == 3  # bad samples are ignored


def test_weights_are_inverse_to_the_estimates_with_a_floor():
    w = weights_from_scores({"a": 10.0, "b": 10.0, "c": 10.0, "d": 30.0})
    assert w["a"] == w["b"] == w["c"] and abs(w["d"] - w["a"] / 9) <= 1  # a 3x slower replica: a ninth of the weight
    assert sum(w.values()) == pytest.approx(4 * FAIR, abs=4)
    floor = weights_from_scores({"a": 10.0, "b": 1e6}, min_share=0.05)
    assert floor["b"] == 5  # still probed
    assert weights_from_scores({"a": None, "b": None}) == {"a": FAIR, "b": FAIR}
    assert weights_from_scores({"a": 10.0, "new": None})["new"] == FAIR


def test_only_real_changes_are_pushed():
    assert worth_pushing(None, {"a": 100})
    assert not worth_pushing({"a": 100, "b": 100}, {"a": 110, "b": 95})
    assert worth_pushing({"a": 100, "b": 100}, {"a": 130, "b": 80})
    assert worth_pushing({"a": 100}, {"a": 100, "b": 100})


class RecordingRouter:
    def __init__(self, clock=None):
        self.clock = clock
        self.pushes: list[tuple[str, str, dict[str, int]]] = []
        self.times: list[float] = []

    async def set_endpoint_weights(self, service, version, weights):
        self.pushes.append((service, version, dict(weights)))
        self.times.append(self.clock[0] if self.clock else 0.0)


def entry(endpoint, latency, *, error=False, t=0.0, cluster="svc-v1"):
    return (cluster, endpoint, t, latency, 500 if error else 200, error, "live", "svc-default")


def make(services, clock):
    router = RecordingRouter(clock)
    balancer = LatencyAwareBalancer(router, lambda: services, clock=lambda: clock[0], tau_s=2.0)
    return balancer, router


EPS = ("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80")


async def test_weights_move_away_from_a_slow_replica_and_back_after_it_recovers():
    clock = [0.0]
    services = [BalancedService("svc", LatencyAware(), {"v1": EPS})]
    balancer, router = make(services, clock)
    await balancer.tick()  # registers the clusters: fair weights first
    for t in range(10):
        clock[0] = float(t)
        balancer.on_entries([entry(ep, 30.0 if ep == EPS[3] else 10.0, t=float(t)) for ep in EPS for _ in range(5)])
        await balancer.tick()
    weights = router.pushes[-1][2]
    assert weights[EPS[3]] < weights[EPS[0]] / 2
    for t in range(10, 30):  # it recovers
        clock[0] = float(t)
        balancer.on_entries([entry(ep, 10.0, t=float(t)) for ep in EPS for _ in range(5)])
        await balancer.tick()
    weights = router.pushes[-1][2]
    assert abs(weights[EPS[3]] - weights[EPS[0]]) <= 0.2 * weights[EPS[0]]
    snap = balancer.snapshot("svc")["svc"]["v1"]
    assert {row["endpoint"] for row in snap} == set(EPS) and all(row["weight"] for row in snap)


async def test_a_fast_failing_replica_never_attracts_traffic():
    """RTT-only balancers love a replica that answers 503 in 1 ms: errors count as slow here."""
    clock = [0.0]
    services = [BalancedService("svc", LatencyAware(), {"v1": EPS})]
    balancer, router = make(services, clock)
    await balancer.tick()
    for t in range(5):
        clock[0] = float(t)
        batch = [entry(ep, 20.0, t=float(t)) for ep in EPS[:3] for _ in range(5)]
        batch += [entry(EPS[3], 1.0, error=True, t=float(t)) for _ in range(5)]
        balancer.on_entries(batch)
        await balancer.tick()
    weights = router.pushes[-1][2]
    assert weights[EPS[3]] == 5  # the floor: probed, but at a twentieth of a fair share
    assert weights[EPS[3]] / sum(weights.values()) < 0.05


async def test_at_most_one_push_per_version_and_second():
    clock = [0.0]
    services = [BalancedService("svc", LatencyAware(max_updates_per_second=1.0), {"v1": EPS[:2], "v2": EPS[2:]})]
    balancer, router = make(services, clock)
    for i in range(40):  # 10 s of ticks every 250 ms, one replica slowing down more at every tick
        clock[0] = i * 0.25
        balancer.on_entries([entry(EPS[0], 10.0, t=clock[0]), entry(EPS[1], 10.0 * 1.08 ** i, t=clock[0])])
        await balancer.tick()
    per_version = {v: [p for p in router.pushes if p[1] == v] for v in ("v1", "v2")}
    times = [t for (_, v, _), t in zip(router.pushes, router.times) if v == "v1"]
    assert len(times) >= 3 and all(b - a >= 1.0 for a, b in zip(times, times[1:]))  # never more than one a second
    assert len(per_version["v2"]) == 1  # nothing moved there: only the initial fair weights


def test_gauge_value_reads_the_prometheus_text_format():
    text = """# HELP vllm:num_requests_waiting Waiting
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="a"} 3
vllm:num_requests_waiting{model_name="b"} 2.0
vllm:num_requests_waiting_total 99
nv_inference_pending_request_count{model="m",version="1"} 7
"""
    assert gauge_value(text, "vllm:num_requests_waiting") == 5.0
    assert gauge_value(text, "nv_inference_pending_request_count") == 7.0
    assert gauge_value(text, "absent") is None


async def test_queue_depth_is_scraped_from_a_real_model_server():
    from devtools.model_servers import ModelServer
    import httpx

    async with ModelServer(latency_ms=1500, max_concurrency=1) as server:
        address = f"127.0.0.1:{server.ports.rest}"
        body = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}
        async with httpx.AsyncClient(base_url=server.rest_url, timeout=10) as client:
            calls = [asyncio.create_task(client.post("/v2/models/demo/infer", json=body)) for _ in range(3)]
            scraper = QueueScraper()
            for metric, expected in (("vllm:num_requests_waiting", 2.0), ("nv_inference_pending_request_count", 2.0)):
                settings = LatencyAware(signal="queue-depth", queue_metric=metric)
                for _ in range(50):
                    await scraper.scrape([("svc-v1", address, settings)])
                    if scraper.value(address, settings) == expected:
                        break
                    await asyncio.sleep(0.05)
                assert scraper.value(address, settings) == expected
            # A replica that cannot be scraped keeps no value (its latency alone decides).
            bad = LatencyAware(signal="queue-depth", metrics_port=1)
            await scraper.scrape([("svc-v1", address, bad)])
            assert scraper.value(address, bad) is None
            await scraper.close()
            await asyncio.gather(*calls)


async def test_weights_and_estimates_are_scraped_per_endpoint():
    """/metrics shows what the balancer gives each replica and why (the estimate), in Prometheus' units."""
    from prometheus_client.parser import text_string_to_metric_families

    from control_plane.api.metrics import Metrics

    clock = [0.0]
    services = [BalancedService("svc", LatencyAware(), {"v1": EPS[:2]})]
    balancer, router = make(services, clock)
    await balancer.tick()
    for t in range(10):
        clock[0] = float(t)
        balancer.on_entries([entry(EPS[0], 10.0, t=float(t)), entry(EPS[1], 40.0, t=float(t))] * 5)
        await balancer.tick()
    metrics = Metrics()
    metrics.bind(balancer=balancer)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render([]))}
    weights = {s.labels["endpoint"]: s.value for s in families["weir_endpoint_weight"].samples}
    estimates = {s.labels["endpoint"]: s.value for s in families["weir_endpoint_latency_estimate_seconds"].samples}
    assert weights == {ep: float(w) for ep, w in router.pushes[-1][2].items()} and weights[EPS[1]] < weights[EPS[0]]
    assert 0.009 < estimates[EPS[0]] < 0.011 and 0.036 < estimates[EPS[1]] < 0.044  # 10 ms and 40 ms, in seconds
    assert {s.labels["service"] for s in families["weir_endpoint_weight"].samples} == {"svc"}
    assert Metrics().render([]).count("weir_endpoint_weight") == 0  # no balancer: no family
