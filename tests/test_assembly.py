"""The one assembly shared by `weir serve`, the demo and the e2e tests wires the parts as documented."""

from __future__ import annotations

from control_plane.assembly import start_control_plane
from tests.test_sources_wire import full_entry, full_message
from xds.status import ProxyStatus
from xds.wire import accesslog_pb2 as wire


async def test_access_log_coverage_forgets_proxies_that_left_xds(tmp_path):
    """Defect: the access-log source was built without proxies_alive, so a proxy that scaled in
    left a permanent 'gap' and every pass stayed inconclusive for the whole retention."""
    cp = await start_control_plane(db=tmp_path / "weir.db", analyzer="none")
    try:
        since = cp.access_log.started_at + 0.001
        proxy = ProxyStatus("envoy-1", "gw", "sotw", "ipv4:127.0.0.1:1")
        cp.registry.connect(proxy, "*")
        stream = cp.access_log.open_stream("ipv4:127.0.0.1:1")
        message = full_message([full_entry(start=since + 0.5)])
        cp.access_log.ingest_message(wire.StreamAccessLogsMessage.FromString(bytes(message)), stream)
        cp.access_log.close_stream(stream)  # its log stream ended ...
        assert not cp.access_log.coverage_now("sentiment", since).complete  # ... while it is still in xDS: a gap
        cp.registry.disconnect(proxy)  # scaled in: gone from xDS as well
        assert cp.access_log.coverage_now("sentiment", since).complete
    finally:
        await cp.stop()
