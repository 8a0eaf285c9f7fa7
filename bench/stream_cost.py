"""CPU cost of Weir's pure xDS protocol logic per proxy and push, without gRPC or asyncio.

    .venv/bin/python bench/stream_cost.py [--proxies 1000] [--delta] [--repeats 5]

Drives N ``SotwStream`` / ``DeltaStream`` objects (xds/streams.py) through the
same Envoy-like handshake as bench/xds_fanout.py, then changes one route weight
and times, separately, the push (``cache.set_snapshot`` -> every stream's
``apply_pending``, which builds the responses) and the ACKs (``on_request``
with each response's nonce). The difference between this and the fan-out
benchmark's server CPU is the gRPC/asyncio transport.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import time

from _benchlib import GROUP, build_snapshot, emit, log, median
from xds_fanout import DeltaEnvoy, PayloadNames, SotwEnvoy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxies", type=int, default=1000)
    p.add_argument("--delta", action="store_true")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--services", type=int, default=1)
    p.add_argument("--gc", choices=("on", "off"), default="on", help="off: gc.disable() while timing")
    args = p.parse_args()

    from xds.cache import SnapshotCache
    from xds.status import StatusRegistry
    from xds.streams import DeltaStream, SotwStream

    cache, registry = SnapshotCache(), StatusRegistry()
    cache.set_snapshot(GROUP, build_snapshot(args.services, 90))
    memo = PayloadNames()
    Stream, Envoy = (DeltaStream, DeltaEnvoy) if args.delta else (SotwStream, SotwEnvoy)
    pairs = []

    def exchange(stream, envoy, requests) -> int:
        """Feed requests; answer every response the stream produces; returns responses seen."""
        seen = 0
        queue = list(requests)
        while queue:
            stream.on_request(queue.pop(0))
            out, stream.outbox = stream.outbox, []
            for payload in out:
                seen += 1
                queue.extend(envoy.on_response(envoy.Resp.FromString(payload)))
        return seen

    for i in range(args.proxies):
        stream, envoy = Stream(cache, registry, f"ipv4:127.0.0.1:{i}"), Envoy(i, memo)
        exchange(stream, envoy, envoy.first())
        pairs.append((stream, envoy))
    snap0 = cache.snapshot(GROUP)
    conv, conn = registry.counts(GROUP, snap0.version)
    assert conv == conn == args.proxies, (conv, conn)
    log(f"{args.proxies} {'delta' if args.delta else 'sotw'} streams converged")

    push_us, ack_us = [], []
    for r in range(args.repeats):
        snap = build_snapshot(args.services, (80, 90)[r % 2])
        if args.gc == "off":
            gc.disable()
        t0 = time.perf_counter()
        cache.set_snapshot(GROUP, snap)  # wake is unset: every stream applies the change at once
        t1 = time.perf_counter()
        responses = []
        for stream, envoy in pairs:
            out, stream.outbox = stream.outbox, []
            responses.append([envoy.Resp.FromString(b) for b in out])
        acks = [[req for resp in rs for req in envoy.on_response(resp)] for rs, (_, envoy) in zip(responses, pairs)]
        t2 = time.perf_counter()
        for (stream, _), reqs in zip(pairs, acks):
            for req in reqs:
                stream.on_request(req)
        t3 = time.perf_counter()
        gc.enable()
        conv, conn = registry.counts(GROUP, snap.version)
        assert conv == conn == args.proxies, (conv, conn)
        push_us.append((t1 - t0) * 1e6 / args.proxies)
        ack_us.append((t3 - t2) * 1e6 / args.proxies)
        log(f"repeat {r + 1}: push {push_us[-1]:.1f} us/proxy, ACK {ack_us[-1]:.1f} us/proxy")
    emit({
        "bench": "stream_cost",
        "proxies": args.proxies,
        "protocol": "delta" if args.delta else "sotw",
        "push_us_per_proxy": round(median(push_us), 1),
        "ack_us_per_proxy": round(median(ack_us), 1),
        "push_us_min": round(min(push_us), 1),
        "ack_us_min": round(min(ack_us), 1),
        "services": args.services,
        "repeats": args.repeats,
        "gc": args.gc,
    })


if __name__ == "__main__":
    main()
