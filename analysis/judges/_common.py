"""Small helpers shared by the judges: input checks, wording, JSON-friendly numbers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..samples import SLO, ArmSamples


def check_share(canary_share: float) -> float:
    p = float(canary_share)
    if not (0.0 < p < 1.0) or not math.isfinite(p):
        raise ValueError(f"canary_share must be strictly between 0 and 1 (got {canary_share!r}); 5% weight is 0.05")
    return p


def check_arm(name: str, arm: ArmSamples) -> None:
    if not isinstance(arm, ArmSamples):
        raise TypeError(f"{name} must be an ArmSamples (got {type(arm).__name__})")
    if arm.latencies_ms.size > arm.successes:
        raise ValueError(
            f"{name}: {arm.latencies_ms.size} latency samples but only {arm.successes} successful requests "
            "(latencies are recorded for successful requests only)"
        )


def margin_words(slo: SLO) -> str:
    """'by more than 10%' / 'by more than 0.5 percentage points' / '' for a zero margin."""
    if slo.max_increase == 0:
        return ""
    if slo.metric == "error-rate":
        if slo.relative:
            return f" by more than {slo.max_increase * 100:g}%"
        return f" by more than {slo.max_increase * 100:g} percentage points"
    if slo.relative:
        return f" by more than {slo.max_increase * 100:g}%"
    return f" by more than {slo.max_increase:g} ms"


def subject(slo: SLO) -> str:
    """'error rate' / 'p99 latency' / 'typical latency'."""
    from ..samples import LABEL_WORDS

    if slo.metric == "error-rate":
        return "error rate"
    noun = LABEL_WORDS.get(getattr(slo, "label", "latency"), "latency")
    if slo.quantile is None:
        return f"typical (geometric-mean) {noun}"
    return f"{slo.key.rsplit('-', 1)[1]} {noun}"


def fmt_e(x: float) -> str:
    if not math.isfinite(x):
        return "inf"
    if x >= 1e6:
        return f"{x:.3g}"
    if x >= 100:
        return f"{x:.0f}"
    return f"{x:.1f}"


def fnum(x: Any) -> float | None:
    """A JSON-safe float (None for NaN/inf)."""
    if x is None:
        return None
    f = float(x)
    return f if math.isfinite(f) else None


def safe_exp(log_x: float) -> float:
    return math.exp(min(float(log_x), 700.0))


def pct(x: float, digits: int = 2) -> str:
    return f"{x * 100:.{digits}f}%"


def empty_arm() -> ArmSamples:
    return ArmSamples(0, 0, np.empty(0))
