"""A verdict's per-SLO progress in one shape: statistic, thresholds, samples still needed.

Why: the judges' evidence is rich and differs by test (e-values to fail and to
pass for the sequential judges, one e-value for absolute bounds, nothing for a
fixed-sample test). The dashboard, ``weir report``, ``/metrics`` and ``weir get
--watch`` all show "how far is each SLO from a decision"; they read it here so
the four never disagree. Pure functions over the verdict's JSON form.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["counts", "progress", "slo_progress"]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def slo_progress(verdict: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One entry per SLO: ``{slo, description, outcome, e_fail, fail_threshold, e_pass, pass_threshold,
    samples_needed, fraction}``; ``fraction`` is how far the closer of the two e-values is to its threshold
    on a log scale (1 = decided), ``leaning`` says which ("pass", "fail" or None)."""
    if not verdict:
        return []
    evidence = verdict.get("evidence") or {}
    out = []
    for entry in evidence.get("slos") or []:
        if not isinstance(entry, dict):
            continue
        e_fail = _num(entry.get("e_value_fail", entry.get("e_value")))
        fail_thr = _num(entry.get("fail_threshold", entry.get("threshold")))
        e_pass = _num(entry.get("e_value_pass"))
        pass_thr = _num(entry.get("pass_threshold"))
        fractions = {}
        for side, e, thr in (("fail", e_fail, fail_thr), ("pass", e_pass, pass_thr)):
            if e is not None and thr is not None and thr > 1:
                fractions[side] = min(1.0, max(0.0, math.log(max(e, 1e-300)) / math.log(thr)))
        leaning = max(fractions, key=fractions.get) if fractions and max(fractions.values()) > 0 else None
        out.append({
            "slo": str(entry.get("slo", "?")),
            "description": entry.get("description", ""),
            "outcome": entry.get("outcome", "inconclusive"),
            "e_fail": e_fail,
            "fail_threshold": fail_thr,
            "e_pass": e_pass,
            "pass_threshold": pass_thr,
            "samples_needed": entry.get("samples_needed"),
            "fraction": fractions.get(leaning, 0.0) if leaning else 0.0,
            "leaning": leaning,
            "detail": entry.get("blocked_by") or entry.get("waiting_for"),
        })
    return out


def counts(verdict: dict[str, Any] | None) -> dict[str, dict[str, int]]:
    """``{"stable": {requests, errors}, "canary": {...}}`` the verdict was based on (empty when unknown)."""
    evidence = (verdict or {}).get("evidence") or {}
    raw = evidence.get("counts") or {}
    out = {}
    for role in ("stable", "canary"):
        arm = raw.get(role)
        if isinstance(arm, dict):
            out[role] = {"requests": int(arm.get("requests") or 0), "errors": int(arm.get("errors") or 0)}
    return out


def progress(rollout: dict[str, Any], now: float) -> dict[str, Any]:
    """A rollout's step progress as the CLI and the dashboard show it (the rollout's JSON from the API)."""
    verdict = rollout.get("latest_verdict") or rollout.get("verdict")
    step = rollout.get("step", -1)
    steps = rollout.get("steps") or []
    if step == -1:
        current = rollout.get("shadow")
    else:
        current = next((s for s in steps if s.get("index") == step), None)
    started = rollout.get("step_started_at")
    return {
        "canary_requests": counts(verdict).get("canary", {}).get("requests"),
        "min_requests": (current or {}).get("min_requests"),
        "slos": slo_progress(verdict),
        "in_step_s": max(0.0, now - started) if started else None,
        "samples_needed": (verdict or {}).get("samples_needed"),
    }
