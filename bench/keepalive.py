#!/usr/bin/env python3
"""Client-visible errors against a model server that closes idle keep-alive connections after 5 s.

uvicorn (MLServer, vLLM and many Python model servers) closes an idle
keep-alive connection after 5 s. An Envoy without an upstream idle timeout may
reuse a connection in the instant the server closes it: the request is reset
and the client gets a 503 (`upstream_cx_destroy_remote_with_active_rq`).

One real Envoy, one demo model server (uvicorn, keep-alive 5 s), two listeners
to the same server, in the same run:

  baseline   no upstream idle timeout, no retries (the routing Weir generated before)
  weir       Weir's defaults: upstream idle timeout 3 s, one retry of what never reached the server

The load is made to hit the race: bursts of `--burst` concurrent requests,
one burst every 5 s +- 60 ms per listener (so every burst reuses connections
that idled right about as long as the server allows), for `--minutes`.

Output: one JSON line per case: {"bench": "keepalive", "case", "requests", "errors", "error_rate",
"status_counts", "cx_destroy_remote_with_active_rq"}.
Usage: bench/keepalive.py [--minutes 10] [--burst 40] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import time
from datetime import timedelta

import httpx

from _benchlib import emit, free_port, log  # noqa: F401  (sets sys.path)
from devtools.devstack import EnvoyProcess
from devtools.model_servers import ModelServer
from xds.bootstrap import render_bootstrap
from xds.cache import SnapshotCache
from xds.routing import parse_routing
from xds.server import XdsServer
from xds.snapshot import snapshot_from_envoy
from xds.translate import translate

INFER = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64", "data": [0.1, 0.2, 0.3, 0.4]}]}


def service(name: str, port: int, backend: str, weir_defaults: bool) -> dict:
    svc = {
        "name": name, "port": port, "domains": ["*"],
        "backends": [{"version": "v1", "endpoints": [backend]}], "split": {"v1": 100},
        "lbPolicy": "round-robin",
    }
    if not weir_defaults:
        svc["idleTimeout"] = "1h"  # effectively none: what Envoy does by default
        svc["retries"] = {"attempts": 0}
    return svc


async def bursts(port: int, burst: int, until: float, counts: collections.Counter, seed: int) -> None:
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=burst, max_keepalive_connections=burst, keepalive_expiry=300)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        url = f"http://127.0.0.1:{port}/v2/models/demo/infer"
        while time.monotonic() < until:
            results = await asyncio.gather(*(client.post(url, json=INFER) for _ in range(burst)), return_exceptions=True)
            for r in results:
                counts[str(r.status_code) if isinstance(r, httpx.Response) else f"error:{type(r).__name__}"] += 1
            await asyncio.sleep(5.0 + rng.uniform(-0.06, 0.06))


async def main_async(args) -> int:
    server = ModelServer(model_version="v1", keep_alive_s=5)
    await server.start()
    backend = f"127.0.0.1:{server.ports.rest}"
    ports = {"baseline": free_port(), "weir": free_port()}
    routing = parse_routing({"listenAddress": "127.0.0.1", "services": [
        service("baseline", ports["baseline"], backend, weir_defaults=False),
        service("weir", ports["weir"], backend, weir_defaults=True),
    ]})
    cache = SnapshotCache()
    cache.set_snapshot("*", snapshot_from_envoy(translate(routing)))
    xds = XdsServer(cache)
    xds_port = await xds.start("127.0.0.1", 0)
    envoy = EnvoyProcess(render_bootstrap("bench-1", "bench", "127.0.0.1", xds_port, admin_port=free_port()))
    try:
        await asyncio.to_thread(envoy.start)
        for port in ports.values():
            await asyncio.to_thread(envoy.wait_listening, port)
        until = time.monotonic() + args.minutes * 60
        counts = {case: collections.Counter() for case in ports}
        log(f"keepalive: {args.minutes} min of bursts of {args.burst} every ~5 s on both listeners")
        await asyncio.gather(*(bursts(port, args.burst, until, counts[case], seed=i)
                               for i, (case, port) in enumerate(ports.items())))
        for case in ports:
            c = counts[case]
            total = sum(c.values())
            errors = total - c.get("200", 0)
            emit({
                "bench": "keepalive", "case": case, "minutes": args.minutes, "burst": args.burst,
                "requests": total, "errors": errors, "error_rate": round(errors / total, 6) if total else None,
                "status_counts": dict(sorted(c.items())),
                "cx_destroy_remote_with_active_rq": envoy.stat(f"cluster.{case}-v1.upstream_cx_destroy_remote_with_active_rq"),
                "retries": envoy.stat(f"cluster.{case}-v1.upstream_rq_retry"),
            })
    finally:
        await asyncio.to_thread(envoy.stop)
        await xds.stop()
        await server.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--burst", type=int, default=40)
    parser.add_argument("--quick", action="store_true", help="2 minutes")
    args = parser.parse_args()
    if args.quick:
        args.minutes = 2.0
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
