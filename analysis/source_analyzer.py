"""The real Analyzer: samples from the policy's metric source, a verdict from its judge.

For each rollout step the engine asks about the traffic since the step's
convergence. This module picks the source (the access log by default, the
Envoy stats poller, or Prometheus), fetches both arms' cumulative samples,
and asks a judge created once per step (the sequential judges keep state and
split alpha across steps). Missing evidence never passes: a source that may
have lost data turns a pass into inconclusive, and a custom SLO whose query
returns nothing is inconclusive too.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from analysis import Verdict, evaluate_async
from analysis.composite import make_policy_judge, plan_slos
from analysis.sources import Coverage, MetricSource, SourceError
from analysis.sources.prometheus import PrometheusSource

from .analyzer import AnalysisRequest

log = logging.getLogger("weir.evidence")


def analysed_steps(policy) -> int:
    """How many times a rollout is judged: the shadow phase and every step below 100%."""
    strategy = policy.spec.strategy
    steps = sum(1 for s in strategy.canary.steps if s.pause is None and s.weight is not None and s.weight < 100)
    return max(1, steps + (1 if strategy.shadow is not None else 0))


def canary_share(request: AnalysisRequest) -> float:
    """The canary's expected share of the two arms' requests.

    Live steps split traffic by weight. In the shadow phase stable serves every
    live request and the canary receives a copy of `mirror`% of them.
    """
    if request.phase == "shadow":
        m = request.mirror / 100.0
        return m / (1.0 + m)
    return request.weight / 100.0


class SourceAnalyzer:
    """Analyzer over real metric sources (access log, Envoy stats, Prometheus)."""

    def __init__(
        self,
        access_log: MetricSource | None = None,
        envoy_stats: MetricSource | None = None,
        prometheus: Callable[[str], MetricSource] = PrometheusSource,
    ):
        self.sources: dict[str, MetricSource | None] = {"access-log": access_log, "envoy-stats": envoy_stats}
        self._prometheus_factory = prometheus
        self._prometheus: dict[str, MetricSource] = {}
        # (rollout, analysis run, step) -> [judge, segment it last saw]
        self._judges: dict[tuple[str, int, int], list[Any]] = {}

    def source_for(self, policy) -> MetricSource:
        spec = policy.spec.analysis.source
        if spec.type == "prometheus":
            url = spec.prometheus.url
            if url not in self._prometheus:
                self._prometheus[url] = self._prometheus_factory(url)
            return self._prometheus[url]
        source = self.sources.get(spec.type)
        if source is None:
            raise SourceError(f"analysis.source.type {spec.type!r} is not available in this Weir (start it with that source)")
        return source

    def _new_judge(self, request: AnalysisRequest, carry: dict | None):
        analysis = request.policy.spec.analysis
        return make_policy_judge(
            analysis.judge,
            analysis.slos,
            alpha=analysis.alpha,
            n_steps=analysed_steps(request.policy),
            min_requests=request.min_requests,
            carry=carry,
        )

    def _carry(self, request: AnalysisRequest) -> dict | None:
        """What the previous analysed step's judge hands on (rollout-wide harm monitoring)."""
        earlier = [k for k in self._judges if k[0] == request.rollout and k[1] == request.run and k[2] < request.step]
        judge = self._judges[max(earlier)][0] if earlier else None
        if judge is None and request.previous_state is not None:
            judge = self._new_judge(request, None)
            load = getattr(judge, "load_state", None)
            if load is None:
                return None
            load(request.previous_state)
        carry = getattr(judge, "carry", None) if judge is not None else None
        return carry() if carry is not None else None

    def _judge(self, request: AnalysisRequest):
        """The step's judge: created once per (rollout, run, step), restored from stored state after a restart.

        A new segment of the same step (restart, resume, weight change) continues the same judge:
        its samples are appended to what it saw, so no alpha is spent twice.
        """
        key = (request.rollout, request.run, request.step)
        entry = self._judges.get(key)
        if entry is None:
            judge = self._new_judge(request, self._carry(request))
            load = getattr(judge, "load_state", None)
            if request.judge_state is not None and load is not None:
                load(request.judge_state)  # samples of the new segment follow
            # One judge per rollout: forget its other steps and runs.
            for old in [k for k in self._judges if k[0] == request.rollout]:
                del self._judges[old]
            entry = self._judges[key] = [judge, request.segment]
        elif entry[1] != request.segment:
            new_segment = getattr(entry[0], "new_segment", None)
            if new_segment is not None:
                new_segment()
            else:  # a judge that cannot continue across segments starts again
                entry[0] = self._new_judge(request, self._carry(request))
            entry[1] = request.segment
        return entry[0]

    def judge_state(self, request: AnalysisRequest) -> dict | None:
        """The state to store after a look at ``request`` (None for judges without state)."""
        entry = self._judges.get((request.rollout, request.run, request.step))
        state = getattr(entry[0], "state", None) if entry is not None else None
        return state() if state is not None else None

    async def analyze(self, request: AnalysisRequest) -> Verdict:
        try:
            source = self.source_for(request.policy)
            register = getattr(source, "register", None)
            if register is not None:  # which clusters form the service (shared thinning), its gRPC client codes
                from policies.model import GRPC_CODES

                codes = [GRPC_CODES[name] for name in request.policy.spec.analysis.grpc_client_errors]
                try:
                    register(request.service, (request.stable_version, request.canary_version), grpc_client_codes=codes)
                except TypeError:  # a source without gRPC statuses
                    register(request.service, (request.stable_version, request.canary_version))
            stable = await source.arm_samples(request.service, request.stable_version, request.since)
            canary = await source.arm_samples(
                request.service, request.canary_version, request.since, shadow=request.phase == "shadow"
            )
            coverage: Coverage = await source.coverage(request.service, request.since)
        except SourceError as err:
            return Verdict("inconclusive", f"no evidence: {err}", {"source_error": str(err)})
        if canary_share(request) <= 0.0:
            return Verdict("inconclusive", f"step {request.step + 1} sends no live traffic to {request.canary_version} "
                           "(weight 0): nothing to judge, and nothing promotes on missing evidence",
                           {"canary_share": 0.0})
        has_judged_slos = plan_slos(request.policy.spec.analysis.slos).n_slos > 0
        if has_judged_slos:
            verdict = await evaluate_async(self._judge(request), stable, canary, canary_share=canary_share(request))
        else:
            verdict = Verdict("pass", "no comparative SLOs; custom bounds decide", {})
        verdict = await self._custom_slos(request, source, verdict)
        evidence = dict(verdict.evidence)
        evidence["source"] = {"type": source.name, "complete": coverage.complete, "reasons": coverage.reasons}
        evidence["canary_share"] = canary_share(request)
        if verdict.outcome == "pass" and not coverage.complete:
            return Verdict(
                "inconclusive",
                f"would pass, but data may be missing ({'; '.join(coverage.reasons)}): never promote on missing evidence",
                evidence,
                verdict.samples_needed,
            )
        return Verdict(verdict.outcome, verdict.reason, evidence, verdict.samples_needed)

    async def _custom_slos(self, request: AnalysisRequest, source: MetricSource, verdict: Verdict) -> Verdict:
        """Absolute bounds on Prometheus queries (only with the prometheus source)."""
        custom = [s for s in request.policy.spec.analysis.slos if s.metric == "custom"]
        if not custom or verdict.outcome == "fail":
            return verdict
        results = []
        for slo in custom:
            value = await source.custom(slo.query, request.canary_version)
            results.append({"query": slo.query, "max": slo.max, "value": value})
            if value is not None and value > slo.max:
                evidence = {**verdict.evidence, "custom": results}
                return Verdict("fail", f"custom SLO exceeded: {slo.query} = {value:g} > {slo.max:g}", evidence)
            if value is None and verdict.outcome == "pass":
                evidence = {**verdict.evidence, "custom": results}
                return Verdict("inconclusive", f"custom SLO query returned no data: {slo.query}", evidence)
        return Verdict(verdict.outcome, verdict.reason, {**verdict.evidence, "custom": results}, verdict.samples_needed)
