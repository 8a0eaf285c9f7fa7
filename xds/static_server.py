"""Serve a static desired-routing file: the xDS layer usable before the rollout engine.

The file is re-read when it changes. A bad edit is reported with every error
and changes nothing: proxies keep the last good configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from .cache import DEFAULT_GROUP, SnapshotCache
from .routing import RoutingError, load_routing
from .server import XdsServer
from .snapshot import InconsistentSnapshotError, Snapshot, snapshot_from_envoy
from .translate import translate

log = logging.getLogger("weir.xds")


def snapshot_from_file(path: str | Path) -> Snapshot:
    """Load, validate, translate and serialise a routing file (raises RoutingError)."""
    return snapshot_from_envoy(translate(load_routing(path))).check()


class RoutingFile:
    """One routing file published to one group of a cache."""

    def __init__(self, path: str | Path, cache: SnapshotCache, group: str = DEFAULT_GROUP):
        self.path = Path(path)
        self.cache = cache
        self.group = group
        self._mtime: int | None = None

    def load(self) -> Snapshot:
        """Publish the file now; raises RoutingError (nothing published) if it is invalid."""
        self._mtime = os.stat(self.path).st_mtime_ns
        snapshot = snapshot_from_file(self.path)
        self.cache.set_snapshot(self.group, snapshot)
        return snapshot

    def reload_if_changed(self) -> bool:
        """Re-publish after an edit. A bad edit is logged and the last good version stays."""
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return False
        if mtime == self._mtime:
            return False
        try:
            snapshot = self.load()
        except (RoutingError, InconsistentSnapshotError) as err:
            current = self.cache.snapshot(self.group)
            log.error("%s changed but is invalid; keeping version %s:\n%s", self.path, current.version if current else None, err)
            return False
        log.info("%s reloaded: version %s", self.path, snapshot.version)
        return True


async def serve_routing_file(
    path: str | Path, *, host: str = "127.0.0.1", port: int = 18000, group: str = DEFAULT_GROUP, poll_s: float = 1.0
) -> int:
    cache = SnapshotCache()
    routing_file = RoutingFile(path, cache, group)
    snapshot = await asyncio.to_thread(routing_file.load)
    server = XdsServer(cache)
    bound = await server.start(host, port)
    print(f"weir xds: serving {path} (version {snapshot.version}) to group {group!r} on {host}:{bound}", flush=True)
    try:
        while True:
            await asyncio.sleep(poll_s)
            await asyncio.to_thread(routing_file.reload_if_changed)
    finally:
        await server.stop()
