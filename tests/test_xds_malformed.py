"""Garbage on the xDS port costs one rate-limited log line, never a traceback per stream (issue 13).

A real grpc.aio server; clients open real streams and send bytes that are
not protobuf, or protobuf that is not a DiscoveryRequest.
"""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from xds.ratelog import RateLimitedLog
from xds.server import ADS_SERVICE, XdsServer
from xds.snapshot import PUSH_ORDER, Snapshot
from xds.wire import discovery_pb2 as wire

GARBAGE = [b"\xff\xff\xff\xff", b"\x0a\x05ab", b"\x12\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", b"\x08" * 7]


async def send_raw(port: int, method: str, messages: list[bytes]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(f"/{ADS_SERVICE}/{method}", request_serializer=None,
                                     response_deserializer=None)(iter(messages))
        try:
            async for _ in call:
                pass
        except grpc.aio.AioRpcError:
            pass


@pytest.fixture
async def server():
    srv = XdsServer()
    srv.cache.set_snapshot("*", Snapshot({t: {} for t in PUSH_ORDER}))
    port = await srv.start("127.0.0.1", 0)
    yield srv, port
    await srv.stop()


async def test_garbage_streams_log_one_line_each_up_to_a_limit_and_no_traceback(server, caplog):
    """Defect: each garbage stream logged a full traceback, so a client could flood the log cheaply."""
    srv, port = server
    caplog.set_level(logging.DEBUG)
    streams = 40
    for i in range(streams):
        method = "StreamAggregatedResources" if i % 2 else "DeltaAggregatedResources"
        await send_raw(port, method, [GARBAGE[i % len(GARBAGE)]])
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    srv.malformed_log.flush()
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    limit = srv.malformed_log.max_lines
    assert len(lines) == limit + 1, [r.getMessage() for r in lines]  # the limit, then one summary
    assert all("\n" not in r.getMessage() for r in lines)
    assert lines[0].getMessage().startswith("xDS stream from ipv4:127.0.0.1:")
    assert "closed: malformed request" in lines[0].getMessage()
    assert lines[-1].getMessage().startswith(f"{streams - limit} more malformed xDS streams")
    assert srv.malformed_log.total == streams


async def test_a_good_stream_still_works_after_garbage(server):
    srv, port = server
    await send_raw(port, "StreamAggregatedResources", [GARBAGE[0]])
    request = wire.DiscoveryRequest(type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster")
    request.node.id, request.node.cluster = "gw-1", "gw"
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(f"/{ADS_SERVICE}/StreamAggregatedResources",
                                     request_serializer=wire.DiscoveryRequest.SerializeToString,
                                     response_deserializer=wire.DiscoveryResponse.FromString)()
        await call.write(request)
        response = await asyncio.wait_for(call.read(), 5)
        assert response.type_url == request.type_url
        assert [p.node_id for p in srv.registry.proxies()] == ["gw-1"]
        call.cancel()


def test_rate_limited_log_windows():
    now = [0.0]
    logger = logging.getLogger("test.ratelog")
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        limited = RateLimitedLog(logger, "bad things", max_lines=2, window_s=60, clock=lambda: now[0])
        assert [limited.log(logging.INFO, "bad %d", i) for i in range(5)] == [True, True, False, False, False]
        now[0] = 61
        assert limited.log(logging.INFO, "bad again")
        assert records == ["bad 0", "bad 1", "3 more bad things in the last 61s were not logged one by one",
                           "bad again"]
        assert limited.total == 6
    finally:
        logger.removeHandler(handler)


async def test_garbage_on_the_access_log_service_is_rate_limited_too(caplog):
    """The access-log service shares the xDS port, so the same flood goes there too."""
    from analysis.sources.access_log import ALS_METHOD, ALS_SERVICE, AccessLogSource

    source = AccessLogSource()
    srv = XdsServer(extra_handlers=[source.handler()])
    port = await srv.start("127.0.0.1", 0)
    caplog.set_level(logging.DEBUG)
    try:
        for i in range(30):
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                call = channel.stream_unary(f"/{ALS_SERVICE}/{ALS_METHOD}", request_serializer=None,
                                            response_deserializer=None)(iter([GARBAGE[i % len(GARBAGE)]]))
                try:
                    await call
                except grpc.aio.AioRpcError:
                    pass
    finally:
        await srv.stop()
    assert not [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    source.malformed_log.flush()
    lines = [r.getMessage() for r in caplog.records if "access-log stream" in r.getMessage()
             or "malformed access-log" in r.getMessage()]
    assert len(lines) == source.malformed_log.max_lines + 1, lines
    assert lines[-1].startswith(f"{30 - source.malformed_log.max_lines} more malformed access-log streams")


def test_grpc_core_handshake_lines_become_rate_limited_weir_lines(caplog):
    """With mTLS, gRPC's C core writes one line per refused handshake to fd 2; the bridge rate-limits them."""
    from xds.corelog import CoreLogBridge

    core = (b"I1201 09:45:20.030346   30810 ssl_transport_security.cc:2563] Handshake failed with error SSL_ERROR_SSL: "
            b"error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED: unable to get local issuer "
            b"certificate\n")
    bridge = CoreLogBridge(logging.getLogger("weir.xds"), max_lines=3)
    caplog.set_level(logging.WARNING, logger="weir.xds")
    stream = b"a normal line\n" + core * 25 + b"E1201 09:45:21.000000 1 other.cc:1] unrelated core error\nhalf"
    passed, reasons = bridge.feed(stream[:100])
    more, reasons2 = bridge.feed(stream[100:] + b" a line\n")
    assert passed + more == b"a normal line\nE1201 09:45:21.000000 1 other.cc:1] unrelated core error\nhalf a line\n"
    assert reasons + reasons2 == ["CERTIFICATE_VERIFY_FAILED: unable to get local issuer certificate"] * 25
    for reason in reasons + reasons2:
        bridge.report(reason)
    bridge.log.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4 and lines[-1].startswith("22 more refused TLS connections")
    assert lines[0].startswith("xDS: refused a TLS connection: CERTIFICATE_VERIFY_FAILED")
