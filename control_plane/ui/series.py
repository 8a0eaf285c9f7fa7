"""Per-version request, error and latency series of one rollout: what the dashboard and ``weir report`` plot.

The counts come from the access-log source (every request, by its own start
time), the latency and time-to-first-byte quantiles from the samples it keeps;
the weights from the rollout's stored events; the SLO statistics from
:class:`~.history.VerdictHistory`. A policy judged from Envoy's stats or
Prometheus has no per-request data here: its series are empty and ``source``
says so (Grafana on ``/metrics``, or on Prometheus itself, plots those).

Copying the window out of the source is quick numpy work on the event loop
(the source is not thread-safe); binning and quantiles run in a thread. One
answer per rollout and second is cached, so many open dashboards cost one.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Callable

import numpy as np

from .evidence import slo_progress
from .history import VerdictHistory

__all__ = ["SeriesBuilder", "nice_bin"]

QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}
_NICE = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)


def nice_bin(span_s: float, max_bins: int) -> float:
    """The smallest of 1 s, 2 s, 5 s, ... 1 h that cuts ``span_s`` into at most ``max_bins`` bins."""
    want = span_s / max(1, max_bins)
    return float(next((b for b in _NICE if b >= want), math.ceil(want / 3600) * 3600))


def _quantiles(t: np.ndarray, values: np.ndarray, t0: float, bin_s: float, n: int) -> dict[str, list]:
    out = {name: [None] * n for name in QUANTILES}
    if values.size == 0:
        return out
    good = np.isfinite(values) & (values >= 0)
    t, values = t[good], values[good]
    idx = np.floor((t - t0) / bin_s).astype(np.int64)
    inside = (idx >= 0) & (idx < n)
    idx, values = idx[inside], values[inside]
    order = np.argsort(idx, kind="stable")
    idx, values = idx[order], values[order]
    bounds = np.searchsorted(idx, np.arange(n + 1))
    for i in range(n):
        chunk = values[bounds[i]:bounds[i + 1]]
        if chunk.size:
            qs = np.quantile(chunk, list(QUANTILES.values()))
            for name, q in zip(QUANTILES, qs):
                out[name][i] = round(float(q), 3)
    return out


def _bin(window, t0: float, bin_s: float, n: int) -> dict[str, Any]:
    """Counts and quantiles per bin of one arm's window (pure numpy; run in a thread)."""
    idx = np.floor((window.seconds - t0) / bin_s).astype(np.int64)
    inside = (idx >= 0) & (idx < n)
    requests = np.bincount(idx[inside], weights=window.requests[inside], minlength=n)[:n] if inside.any() else np.zeros(n)
    errors = np.bincount(idx[inside], weights=window.errors[inside], minlength=n)[:n] if inside.any() else np.zeros(n)
    ttfb = _quantiles(window.ttfb_t, window.ttfb_ms, t0, bin_s, n) if window.ttfb_ms.size else None
    return {
        "requests": [int(x) for x in requests],
        "errors": [int(x) for x in errors],
        "latency_ms": _quantiles(window.latency_t, window.latency_ms, t0, bin_s, n),
        "ttfb_ms": ttfb,
    }


class SeriesBuilder:
    """Builds (and briefly caches) ``GET /v1/rollouts/{name}/series`` answers."""

    def __init__(self, engine: Any, access_log: Any | None, history: VerdictHistory | None, *,
                 max_bins: int = 120, clock: Callable[[], float] = time.time,
                 version: Callable[[], int] = lambda: 0) -> None:
        self.engine = engine
        self.access_log = access_log
        self.history = history
        self.max_bins = max_bins
        self.clock = clock
        self.version = version  # the event hub's count: a new event makes a cached answer stale
        self._cache: dict[str, tuple[tuple[int, int], dict[str, Any]]] = {}

    async def build(self, name: str) -> dict[str, Any]:
        now = self.clock()
        key = (int(now), self.version())
        cached = self._cache.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        rollout = await self.engine.get(name)  # RolloutNotFound: 404
        events = []
        after = 0
        while True:
            page = await self.engine.store.events(name, after)
            events += page
            if len(page) < 1000:
                break
            after = page[-1].seq
        start = rollout.created_at
        end = now if rollout.active else max(rollout.updated_at, start + 1.0)
        bin_s = nice_bin(end - start, self.max_bins)
        t0 = math.floor(start / bin_s) * bin_s
        n = max(1, math.ceil((end - t0) / bin_s))
        weights = [{"at": e.at, "weight": e.weight, "step": e.step, "phase": e.phase_to, "kind": e.kind}
                   for e in events if e.at >= start - 1e-6]
        arms = [("stable", rollout.stable_version, "live"), ("canary", rollout.canary_version, "live")]
        if rollout.mirror or any(e.phase_to == "Shadowing" for e in events):
            arms.append(("shadow", rollout.canary_version, "shadow"))
        windows = []
        if self.access_log is not None:
            for role, version, traffic in arms:
                windows.append((role, version, self.access_log.window(rollout.service, version, t0, None,
                                                                       traffic=traffic)))
        binned = await asyncio.to_thread(lambda: [(role, version, _bin(w, t0, bin_s, n)) for role, version, w in windows])
        latest = self.engine.latest_verdicts.get(name) or rollout.verdict
        current = {e["slo"]: e for e in slo_progress(latest)}
        slos = self.history.slos(name) if self.history is not None else []
        for series in slos:
            series["now"] = current.get(series["slo"])
        known = {s["slo"] for s in slos}
        slos += [{"slo": slo, "description": e["description"], "at": [], "step": [], "e_fail": [], "e_pass": [],
                  "fail_threshold": e["fail_threshold"], "pass_threshold": e["pass_threshold"], "now": e}
                 for slo, e in current.items() if slo not in known]
        answer = {
            "rollout": name,
            "service": rollout.service,
            "source": "access-log" if self.access_log is not None else None,
            "bin_s": bin_s,
            "start": start,
            "end": end,
            "t": [t0 + i * bin_s for i in range(n)],
            "versions": [{"version": version, "role": role, **data} for role, version, data in binned],
            "weights": weights,
            "slos": slos,
            "verdict": latest,
            "verdict_at": self.history.last_at(name) if self.history is not None else None,
        }
        self._cache[name] = (key, answer)
        if len(self._cache) > 256:
            self._cache.pop(next(iter(self._cache)))
        return answer
