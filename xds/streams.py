"""The xDS protocol state of one ADS stream, free of any I/O.

A stream object takes decoded requests and snapshot changes and appends the
serialised responses it wants sent to ``outbox``; the gRPC glue in
``server.py`` drains the outbox. Keeping the protocol pure lets the tests
drive every ordering rule without a network.

Rules implemented here (docs/envoy-behaviour.md has the Envoy behaviour behind them):

* ACK/NACK by nonce. A NACK is a request carrying ``error_detail``; its text
  is stored verbatim and never parsed. A request naming an older nonce is
  stale and ignored (the ACK for the newest response follows).
* Send only on change: one response in flight per type; a type is resent only
  when what the proxy should see differs from what it was last sent (so a
  rejected config is not pushed again until it changes).
* Make-before-break: clusters and endpoints first; listeners and routes only
  once the proxy has ACKed every cluster of the snapshot (Envoy ACKs CDS after
  the new clusters warmed, so routes never name a cluster the proxy lacks);
  removals (clusters, endpoints, listeners, routes that left the snapshot) only
  after the proxy ACKed the new listeners and routes.
* EDS is never held behind a CDS ACK: Envoy's CDS ACK waits for the
  endpoints of new or changed clusters, so holding them deadlocks for 15 s.
  A changed cluster is re-created and needs its endpoints again: in SotW Envoy
  repeats its EDS request with the already-ACKed nonce and we answer it; in
  Delta it sends nothing, so the endpoints of modified clusters are resent.
"""

from __future__ import annotations

import time
from typing import Mapping

from .cache import SnapshotCache
from .snapshot import CLUSTER, ENDPOINT, LISTENER, NAMED_TYPES, PUSH_ORDER, ROUTE, CachedResource, Snapshot, View, len_field
from .status import NackRecord, ProxyStatus, StatusRegistry
from .wire import discovery_pb2 as wire

_WILDCARD = "*"


class _TypeState:
    """Per-type subscription and delivery state of one stream."""

    __slots__ = ("names", "nonce", "awaiting", "sent", "acked", "resend", "prev", "rejected", "force")

    def __init__(self) -> None:
        self.names: frozenset[str] | None = None  # None = wildcard
        self.nonce = ""  # nonce of the newest response sent
        self.awaiting = False  # a response is in flight (no ACK/NACK yet)
        # SotW: View objects. Delta: dicts name -> CachedResource the proxy holds.
        self.sent = None
        self.acked = None
        self.resend = False  # SotW: answer a repeated request even if unchanged
        self.prev: dict | None = None  # Delta: what the proxy held before the in-flight response
        self.rejected: dict[str, str] = {}  # Delta: name -> version last NACKed
        self.force: set[str] = set()  # Delta: names to resend even when versions match


class AdsStream:
    """Protocol logic shared by state-of-the-world and delta streams."""

    protocol = ""

    def __init__(self, cache: SnapshotCache, registry: StatusRegistry, peer: str = ""):
        self.cache = cache
        self.registry = registry
        self.peer = peer
        self.outbox: list[bytes] = []
        self.types: dict[str, _TypeState] = {}
        self.snapshot: Snapshot | None = None
        self.node_group = ""
        self.status: ProxyStatus | None = None
        self._nonce = 0
        self._pending: tuple[str, Snapshot] | None = None
        #: Set by the I/O layer: called (synchronously, from the cache) when a
        #: snapshot change waits in ``apply_pending``. Unset, changes apply at once.
        self.wake = None

    # -- lifecycle -------------------------------------------------------------
    def _identify(self, node) -> None:
        if self.status is not None:
            return
        self.node_group = self.cache.group_of(node.id, node.cluster)
        group, self.snapshot = self.cache.snapshot_for(self.node_group)
        self.status = ProxyStatus(node_id=node.id, node_cluster=node.cluster, protocol=self.protocol, peer=self.peer)
        self.status.acked_versions = self.acked_versions
        self.status.acked_version = self.acked_version
        self.registry.connect(self.status, group)
        self.cache.watch(self)

    def close(self) -> None:
        self.cache.unwatch(self)
        if self.status is not None:
            # Keep what was ACKed, not the stream: the registry's history of
            # disconnected proxies must not hold streams and snapshots alive.
            final = self.acked_versions()
            self.status.acked_versions = lambda: final
            self.status.acked_version = lambda type_url, name: final.get(type_url, {}).get(name)
            self.registry.disconnect(self.status)

    def snapshot_changed(self, group: str, snapshot: Snapshot) -> None:
        """Called by the cache. A burst of changes coalesces into one push."""
        first = self._pending is None
        self._pending = (group, snapshot)
        if self.wake is None:
            self.apply_pending()
        elif first:
            self.wake()

    def apply_pending(self) -> None:
        """Adopt the newest published snapshot and push what changed."""
        if self._pending is None:
            return
        group, self.snapshot = self._pending
        self._pending = None
        if self.status is not None:
            self.registry.move(self.status, group)
        self._pump()
        self._update_convergence()

    def _next_nonce(self) -> str:
        self._nonce += 1
        return str(self._nonce)

    # -- what the proxy should see ---------------------------------------------
    def _final(self, type_url: str) -> View:
        st = self.types.get(type_url)
        names = st.names if st is not None and type_url in NAMED_TYPES else None
        return self.snapshot.view(type_url, names)

    def _has_all(self, type_url: str, held: Mapping[str, CachedResource] | None) -> bool:
        """The proxy holds every resource of this type in the snapshot, at its version."""
        wanted = self.snapshot.resources[type_url]
        if not wanted:
            return True
        if held is None:
            return False
        for name, res in wanted.items():
            have = held.get(name)
            if have is None or have.version != res.version:
                return False
        return True

    def _holds_exactly(self, type_url: str) -> bool | None:
        """A cheap answer to "the ACKed set is exactly the snapshot's", or None if unknown."""
        return None

    def _holds_all(self, type_url: str) -> bool:
        if self._holds_exactly(type_url):
            return True
        return self._has_all(type_url, self._acked(type_url))

    def _clusters_ready(self) -> bool:
        return self._holds_all(CLUSTER)

    def _routes_ready(self) -> bool:
        return self._holds_all(LISTENER) and self._holds_all(ROUTE)

    def converged(self) -> bool:
        """The proxy holds exactly the snapshot: everything ACKed, removals included."""
        snap = self.snapshot
        if snap is None:
            return False
        for type_url in PUSH_ORDER:
            if self._holds_exactly(type_url):
                continue
            acked = self._acked(type_url)
            if not self._has_all(type_url, acked):
                return False
            if type_url not in NAMED_TYPES and acked is not None and len(acked) != len(snap.resources[type_url]):
                return False  # a removed listener/cluster is still there
        return True

    def _update_convergence(self) -> None:
        if self.status is not None:
            self.registry.set_converged(self.status, self.snapshot.version if self.converged() else None)

    # -- protocol-specific -----------------------------------------------------
    def _acked(self, type_url: str) -> Mapping[str, CachedResource] | None:
        raise NotImplementedError

    def acked_versions(self) -> dict[str, dict[str, str]]:
        return {t: {n: r.version for n, r in (self._acked(t) or {}).items()} for t in PUSH_ORDER}

    def acked_version(self, type_url: str, name: str) -> str | None:
        held = self._acked(type_url)
        res = held.get(name) if held is not None else None
        return res.version if res is not None else None

    def _pump(self) -> None:
        raise NotImplementedError

    def _record_nack(self, type_url: str, nonce: str, error, version_info: str) -> None:
        if self.status is not None:
            self.registry.record_nack(
                self.status,
                NackRecord(type_url, nonce, error.code, error.message, version_info, time.time()),
            )


class SotwStream(AdsStream):
    """State-of-the-world ADS: every response of a type is that type's full view."""

    protocol = "sotw"

    def _acked(self, type_url: str):
        st = self.types.get(type_url)
        return None if st is None or st.acked is None else st.acked.resources

    def _holds_exactly(self, type_url: str) -> bool | None:
        # Views carry a content key computed once: equal keys, equal contents.
        # This keeps a push O(1) per proxy however large the configuration.
        st = self.types.get(type_url)
        if st is None or st.acked is None:
            return None
        return st.acked.key == self.snapshot.view(type_url).key or None

    def on_request(self, req: wire.DiscoveryRequest) -> None:
        if self.status is None:
            self._identify(req.node)
        type_url = req.type_url
        st = self.types.get(type_url)
        fresh = st is None
        if fresh:
            st = self.types[type_url] = _TypeState()
        nonce = req.response_nonce
        if nonce and nonce != st.nonce:
            return  # stale: an answer to a response we have since replaced
        if type_url in NAMED_TYPES:
            names = frozenset(req.resource_names)
            if _WILDCARD in names:
                names = None
            if names != st.names:
                st.names = None if names is None else self.cache.intern_names(names)
                st.resend = True
        if fresh and req.version_info and not nonce:
            self._held_on_reconnect(st, type_url, req.version_info)
        if nonce and st.awaiting:
            st.awaiting = False
            if req.HasField("error_detail"):
                self._record_nack(type_url, nonce, req.error_detail, req.version_info)
            else:
                st.acked = st.sent
        else:
            # A fresh request: the first one, or Envoy asking again with an
            # already-ACKed nonce (a re-created EDS cluster). Answer it.
            st.resend = True
        self._pump()
        self._update_convergence()

    def _held_on_reconnect(self, st: _TypeState, type_url: str, version: str) -> None:
        """A new stream from a proxy that already runs ``version`` of this type: start from what it holds.

        Envoy keeps its configuration across a lost stream and names the
        version it accepted in its first request. Knowing that snapshot, the
        usual make-before-break applies to the new stream too: a cluster the
        proxy's routes still name is kept until its new routes are ACKed
        (otherwise a proxy that moves to a replica with newer routing drops the
        cluster its current routes use: 503s until the routes arrive). An
        unknown version (too old, or never published here) starts from nothing.
        """
        held = self.cache.snapshot_by_version(version)
        if held is not None:
            st.sent = st.acked = held.view(type_url, st.names if type_url in NAMED_TYPES else None)

    def _pump(self) -> None:
        """Send every type whose target view changed and that has no response in flight.

        The target is the snapshot's view, except that listeners and routes
        wait until every cluster is ACKed, and clusters and listeners that
        left the snapshot are retained until the new listeners and routes are
        ACKed (make-before-break). Readiness depends only on what was ACKed,
        which a pump never changes, so it is computed at most once per pump:
        the push path runs this for every proxy.
        """
        snap = self.snapshot
        if snap is None:
            return
        types = self.types
        clusters_ready = routes_ready = None
        for type_url in PUSH_ORDER:
            st = types.get(type_url)
            if st is None or st.awaiting:
                continue
            target = snap.view(type_url, st.names if type_url in NAMED_TYPES else None)
            if type_url == LISTENER or type_url == ROUTE:
                if clusters_ready is None:
                    clusters_ready = self._holds_all(CLUSTER)
                if not clusters_ready:
                    continue  # make-before-break: routes wait for their clusters
            sent = st.sent
            if (type_url == CLUSTER or type_url == LISTENER) and sent is not None and sent.key != target.key \
                    and not sent.resources.keys() <= target.resources.keys():
                if routes_ready is None:
                    routes_ready = self._holds_all(LISTENER) and self._holds_all(ROUTE)
                if not routes_ready:
                    retained = {n: r for n, r in sent.resources.items() if n not in target.resources}
                    target = View(type_url, target.version, {**retained, **target.resources})
            if not st.resend and sent is not None and sent.key == target.key:
                continue
            self._nonce += 1
            nonce = str(self._nonce)
            self.outbox.append(target.sotw_body + len_field(5, nonce.encode()))
            st.nonce, st.sent, st.awaiting, st.resend = nonce, target, True, False

    def converged(self) -> bool:
        """As :meth:`AdsStream.converged`, answered from the views' content keys when they match (O(1))."""
        snap = self.snapshot
        if snap is None:
            return False
        types = self.types
        for type_url in PUSH_ORDER:
            st = types.get(type_url)
            acked = st.acked if st is not None else None
            if acked is not None and acked.key == snap.view(type_url).key:
                continue
            held = acked.resources if acked is not None else None
            if not self._has_all(type_url, held):
                return False
            if type_url not in NAMED_TYPES and held is not None and len(held) != len(snap.resources[type_url]):
                return False  # a removed listener/cluster is still there
        return True


class DeltaStream(AdsStream):
    """Incremental ADS: only changed resources travel, removals are named."""

    protocol = "delta"

    def _acked(self, type_url: str):
        st = self.types.get(type_url)
        return None if st is None else st.acked

    def on_request(self, req: wire.DeltaDiscoveryRequest) -> None:
        if self.status is None:
            self._identify(req.node)
        type_url = req.type_url
        st = self.types.get(type_url)
        first = st is None
        if first:
            st = self.types[type_url] = _TypeState()
            st.sent, st.acked = {}, {}
            subscribe = set(req.resource_names_subscribe)
            if not subscribe and type_url not in NAMED_TYPES:
                st.names = None  # legacy wildcard: LDS/CDS with an empty list
            else:
                st.names = frozenset()
            held = self._initial_resources(type_url, req.initial_resource_versions)
            st.sent, st.acked = dict(held), dict(held)
        self._subscribe(st, req.resource_names_subscribe, req.resource_names_unsubscribe)
        nonce = req.response_nonce
        if nonce and nonce == st.nonce and st.awaiting:
            st.awaiting = False
            if req.HasField("error_detail"):
                # The proxy did not take any resource of that response.
                self._record_nack(type_url, nonce, req.error_detail, "")
                for name, res in st.sent.items():
                    if st.prev.get(name) is not res:
                        st.rejected[name] = res.version
                st.sent = st.prev
            else:
                st.acked = dict(st.sent)
                st.rejected.clear()
            st.prev = None
        self._pump()
        self._update_convergence()

    def _initial_resources(self, type_url: str, versions: Mapping[str, str]) -> dict[str, CachedResource]:
        """What a reconnecting proxy already holds, as far as our snapshot knows it."""
        if not versions or self.snapshot is None:
            return {}
        held = {}
        current = self.snapshot.resources[type_url]
        for name, version in versions.items():
            res = current.get(name)
            if res is not None and res.version == version:
                held[name] = res
            else:
                # Different or unknown content: remember the name so a removal
                # or an update is sent, but never treat it as up to date.
                held[name] = CachedResource(type_url, name, version, b"", b"")
        return held

    def _subscribe(self, st: _TypeState, subscribe, unsubscribe) -> None:
        before = st.names
        self._apply_subscription(st, subscribe, unsubscribe)
        if st.names is not None and st.names is not before:
            st.names = self.cache.intern_names(st.names)

    @staticmethod
    def _apply_subscription(st: _TypeState, subscribe, unsubscribe) -> None:
        if _WILDCARD in subscribe:
            st.names = None
        elif subscribe and st.names is not None:
            st.names = st.names | frozenset(subscribe)
        if unsubscribe:
            gone = set(unsubscribe)
            if _WILDCARD in gone and st.names is None:
                st.names = frozenset(n for n in subscribe if n != _WILDCARD)
            elif st.names is not None:
                st.names = st.names - gone
            for name in gone:
                # The proxy dropped them itself: no removal to send.
                st.sent.pop(name, None)
                st.acked.pop(name, None)

    def _pump(self) -> None:
        snap = self.snapshot
        if snap is None:
            return
        clusters_ready = None
        removals_ok = None
        for type_url in PUSH_ORDER:
            st = self.types.get(type_url)
            if st is None or st.awaiting:
                continue
            if type_url in (LISTENER, ROUTE):
                if clusters_ready is None:
                    clusters_ready = self._clusters_ready()
                if not clusters_ready:
                    continue
            wanted = snap.resources[type_url]
            in_scope = (lambda n: True) if st.names is None else st.names.__contains__
            updates = [
                res
                for name, res in wanted.items()
                if in_scope(name)
                and ((held := st.sent.get(name)) is None or held.version != res.version or name in st.force)
                and st.rejected.get(name) != res.version
            ]
            stale = [name for name in st.sent if name not in wanted]
            if stale:
                if removals_ok is None:
                    removals_ok = self._routes_ready()
                if not removals_ok:
                    stale = []
            if not updates and not stale:
                continue
            nonce = self._next_nonce()
            parts = [len_field(1, snap.version.encode())]
            parts.extend(len_field(2, r.delta_bytes) for r in updates)
            parts.append(len_field(4, type_url.encode()))
            parts.append(len_field(5, nonce.encode()))
            parts.extend(len_field(6, n.encode()) for n in stale)
            self.outbox.append(b"".join(parts))
            st.prev = st.sent
            st.sent = dict(st.sent)
            for res in updates:
                st.sent[res.name] = res
            for name in stale:
                del st.sent[name]
            st.force.clear()
            st.nonce, st.awaiting = nonce, True
            if type_url == CLUSTER:
                self._resend_endpoints_of_modified(st.prev, updates)

    def _resend_endpoints_of_modified(self, before: Mapping[str, CachedResource], updates) -> None:
        """A modified cluster is re-created by Envoy and waits for its endpoints again."""
        modified = [r for r in updates if r.name in before]
        if not modified:
            return
        eds = self.types.get(ENDPOINT)
        if eds is None:
            return
        for res in modified:
            eds.force.update(res.references)
