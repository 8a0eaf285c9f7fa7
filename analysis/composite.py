"""A policy's SLOs -> the judges that test them, and one judge that asks them all.

A policy may hold SLOs on different per-request times (total ``latency``,
``ttfb``: time to first body byte, ``tpot``: time per output token) and
absolute bounds (``max``) beside relative ones (``maxIncrease``). Each kind of
time is judged by the policy's judge (sequential by default) on that time's
samples; absolute bounds by :class:`~analysis.judges.absolute.AbsoluteJudge`.
:class:`CompositeJudge` asks every part and answers once: FAIL as soon as one
part fails, PASS only when every part passes, INCONCLUSIVE otherwise (so a
time with no samples holds the step: nothing promotes on missing evidence).

Alpha: every FAIL test of every part runs at alpha / (n_slos x n_steps), where
n_slos counts all the policy's judged SLOs: a part with k of the K SLOs gets
alpha x k / K. The union bound over parts keeps the whole rollout's
false-rollback rate at most alpha, as for one judge.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .judge import make_judge
from .judges.absolute import AbsoluteJudge, AbsoluteSLO
from .samples import SLO, ArmSamples
from .verdict import Verdict

__all__ = ["CompositeJudge", "JudgePlan", "make_policy_judge", "plan_slos"]

#: Which ArmSamples array a label's times come from.
SAMPLE_FIELDS = {"latency": "latencies_ms", "ttfb": "ttfb_ms", "tpot": "tpot_ms"}


@dataclass(frozen=True)
class JudgePlan:
    relative: dict[str, list[SLO]] = field(default_factory=dict)  # label -> SLOs judged on that label's times
    absolute: list[AbsoluteSLO] = field(default_factory=list)

    @property
    def n_slos(self) -> int:
        return sum(len(v) for v in self.relative.values()) + len(self.absolute)


def plan_slos(slos: Any) -> JudgePlan:
    """Group a policy's SLOs (policy models or dicts; custom ones are left to the Prometheus source)."""
    relative: dict[str, list[SLO]] = {}
    absolute: list[AbsoluteSLO] = []
    for s in slos:
        get = s.get if isinstance(s, dict) else (lambda k, d=None, s=s: getattr(s, k, d))
        metric = get("metric")
        if metric == "custom":
            continue
        bound = get("max")
        label = "latency" if metric in ("error-rate", "latency") else metric
        if bound is not None:
            if metric == "error-rate":
                absolute.append(AbsoluteSLO("error-rate", float(bound)))
            else:
                ms = bound.total_seconds() * 1000.0 if hasattr(bound, "total_seconds") else float(bound)
                absolute.append(AbsoluteSLO("time", ms, float(get("quantile")), label))
            continue
        if label == "latency":
            slo = SLO.from_dict(s)
        else:  # ttfb / tpot: a latency SLO on that time's samples
            slo = SLO.from_dict({"metric": "latency", "max_increase": get("max_increase", None) if get("max_increase", None)
                                 is not None else get("maxIncrease"), "quantile": get("quantile")})
            slo = SLO(slo.metric, slo.max_increase, slo.quantile, slo.relative, label=label)
        relative.setdefault(label, []).append(slo)
    return JudgePlan(relative, absolute)


def make_policy_judge(kind: str, slos: Any, *, alpha: float, n_steps: int = 1, min_requests: int = 0,
                      carry: dict | None = None, **options: Any):
    """The judge of one step for a policy's SLOs: the plain judge when there is one kind of SLO, else a composite."""
    plan = plan_slos(slos)
    if not plan.absolute and list(plan.relative) == ["latency"]:
        extra = {"carry": carry} if carry is not None else {}
        return make_judge(kind, plan.relative["latency"], alpha=alpha, n_steps=n_steps, min_requests=min_requests,
                          **extra, **options)
    return CompositeJudge(kind, plan, alpha=alpha, n_steps=n_steps, min_requests=min_requests, carry=carry, **options)


def _view(samples: ArmSamples, label: str) -> ArmSamples:
    return samples if label == "latency" else samples.with_latencies(getattr(samples, SAMPLE_FIELDS[label]))


class CompositeJudge:
    """Several judges of one step, answering as one (see the module docstring)."""

    kind = "composite"

    def __init__(self, kind: str, plan: JudgePlan, *, alpha: float, n_steps: int = 1, min_requests: int = 0,
                 carry: dict | None = None, **options: Any):
        if plan.n_slos == 0:
            raise ValueError("a judge needs at least one SLO")
        total = plan.n_slos
        carry = carry or {}
        self.parts: dict[str, Any] = {}
        for label, slos in plan.relative.items():
            part_options = dict(options)
            if kind == "sequential":
                part_options.setdefault("pass_alpha", alpha)  # a promotion needs every part: no split needed
            if carry.get(label) is not None:
                part_options["carry"] = carry[label]
            self.parts[label] = make_judge(kind, slos, alpha=alpha * len(slos) / total, n_steps=n_steps,
                                           min_requests=min_requests, **part_options)
        if plan.absolute:
            self.parts["absolute"] = AbsoluteJudge(plan.absolute, alpha=alpha, n_steps=n_steps, n_slos=total,
                                                   min_requests=min_requests)
        self._lock = threading.Lock()

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def work_estimate(self, stable: ArmSamples, canary: ArmSamples) -> int:
        total = 0
        for label, judge in self.parts.items():
            estimate = getattr(judge, "work_estimate", None)
            view_s, view_c = (stable, canary) if label == "absolute" else (_view(stable, label), _view(canary, label))
            total += estimate(view_s, view_c) if estimate else view_s.latencies_ms.size + view_c.latencies_ms.size
        return total

    def evaluate(self, stable: ArmSamples, canary: ArmSamples, *, canary_share: float) -> Verdict:
        with self._lock:
            verdicts = {}
            for label, judge in self.parts.items():
                if label == "absolute":
                    verdicts[label] = judge.evaluate(stable, canary, canary_share=canary_share)
                else:
                    verdicts[label] = judge.evaluate(_view(stable, label), _view(canary, label), canary_share=canary_share)
        first = next(iter(verdicts.values()))
        evidence = {
            "judge": "composite",
            "parts": {label: v.evidence for label, v in verdicts.items()},
            "slos": [s for v in verdicts.values() for s in v.evidence.get("slos", [])],
            "counts": first.evidence.get("counts"),
            "looks": first.evidence.get("looks"),
        }
        failed = [(label, v) for label, v in verdicts.items() if v.outcome == "fail"]
        if failed:
            return Verdict("fail", failed[0][1].reason, evidence)
        pending = [(label, v) for label, v in verdicts.items() if v.outcome != "pass"]
        if not pending:
            return Verdict("pass", "; ".join(v.reason for v in verdicts.values()), evidence)
        needed = [v.samples_needed for _, v in pending if v.samples_needed is not None]
        label, verdict = pending[0]
        words = {"latency": "", "ttfb": "time to first byte: ", "tpot": "time per output token: ", "absolute": ""}
        return Verdict("inconclusive", words.get(label, "") + verdict.reason, evidence, max(needed) if needed else None)

    # -- state: each part keeps its own ---------------------------------------------------
    def state(self) -> dict:
        return {"composite": {label: j.state() for label, j in self.parts.items() if hasattr(j, "state")}}

    def load_state(self, state: dict) -> None:
        for label, part in state.get("composite", {}).items():
            judge = self.parts.get(label)
            if judge is not None and hasattr(judge, "load_state"):
                judge.load_state(part)

    def new_segment(self) -> None:
        for judge in self.parts.values():
            if hasattr(judge, "new_segment"):
                judge.new_segment()

    def carry(self) -> dict:
        out = {}
        for label, judge in self.parts.items():
            carry = getattr(judge, "carry", None)
            value = carry() if carry is not None else None
            if value is not None:
                out[label] = value
        return out
