"""What the judges consume: per-arm samples and the SLOs they are held to.

Both types are plain data. A metric source fills :class:`ArmSamples` with the
*cumulative* traffic of one arm (stable or canary) since the current step's
routing converged; the engine passes the same objects, grown, at every look.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = ["ArmSamples", "SLO", "slos_from_policy", "split_latencies"]


def _as_latency_array(values: Any) -> np.ndarray:
    arr = np.asarray(values if values is not None else [], dtype=np.float64).reshape(-1)
    return arr


@dataclass
class ArmSamples:
    """Cumulative samples of one arm since the step's config converged.

    ``requests`` counts every request (errors included); ``errors`` counts 5xx
    responses and resets; ``latencies_ms`` holds one entry per *successful*
    request, in arrival order. Between two looks of the same segment the
    arrays only grow (new samples are appended): the sequential judge relies
    on that to tell new samples from old ones (a judge's ``new_segment()``
    starts again from zero).

    Bad latency values from a source (NaN, inf, negative) are accepted here:
    the judges count them (``bad_samples`` in the evidence), leave them out of
    the statistics and never pass on them. A plain dataclass: new per-request
    arrays can be added as fields with defaults.
    """

    requests: int = 0
    errors: int = 0
    latencies_ms: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))
    #: time to the first byte of the response body, per successful request (streaming: the first token);
    #: only sources that see it fill it (the access log, through its timing records)
    ttfb_ms: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))
    #: time per output token, per successful request that named its token count
    tpot_ms: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.float64))

    def __post_init__(self) -> None:
        self.latencies_ms = _as_latency_array(self.latencies_ms)
        self.ttfb_ms = _as_latency_array(self.ttfb_ms)
        self.tpot_ms = _as_latency_array(self.tpot_ms)
        self.requests = int(self.requests)
        self.errors = int(self.errors)
        if self.requests < 0 or self.errors < 0:
            raise ValueError(f"requests and errors must be >= 0 (got requests={self.requests}, errors={self.errors})")
        if self.errors > self.requests:
            raise ValueError(f"errors ({self.errors}) cannot exceed requests ({self.requests})")

    @property
    def successes(self) -> int:
        return self.requests - self.errors

    def summary(self) -> dict[str, Any]:
        """Counts for evidence: JSON-ready (``bad_latency_samples``: NaN, inf or negative values)."""
        return {
            "requests": int(self.requests),
            "errors": int(self.errors),
            "latency_samples": int(self.latencies_ms.size),
            "bad_latency_samples": int(self.latencies_ms.size - np.count_nonzero(_good_mask(self.latencies_ms))),
            **({"ttfb_samples": int(self.ttfb_ms.size)} if self.ttfb_ms.size else {}),
            **({"tpot_samples": int(self.tpot_ms.size)} if self.tpot_ms.size else {}),
        }

    def with_latencies(self, latencies_ms: np.ndarray) -> "ArmSamples":
        """The same requests and errors judged on another per-request time (e.g. ``ttfb_ms``).

        Times that arrive through another channel (the timing records) may run a little ahead of the
        counted requests; the newest extra ones wait for the next look (the array still only grows).
        """
        values = _as_latency_array(latencies_ms)
        return ArmSamples(self.requests, self.errors, values[: self.successes])


def _good_mask(lat: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(lat) & (lat >= 0)


def split_latencies(lat: Any) -> tuple[np.ndarray, int]:
    """(the valid latencies, the number of bad ones): NaN, +-inf and negative values are bad.

    Judges call it on every new slice (arrays can be written after an
    ``ArmSamples`` was built), so a bad value never reaches a statistic.
    """
    arr = np.asarray(lat, dtype=np.float64).reshape(-1)
    good = _good_mask(arr)
    n_bad = int(arr.size - np.count_nonzero(good))
    return (arr if n_bad == 0 else arr[good]), n_bad


@dataclass(frozen=True)
class SLO:
    """One service-level objective the canary must keep relative to stable.

    * ``error-rate``: ``max_increase`` is **absolute** by default (a fraction:
      0.005 = half a percentage point more errors than stable). With
      ``relative=True`` it is a ratio instead (0.1 = at most 1.1 x stable's rate).
    * ``latency``: ``max_increase`` is **relative** by default (0.10 = the
      canary's ``quantile`` may be at most 1.1 x stable's). With
      ``relative=False`` it is absolute, in milliseconds.

    ``max_increase`` is the margin of the test: a canary worse by more than it
    fails, one shown to be within it passes.
    """

    metric: Literal["error-rate", "latency"]
    max_increase: float
    quantile: float | None = None
    relative: bool | None = None  # None: the metric's default (see above)
    #: what the latency samples measure, for names and words: "latency" (total time, the default),
    #: "ttfb" (time to first body byte) or "tpot" (time per output token); the judge is the same
    label: str = "latency"

    def __post_init__(self) -> None:
        if self.metric not in ("error-rate", "latency"):
            raise ValueError(f"SLO metric must be 'error-rate' or 'latency' (got {self.metric!r})")
        mi = float(self.max_increase)
        if not np.isfinite(mi) or mi < 0:
            raise ValueError(f"SLO max_increase must be a finite number >= 0 (got {self.max_increase!r})")
        object.__setattr__(self, "max_increase", mi)
        if self.relative is None:
            object.__setattr__(self, "relative", self.metric == "latency")
        if self.metric == "latency":
            if self.quantile is not None:
                q = float(self.quantile)
                if not 0.0 < q < 1.0:
                    raise ValueError(f"latency quantile must be between 0 and 1 (got {self.quantile!r})")
                object.__setattr__(self, "quantile", q)
        else:
            if self.quantile is not None:
                raise ValueError("an error-rate SLO has no quantile")
            if not self.relative and mi >= 1.0:
                raise ValueError(f"an absolute error-rate max_increase is a fraction below 1 (got {mi})")

    @property
    def key(self) -> str:
        """A short stable name: ``error-rate``, ``latency-p99``, ``latency-p50``, ``latency-mean``."""
        if self.metric == "error-rate":
            return "error-rate"
        if self.quantile is None:
            return f"{self.label}-mean"
        return f"{self.label}-p{_quantile_label(self.quantile)}"

    def describe(self) -> str:
        """Human words: ``p99 latency at most +10% over stable``."""
        if self.metric == "error-rate":
            if self.relative:
                return f"error rate at most {1 + self.max_increase:g} x stable's"
            return f"error rate at most {self.max_increase * 100:g} percentage points above stable's"
        noun = LABEL_WORDS.get(self.label, self.label)
        what = f"typical (geometric-mean) {noun}" if self.quantile is None else f"p{_quantile_label(self.quantile)} {noun}"
        if self.relative:
            return f"{what} at most +{self.max_increase * 100:g}% over stable's"
        return f"{what} at most {self.max_increase:g} ms above stable's"

    def to_json(self) -> dict[str, Any]:
        out = {"metric": self.metric, "max_increase": self.max_increase, "quantile": self.quantile, "relative": self.relative}
        if self.label != "latency":
            out["label"] = self.label
        return out

    @classmethod
    def from_dict(cls, spec: Any) -> "SLO":
        """Build from a policy SLO: a dict (``maxIncrease`` or ``max_increase``, ``"10%"`` accepted) or an object
        with ``metric``, ``max_increase`` and ``quantile`` attributes (the pydantic policy models)."""
        if isinstance(spec, SLO):
            return spec
        get = spec.get if isinstance(spec, dict) else (lambda k, d=None: getattr(spec, k, d))
        metric = get("metric")
        if metric == "custom":
            raise ValueError("custom SLOs are absolute bounds on a Prometheus query: the prometheus source checks them, not a judge")
        mi = get("max_increase", None)
        if mi is None:
            mi = get("maxIncrease", None)
        if mi is None:
            raise ValueError(f"SLO {metric!r} needs max_increase")
        return cls(metric=metric, max_increase=_parse_fraction(mi), quantile=get("quantile", None), relative=get("relative", None))


#: Words for what a latency SLO's samples measure.
LABEL_WORDS = {"latency": "latency", "ttfb": "time to first byte", "tpot": "time per output token"}


def slos_from_policy(slos: Any) -> list[SLO]:
    """Convert a policy's ``analysis.slos`` list (dicts or policy models); custom SLOs are skipped."""
    out = []
    for s in slos:
        metric = s.get("metric") if isinstance(s, dict) else getattr(s, "metric", None)
        if metric == "custom":
            continue
        out.append(SLO.from_dict(s))
    return out


def _parse_fraction(v: Any) -> float:
    if isinstance(v, str):
        t = v.strip()
        if t.endswith("%"):
            return float(t[:-1]) / 100.0
        return float(t)
    return float(v)


def _quantile_label(q: float) -> str:
    s = f"{q * 100:.4f}".rstrip("0").rstrip(".")
    return s
