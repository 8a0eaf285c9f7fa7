"""What every replica does, leader or not: serve the shared routing, report its proxies.

:class:`RoutingFollower` watches the routing document the leader publishes
(:mod:`control_plane.routing.fleet`) and applies it to this replica's own
:class:`~control_plane.routing.xds_router.XdsRouter`, so the Envoys connected
here get the same resources (same content hashes, same versions) as those on
any other replica, and one that moves between replicas sees no change.
When etcd is unreachable the follower keeps serving the last routing it had.

:class:`ConvergenceReporter` writes, per service, whether this replica's
proxies run the published revision (``<prefix>/convergence/<replica>``, on
the replica's lease, so a dead replica's report disappears with it). It
writes when something changed: a new routing, a proxy that connected, left,
converged or NACKed (:class:`ObservedRegistry`), and at least every second.
Beside it, on the same lease, it keeps the node ids of this replica's proxies
(``<prefix>/proxies/<replica>``, written only when the set changes, at most
every ``nodes_every_s``): the leader's access-log coverage learns from
:class:`FleetProxies` which proxies other replicas serve, and so whose
relayed access logs it must hold (:mod:`control_plane.ha.relay`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from xds.cache import DEFAULT_GROUP
from xds.status import NackRecord, ProxyStatus, StatusRegistry

from ..etcd.client import EtcdClient, EtcdError, EtcdUnavailable, pb, prefix_end
from ..routing.fleet import decode_desired
from ..routing.protocol import ServiceState
from ..routing.xds_router import XdsRouter
from .session import Session

log = logging.getLogger("weir.ha")

__all__ = ["ConvergenceReporter", "FleetProxies", "KeyWatch", "ObservedRegistry", "RoutingFollower"]

#: Proxy names a report carries per service (the rest are counted).
_NAMED = 20


class ObservedRegistry(StatusRegistry):
    """A status registry that sets :attr:`changed` whenever a proxy's convergence may have changed."""

    def __init__(self, history: int = 1000):
        super().__init__(history)
        self.changed = asyncio.Event()

    def connect(self, proxy: ProxyStatus, group: str) -> None:
        super().connect(proxy, group)
        self.changed.set()

    def disconnect(self, proxy: ProxyStatus) -> None:
        super().disconnect(proxy)
        self.changed.set()

    def move(self, proxy: ProxyStatus, group: str) -> None:
        super().move(proxy, group)
        self.changed.set()

    def set_converged(self, proxy: ProxyStatus, version: str | None) -> None:
        super().set_converged(proxy, version)
        self.changed.set()

    def record_nack(self, proxy: ProxyStatus, nack: NackRecord) -> None:
        super().record_nack(proxy, nack)
        self.changed.set()


class RoutingFollower:
    """Serves the leader's published routing from this replica (see the module docstring)."""

    def __init__(self, client: EtcdClient, key: bytes, router: XdsRouter, on_applied=None):
        self.client = client
        self.key = key
        self.router = router
        self.on_applied = on_applied
        self.desired: dict[str, ServiceState] = {}
        self.revision = 0  # the etcd revision of the document served now
        self.applied_at: float | None = None
        self.error: str | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="weir-ha-routing")

    async def _apply(self, kv: pb.KeyValue) -> None:
        if kv.mod_revision <= self.revision:
            return
        desired = decode_desired(kv.value, kv.mod_revision)
        await self.router.apply(desired)
        self.desired, self.revision, self.applied_at = desired, kv.mod_revision, time.time()
        if self.on_applied is not None:
            self.on_applied()

    async def _run(self) -> None:
        while True:
            try:
                resp = await self.client.range(self.key)
                if resp.kvs:
                    await self._apply(resp.kvs[0])
                self.error = None
                async for watched in self.client.watch(self.key, start_revision=resp.header.revision + 1):
                    for event in watched.events:
                        if event.type == pb.Event.PUT:
                            await self._apply(event.kv)
            except asyncio.CancelledError:
                raise
            except (EtcdUnavailable, EtcdError) as err:
                self.error = str(err)
                log.warning("routing watch: %s; serving the last routing (etcd revision %d)", err, self.revision)
                await asyncio.sleep(0.5)
            except Exception as err:  # an invalid document: keep what is served, say why
                self.error = f"{type(err).__name__}: {err}"
                log.exception("routing document at etcd revision could not be applied; serving the last one")
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class ConvergenceReporter:
    """Writes this replica's per-service convergence to etcd (see the module docstring)."""

    def __init__(self, client: EtcdClient, session: Session, key: bytes, replica: str, follower: RoutingFollower,
                 router: XdsRouter, registry: ObservedRegistry, *, debounce_s: float = 0.05, every_s: float = 1.0,
                 nodes_key: bytes | None = None, nodes_every_s: float = 0.5):
        self.nodes_key = nodes_key
        self.nodes_every_s = nodes_every_s
        self.client = client
        self.session = session
        self.key = key
        self.replica = replica
        self.follower = follower
        self.router = router
        self.registry = registry
        self.debounce_s = debounce_s
        self.every_s = every_s
        self._task: asyncio.Task | None = None
        follower.on_applied = registry.changed.set

    def report(self) -> dict[str, Any]:
        services = {}
        for name, state in self.follower.desired.items():
            status = self.router.status_now(name, state.revision)
            proxies = self.registry.proxies() if state.group == DEFAULT_GROUP else self.registry.proxies(state.group)
            # A few names and the count: a report stays small however many proxies lag during a push.
            services[name] = {"revision": state.revision, "group": state.group, "state": status.state,
                              "detail": status.detail, "waiting_on": list(status.waiting_on[:_NAMED]),
                              "waiting": len(status.waiting_on), "error": status.error, "proxies": len(proxies)}
        return {"replica": self.replica, "routing_revision": self.follower.revision, "services": services}

    def nodes(self) -> list[str]:
        return sorted({p.node_id for p in self.registry.proxies()})

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="weir-ha-convergence")

    async def _put_nodes(self, lease: int, state: dict[str, Any]) -> None:
        """The node ids of this replica's proxies, when they changed (at most every ``nodes_every_s``)."""
        nodes = self.nodes()
        if (nodes, lease) == state.get("last") or time.monotonic() - state.get("at", 0.0) < self.nodes_every_s:
            if (nodes, lease) != state.get("last"):
                self.registry.changed.set()  # not yet: the next round writes them
            return
        await self.client.put(self.nodes_key, json.dumps({"replica": self.replica, "nodes": nodes}).encode(),
                              lease=lease)
        state["last"], state["at"] = (nodes, lease), time.monotonic()

    async def _run(self) -> None:
        last: dict[str, Any] | None = None
        last_lease = 0
        nodes_state: dict[str, Any] = {}
        changed = self.registry.changed
        while True:
            try:
                await asyncio.wait_for(changed.wait(), self.every_s)
            except asyncio.TimeoutError:
                pass
            await asyncio.sleep(self.debounce_s)  # one write for a burst of ACKs
            changed.clear()
            lease = self.session.lease
            if not lease:
                continue
            report = self.report()
            try:
                if self.nodes_key is not None:
                    await self._put_nodes(lease, nodes_state)
                if report == last and lease == last_lease:
                    continue
                await self.client.put(self.key, json.dumps({**report, "at": time.time()}).encode(), lease=lease)
                last, last_lease = report, lease
            except (EtcdUnavailable, EtcdError) as err:
                log.warning("convergence report: %s", err)
                changed.set()
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class KeyWatch:
    """A view of one key (or a prefix, with ``range_end``) kept current: read it, then apply each change.

    A broken watch is read again from scratch; while etcd is unreachable the view stays as it was.
    Subclasses say what a full read (:meth:`reset`) and one event (:meth:`changed`) mean.
    """

    task_name = "weir-ha-watch"

    def __init__(self, client: EtcdClient, key: bytes, range_end: bytes = b""):
        self.client = client
        self.key = key
        self.range_end = range_end
        self._task: asyncio.Task | None = None

    def reset(self, kvs) -> None:
        raise NotImplementedError

    def changed(self, event: pb.Event) -> None:
        raise NotImplementedError

    async def _run(self) -> None:
        while True:
            try:
                resp = await self.client.range(self.key, self.range_end)
                self.reset(resp.kvs)
                async for watched in self.client.watch(self.key, self.range_end,
                                                       start_revision=resp.header.revision + 1):
                    for event in watched.events:
                        self.changed(event)
            except asyncio.CancelledError:
                raise
            except (EtcdUnavailable, EtcdError) as err:
                log.debug("%s: %s; keeping the last view", self.task_name, err)
                await asyncio.sleep(0.5)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


class FleetProxies(KeyWatch):
    """Which proxies every *other* replica serves now: ``<prefix>/proxies/<replica>``, watched.

    A replica's key lives on its lease, so a dead replica's proxies leave the view
    with it. :meth:`view` is what the access-log source's coverage asks
    (``AccessLogSource(fleet_proxies=...)``); while etcd is unreachable it
    answers the last view it had.
    """

    task_name = "weir-ha-fleet-proxies"

    def __init__(self, client: EtcdClient, prefix: bytes, replica: str):
        super().__init__(client, prefix, prefix_end(prefix))
        self.prefix = prefix
        self.replica = replica
        self.replicas: dict[str, frozenset[str]] = {}

    def view(self) -> dict[str, frozenset[str]]:
        return {r: nodes for r, nodes in self.replicas.items() if r != self.replica}

    def _name(self, key: bytes) -> str:
        return key[len(self.prefix):].decode(errors="replace")

    def _put(self, kv: pb.KeyValue) -> None:
        try:
            nodes = frozenset(str(n) for n in json.loads(kv.value).get("nodes", ()))
        except (ValueError, AttributeError):
            nodes = frozenset()
        self.replicas[self._name(kv.key)] = nodes

    def reset(self, kvs) -> None:
        self.replicas = {}
        for kv in kvs:
            self._put(kv)

    def changed(self, event: pb.Event) -> None:
        if event.type == pb.Event.PUT:
            self._put(event.kv)
        else:
            self.replicas.pop(self._name(event.kv.key), None)
