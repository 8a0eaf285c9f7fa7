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


async def serve_routing_file(
    path: str | Path, *, host: str = "127.0.0.1", port: int = 18000, group: str = DEFAULT_GROUP, poll_s: float = 1.0
) -> int:
    snapshot = await asyncio.to_thread(snapshot_from_file, path)
    cache = SnapshotCache()
    cache.set_snapshot(group, snapshot)
    server = XdsServer(cache)
    bound = await server.start(host, port)
    print(f"weir xds: serving {path} (version {snapshot.version}) to group {group!r} on {host}:{bound}", flush=True)
    mtime = os.stat(path).st_mtime_ns
    try:
        while True:
            await asyncio.sleep(poll_s)
            try:
                current = os.stat(path).st_mtime_ns
            except OSError:
                continue
            if current == mtime:
                continue
            mtime = current
            try:
                snapshot = await asyncio.to_thread(snapshot_from_file, path)
            except (RoutingError, InconsistentSnapshotError) as err:
                log.error("%s changed but is invalid; keeping version %s:\n%s", path, cache.snapshot(group).version, err)
                continue
            cache.set_snapshot(group, snapshot)
            log.info("%s reloaded: version %s", path, snapshot.version)
    finally:
        await server.stop()
