"""A judge's answer: pass / fail / inconclusive, one sentence, and the evidence behind it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["Verdict", "jsonable"]

Outcome = Literal["pass", "fail", "inconclusive"]


@dataclass
class Verdict:
    """What a judge decided and why.

    ``evidence`` is JSON-serialisable (strict JSON: non-finite numbers are
    stored as ``null``), so the engine can store it with the event that acted on
    it and serve it from the API. ``samples_needed`` estimates how many more
    canary samples a decision needs (``None`` once decided).
    """

    outcome: Outcome
    reason: str
    evidence: dict = field(default_factory=dict)
    samples_needed: int | None = None

    def __post_init__(self) -> None:
        if self.outcome not in ("pass", "fail", "inconclusive"):
            raise ValueError(f"outcome must be pass, fail or inconclusive (got {self.outcome!r})")
        self.evidence = jsonable(self.evidence)
        if self.samples_needed is not None:
            self.samples_needed = int(self.samples_needed)

    def to_json(self) -> dict:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "evidence": self.evidence,
            "samples_needed": self.samples_needed,
        }


def jsonable(obj: Any) -> Any:
    """Deep-convert numpy scalars/arrays, tuples and non-finite floats into strict-JSON values."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [jsonable(v) for v in obj.tolist()]
    if hasattr(obj, "to_json"):
        return jsonable(obj.to_json())
    raise TypeError(f"evidence value of type {type(obj).__name__} is not JSON-serialisable")
