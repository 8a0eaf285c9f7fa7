"""The snapshot cache: the seam between "what config exists" and "who is subscribed".

Snapshots are keyed by node group. A proxy's group is its node cluster
(`weir bootstrap --cluster`), unless an id-pattern rule says otherwise. A
proxy whose group has no snapshot of its own is served by the default group
``*`` (policies without a proxyGroup are served by every connected proxy).
"""

from __future__ import annotations

import fnmatch
from typing import Iterable, Protocol

from .snapshot import Snapshot

DEFAULT_GROUP = "*"

#: Published snapshots remembered by version (for proxies that reconnect).
HISTORY = 64


class Watcher(Protocol):
    """A stream that wants to hear when its group's snapshot changes."""

    node_group: str

    def snapshot_changed(self, group: str, snapshot: Snapshot) -> None: ...


class SnapshotCache:
    def __init__(self, id_rules: Iterable[tuple[str, str]] = ()):
        """`id_rules`: (node-id glob, group) pairs checked in order before the node cluster."""
        self._id_rules = list(id_rules)
        self._snapshots: dict[str, Snapshot] = {}
        self._watchers: set[Watcher] = set()
        self._names: dict[frozenset[str], frozenset[str]] = {}
        #: Recently published snapshots by version: what a reconnecting proxy says it holds.
        self._by_version: dict[str, Snapshot] = {}

    def intern_names(self, names: frozenset[str]) -> frozenset[str]:
        """One shared object per distinct subscription.

        Thousands of proxies subscribe to the same EDS/RDS names: sharing the
        set saves memory per proxy, and lets view lookups at push time match by
        identity instead of comparing every name.
        """
        shared = self._names.get(names)
        if shared is None:
            if len(self._names) > 10_000:
                self._names.clear()
            shared = self._names[names] = names
        return shared

    # -- grouping --------------------------------------------------------------
    def group_of(self, node_id: str, node_cluster: str) -> str:
        for pattern, group in self._id_rules:
            if fnmatch.fnmatchcase(node_id, pattern):
                return group
        return node_cluster or DEFAULT_GROUP

    def serving_group(self, node_group: str) -> str:
        """The group whose snapshot serves proxies of `node_group`."""
        return node_group if node_group in self._snapshots else DEFAULT_GROUP

    # -- snapshots -------------------------------------------------------------
    def set_snapshot(self, group: str, snapshot: Snapshot) -> None:
        """Publish a snapshot for a group after checking its consistency.

        Raises InconsistentSnapshotError and publishes nothing if a route names
        a missing cluster, an EDS cluster lacks endpoints, and so on.
        """
        snapshot.check()
        previous = self._snapshots.get(group)
        self._snapshots[group] = snapshot
        self._by_version.pop(snapshot.version, None)
        self._by_version[snapshot.version] = snapshot
        if len(self._by_version) > HISTORY:
            del self._by_version[next(iter(self._by_version))]
        if previous is not None and previous.version == snapshot.version:
            return
        for watcher in list(self._watchers):
            if self.serving_group(watcher.node_group) == group:
                watcher.snapshot_changed(group, snapshot)

    def clear_snapshot(self, group: str) -> None:
        """Forget a group's snapshot; its proxies fall back to the default group."""
        if self._snapshots.pop(group, None) is None or group == DEFAULT_GROUP:
            return
        fallback = self._snapshots.get(DEFAULT_GROUP)
        if fallback is None:
            return
        for watcher in list(self._watchers):
            if watcher.node_group == group:
                watcher.snapshot_changed(DEFAULT_GROUP, fallback)

    def snapshot(self, group: str) -> Snapshot | None:
        return self._snapshots.get(group)

    def snapshot_by_version(self, version: str) -> Snapshot | None:
        """One of the last :data:`HISTORY` published snapshots, by version (None if older or unknown).

        Every replica of Weir publishes the same routing as the same snapshot
        versions, so a proxy that reconnects (to this or another replica) with
        the version it last accepted says exactly which resources it holds.
        """
        return self._by_version.get(version)

    def snapshot_for(self, node_group: str) -> tuple[str, Snapshot | None]:
        group = self.serving_group(node_group)
        return group, self._snapshots.get(group)

    def groups(self) -> dict[str, Snapshot]:
        return dict(self._snapshots)

    # -- watchers --------------------------------------------------------------
    def watch(self, watcher: Watcher) -> None:
        self._watchers.add(watcher)

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
