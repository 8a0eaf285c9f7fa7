"""What the next request experiences: delays, injected errors, regression, readiness, counters.

Every protocol front end (OIP REST, OIP gRPC, OpenAI) asks `Behaviour.admit()`
for a `Plan` when a request arrives and reports how it ended with `finish()`,
so knobs mean the same thing on every protocol and the regression's request
count spans all of them. Each admitted request draws exactly three numbers
from the seeded RNG whatever the knobs are, so a run is reproducible from the
seed and the order of arrivals alone.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import random
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from devtools.model_servers.knobs import Knobs

KINDS = ("oip_rest", "oip_grpc", "chat", "completion")


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """One request's fate, fixed at admission."""

    index: int  # 1-based arrival number among inference requests since the regression was armed
    regressed: bool
    fail: bool  # inject an error (HTTP error_status or gRPC grpc_error_code, by protocol)
    latency_s: float  # inference calls: delay before the answer
    ttfc_s: float  # chat/completions: delay before the first token
    token_s: float  # chat/completions: delay between tokens
    knobs: Knobs  # the knobs in force at admission


@dataclasses.dataclass(slots=True)
class KindCounters:
    requests: int = 0
    errors: int = 0
    tokens: int = 0
    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "tokens": self.tokens,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=lambda kv: str(kv[0]))}}


class Limiter:
    """A FIFO concurrency bound whose limit can change at run time (0 = unbounded).

    Counts requests waiting for a slot and being served: the queue-depth
    gauges vLLM and Triton export, which a latency-aware balancer reads.
    """

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self.running = 0
        self._waiters: collections.deque[asyncio.Future] = collections.deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self._wake()

    def _free(self) -> bool:
        return self.limit <= 0 or self.running < self.limit

    def _wake(self) -> None:
        while self._waiters and self._free():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.running += 1
                waiter.set_result(None)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._free() and not self._waiters:
            self.running += 1
        else:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self.running -= 1  # granted and cancelled in the same tick: give the slot back
                    self._wake()
                else:
                    try:
                        self._waiters.remove(waiter)
                    except ValueError:
                        pass
                raise
        try:
            yield
        finally:
            self.running -= 1
            self._wake()


class Behaviour:
    """The shared state behind every front end of one demo model server."""

    def __init__(self, knobs: Knobs) -> None:
        self.knobs = knobs
        self.started_unix = time.time()
        self.started = time.monotonic()
        self.limiter = Limiter(knobs.max_concurrency)
        self.counters: dict[str, KindCounters] = {kind: KindCounters() for kind in KINDS}
        self._rng = random.Random(knobs.seed)
        self._ready_at = self.started + knobs.ready_after_s
        self._arm_regression()
        self.total_requests = 0

    def _arm_regression(self) -> None:
        self.since_armed = 0
        self.regression_onset_unix: float | None = None
        self.regression_onset_request: int | None = None

    # -- knobs -------------------------------------------------------------

    def set_knobs(self, changes: Mapping[str, Any]) -> Knobs:
        """Apply `changes` atomically (all or nothing); returns the knobs now in force.

        Setting `seed` restarts the RNG; `regression_after` re-arms the
        regression (its N counts from now); `ready_after_s` restarts the
        loading clock from now.
        """
        new = self.knobs.changed(changes)
        self.knobs = new
        if "seed" in changes:
            self._rng = random.Random(new.seed)
        if "regression_after" in changes:
            self._arm_regression()
        if "ready_after_s" in changes:
            self._ready_at = time.monotonic() + new.ready_after_s
        if "max_concurrency" in changes:
            self.limiter.set_limit(new.max_concurrency)
        return new

    # -- readiness ---------------------------------------------------------

    @property
    def model_ready(self) -> bool:
        return time.monotonic() >= self._ready_at

    @property
    def server_ready(self) -> bool:
        return self.model_ready or self.knobs.server_ready_without_model

    def knows_model(self, name: str, version: str = "") -> bool:
        """True for the served model's name (and version, when one is given)."""
        return name == self.knobs.model_name and version in ("", self.knobs.model_version)

    # -- requests ----------------------------------------------------------

    def admit(self, kind: str, grpc: bool = False) -> Plan:
        """Count an arriving inference request and fix its delays and whether it fails."""
        k = self.knobs
        self.total_requests += 1
        self.since_armed += 1
        self.counters[kind].requests += 1
        regressed = k.regression_after >= 0 and self.since_armed > k.regression_after
        if regressed and self.regression_onset_unix is None:
            self.regression_onset_unix = time.time()
            self.regression_onset_request = self.total_requests
        u, z_latency, z_ttfc = self._rng.random(), self._rng.gauss(0.0, 1.0), self._rng.gauss(0.0, 1.0)
        rate = k.grpc_error_rate if grpc else k.error_rate
        latency = _sample_ms(k.latency_ms, k.latency_sigma, z_latency) / 1000.0
        ttfc = _sample_ms(k.ttfc_ms, k.ttfc_sigma, z_ttfc) / 1000.0
        token = k.token_ms / 1000.0
        if regressed:
            rate = min(1.0, rate + k.regression_error_rate)
            latency *= k.regression_latency_factor
            ttfc *= k.regression_ttfc_factor
            token *= k.regression_token_factor
        return Plan(index=self.since_armed, regressed=regressed, fail=u < rate,
                    latency_s=latency, ttfc_s=ttfc, token_s=token, knobs=k)

    def finish(self, kind: str, status: int | str, ok: bool, tokens: int = 0) -> None:
        """Record how a request ended (HTTP status or gRPC code name) and the tokens it produced."""
        c = self.counters[kind]
        c.statuses[status] += 1
        c.tokens += tokens
        if not ok:
            c.errors += 1

    def add_tokens(self, kind: str, n: int) -> None:
        self.counters[kind].tokens += n

    def stats(self) -> dict[str, Any]:
        k = self.knobs
        return {
            "model_name": k.model_name,
            "model_version": k.model_version,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "model_ready": self.model_ready,
            "server_ready": self.server_ready,
            "requests": self.total_requests,
            "in_flight": self.limiter.running + self.limiter.waiting,
            "running": self.limiter.running,
            "waiting": self.limiter.waiting,
            "kinds": {kind: c.as_dict() for kind, c in self.counters.items()},
            "regression": {
                "after": k.regression_after,
                "requests_since_armed": self.since_armed,
                "started": self.regression_onset_unix is not None,
                "onset_unix": self.regression_onset_unix,
                "onset_request": self.regression_onset_request,
            },
        }


def _sample_ms(median_ms: float, sigma: float, z: float) -> float:
    """Fixed `median_ms`, or lognormal with that median when sigma > 0."""
    if median_ms <= 0:
        return 0.0
    return median_ms * math.exp(sigma * z) if sigma > 0 else median_ms
