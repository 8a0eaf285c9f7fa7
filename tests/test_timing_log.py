"""The timing records (Envoy's OpenTelemetry access logger -> Weir's OTLP logs service): wire, rules, samples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as official
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.logs.v1 import logs_pb2
from scipy import stats

from analysis.sources.access_log import AccessLogSource
from analysis.sources.timing_log import TimingLog, TimingRecord, decode_export
from xds.log_formats import TIMING_ATTRIBUTES
from xds.wire import otlp_logs_pb2 as ours

T0 = 1_800_000_000.0


def record(**attrs: str) -> logs_pb2.LogRecord:
    base = {"c": "chat-v2", "t": f"{T0 + 1:.6f}", "fb": "402000", "d": "980000", "code": "200", "g": "-",
            "f": "-", "a": "chat.example", "r": "chat-default", "k": "DownstreamEnd", "tok": "-"}
    base.update(attrs)
    return logs_pb2.LogRecord(
        time_unix_nano=int(T0 * 1e9), body=common_pb2.AnyValue(string_value="ignored"),
        attributes=[common_pb2.KeyValue(key=k, value=common_pb2.AnyValue(string_value=v)) for k, v in base.items()],
    )


def export(*records: logs_pb2.LogRecord) -> bytes:
    request = official.ExportLogsServiceRequest(resource_logs=[logs_pb2.ResourceLogs(
        resource={"attributes": [common_pb2.KeyValue(key="node_name", value=common_pb2.AnyValue(string_value="gw-1"))]},
        scope_logs=[logs_pb2.ScopeLogs(log_records=list(records))],
    )])
    return request.SerializeToString()


def test_our_messages_read_opentelemetrys_wire_format():
    data = export(record(), record(c="chat-v1", fb="1500"))
    msg = ours.ExportLogsServiceRequest.FromString(data)
    (rl,) = msg.resource_logs
    assert rl.resource.attributes[0].key == "node_name" and rl.resource.attributes[0].value.string_value == "gw-1"
    logs = rl.scope_logs[0].log_records
    assert len(logs) == 2 and logs[0].time_unix_nano == int(T0 * 1e9)
    assert {kv.key for kv in logs[0].attributes} == set(TIMING_ATTRIBUTES)
    # ... and what we would write is what OpenTelemetry reads (unknown fields aside).
    again = official.ExportLogsServiceRequest.FromString(msg.SerializeToString())
    assert again.resource_logs[0].scope_logs[0].log_records[1].attributes[0].value.string_value == "chat-v1"


def test_only_successful_requests_give_timings_and_traffic_is_told_apart():
    msg = ours.ExportLogsServiceRequest.FromString(export(
        record(),                                            # live, a streamed answer: first token at 402 ms
        record(code="503"),                                  # an error: no timing sample
        record(code="200", g="13"),                          # a failed gRPC call: none either
        record(f="UF"),                                      # Envoy flagged a failure
        record(fb="-"),                                      # no body byte ever arrived
        record(k="UpstreamEnd"),                             # one attempt of a live request: counted once already
        record(k="UpstreamEnd", a="chat.example-shadow:10000"),  # a mirrored request: shadow traffic
        record(r="chat-header-0"),                           # a tester pinned by a header route
        record(tok="20", fb="950000"),                       # a unary answer that named its tokens
        record(c="-"),                                       # never reached a cluster
    ))
    records, skipped = decode_export(msg)
    assert skipped == 6
    assert [(r.traffic, r.ttfb_ms) for r in records] == [("live", 402.0), ("shadow", 402.0), ("pinned", 402.0),
                                                         ("live", 950.0)]
    assert math.isnan(records[0].tpot_ms) and records[3].tpot_ms == pytest.approx(980.0 / 20)
    assert records[0].start == pytest.approx(T0 + 1)


def test_samples_of_a_window_and_the_access_log_attaches_them():
    clock = lambda: T0 + 10  # noqa: E731
    timing = TimingLog(clock=clock)
    timing.ingest([TimingRecord("chat-v2", T0 + i, 100.0 + i, math.nan, "live") for i in range(10)])
    ttfb, tpot = timing.samples("chat-v2", "live", T0 + 3, T0 + 6)
    assert list(ttfb) == [103.0, 104.0, 105.0] and tpot.size == 0
    assert timing.samples("chat-v2", "shadow", T0)[0].size == 0
    source = AccessLogSource(clock=clock, timing=timing)
    assert source.samples("chat", "v2", T0 + 8).ttfb_ms.size == 0  # no access-log entries: no arm yet
    assert set(source.handlers()[1]._method_handlers) == {"/opentelemetry.proto.collector.logs.v1.LogsService/Export"}


def test_thinning_keeps_the_split_between_arms():
    """Above the cap, samples are thinned with one probability for every arm of a service: the canary's share
    of the kept samples stays its share of the traffic (99.9% binomial interval)."""
    now = [T0]
    timing = TimingLog(max_samples_per_s=100, clock=lambda: now[0])
    rng = np.random.default_rng(3)
    for sec in range(20):
        now[0] = T0 + sec
        arms = rng.random(1000) < 0.1
        timing.ingest([TimingRecord("svc-v2" if a else "svc-v1", T0 + sec, 10.0, math.nan, "live") for a in arms])
    canary = timing.samples("svc-v2", "live", T0)[0].size
    stable = timing.samples("svc-v1", "live", T0)[0].size
    kept = canary + stable
    assert kept < 0.2 * 20_000  # thinned (about 100 a second after the first)
    lo, hi = stats.binom.ppf([0.0005, 0.9995], kept, 0.1)
    assert lo <= canary <= hi, (canary, kept)
    assert timing.counters["thinned"] > 0
