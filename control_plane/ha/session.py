"""A replica's etcd session: one lease, kept alive, that says "this replica is up".

Everything a replica owns in etcd hangs on this lease: the leadership key
(while it leads) and its proxies' convergence report. When the replica dies,
or is paused or cut off for longer than the TTL, etcd deletes those keys by
itself and the other replicas see it.

The replica judges its own lease by its monotonic clock: a lease granted or
refreshed by a keep-alive *sent* at time t with TTL T cannot outlive t + T on
etcd's side either (etcd counts from when it received the keep-alive). So
``valid()`` turning false is always no later than etcd's expiry, and the
leader stops acting before another replica can be elected. Fencing in the
store covers what is already in flight.

After a loss the session first tries to refresh the old lease (etcd extends
every lease when it elects a new leader, so after a quorum outage the lease
usually survives and the same replica can lead again at once) and grants a
new one only when the old one has expired.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from ..etcd.client import EtcdClient, EtcdError, EtcdUnavailable
from ..tasks import cancel_and_wait

log = logging.getLogger("weir.ha")

__all__ = ["Session"]


class Session:
    """One lease of ``ttl_s`` seconds, refreshed every ``ttl_s / 3`` (see the module docstring)."""

    def __init__(self, client: EtcdClient, ttl_s: int = 3, *, clock: Callable[[], float] = time.monotonic):
        if ttl_s < 2:
            raise ValueError(f"--lease-ttl must be at least 2 seconds (got {ttl_s}): etcd's minimum is about 1.5 s")
        self.client = client
        self.ttl_s = ttl_s
        self.clock = clock
        self.lease = 0  # 0 while the replica has no valid lease
        self._last_lease = 0
        self._valid_until = 0.0
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.last_error: str | None = None

    # -- state -----------------------------------------------------------------------------
    def valid(self) -> bool:
        return self.lease != 0 and self.clock() < self._valid_until

    def _set(self, lease: int) -> None:
        if lease != self.lease:
            self.lease = lease
            if lease:
                self._last_lease = lease
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def wait_lease(self) -> int:
        """A valid lease (waits while the replica has none)."""
        while not self.valid():
            await self._changed.wait()
        return self.lease

    async def wait_lost(self, lease: int) -> None:
        """Returns once ``lease`` is no longer this replica's valid lease."""
        while self.lease == lease and self.valid():
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), max(0.05, self._valid_until - self.clock()))
            except asyncio.TimeoutError:
                pass
        if self.lease == lease:
            self._set(0)

    # -- running ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="weir-ha-session")

    async def _refresh(self, lease: int) -> bool:
        sent = self.clock()
        ttl = await self.client.lease_keepalive(lease, timeout_s=max(0.5, self.ttl_s / 3))
        if ttl <= 0:
            return False
        self._valid_until = sent + ttl
        return True

    async def _acquire(self) -> None:
        if self._last_lease:
            if await self._refresh(self._last_lease):
                log.info("lease %x survived the outage: keeping it", self._last_lease)
                self._set(self._last_lease)
                return
            self._last_lease = 0
        sent = self.clock()
        lease = await self.client.lease_grant(self.ttl_s)
        self._valid_until = sent + self.ttl_s
        log.info("granted lease %x (TTL %d s)", lease, self.ttl_s)
        self._set(lease)

    async def _run(self) -> None:
        interval = self.ttl_s / 3
        while True:
            try:
                if not self.valid():
                    if self.lease:
                        log.warning("lease %x lapsed (last error: %s)", self.lease, self.last_error)
                        self._set(0)
                    await self._acquire()
                    self.last_error = None
                else:
                    if not await self._refresh(self.lease):
                        log.warning("lease %x expired on etcd", self.lease)
                        self._last_lease = 0
                        self._set(0)
                        continue
                    self.last_error = None
            except (EtcdUnavailable, EtcdError) as err:
                self.last_error = str(err)
                if self.lease and not self.valid():
                    log.warning("lease %x lapsed: %s", self.lease, err)
                    self._set(0)
            await asyncio.sleep(min(interval, max(0.05, self._valid_until - self.clock())) if self.valid() else 0.25)

    async def close(self, *, revoke: bool = True) -> None:
        """Stop refreshing; with ``revoke`` delete the lease (and every key on it) so others take over now."""
        await cancel_and_wait(self._task)
        self._task = None
        lease = self.lease
        self._set(0)
        if revoke and lease:
            try:
                await self.client.lease_revoke(lease)
            except EtcdUnavailable as err:
                log.warning("could not revoke lease %x: %s", lease, err)
