"""Leadership: exactly one replica drives the rollouts, the one whose lease holds the leadership key.

A replica campaigns by creating the key ``<prefix>/leader`` on its session's
lease in a transaction that succeeds only if the key does not exist; the
others watch the key and campaign again when it is deleted (the leader's
lease expired or was revoked). While it leads, the replica's store carries
the fence (key, lease): every write compares the key's lease in the same
transaction, so a deposed leader that has not noticed yet cannot write.

The engine is not aware of any of this: on election the leadership starts
it (it resumes every stored rollout at its step, with its judge state), and
stops it when the lease is lost. That keeps leadership out of the engine's
code paths.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable

from ..etcd.client import EtcdClient, EtcdError, EtcdUnavailable, absent, delete_op, get_op, lease_is, pb, put_op
from ..store.etcd import EtcdStore, Fence
from ..tasks import cancel_and_wait
from .session import Session

log = logging.getLogger("weir.ha")

__all__ = ["Leadership"]


class Leadership:
    """Campaigns for, holds and gives up the leadership of one Weir installation (one etcd prefix)."""

    def __init__(
        self,
        client: EtcdClient,
        session: Session,
        store: EtcdStore,
        identity: dict[str, Any],
        *,
        on_elected: Callable[[], Awaitable[None]],
        on_deposed: Callable[[], Awaitable[None]],
    ):
        self.client = client
        self.session = session
        self.store = store
        self.key = store.key("leader")
        self.identity = dict(identity)
        self.on_elected = on_elected
        self.on_deposed = on_deposed
        self.is_leader = False
        self.elected_at: float | None = None
        self.terms = 0  # how many times this replica was elected
        self._task: asyncio.Task | None = None

    async def leader(self) -> dict[str, Any] | None:
        """Who leads now (the leader's identity: replica, api, xds), or None."""
        kv = await self.client.get(self.key)
        if kv is None:
            return None
        return {**json.loads(kv.value), "lease": f"{kv.lease:x}"}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="weir-ha-leadership")

    async def _campaign(self, lease: int) -> bool:
        """Try to take the key on ``lease``; True once it is ours, False when the lease was lost first."""
        while self.session.lease == lease and self.session.valid():
            value = json.dumps({**self.identity, "since": time.time()}).encode()
            resp = await self.client.txn([absent(self.key)], [put_op(self.key, value, lease)], [get_op(self.key)])
            if resp.succeeded:
                return True
            holder = resp.responses[0].response_range.kvs
            if holder and holder[0].lease == lease:
                return True  # ours already (the same lease survived an outage)
            await self._wait_deleted(lease, resp.header.revision + 1)
        return False

    async def _wait_deleted(self, lease: int, revision: int) -> None:
        """Until the key is deleted, or our lease is lost, or a watch breaks (then the caller looks again)."""
        async def deleted() -> None:
            async for resp in self.client.watch(self.key, start_revision=revision):
                if any(e.type == pb.Event.DELETE for e in resp.events):
                    return

        watch = asyncio.ensure_future(deleted())
        lost = asyncio.ensure_future(self.session.wait_lost(lease))
        try:
            done, _ = await asyncio.wait({watch, lost}, return_when=asyncio.FIRST_COMPLETED)
            if watch in done:
                watch.result()  # raises what broke the watch
        finally:
            for task in (watch, lost):
                task.cancel()
            await asyncio.gather(watch, lost, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                lease = await self.session.wait_lease()
                if not await self._campaign(lease):
                    continue
                await self._lead(lease)
            except asyncio.CancelledError:
                raise
            except (EtcdUnavailable, EtcdError) as err:
                log.warning("leadership: %s; trying again", err)
                await asyncio.sleep(0.25)
            except Exception:
                log.exception("leadership: unexpected error; trying again")
                await asyncio.sleep(0.5)

    async def _lead(self, lease: int) -> None:
        self.store.fence = Fence(self.key, lease)
        self.is_leader = True
        self.elected_at = time.time()
        self.terms += 1
        log.info("elected leader (lease %x): driving the rollouts", lease)
        try:
            try:
                await self.on_elected()
            except Exception:
                log.exception("leadership: starting the engine failed; stepping down")
                await self._give_up(lease)
                return
            await self.session.wait_lost(lease)
            log.warning("lost the leadership (lease %x lapsed): holding every rollout", lease)
        finally:
            await self._step_down()

    async def _step_down(self) -> None:
        if not self.is_leader:
            return
        self.store.fence = None
        self.is_leader = False
        self.elected_at = None
        try:
            await self.on_deposed()
        except Exception:
            log.exception("leadership: stopping the engine failed")

    async def _give_up(self, lease: int) -> None:
        """Delete the key (if still ours) so another replica can lead at once."""
        try:
            await self.client.txn([lease_is(self.key, lease)], [delete_op(self.key)])
        except EtcdUnavailable as err:
            log.warning("could not release the leadership key: %s", err)
        await asyncio.sleep(1.0)  # let another replica win before campaigning again

    async def stop(self) -> None:
        """Stop campaigning; a leader stops its engine and releases the key (handover without waiting for the TTL)."""
        await cancel_and_wait(self._task)
        self._task = None
        lease = self.store.fence.lease if self.store.fence is not None else self.session.lease
        await self._step_down()
        if lease:
            try:
                await self.client.txn([lease_is(self.key, lease)], [delete_op(self.key)])
            except EtcdUnavailable:
                pass
