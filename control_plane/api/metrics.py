"""Prometheus metrics for ``GET /metrics``, written by hand (text exposition format 0.0.4).

Why by hand: a handful of gauges, one counter family and one histogram do not
justify a dependency, and the state they report already lives elsewhere
(rollouts in the store, proxies in the StatusRegistry). Only what exists
nowhere else is kept here: verdict counts and the xDS convergence-time
histogram, both fed by the engine (Metrics is its ``observer``). Counters restart at zero with the
process, as Prometheus expects.

Exposed families:

- ``weir_rollout_phase{rollout,service,phase}`` gauge, 1 for the current phase, 0 for the others
- ``weir_rollout_canary_weight{rollout}`` gauge, % of live traffic on the canary
- ``weir_rollout_step{rollout}`` gauge, current step index (-1 before the first step / shadowing)
- ``weir_verdicts_total{rollout,outcome}`` counter, every verdict the analyzer returned
- ``weir_xds_convergence_seconds`` histogram, publish -> every proxy ACKed
- ``weir_xds_nacks_total{type}`` counter, responses proxies rejected, by resource type
- ``weir_xds_connected_proxies`` gauge
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from typing import Iterable, Mapping

from ..rollouts.model import Event, Phase, Rollout

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Seconds; xDS convergence is usually sub-second on a LAN, slow proxies take tens of seconds.
CONVERGENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def escape_label(value: str) -> str:
    """Label values escape backslash, double quote and newline (exposition format rules)."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items()) + "}"


class _Family:
    def __init__(self, name: str, kind: str, help_text: str):
        self.name, self.kind, self.help = name, kind, help_text
        self.samples: list[tuple[str, dict[str, str], float]] = []

    def add(self, value: float, suffix: str = "", **labels: str) -> None:
        self.samples.append((suffix, labels, value))

    def render(self) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        out += [f"{self.name}{suffix}{_labels(labels)} {format_value(v)}" for suffix, labels, v in self.samples]
        return out


class Metrics:
    """Counters that live only in this process, and the renderer of the whole exposition."""

    def __init__(self, buckets: Iterable[float] = CONVERGENCE_BUCKETS):
        self._lock = threading.Lock()  # observe_* may be called from another thread
        self.verdicts: Counter[tuple[str, str]] = Counter()
        self.buckets = tuple(sorted(buckets))
        self._bucket_counts = [0] * len(self.buckets)
        self._convergence_sum = 0.0
        self._convergence_count = 0

    # -- inputs -------------------------------------------------------------------------------
    def observe_event(self, event: Event) -> None:
        """Stored events need no counter of their own: the store serves them."""

    def observe_verdict(self, rollout: str, outcome: str) -> None:
        """One verdict of the analyzer (inconclusive ones included)."""
        with self._lock:
            self.verdicts[(rollout, outcome)] += 1

    def observe_convergence(self, seconds: float) -> None:
        """One publish took `seconds` until every proxy of its group ACKed it."""
        if seconds < 0 or math.isnan(seconds):
            return
        with self._lock:
            self._convergence_sum += seconds
            self._convergence_count += 1
            for i, bound in enumerate(self.buckets):
                if seconds <= bound:
                    self._bucket_counts[i] += 1

    # -- output -------------------------------------------------------------------------------
    def render(self, rollouts: Iterable[Rollout], registry=None) -> str:
        """The exposition text for the given rollouts and (optionally) a StatusRegistry."""
        rollouts = list(rollouts)
        phase = _Family("weir_rollout_phase", "gauge", "1 for the phase each rollout is in, 0 for the others.")
        weight = _Family("weir_rollout_canary_weight", "gauge", "Percent of live traffic sent to the canary.")
        step = _Family("weir_rollout_step", "gauge",
                       "Current step index (-1 before the first step or while shadowing).")
        for r in rollouts:
            for p in Phase:
                phase.add(1 if r.phase is p else 0, rollout=r.name, service=r.service, phase=p.value)
            weight.add(r.weight, rollout=r.name)
            step.add(r.step, rollout=r.name)
        verdicts = _Family("weir_verdicts_total", "counter",
                           "Verdicts returned by the analyzer, by outcome.")
        convergence = _Family(
            "weir_xds_convergence_seconds", "histogram", "Time from publishing routing until every proxy ACKed it."
        )
        with self._lock:
            for (name, outcome), count in sorted(self.verdicts.items()):
                verdicts.add(count, rollout=name, outcome=outcome)
            for bound, count in zip(self.buckets, self._bucket_counts):
                convergence.add(count, "_bucket", le=format_value(float(bound)))
            convergence.add(self._convergence_count, "_bucket", le="+Inf")
            convergence.add(self._convergence_sum, "_sum")
            convergence.add(self._convergence_count, "_count")
        families = [phase, weight, step, verdicts, convergence]
        if registry is not None:
            from xds.snapshot import SHORT_NAMES

            nacks = _Family("weir_xds_nacks_total", "counter",
                            "xDS responses rejected (NACKed) by proxies, by resource type.")
            for type_url, count in sorted(registry.nack_total.items()):
                nacks.add(count, type=SHORT_NAMES.get(type_url, type_url))
            connected = _Family("weir_xds_connected_proxies", "gauge", "Proxies with an open xDS stream.")
            connected.add(len(registry))
            families += [nacks, connected]
        lines: list[str] = []
        for family in families:
            lines += family.render()
        return "\n".join(lines) + "\n"


__all__ = ["CONTENT_TYPE", "CONVERGENCE_BUCKETS", "Metrics", "escape_label"]
