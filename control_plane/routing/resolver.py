"""DNS names in policies -> the addresses Envoy receives over EDS, resolved by Weir.

Why Weir resolves instead of giving Envoy STRICT_DNS clusters: every version
stays one EDS cluster, so endpoint membership changes go out make-before-break
like any other EDS update and count toward per-service convergence; every
address is an endpoint of its own that per-endpoint weights (latency-aware
balancing) can address; and a name that does not resolve is something Weir
*knows*, so the rollout holds with that reason instead of Envoy silently
serving 503s. A headless Kubernetes Service is then just a name whose A
records are the pods.

Resolution runs in the loop's default executor (``getaddrinfo``), never on the
loop itself; names are refreshed every ``refresh_s``. A name that stops
resolving keeps its last good addresses (a DNS blip must not empty a version)
and is reported as failing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from typing import Callable, Iterable

from policies.endpoints import Endpoint

from ..tasks import cancel_and_wait

log = logging.getLogger("weir.resolver")

__all__ = ["EndpointResolver", "Resolution"]


@dataclass(frozen=True)
class Resolution:
    """What a name resolved to last, and whether the latest attempt failed."""

    addresses: tuple[str, ...]
    error: str | None
    at: float


class EndpointResolver:
    """Keeps every named endpoint's addresses fresh; ``expand`` turns policy endpoints into EDS endpoints."""

    def __init__(self, *, refresh_s: float = 5.0, on_change: Callable[[set[str]], None] | None = None,
                 family: int = socket.AF_UNSPEC):
        self.refresh_s = refresh_s
        self.on_change = on_change
        self.family = family
        self._names: dict[tuple[str, int], Resolution] = {}
        self._task: asyncio.Task | None = None

    # -- reading (pure, on the loop) -----------------------------------------------------------------
    def expand(self, endpoints: Iterable[Endpoint]) -> list[Endpoint]:
        """IP endpoints as they are; each named one as its known addresses (same port and weight)."""
        out: list[Endpoint] = []
        seen: set[tuple[str, int]] = set()
        for endpoint in endpoints:
            hosts = [endpoint.host] if not endpoint.is_name else list(self._resolution(endpoint).addresses)
            for host in hosts:
                if (host, endpoint.port) not in seen:
                    seen.add((host, endpoint.port))
                    out.append(Endpoint(host=host, port=endpoint.port, weight=endpoint.weight))
        return out

    def _resolution(self, endpoint: Endpoint) -> Resolution:
        return self._names.get((endpoint.host, endpoint.port), Resolution((), "not resolved yet", 0.0))

    def problems(self, endpoints: Iterable[Endpoint]) -> list[str]:
        """One sentence per named endpoint that has no address or whose latest lookup failed."""
        out = []
        for endpoint in endpoints:
            if not endpoint.is_name:
                continue
            res = self._resolution(endpoint)
            if not res.addresses:
                out.append(f"{endpoint.address} does not resolve ({res.error or 'no addresses'})")
        return out

    # -- resolving (off the loop) ---------------------------------------------------------------------
    def track(self, endpoints: Iterable[Endpoint]) -> list[tuple[str, int]]:
        """Start tracking the named endpoints; returns the ones never resolved so far."""
        new = []
        for endpoint in endpoints:
            key = (endpoint.host, endpoint.port)
            if endpoint.is_name and key not in self._names:
                self._names[key] = Resolution((), "not resolved yet", 0.0)
                new.append(key)
        return new

    async def resolve(self, keys: Iterable[tuple[str, int]] | None = None) -> set[str]:
        """Resolve the given (or every tracked) name now; returns the names whose addresses changed."""
        loop = asyncio.get_running_loop()
        keys = list(self._names) if keys is None else list(keys)
        changed: set[str] = set()

        async def one(key: tuple[str, int]) -> None:
            host, port = key
            before = self._names.get(key)
            try:
                infos = await loop.getaddrinfo(host, port, family=self.family, type=socket.SOCK_STREAM)
                addresses = tuple(sorted({info[4][0] for info in infos}))
                error = None if addresses else "no addresses"
            except (socket.gaierror, OSError) as err:
                addresses, error = (), (err.strerror or str(err))
            if not addresses and before is not None and before.addresses:
                addresses = before.addresses  # keep the last good answer through a failed lookup
            after = Resolution(addresses, error, time.time())
            self._names[key] = after
            if before is None or before.addresses != addresses:
                changed.add(host)
            if error and (before is None or before.error != error):
                log.warning("endpoint %s:%d: DNS lookup failed: %s", host, port, error)

        await asyncio.gather(*(one(k) for k in keys))
        return changed

    async def run(self) -> None:
        """Refresh every ``refresh_s``; tell ``on_change`` which names moved."""
        while True:
            await asyncio.sleep(self.refresh_s)
            if not self._names:
                continue
            changed = await self.resolve()
            if changed and self.on_change is not None:
                self.on_change(changed)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="weir-resolver")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
