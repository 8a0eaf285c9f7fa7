"""Access-log decode benchmark: entries per second on one core.

    .venv/bin/python bench/als_decode.py [--entries 50] [--seconds 0.5] [--repeats 7]

Batches look like Envoy 1.40's (``StreamAccessLogsMessage`` with ~50 HTTP
entries, every field a real proxy fills, encoded once by envoy-data-plane).
Measured, each as the median of ``--repeats`` timed runs:

* ``ours_decode``: ``analysis.sources.access_log.decode`` - protobuf-upb parse
  of the bytes plus reduction to ``Entry`` tuples (what the receiver does per
  message before aggregating);
* ``ours_ingest``: decode plus ``AccessLogSource.ingest`` (attribution to
  arms, buckets, latency log) - the receiver's whole per-message path minus gRPC;
* ``betterproto2``: envoy-data-plane's ``StreamAccessLogsMessage.parse`` plus
  reading the same fields - the baseline we do not use.

Prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import time

from _benchlib import emit, log, median

from envoy_data_plane.envoy.config.core.v3 import Address, Node, SocketAddress
from envoy_data_plane.envoy.data.accesslog import v3 as data_v3
from envoy_data_plane.envoy.service.accesslog import v3 as service_v3

from analysis.sources.access_log import AccessLogSource, decode

T0 = time.time()


def entry(i: int) -> data_v3.HttpAccessLogEntry:
    lat = dt.timedelta(microseconds=1800 + (i * 37) % 900)
    shadow = i % 20 == 19
    return data_v3.HttpAccessLogEntry(
        common_properties=data_v3.AccessLogCommon(
            start_time=dt.datetime.fromtimestamp(T0 + i * 1e-3, tz=dt.timezone.utc),
            time_to_last_rx_byte=dt.timedelta(microseconds=20),
            time_to_first_upstream_rx_byte=lat - dt.timedelta(microseconds=60),
            time_to_last_upstream_rx_byte=lat,
            time_to_last_downstream_tx_byte=lat + dt.timedelta(microseconds=30),
            upstream_remote_address=Address(socket_address=SocketAddress(address=f"10.0.0.{i % 4}", port_value=8080)),
            upstream_cluster="sentiment-v2" if i % 10 == 0 or shadow else "sentiment-v1",
            route_name="" if shadow else "sentiment-default",
            duration=lat + dt.timedelta(microseconds=40),
            upstream_request_attempt_count=0 if shadow else 1,
            stream_id="6ae319d3-4e44-44ec-a5ab-aaa23b9f748d",
            access_log_type=9 if shadow else 6,
            response_flags=data_v3.ResponseFlags(upstream_remote_reset=True) if i % 50 == 7 else None,
        ),
        protocol_version=2,
        request=data_v3.HttpRequestProperties(
            authority="127.0.0.1-shadow:10000" if shadow else "127.0.0.1:10000",
            path="/v2/models/sentiment/infer",
            request_id="6ae319d3-4e44-44ec-a5ab-aaa23b9f748d",
        ),
        response=data_v3.HttpResponseProperties(
            response_code=503 if i % 25 == 3 else 200, response_code_details="via_upstream"
        ),
    )


def batch(n: int) -> bytes:
    msg = service_v3.StreamAccessLogsMessage(
        identifier=service_v3.StreamAccessLogsMessageIdentifier(node=Node(id="envoy-1", cluster="gw"), log_name="weir"),
        http_logs=service_v3.StreamAccessLogsMessageHttpAccessLogEntries(log_entry=[entry(i) for i in range(n)]),
    )
    return bytes(msg)


def betterproto_decode(data: bytes) -> list:
    msg = service_v3.StreamAccessLogsMessage.parse(data)
    out = []
    for e in msg.http_logs.log_entry:
        c = e.common_properties
        sa = c.upstream_remote_address.socket_address
        out.append(
            (c.upstream_cluster, sa.address, sa.port_value, c.start_time, c.time_to_last_upstream_rx_byte,
             e.response.response_code, c.response_flags, c.access_log_type, c.route_name, e.request.authority)
        )
    return out


def rate(fn, data: bytes, n_entries: int, seconds: float) -> float:
    """Entries per second of fn(data) over at least `seconds`."""
    calls = 0
    start = time.perf_counter()
    while True:
        fn(data)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return calls * n_entries / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=50, help="entries per message (Envoy sends ~40-60)")
    ap.add_argument("--seconds", type=float, default=0.5, help="length of one timed run")
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    data = batch(args.entries)
    assert len(decode(data).entries) == args.entries

    source = AccessLogSource()

    def ingest(d: bytes) -> None:
        source.ingest(decode(d).entries)

    figures = {}
    for name, fn, secs in (
        ("ours_decode", decode, args.seconds),
        ("ours_ingest", ingest, args.seconds),
        ("betterproto2", betterproto_decode, max(args.seconds, 0.3)),
    ):
        fn(data)  # warm up
        runs = [rate(fn, data, args.entries, secs) for _ in range(args.repeats)]
        figures[name] = runs
        log(f"{name}: median {median(runs):,.0f} entries/s over {args.repeats} runs")
    ours, base = median(figures["ours_decode"]), median(figures["betterproto2"])
    emit(
        {
            "bench": "als_decode",
            "entries_per_message": args.entries,
            "message_bytes": len(data),
            "repeats": args.repeats,
            "entries_per_s": {
                "ours_decode": round(ours),
                "ours_ingest": round(median(figures["ours_ingest"])),
                "betterproto2": round(base),
            },
            "speedup_vs_betterproto2": round(ours / base, 1),
            "target_entries_per_s": 100_000,
            "meets_target": ours >= 100_000,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
    )


if __name__ == "__main__":
    main()
