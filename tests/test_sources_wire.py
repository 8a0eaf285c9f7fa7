"""Access-log source, without a proxy: wire compatibility, decoding, aggregation.

* ``xds/wire/accesslog.proto`` against envoy-data-plane's complete types, both
  ways, plus a structural check of every field number and type we declare.
* decoding a batch (live, shadow, pinned, upstream attempts, errors by code and
  by response flag);
* attribution to (service, version, endpoint), ``since``/``until`` exact per
  request, append-only growth, thinning, retention, gap reporting;
* the gRPC handler on an in-process ``XdsServer``.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
import numpy as np
import pytest
from envoy_data_plane.envoy.config.core.v3 import Address, Locality, Node, SocketAddress
from envoy_data_plane.envoy.data.accesslog import v3 as data_v3
from envoy_data_plane.envoy.service.accesslog import v3 as service_v3
from envoy_data_plane.google import protobuf as gpb

from analysis.samples import ArmSamples
from analysis.sources import MetricSource, cluster_of
from analysis.sources.access_log import (
    ALS_METHOD_PATH,
    LIVE,
    PINNED,
    SHADOW,
    AccessLogSource,
    Entry,
    decode,
    is_shadow_authority,
)
from xds.routing import parse_routing
from xds.server import XdsServer
from xds.wire import accesslog_pb2 as wire

T0 = 1_790_000_000  # a whole second, epoch


def _ts(t: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, tz=dt.timezone.utc)


def full_entry(
    *,
    cluster: str = "sentiment-v1",
    start: float = T0 + 0.25,
    code: int | None = 200,
    latency_ms: float = 12.5,
    kind: int = 6,
    authority: str = "sentiment.example:8080",
    route: str = "sentiment-default",
    flags: data_v3.ResponseFlags | None = None,
    host: str = "10.0.0.7",
    port: int = 8080,
    headers: dict[str, str] | None = None,
    trailers: dict[str, str] | None = None,
) -> data_v3.HttpAccessLogEntry:
    """An entry the way Envoy 1.40 fills it (fields observed with a real proxy), plus some we never read."""
    lat = dt.timedelta(microseconds=round(latency_ms * 1000))
    return data_v3.HttpAccessLogEntry(
        common_properties=data_v3.AccessLogCommon(
            sample_rate=1.0,
            downstream_remote_address=Address(socket_address=SocketAddress(address="192.0.2.1", port_value=5555)),
            start_time=_ts(start),
            time_to_last_rx_byte=dt.timedelta(microseconds=20),
            time_to_first_upstream_rx_byte=lat - dt.timedelta(microseconds=50),
            time_to_last_upstream_rx_byte=lat,
            time_to_last_downstream_tx_byte=lat + dt.timedelta(microseconds=30),
            upstream_remote_address=Address(socket_address=SocketAddress(address=host, port_value=port)),
            upstream_cluster=cluster,
            response_flags=flags,
            route_name=route,
            custom_tags={"team": "ml"},
            duration=lat + dt.timedelta(microseconds=40),
            upstream_request_attempt_count=1,
            stream_id="6ae319d3-4e44-44ec-a5ab-aaa23b9f748d",
            access_log_type=kind,
        ),
        protocol_version=data_v3.HttpAccessLogEntryHttpVersion.HTTP11,
        request=data_v3.HttpRequestProperties(
            request_method=2,
            authority=authority,
            path="/v2/models/sentiment/infer",
            request_id="6ae319d3-4e44-44ec-a5ab-aaa23b9f748d",
            request_headers={"x-user": "a"},
        ),
        response=data_v3.HttpResponseProperties(
            response_code=code, response_code_details="via_upstream", response_body_bytes=42,
            response_headers=headers or {}, response_trailers=trailers or {},
        ),
    )


def full_message(entries, identifier: bool = True) -> service_v3.StreamAccessLogsMessage:
    ident = None
    if identifier:
        ident = service_v3.StreamAccessLogsMessageIdentifier(
            node=Node(id="envoy-1", cluster="gateway", user_agent_name="envoy", locality=Locality(zone="z1")),
            log_name="weir",
        )
    return service_v3.StreamAccessLogsMessage(
        identifier=ident, http_logs=service_v3.StreamAccessLogsMessageHttpAccessLogEntries(log_entry=list(entries))
    )


# --------------------------------------------------------------------------- wire


def test_envoy_bytes_parse_with_ours_and_round_trip():
    full = full_message(
        [
            full_entry(flags=data_v3.ResponseFlags(upstream_remote_reset=True, downstream_remote_reset=True)),
            full_entry(code=None, kind=9),
        ]
    )
    ours = wire.StreamAccessLogsMessage.FromString(bytes(full))
    assert ours.identifier.node.id == "envoy-1" and ours.identifier.node.cluster == "gateway"
    assert ours.identifier.log_name == "weir"
    e = ours.http_logs.log_entry[0]
    c = e.common_properties
    assert c.sample_rate == 1.0
    assert (c.start_time.seconds, c.start_time.nanos) == (T0, 250_000_000)
    assert (c.time_to_last_upstream_rx_byte.seconds, c.time_to_last_upstream_rx_byte.nanos) == (0, 12_500_000)
    assert c.time_to_first_upstream_rx_byte.nanos == 12_450_000
    assert c.time_to_last_rx_byte.nanos == 20_000
    assert c.time_to_last_downstream_tx_byte.nanos == 12_530_000
    assert c.duration.nanos == 12_540_000
    assert (c.upstream_remote_address.socket_address.address, c.upstream_remote_address.socket_address.port_value) == (
        "10.0.0.7",
        8080,
    )
    assert c.upstream_cluster == "sentiment-v1" and c.route_name == "sentiment-default"
    assert c.response_flags.upstream_remote_reset and c.response_flags.downstream_remote_reset
    assert not c.response_flags.local_reset
    assert c.upstream_request_attempt_count == 1 and c.stream_id.startswith("6ae3")
    assert c.access_log_type == 6
    assert e.protocol_version == 2
    assert (e.request.authority, e.request.path) == ("sentiment.example:8080", "/v2/models/sentiment/infer")
    assert e.request.request_id.startswith("6ae3")
    assert e.response.HasField("response_code") and e.response.response_code.value == 200
    assert e.response.response_code_details == "via_upstream"
    # No response code on the wire: absent, reads as 0.
    assert not ours.http_logs.log_entry[1].response.HasField("response_code")
    # Fields we do not declare (locality, headers, tags, body bytes) survive our round trip.
    back = service_v3.StreamAccessLogsMessage.parse(ours.SerializeToString())
    assert back == full


def test_our_bytes_parse_with_envoy_types():
    ours = wire.StreamAccessLogsMessage(
        identifier=wire.AlsIdentifier(node=wire.AlsNode(id="n1", cluster="g"), log_name="weir"),
        http_logs=wire.HTTPAccessLogEntries(
            log_entry=[
                wire.HTTPAccessLogEntry(
                    common_properties=wire.AccessLogCommon(
                        sample_rate=0.5,
                        start_time=wire.Timestamp(seconds=T0, nanos=1000),
                        time_to_last_rx_byte=wire.Duration(nanos=7000),
                        time_to_first_upstream_rx_byte=wire.Duration(nanos=8000),
                        time_to_last_upstream_rx_byte=wire.Duration(seconds=1, nanos=9000),
                        time_to_last_downstream_tx_byte=wire.Duration(seconds=1, nanos=10000),
                        upstream_remote_address=wire.Address(
                            socket_address=wire.SocketAddress(address="10.1.1.1", port_value=81)
                        ),
                        upstream_cluster="svc-v2",
                        response_flags=wire.ResponseFlags(
                            **{f.name: True for f in wire.ResponseFlags.DESCRIPTOR.fields}
                        ),
                        route_name="svc-header-0",
                        duration=wire.Duration(seconds=2),
                        upstream_request_attempt_count=3,
                        stream_id="s",
                        access_log_type=9,
                    ),
                    protocol_version=3,
                    request=wire.HTTPRequestProperties(authority="svc-shadow", path="/p", request_id="r"),
                    response=wire.HTTPResponseProperties(
                        response_code=wire.UInt32Value(value=503), response_code_details="d"
                    ),
                )
            ]
        ),
    )
    full = service_v3.StreamAccessLogsMessage.parse(ours.SerializeToString())
    assert full.identifier.node.id == "n1" and full.identifier.log_name == "weir"
    e = full.http_logs.log_entry[0]
    c = e.common_properties
    assert c.sample_rate == 0.5
    assert c.start_time == _ts(T0) + dt.timedelta(microseconds=1)
    assert c.time_to_last_rx_byte == dt.timedelta(microseconds=7)
    assert c.time_to_first_upstream_rx_byte == dt.timedelta(microseconds=8)
    assert c.time_to_last_upstream_rx_byte == dt.timedelta(seconds=1, microseconds=9)
    assert c.time_to_last_downstream_tx_byte == dt.timedelta(seconds=1, microseconds=10)
    assert c.upstream_remote_address.socket_address.address == "10.1.1.1"
    assert c.upstream_remote_address.socket_address.port_value == 81
    assert c.upstream_cluster == "svc-v2" and c.route_name == "svc-header-0"
    for f in wire.ResponseFlags.DESCRIPTOR.fields:
        assert getattr(c.response_flags, f.name) is True, f.name
    assert c.duration == dt.timedelta(seconds=2)
    assert c.upstream_request_attempt_count == 3 and c.stream_id == "s"
    assert c.access_log_type == data_v3.AccessLogType.UpstreamEnd
    assert e.protocol_version == data_v3.HttpAccessLogEntryHttpVersion.HTTP2
    assert (e.request.authority, e.request.path, e.request.request_id) == ("svc-shadow", "/p", "r")
    assert e.response.response_code == 503 and e.response.response_code_details == "d"


_PROTO_TYPES = {
    1: {"double"},
    3: {"int64"},
    5: {"int32", "enum"},  # our enums are int32 on the wire (same varint encoding)
    8: {"bool"},
    9: {"string"},
    11: {"message", "map"},  # a map is a repeated entry message
    13: {"uint32"},
}

# Ours -> theirs, for every message in accesslog.proto.
_PAIRS = {
    "StreamAccessLogsMessage": service_v3.StreamAccessLogsMessage,
    "AlsIdentifier": service_v3.StreamAccessLogsMessageIdentifier,
    "HTTPAccessLogEntries": service_v3.StreamAccessLogsMessageHttpAccessLogEntries,
    "HTTPAccessLogEntry": data_v3.HttpAccessLogEntry,
    "AccessLogCommon": data_v3.AccessLogCommon,
    "HTTPRequestProperties": data_v3.HttpRequestProperties,
    "HTTPResponseProperties": data_v3.HttpResponseProperties,
    "ResponseFlags": data_v3.ResponseFlags,
    "AlsNode": Node,
    "Address": Address,
    "SocketAddress": SocketAddress,
    "Timestamp": gpb.Timestamp,
    "Duration": gpb.Duration,
    "UInt32Value": gpb.UInt32Value,
}
# betterproto2 unwraps these message types into Python values.
_UNWRAPPED = {dt.datetime: "Timestamp", dt.timedelta: "Duration", int: "UInt32Value"}


def test_every_declared_field_matches_envoy_numbers_and_types():
    checked = 0
    for name, theirs in _PAIRS.items():
        ours = getattr(wire, name).DESCRIPTOR
        meta = theirs._betterproto
        for f in ours.fields:
            assert f.name in meta.meta_by_field_name, f"{name}.{f.name} is not a field of {theirs.__name__}"
            m = meta.meta_by_field_name[f.name]
            assert f.number == m.number, f"{name}.{f.name}: ours {f.number}, Envoy's {m.number}"
            assert m.proto_type in _PROTO_TYPES[f.type], f"{name}.{f.name}: ours type {f.type}, Envoy's {m.proto_type}"
            if m.proto_type == "map":  # a protobuf map is a repeated entry message on the wire
                assert f.message_type.GetOptions().map_entry, f"{name}.{f.name}: Envoy's is a map"
                checked += 1
                continue
            assert f.is_repeated == bool(m.repeated), f"{name}.{f.name}: repeated differs"
            if f.type == f.TYPE_MESSAGE:
                cls = meta.cls_by_field[f.name]
                expect = _UNWRAPPED.get(cls) or next(k for k, v in _PAIRS.items() if v is cls)
                assert f.message_type.name == expect, f"{name}.{f.name}: ours {f.message_type.name}, Envoy's {cls}"
            checked += 1
    assert set(_PAIRS) == set(wire.DESCRIPTOR.message_types_by_name) - {"StreamAccessLogsResponse"}
    assert checked > 60


def test_package_is_ours():
    assert wire.DESCRIPTOR.package == "weir.wire.v1"
    assert wire.StreamAccessLogsMessage.DESCRIPTOR.full_name == "weir.wire.v1.StreamAccessLogsMessage"


# --------------------------------------------------------------------------- decoding


def test_grpc_status_decides_whether_a_grpc_call_failed():
    """Defect: gRPC failures are HTTP 200, so a canary failing 60% of calls with INTERNAL was promoted."""
    entries = [
        full_entry(trailers={"grpc-status": "0"}),  # OK
        full_entry(trailers={"grpc-status": "13"}),  # INTERNAL: the server failed
        full_entry(headers={"grpc-status": "14"}),  # UNAVAILABLE, trailers-only response
        full_entry(trailers={"grpc-status": "5"}),  # NOT_FOUND: the client's fault, like a 404
        full_entry(trailers={"grpc-status": "3"}),  # INVALID_ARGUMENT: the client's fault
        full_entry(trailers={"grpc-status": "bogus"}),  # not a status: broken
        full_entry(),  # plain HTTP 200
    ]
    batch = decode(bytes(full_message(entries)))
    assert [e.error for e in batch.entries] == [False, True, True, False, False, True, False]
    # A policy may count NOT_FOUND as the server's failure (a model that lost its weights, say).
    strict = decode(bytes(full_message(entries)), {"sentiment-v1": frozenset({3})})
    assert [e.error for e in strict.entries] == [False, True, True, True, False, True, False]
    src = AccessLogSource()
    src.register("sentiment", ["v1", "v2"], grpc_client_codes=[3])
    stream = src.open_stream()
    src.ingest_message(wire.StreamAccessLogsMessage.FromString(bytes(full_message(entries))), stream)
    arm = src.samples("sentiment", "v1", T0)
    assert (arm.requests, arm.errors) == (7, 4)


def test_shadow_authority():
    assert is_shadow_authority("127.0.0.1-shadow:10000")
    assert is_shadow_authority("sentiment-shadow")
    assert is_shadow_authority("[::1]-shadow:80")
    assert not is_shadow_authority("127.0.0.1:10000")
    assert not is_shadow_authority("my-shadow-service.example")
    assert not is_shadow_authority("sentiment-shadow.example:80")


def test_decode_batch():
    F = data_v3.ResponseFlags
    msg = full_message(
        [
            full_entry(),  # live ok
            full_entry(cluster="sentiment-v2", code=503, start=T0 + 0.5),  # live 5xx
            full_entry(code=None, flags=F(downstream_remote_reset=True)),  # reset: no response
            full_entry(code=200, flags=F(upstream_remote_reset=True)),  # flagged despite 200
            full_entry(code=404),  # client error: not an error
            full_entry(code=200, flags=F(rate_limited=True)),  # a flag that is not a failure
            full_entry(cluster="sentiment-v2", kind=9, authority="127.0.0.1-shadow:1", route=""),  # shadow
            full_entry(kind=9),  # an upstream attempt of a live request: skipped
            full_entry(route="sentiment-header-0", cluster="sentiment-v2"),  # pinned by a header route
            full_entry(kind=5),  # periodic: skipped
            full_entry(cluster="", host="", code=404, route=""),  # no route: unattributed (kept, cluster "")
        ]
    )
    batch = decode(bytes(msg))
    assert batch.identifier == ("envoy-1", "gateway", "weir")
    assert batch.skipped == 2 and batch.upstream == 2
    e = batch.entries
    assert [x.traffic for x in e] == [LIVE] * 6 + [SHADOW, PINNED, LIVE]
    assert [x.error for x in e] == [False, True, True, True, False, False, False, False, False]
    assert [x.code for x in e][:5] == [200, 503, 0, 200, 404]
    first = e[0]
    assert isinstance(first, Entry)
    assert first.cluster == "sentiment-v1" and first.endpoint == "10.0.0.7:8080"
    assert first.start == pytest.approx(T0 + 0.25, abs=1e-6)
    assert first.latency_ms == pytest.approx(12.5)
    assert e[-1].cluster == "" and e[-1].endpoint == ""


def test_latency_falls_back_to_duration_without_upstream_response():
    entry = full_entry(code=503)
    entry.common_properties.time_to_last_upstream_rx_byte = None
    (e,) = decode(bytes(full_message([entry]))).entries
    assert e.latency_ms == pytest.approx(12.54)


# --------------------------------------------------------------------------- aggregation


class Clock:
    def __init__(self, t: float = T0 + 10):
        self.t = t

    def __call__(self) -> float:
        return self.t


def E(start, cluster="sentiment-v1", *, ms=10.0, code=200, traffic=LIVE, ep="10.0.0.1:80", route="sentiment-default"):
    return Entry(cluster, ep, float(start), float(ms), code, code >= 500 or code == 0, traffic, route)


def source(**kw) -> tuple[AccessLogSource, Clock]:
    clock = Clock(kw.pop("now", T0 - 100))
    return AccessLogSource(clock=clock, **kw), clock


def test_is_a_metric_source():
    assert isinstance(AccessLogSource(), MetricSource)


def test_cluster_names_match_the_routing_model():
    routing = parse_routing(
        {"services": [{"name": "sent-iment", "port": 10000, "backends": [{"version": "v1.2-rc", "endpoints": ["127.0.0.1:1"]}], "split": {"v1.2-rc": 100}}]}
    )
    svc = routing.services[0]
    assert cluster_of("sent-iment", "v1.2-rc") == svc.cluster_name("v1.2-rc")


def test_attribution_and_exact_since():
    src, _ = source()
    since = T0 + 0.5
    src.ingest(
        [
            E(T0 + 0.2, ms=1),  # before since, same second
            E(T0 + 0.4999, code=503),  # before since
            E(T0 + 0.5, ms=2),  # exactly since: counts
            E(T0 + 0.7, code=500),
            E(T0 + 1.1, ms=3, ep="10.0.0.2:80"),
            E(T0 + 0.9, "sentiment-v2", ms=4),
            E(T0 + 0.9, "sentiment-v2", ms=5, traffic=SHADOW, route=""),
            E(T0 + 0.9, "sentiment-v2", ms=6, traffic=PINNED, route="sentiment-header-0"),
        ]
    )
    v1 = src.samples("sentiment", "v1", since)
    assert (v1.requests, v1.errors) == (3, 1)
    assert sorted(v1.latencies_ms) == [2.0, 3.0]
    allv1 = src.samples("sentiment", "v1", T0)
    assert (allv1.requests, allv1.errors) == (5, 2)
    v2 = src.samples("sentiment", "v2", since)
    assert (v2.requests, list(v2.latencies_ms)) == (1, [4.0])
    sh = src.samples("sentiment", "v2", since, traffic=SHADOW)
    assert (sh.requests, list(sh.latencies_ms)) == (1, [5.0])
    pin = src.samples("sentiment", "v2", since, traffic=PINNED)
    assert (pin.requests, list(pin.latencies_ms)) == (1, [6.0])
    # until is exclusive; per endpoint.
    win = src.samples("sentiment", "v1", T0, until=T0 + 0.5)
    assert (win.requests, win.errors, list(win.latencies_ms)) == (2, 1, [1.0])
    by_ep = src.samples_by_endpoint("sentiment", "v1", since)
    assert {k: (v.requests, v.errors) for k, v in by_ep.items()} == {"10.0.0.1:80": (2, 1), "10.0.0.2:80": (1, 0)}
    assert src.samples("sentiment", "v3", since).summary() == ArmSamples().summary()


async def test_arm_samples_interface():
    src, _ = source()
    src.ingest([E(T0 + 1), E(T0 + 1, "sentiment-v2", traffic=SHADOW, route="")])
    live = await src.arm_samples("sentiment", "v2", T0)
    shadow = await src.arm_samples("sentiment", "v2", T0, shadow=True)
    assert (live.requests, shadow.requests) == (0, 1)


def test_samples_only_grow_at_the_end_and_late_entries_count():
    src, _ = source()
    since = T0 + 0.5
    src.ingest([E(T0 + 1, ms=1), E(T0 + 3, ms=3)])
    first = src.samples("sentiment", "v1", since)
    # A late entry (a long request that started earlier) and new ones.
    src.ingest([E(T0 + 0.6, ms=0.6), E(T0 + 0.1, ms=0.1), E(T0 + 4, ms=4)])
    second = src.samples("sentiment", "v1", since)
    assert list(second.latencies_ms[: first.latencies_ms.size]) == list(first.latencies_ms)
    assert list(second.latencies_ms) == pytest.approx([1.0, 3.0, 0.6, 4.0])  # float32 storage
    assert second.requests == 4


def test_boundary_second_outside_exact_window_is_left_out_unless_pinned():
    src, _ = source(exact_window_s=5)
    since = T0 + 0.5
    src.pin(T0 + 10.5)  # the engine pins a step's convergence when it happens
    src.ingest([E(T0 + 0.2), E(T0 + 0.7), E(T0 + 1.5), E(T0 + 10.2), E(T0 + 10.7), E(T0 + 11)])
    src.ingest([E(T0 + 30)])  # newest - exact window > T0 + 10: offsets are compacted
    lost = src.samples("sentiment", "v1", since)
    assert lost.requests == 5  # T0's second is left out whole: never counts pre-since traffic
    cov = src.coverage_now("sentiment", since)
    assert not cov.complete and any("boundary second" in r for r in cov.reasons)
    kept = src.samples("sentiment", "v1", T0 + 10.5)
    assert (kept.requests, kept.latencies_ms.size) == (3, 3)  # pinned: exact
    assert not any("boundary" in r for r in src.coverage_now("sentiment", T0 + 10.5).reasons)


def test_retention_drops_old_data_and_coverage_says_so():
    src, _ = source(retention_s=60, exact_window_s=10)
    src.ingest([E(T0 + i) for i in range(0, 200, 2)])
    mem = src.memory()
    assert mem["latency_samples"] <= 31 and mem["buckets"] <= 31
    s = src.samples("sentiment", "v1", T0)
    assert s.requests == s.latencies_ms.size <= 31
    cov = src.coverage_now("sentiment", T0)
    assert not cov.complete and any("oldest data kept" in r for r in cov.reasons)
    expired = src.counters["expired"]
    src.ingest([E(T0 + 5)])  # older than retention: not counted
    assert src.counters["expired"] == expired + 1
    assert src.samples("sentiment", "v1", T0).requests == s.requests


def test_thinning_is_bounded_and_the_same_for_every_arm():
    src, clock = source(max_samples_per_s=100)
    rng = np.random.default_rng(7)
    kept_before = 0
    for second in range(20):
        clock.t = T0 + second
        arms = rng.random(2000) < 0.1  # 10% canary
        src.ingest([E(T0 + second + i / 2000, "sentiment-v2" if c else "sentiment-v1") for i, c in enumerate(arms)])
        kept = src.memory()["latency_samples"]
        assert kept - kept_before <= 3 * 100 + 1  # bounded per second, bursts included
        kept_before = kept
    s1 = src.samples("sentiment", "v1", T0)
    s2 = src.samples("sentiment", "v2", T0)
    assert s1.requests + s2.requests == 40_000  # counts are never thinned
    share_requests = s2.requests / (s1.requests + s2.requests)
    share_samples = s2.latencies_ms.size / (s1.latencies_ms.size + s2.latencies_ms.size)
    assert abs(share_samples - share_requests) < 0.02
    assert 19 * 100 <= s1.latencies_ms.size + s2.latencies_ms.size <= 20 * 100 + 2 * 2000
    assert src.coverage_now("sentiment", T0).details["thinned_services"] == ["sentiment"]


def test_below_the_cap_every_success_is_a_sample():
    src, _ = source(max_samples_per_s=1000)
    src.ingest([E(T0 + i / 100, code=500 if i % 10 == 0 else 200) for i in range(300)])
    s = src.samples("sentiment", "v1", T0)
    assert (s.requests, s.errors, s.latencies_ms.size) == (300, 30, 270)


def test_coverage_reports_receiver_start_and_stream_gaps():
    src, clock = source(now=T0)
    since = T0 + 5
    cov = src.coverage_now("sentiment", since)
    assert not cov.complete and any("no proxy has opened" in r for r in cov.reasons)
    clock.t = T0 + 1
    a = src.open_stream("ipv4:127.0.0.1:1")
    src.ingest_message(wire.StreamAccessLogsMessage.FromString(bytes(full_message([full_entry(start=T0 + 1)]))), a)
    assert a.node == "envoy-1"
    clock.t = T0 + 6
    assert src.coverage_now("sentiment", since).complete
    clock.t = T0 + 8
    src.close_stream(a)  # the receiver lost the proxy: its entries are dropped from now on
    clock.t = T0 + 12
    cov = src.coverage_now("sentiment", since)
    assert not cov.complete and cov.details["gaps"][0]["to"] is None
    b = src.open_stream("ipv4:127.0.0.1:2")
    src.ingest_message(
        wire.StreamAccessLogsMessage.FromString(bytes(full_message([full_entry(start=T0 + 12)]))), b
    )
    cov = src.coverage_now("sentiment", since)
    assert not cov.complete
    assert cov.details["gaps"] == [{"node": "envoy-1", "from": T0 + 8, "to": T0 + 12}]
    assert src.coverage_now("sentiment", T0 + 13).complete  # a later window is whole
    # A receiver that started after the window began has not seen all of it.
    late, _ = source(now=T0 + 20)
    assert any("receiver started" in r for r in late.coverage_now("sentiment", since).reasons)


def test_a_proxy_that_left_xds_too_is_not_a_gap():
    alive = {"envoy-1"}
    clock = Clock(T0)
    src = AccessLogSource(clock=clock, proxies_alive=lambda: alive)
    s = src.open_stream()
    src.ingest_message(wire.StreamAccessLogsMessage.FromString(bytes(full_message([full_entry(start=T0)]))), s)
    clock.t = T0 + 5
    src.close_stream(s)
    clock.t = T0 + 9
    assert not src.coverage_now("sentiment", T0).complete
    alive.clear()  # scaled in: gone from xDS as well
    assert src.coverage_now("sentiment", T0).complete


def test_shadow_coverage_needs_upstream_logs():
    src, clock = source(now=T0)
    s = src.open_stream()
    src.ingest_message(wire.StreamAccessLogsMessage.FromString(bytes(full_message([full_entry(start=T0)]))), s)
    cov = src.coverage_now("sentiment", T0, shadow=True)
    assert not cov.complete and any("upstream_log" in r for r in cov.reasons)
    src.ingest_message(
        wire.StreamAccessLogsMessage.FromString(
            bytes(full_message([full_entry(start=T0, kind=9, cluster="sentiment-v2", authority="h-shadow:1")], identifier=False))
        ),
        s,
    )
    assert src.coverage_now("sentiment", T0, shadow=True).complete


def test_log_name_filter():
    src = AccessLogSource(log_names={"other"})
    s = src.open_stream()
    assert src.ingest_message(wire.StreamAccessLogsMessage.FromString(bytes(full_message([full_entry()]))), s) == 0
    assert src.counters["ignored_messages"] == 1


def test_service_grouping_for_hyphenated_versions():
    src, _ = source()
    src.register("sentiment", ["v2-rc", "v1"])
    src.ingest([E(T0, "sentiment-v2-rc", traffic=SHADOW, route=""), E(T0, "sentiment-v1")])
    assert {a.thin.service for a in src._arms.values()} == {"sentiment"}
    assert len({id(a.thin) for a in src._arms.values()}) == 1


# --------------------------------------------------------------------------- gRPC


async def test_handler_on_the_xds_server():
    src = AccessLogSource()
    server = XdsServer(extra_handlers=[src.handler()])
    port = await server.start("127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_unary(ALS_METHOD_PATH, request_serializer=lambda b: b, response_deserializer=lambda b: b)
            now = dt.datetime.now(dt.timezone.utc).timestamp()

            async def messages():
                yield bytes(full_message([full_entry(start=now), full_entry(start=now, code=503)]))
                yield bytes(full_message([full_entry(start=now, cluster="sentiment-v2")], identifier=False))

            assert await call(messages()) == b""
        for _ in range(50):
            if src.open_streams == 0:
                break
            await asyncio.sleep(0.01)
        s1 = src.samples("sentiment", "v1", now - 1)
        assert (s1.requests, s1.errors) == (2, 1)
        assert src.samples("sentiment", "v2", now - 1).requests == 1
        assert src.counters["messages"] == 2
        assert src._streams[0].node == "envoy-1" and src._streams[0].clean
        assert not await src.is_online()
    finally:
        await server.stop(0)
