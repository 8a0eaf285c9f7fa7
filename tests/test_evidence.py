"""SourceAnalyzer: the glue between metric sources and judges never promotes on missing evidence.

The sources themselves are tested against real Envoy/Prometheus in tests/e2e;
here a small in-memory source stands in so each rule can be driven exactly.
"""

from __future__ import annotations

import copy

import numpy as np
import yaml

from analysis.samples import ArmSamples
from analysis.sources import Coverage, SourceError
from analysis.analyzer import AnalysisRequest
from analysis.source_analyzer import SourceAnalyzer, analysed_steps, canary_share
from policies import RolloutPolicy

BASE = yaml.safe_load(open("policies/examples/minimal.yaml"))


class MemorySource:
    name = "memory"

    def __init__(self, arms, complete=True, custom=None, error=None):
        self.arms, self.complete, self.custom_values, self.error = arms, complete, custom or {}, error

    async def arm_samples(self, service, version, since, *, shadow=False, until=None):
        if self.error:
            raise SourceError(self.error)
        return self.arms[version]

    async def coverage(self, service, since, *, until=None):
        cov = Coverage(self.name, since, until)
        if not self.complete:
            cov.missing("the access-log stream restarted at 12:00:03")
        return cov

    async def custom(self, query, version, *, at=None):
        return self.custom_values.get(version)

    async def is_online(self):
        return True


def healthy(n, seed):
    rng = np.random.default_rng(seed)
    return ArmSamples(n, 0, rng.lognormal(3.0, 0.3, size=n))


def request(policy, weight=50, phase="canary", mirror=0.0):
    return AnalysisRequest("echo", "echo", "*", "v1", "v2", phase, 0 if phase == "canary" else -1, 3, weight, mirror,
                           0.0, 100, policy)


def policy(**analysis):
    data = copy.deepcopy(BASE)
    data["spec"]["analysis"] = {"alpha": 0.05, "slos": [{"metric": "error-rate", "maxIncrease": "5%"}], **analysis}
    return RolloutPolicy.model_validate(data)


def analyzer_with(source):
    a = SourceAnalyzer(access_log=source)
    a.sources["prometheus"] = source
    a._prometheus_factory = lambda url: source
    return a


async def test_clear_pass_with_complete_data():
    source = MemorySource({"v1": healthy(3000, 1), "v2": healthy(3000, 2)})
    verdict = await analyzer_with(source).analyze(request(policy()))
    assert verdict.outcome == "pass", verdict.reason
    assert verdict.evidence["source"] == {"type": "memory", "complete": True, "reasons": []}


async def test_pass_on_partial_data_is_held_inconclusive():
    source = MemorySource({"v1": healthy(3000, 1), "v2": healthy(3000, 2)}, complete=False)
    verdict = await analyzer_with(source).analyze(request(policy()))
    assert verdict.outcome == "inconclusive"
    assert "data may be missing" in verdict.reason and "restarted" in verdict.reason


async def test_source_error_is_inconclusive_with_the_reason():
    verdict = await analyzer_with(MemorySource({}, error="prometheus at http://x unreachable")).analyze(request(policy()))
    assert verdict.outcome == "inconclusive" and "unreachable" in verdict.reason


async def test_custom_slo_without_data_never_passes_and_over_bound_fails():
    custom = {"source": {"type": "prometheus", "prometheus": {"url": "http://127.0.0.1:9090"}},
              "slos": [{"metric": "error-rate", "maxIncrease": "5%"},
                       {"metric": "custom", "query": 'sum(rate(fail_total{version="{{version}}"}[1m]))', "max": 0.1}]}
    arms = {"v1": healthy(3000, 1), "v2": healthy(3000, 2)}
    missing = await analyzer_with(MemorySource(arms)).analyze(request(policy(**custom)))
    assert missing.outcome == "inconclusive" and "returned no data" in missing.reason
    over = await analyzer_with(MemorySource(arms, custom={"v2": 0.5})).analyze(request(policy(**custom)))
    assert over.outcome == "fail" and "0.5 > 0.1" in over.reason
    within = await analyzer_with(MemorySource(arms, custom={"v2": 0.01})).analyze(request(policy(**custom)))
    assert within.outcome == "pass" and within.evidence["custom"][0]["value"] == 0.01


def test_shares_and_alpha_steps():
    p = policy()
    assert canary_share(request(p, weight=10)) == 0.10
    assert abs(canary_share(request(p, phase="shadow", mirror=100)) - 0.5) < 1e-12
    assert analysed_steps(p) == 2  # 10% and 50%; the 100% step is the promotion
