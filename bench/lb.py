#!/usr/bin/env python3
"""Load balancing across model-server replicas: round robin vs least-request vs Weir latency-aware.

One real Envoy driven by Weir (in this process), four demo model servers as
processes (OIP REST infer; each serves at most `--slots` requests at once and
queues the rest, like a GPU server), closed-loop load through Envoy from this
process at about 70% of the replicas' capacity. Variants:

  slow        one replica 3x slower than the others
  alternating that replica alternates slow and fast every 20 s
  fast-fail   one replica answers 503 within 1 ms

For every (policy, variant): p50 and p99 latency of successful requests,
errors, each replica's share of the requests (from the servers' own
counters), and for `alternating` the time after each recovery until the
replica's share is back within 20% of fair (per-second shares).

Targets: latency-aware p99 >= 30% below round robin's and no worse than
least-request's; the fast-failing replica gets at most 5% of requests; after
a recovery its share is within 20% of fair within 30 s.
Output: one JSON line per (policy, variant). Usage: bench/lb.py [--seconds 40] [--variant V ...] [--policy P ...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _benchlib import emit, free_port, log  # noqa: F401  (sets sys.path)
from control_plane.assembly import start_control_plane
from devtools.devstack import EnvoyProcess
from devtools.http1 import Http1Pool
from devtools.model_servers.launcher import ModelServerProcess
from policies import RolloutPolicy
from xds.bootstrap import render_bootstrap

POLICIES = ("round-robin", "least-request", "latency-aware")
VARIANTS = ("slow", "alternating", "fast-fail")
BODY = b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","data":[1,2,3,4]}]}'
BASE_MS = 40.0


def policy(port: int, endpoints: list[str], lb: str) -> RolloutPolicy:
    return RolloutPolicy.model_validate({
        "apiVersion": "weir.dev/v1alpha1", "kind": "RolloutPolicy", "metadata": {"name": "lb"},
        "spec": {
            "service": {"name": "lb", "domains": ["*"], "port": port, "retries": {"attempts": 0}},
            "stable": {"version": "v1", "endpoints": endpoints[:4]},
            "canary": {"version": "v2", "endpoints": endpoints[4:]},
            # The canary holds 0% (its step never passes): the bench measures the stable version's replicas.
            "strategy": {"canary": {"steps": [{"weight": 0, "minRequests": 10_000_000, "maxDuration": "1h"}, {"weight": 100}]}},
            "loadBalancing": {"policy": lb},
            "analysis": {"slos": [{"metric": "error-rate", "maxIncrease": "1%"}]},
        },
    })


async def closed_loop(port: int, workers: int, seconds: float, latencies: list[float], errors: list[int]) -> None:
    pool = Http1Pool("127.0.0.1", port, max_connections=workers)
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            status = [0]
            try:
                await pool.request("POST", "/v2/models/demo/infer", BODY, headers={"content-type": "application/json"},
                                   on_headers=lambda s, h: status.__setitem__(0, s), on_body=lambda b: None)
            except OSError:
                status[0] = 0
            if status[0] == 200:
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                errors[0] += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    await pool.close()


async def one_case(lb: str, variant: str, seconds: float, slots: int, tmp: Path) -> dict:
    servers = [ModelServerProcess(model_version="v1", grpc_port=None, latency_ms=BASE_MS, latency_sigma=0.25,
                                  max_concurrency=slots, seed=i) for i in range(3)]
    if variant == "fast-fail":  # a replica that answers 503 within a millisecond
        special = ModelServerProcess(model_version="v1", grpc_port=None, latency_ms=0.5, error_rate=1.0,
                                     error_status=503, max_concurrency=slots, seed=3)
    else:  # a replica 3x slower (a noisy neighbour, long prompts)
        special = ModelServerProcess(model_version="v1", grpc_port=None, latency_ms=3 * BASE_MS, latency_sigma=0.25,
                                     max_concurrency=slots, seed=3)
    servers.append(special)
    canary = ModelServerProcess(model_version="v2", grpc_port=None)
    for s in [*servers, canary]:
        await asyncio.to_thread(s.start)
    cp = await start_control_plane(db=tmp / f"w-{time.monotonic_ns()}.db", listen_address="127.0.0.1", tick_s=0.5)
    envoy = EnvoyProcess(render_bootstrap("bench-1", "bench", "127.0.0.1", cp.xds_port, admin_port=free_port()))
    port = free_port()
    addresses = [f"127.0.0.1:{s.rest_port}" for s in [*servers, canary]]
    try:
        await cp.engine.submit(policy(port, addresses, lb))
        await asyncio.to_thread(envoy.start)
        await asyncio.to_thread(envoy.wait_listening, port)
        # ~70% of capacity: the fast replicas serve `slots` at a time at BASE_MS, the slow one a third of that.
        capacity_rps = (3 + (1 / 3 if variant != "fast-fail" else 0)) * slots * 1000 / BASE_MS
        workers = max(2, round(0.7 * capacity_rps * BASE_MS / 1000))
        latencies: list[float] = []
        errors = [0]
        shares: list[tuple[float, list[int]]] = []

        async def sample_shares() -> None:
            last = None
            start = time.monotonic()
            while time.monotonic() - start < seconds:
                counts = [s["requests"] for s in await asyncio.gather(*(asyncio.to_thread(x.stats) for x in servers))]
                if last is not None:
                    shares.append((time.monotonic() - start, [c - l for c, l in zip(counts, last)]))
                last = counts
                await asyncio.sleep(1.0)

        async def alternate() -> list[float]:
            recoveries = []
            t0 = time.monotonic()
            slow = True
            while time.monotonic() - t0 < seconds - 20:
                await asyncio.sleep(20)
                slow = not slow
                await asyncio.to_thread(special.set_knobs, latency_ms=3 * BASE_MS if slow else BASE_MS)
                if not slow:
                    recoveries.append(time.monotonic() - t0)
            return recoveries

        tasks = [closed_loop(port, workers, seconds, latencies, errors), sample_shares()]
        if variant == "alternating":
            tasks.append(alternate())
        results = await asyncio.gather(*tasks)
        recoveries = results[2] if variant == "alternating" else []
        totals = [s["requests"] for s in await asyncio.gather(*(asyncio.to_thread(x.stats) for x in servers))]
        total = sum(totals) or 1
        lat = np.array(latencies)
        recovery_s = []
        for at in recoveries:
            back = next((t - at for t, c in shares if t > at and sum(c) and abs(c[3] / sum(c) - 0.25) <= 0.2 * 0.25), None)
            recovery_s.append(None if back is None else round(back, 1))
        return {
            "bench": "lb", "policy": lb, "variant": variant, "seconds": seconds, "workers": workers,
            "requests": int(lat.size + errors[0]), "errors": errors[0],
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
            "shares": [round(c / total, 4) for c in totals],
            "special_share": round(totals[3] / total, 4),
            "recovery_to_fair_s": recovery_s,
        }
    finally:
        await asyncio.to_thread(envoy.stop)
        await cp.stop()
        for s in [*servers, canary]:
            await asyncio.to_thread(s.stop)


async def main_async(args) -> int:
    rows = []
    with tempfile.TemporaryDirectory(prefix="weir-bench-") as tmpdir:
        for variant in args.variant or VARIANTS:
            for lb in args.policy or POLICIES:
                seconds = args.seconds * (2 if variant == "alternating" else 1)
                row = await one_case(lb, variant, seconds, args.slots, Path(tmpdir))
                log(f"{variant:<12} {lb:<14} p50 {row['p50_ms']} p99 {row['p99_ms']} errors {row['errors']} "
                    f"shares {row['shares']} recovery {row['recovery_to_fair_s']}")
                emit(row)
                rows.append(row)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--slots", type=int, default=2, help="requests each replica serves at once")
    parser.add_argument("--variant", action="append", choices=VARIANTS)
    parser.add_argument("--policy", action="append", choices=POLICIES)
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
