"""The control surface on the REST port: knobs, counters and Prometheus gauges.

`POST /admin/knobs` lets a test or bench start a regression (or change any
knob) without restarting the server, so a bench can time Weir's reaction from
a known onset; `GET /admin/stats` reports counters and that onset. `/metrics`
exports the queue-depth gauges real model servers export under their real
names (vLLM's `vllm:num_requests_waiting` / `vllm:num_requests_running`,
Triton's `nv_inference_pending_request_count`), for a latency-aware balancer
to read exactly as it would read theirs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devtools.model_servers.behaviour import Behaviour
from devtools.model_servers.knobs import Knobs
from devtools.model_servers.oip_rest import json_response


def prometheus_text(b: Behaviour) -> str:
    k = b.knobs
    waiting, running = b.limiter.waiting, b.limiter.running
    model = _label(k.model_name)
    lines = [
        "# HELP vllm:num_requests_waiting Requests queued for a serving slot (max_concurrency).",
        "# TYPE vllm:num_requests_waiting gauge",
        f'vllm:num_requests_waiting{{model_name="{model}"}} {waiting}',
        "# HELP vllm:num_requests_running Requests being served.",
        "# TYPE vllm:num_requests_running gauge",
        f'vllm:num_requests_running{{model_name="{model}"}} {running}',
        "# HELP nv_inference_pending_request_count Requests awaiting execution (Triton's name).",
        "# TYPE nv_inference_pending_request_count gauge",
        f'nv_inference_pending_request_count{{model="{model}",version="{_label(k.model_version)}"}} {waiting}',
        "# HELP weir_demo_in_flight Requests inside the server (queued + served).",
        "# TYPE weir_demo_in_flight gauge",
        f"weir_demo_in_flight {waiting + running}",
        "# HELP weir_demo_requests_total Inference requests by kind and final status.",
        "# TYPE weir_demo_requests_total counter",
    ]
    for kind, c in b.counters.items():
        for status, n in sorted(c.statuses.items(), key=lambda kv: str(kv[0])):
            lines.append(f'weir_demo_requests_total{{kind="{kind}",status="{_label(str(status))}"}} {n}')
    lines += ["# HELP weir_demo_tokens_total Output tokens produced.", "# TYPE weir_demo_tokens_total counter"]
    lines += [f'weir_demo_tokens_total{{kind="{kind}"}} {c.tokens}' for kind, c in b.counters.items()]
    return "\n".join(lines) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def routes(behaviour: Behaviour, set_knobs: Callable[[Mapping[str, Any]], Knobs]) -> list[Route]:
    async def knobs(request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = json.loads(await request.body())
                if not isinstance(changes, dict):
                    raise ValueError("body must be a JSON object of knob names to values")
                set_knobs(changes)
            except (ValueError, TypeError) as err:
                return json_response(400, {"error": str(err)})
        return json_response(200, {"knobs": behaviour.knobs.as_dict()})

    async def stats(request: Request) -> Response:
        return json_response(200, behaviour.stats())

    async def metrics(request: Request) -> Response:
        return Response(prometheus_text(behaviour), media_type="text/plain; version=0.0.4; charset=utf-8")

    return [
        Route("/admin/knobs", knobs, methods=["GET", "POST"]),
        Route("/admin/stats", stats, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
