"""/metrics on prometheus_client: per-version series, SLO statistics, 1-based steps, OpenMetrics, multiprocess,
and the Grafana dashboard in manifests/ referencing only metrics that exist."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from analysis.sources.access_log import LIVE, AccessLogSource, Entry
from analysis.sources.timing_log import TimingRecord
from control_plane.api.metrics import METRIC_NAMES
from tests.test_api import VIEW, make_api, parse_metrics, submit  # noqa: F401  (fixture)
from tests.test_notify import EvidenceAnalyzer as _Scripted

DASHBOARD = Path("manifests/grafana/weir-canary.json")


class EvidenceAnalyzer(_Scripted):
    """Scripted outcomes with the evidence of a look that still needs samples."""

    async def analyze(self, request):
        verdict = await super().analyze(request)
        verdict.evidence["slos"] = [dict(verdict.evidence["slos"][0], samples_needed=120)]
        return verdict


def feed(source: AccessLogSource, now: float) -> None:
    entries = []
    for i in range(100):
        entries.append(Entry("echo-v1", "10.0.0.1:80", now - 30 + i * 0.1, 20.0, 200, False, LIVE, "echo-default"))
    for i in range(40):
        error = i % 10 == 0
        entries.append(Entry("echo-v2", "10.0.0.2:80", now - 30 + i * 0.2, 300.0, 500 if error else 200, error, LIVE,
                             "echo-default"))
    source.ingest(entries)
    source.timing.ingest([TimingRecord("echo-v2", now - 20, 150.0, float("nan"), LIVE)] * 3)


async def scrape(client, accept: str | None = None):
    headers = dict(VIEW, **({"Accept": accept} if accept else {}))
    return await client.get("/metrics", headers=headers)


async def test_per_version_series_and_slo_statistics(make_api):
    import time

    now = time.time()
    source = AccessLogSource()
    feed(source, now)
    client, engine, _, _ = await make_api(access_log=source)
    engine.analyzer = EvidenceAnalyzer(("inconclusive",))
    await submit(client)
    for _ in range(3):
        await engine.tick()
    text = (await scrape(client)).text
    samples = parse_metrics(text)
    v1 = 'service="echo",version="v1",traffic="live"'
    v2 = 'service="echo",version="v2",traffic="live"'
    assert samples[f"weir_version_requests_total{{{v1}}}"] == 100
    assert samples[f"weir_version_requests_total{{{v2}}}"] == 40
    assert samples[f"weir_version_errors_total{{{v2}}}"] == 4
    assert samples[f'weir_version_latency_seconds_bucket{{{v2},le="0.25"}}'] == 0
    assert samples[f'weir_version_latency_seconds_bucket{{{v2},le="0.5"}}'] == 36  # successes only
    assert samples[f"weir_version_latency_seconds_count{{{v2}}}"] == 36
    assert abs(samples[f"weir_version_latency_seconds_sum{{{v2}}}"] - 36 * 0.3) < 1e-6
    assert samples[f'weir_version_ttfb_seconds_bucket{{{v2},le="0.25"}}'] == 3
    # The latest look's statistics against their thresholds, and the counts behind them.
    r = 'rollout="echo"'
    assert samples[f'weir_slo_statistic{{{r},slo="error-rate",direction="pass"}}'] == 1300
    assert samples[f'weir_slo_threshold{{{r},slo="error-rate",direction="pass"}}'] == 20
    assert samples[f'weir_slo_threshold{{{r},slo="error-rate",direction="fail"}}'] == 80
    assert samples[f'weir_rollout_step_requests{{{r},role="canary"}}'] == 310
    assert samples[f'weir_rollout_version{{{r},service="echo",version="v2",role="canary"}}'] == 1
    # Steps count like the CLI: the first step is 1 (of 3).
    assert samples[f"weir_rollout_step{{{r}}}"] == 1 and samples[f"weir_rollout_steps{{{r}}}"] == 3
    assert samples[f"weir_rollout_min_requests{{{r}}}"] == 10
    # prometheus_client's own parser reads the whole exposition.
    families = {f.name for f in text_string_to_metric_families(text)}
    assert {"weir_version_requests", "weir_version_latency_seconds", "weir_slo_statistic"} <= families


async def test_step_is_zero_before_the_first_step(make_api):
    client, engine, _, _ = await make_api(start=True)
    await submit(client)  # Pending: no step yet
    samples = parse_metrics((await scrape(client)).text)
    assert samples['weir_rollout_step{rollout="echo"}'] == 0


async def test_openmetrics_when_the_scraper_asks_for_it(make_api):
    client, engine, _, _ = await make_api()
    await submit(client)
    response = await scrape(client, "application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n") and "weir_rollout_phase" in response.text
    plain = await scrape(client)
    assert plain.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"


def test_engine_fed_counters_aggregate_across_processes(tmp_path):
    """With PROMETHEUS_MULTIPROC_DIR, two processes' verdict counters add up in one scrape."""
    code = """
import sys
from control_plane.api.metrics import Metrics
m = Metrics()
m.observe_verdict("echo", "pass")
m.observe_convergence(0.2)
if sys.argv[1] == "render":
    sys.stdout.write(m.render([]))
"""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code, "only-count"], env=env, check=True, timeout=60)
    out = subprocess.run([sys.executable, "-c", code, "render"], env=env, check=True, timeout=60,
                         capture_output=True, text=True).stdout
    samples = parse_metrics(out)
    assert samples['weir_verdicts_total{rollout="echo",outcome="pass"}'] == 2
    assert samples["weir_xds_convergence_seconds_count"] == 2


def _referenced(dashboard: dict) -> set[str]:
    exprs = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "query") and isinstance(value, str):
                    exprs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    assert exprs, "the dashboard has no queries"
    return set(re.findall(r"\bweir_[a-z_]+", " ".join(exprs)))


async def test_grafana_dashboard_uses_only_metrics_that_exist(make_api):
    import time

    dashboard = json.loads(DASHBOARD.read_text())
    names = _referenced(dashboard)
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
    assert families <= METRIC_NAMES, families - METRIC_NAMES
    # ... and each of them shows in a real scrape (a rollout judged on traffic of two versions).
    source = AccessLogSource()
    feed(source, time.time())
    client, engine, registry, _ = await make_api(access_log=source)
    engine.analyzer = EvidenceAnalyzer(("inconclusive",))
    await submit(client)
    for _ in range(3):
        await engine.tick()
    registry.nack_total["type.googleapis.com/envoy.config.route.v3.RouteConfiguration"] += 1
    exposed = {key.split("{")[0] for key in parse_metrics((await scrape(client)).text)}
    missing = {n for n in names if n not in exposed}
    assert not missing, missing
    # The canary-versus-stable panels label by role through weir_rollout_version.
    assert "group_left(role) weir_rollout_version" in json.dumps(dashboard)
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "rollout", "service"}
