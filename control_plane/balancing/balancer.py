"""The latency-aware balancer: per-replica estimates from the access log -> EDS endpoint weights.

For every service whose policy says ``loadBalancing.policy: latency-aware``
(programmed in Envoy as LEAST_REQUEST, which keeps steering by in-flight
requests between two updates), the balancer:

* reads every request's outcome as the access-log source ingests it (an entry
  listener: no queries, nothing pinned), per (cluster, endpoint), into a peak
  EWMA (:mod:`.estimator`); an error counts as a sample of
  ``error_penalty x`` the version's typical latency;
* optionally scrapes each replica's own queue gauge (:mod:`.queue`);
* every ``tick_s`` turns each version's estimates into weights (a floor keeps
  a slow or recovered replica measured) and hands them to the router's
  ``set_endpoint_weights`` - only when a weight moved by more than the
  hysteresis, and at most ``max_updates_per_second`` times per version.

Weights only move traffic between the replicas of one version (the route's
split is untouched), and endpoint weights are never part of a rollout's
convergence, so balancing cannot bias an analysis nor make a rollout wait.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from policies.model import LatencyAware

from ..tasks import cancel_and_wait
from .estimator import PeakEwma, weights_from_scores, worth_pushing
from .queue import QueueScraper

log = logging.getLogger("weir.balancer")

__all__ = ["BalancedService", "LatencyAwareBalancer"]

#: An error counts as a sample this many times the version's typical latency (at least ERROR_FLOOR_MS):
#: a replica that fails fast then scores far worse than any healthy one and sinks to the floor weight.
ERROR_PENALTY = 20.0
ERROR_FLOOR_MS = 1000.0


@dataclass(frozen=True)
class BalancedService:
    """One latency-aware service as the engine routes it now: its versions' endpoint addresses."""

    service: str
    settings: LatencyAware
    versions: Mapping[str, tuple[str, ...]]  # version -> ("ip:port", ...)


@dataclass
class _Version:
    estimates: dict[str, PeakEwma] = field(default_factory=dict)
    weights: dict[str, int] | None = None
    pushed_at: float = 0.0
    pushes: int = 0


class LatencyAwareBalancer:
    def __init__(self, router: Any, services: Callable[[], Iterable[BalancedService]], *,
                 tick_s: float = 0.25, clock: Callable[[], float] = time.time, tau_s: float = 5.0,
                 scraper: QueueScraper | None = None):
        self.router = router
        self.services = services
        self.tick_s = tick_s
        self.clock = clock
        self.tau_s = tau_s
        self.scraper = scraper or QueueScraper()
        self._versions: dict[str, _Version] = {}  # cluster -> estimates and last weights
        self._task: asyncio.Task | None = None

    # -- inputs ----------------------------------------------------------------------------------
    def on_entries(self, entries: Iterable) -> None:
        """Access-log entries (cluster, endpoint, start, latency_ms, code, error, traffic, route), as ingested."""
        for cluster, endpoint, start, latency, _code, error, traffic, _route in entries:
            if not endpoint or traffic == "shadow":
                continue
            state = self._versions.get(cluster)
            if state is None:
                continue  # not a latency-aware cluster (tick() registers those)
            estimate = state.estimates.get(endpoint)
            if estimate is None:
                estimate = state.estimates[endpoint] = PeakEwma(self.tau_s)
            if error:
                estimate.observe_error(self._penalty(state), start)
            else:
                estimate.observe(latency, start)

    @staticmethod
    def _penalty(state: _Version) -> float:
        typical = [e.value for e in state.estimates.values() if e.value is not None and e.samples > e.errors]
        base = statistics.median(typical) if typical else ERROR_FLOOR_MS
        return max(ERROR_PENALTY * base, ERROR_FLOOR_MS)

    # -- the loop ---------------------------------------------------------------------------------
    async def tick(self) -> int:
        """One round over every latency-aware version; returns the number of weight pushes."""
        now = self.clock()
        pushes = 0
        live: set[str] = set()
        scrape: list[tuple[str, str, LatencyAware]] = []
        for svc in self.services():
            for version, addresses in svc.versions.items():
                cluster = f"{svc.service}-{version}"
                live.add(cluster)
                state = self._versions.setdefault(cluster, _Version())
                for gone in set(state.estimates) - set(addresses):
                    del state.estimates[gone]
                if svc.settings.signal == "queue-depth":
                    scrape.extend((cluster, a, svc.settings) for a in addresses)
                scores = {}
                for address in addresses:
                    estimate = state.estimates.get(address)
                    score = estimate.value if estimate is not None else None
                    if svc.settings.signal == "queue-depth":
                        queued = self.scraper.value(address, svc.settings)
                        if queued is not None:
                            score = (score or 1.0) * (1.0 + queued)
                    scores[address] = score
                proposed = weights_from_scores(scores, min_share=svc.settings.min_share)
                interval = 1.0 / svc.settings.max_updates_per_second
                if now - state.pushed_at < interval or not worth_pushing(state.weights, proposed):
                    continue
                await self.router.set_endpoint_weights(svc.service, version, proposed)
                state.weights, state.pushed_at = proposed, now
                state.pushes += 1
                pushes += 1
        for cluster in set(self._versions) - live:
            del self._versions[cluster]
        if scrape:
            await self.scraper.scrape(scrape)
        return pushes

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("latency-aware balancing round failed")
            await asyncio.sleep(self.tick_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="weir-balancer")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.scraper.close()

    # -- reading (API, describe, metrics) -----------------------------------------------------------
    def snapshot(self, service: str | None = None) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """{service: {version: [{endpoint, weight, estimate_ms, samples, errors, queue}]}} as of now."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for svc in self.services():
            if service is not None and svc.service != service:
                continue
            for version, addresses in svc.versions.items():
                state = self._versions.get(f"{svc.service}-{version}", _Version())
                rows = []
                for address in addresses:
                    estimate = state.estimates.get(address)
                    rows.append({
                        "endpoint": address,
                        "weight": (state.weights or {}).get(address),
                        "estimate_ms": round(estimate.value, 3) if estimate and estimate.value is not None else None,
                        "samples": estimate.samples if estimate else 0,
                        "errors": estimate.errors if estimate else 0,
                        "queue": self.scraper.value(address, svc.settings) if svc.settings.signal == "queue-depth" else None,
                    })
                out.setdefault(svc.service, {})[version] = rows
        return out
