"""Open Inference Protocol (KServe v2) over REST: health, metadata and infer.

Status codes follow what KServe and Triton answer, because that is what a
proxy's health checks and retry policies are configured against: 200 ready,
503 not ready (a non-200 is "not ready"), 404 unknown model, 400 bad tensors,
`error_status` (default 500) for injected errors. Error bodies are the
protocol's `{"error": "..."}`. Every inference answer carries
`x-model-name` / `x-model-version` headers, so a client (or a proxy's access
log) can tell which backend answered even when the answer is an error.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from devtools.model_servers.behaviour import Behaviour
from devtools.model_servers.model import TinyMLP, mlp_metadata
from devtools.model_servers.tensors import InvalidInput, batch_from, output_datatype

KIND = "oip_rest"


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status_code=status,
                    media_type="application/json", headers=headers)


def model_headers(behaviour: Behaviour) -> dict[str, str]:
    k = behaviour.knobs
    return {"x-model-name": k.model_name, "x-model-version": k.model_version}


def parse_infer_body(body: Any) -> tuple[np.ndarray, list[str] | None, str | None]:
    """(batch [B, 4], requested output names or None, request id) from an OIP REST infer body."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or len(body["inputs"]) != 1:
        raise InvalidInput('body must be {"inputs": [one tensor]}')
    tensor = body["inputs"][0]
    if not isinstance(tensor, dict) or not {"shape", "datatype", "data"} <= tensor.keys():
        raise InvalidInput("an input tensor needs name, shape, datatype and data")
    try:
        values = np.asarray(tensor["data"], dtype=np.float64).ravel()
    except (TypeError, ValueError) as err:
        raise InvalidInput(f"input data is not numeric: {err}") from None
    if not isinstance(tensor["shape"], list) or not all(isinstance(d, int) for d in tensor["shape"]):
        raise InvalidInput("shape must be a list of integers")
    batch = batch_from(values, tensor["shape"], str(tensor["datatype"]))
    requested = None
    if isinstance(body.get("outputs"), list):
        requested = [str(o.get("name")) for o in body["outputs"] if isinstance(o, dict)]
        unknown = sorted(set(requested) - set(TinyMLP.outputs))
        if unknown:
            raise InvalidInput(f"unknown outputs {unknown} (the model has {list(TinyMLP.outputs)})")
    request_id = body.get("id")
    return batch, requested, None if request_id is None else str(request_id)


def routes(behaviour: Behaviour, model: TinyMLP) -> list[Route]:
    b = behaviour

    async def live(request: Request) -> Response:
        return json_response(200, {"live": True})

    async def ready(request: Request) -> Response:
        ok = b.server_ready
        return json_response(200 if ok else 503, {"ready": ok})

    async def server_metadata(request: Request) -> Response:
        return json_response(200, {"name": "weir-demo-model-server", "version": "1", "extensions": []})

    def unknown(name: str) -> Response:
        return json_response(404, {"error": f"model {name!r} not found"}, model_headers(b))

    async def model_metadata(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version", "")
        if not b.knows_model(name, version):
            return unknown(name)
        return json_response(200, mlp_metadata(name, b.knobs.model_version), model_headers(b))

    async def model_ready(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version", "")
        if not b.knows_model(name, version):
            return unknown(name)
        ok = b.model_ready
        return json_response(200 if ok else 503, {"name": name, "ready": ok}, model_headers(b))

    async def infer(request: Request) -> Response:
        plan = b.admit(KIND)
        k = plan.knobs
        headers = {"x-model-name": k.model_name, "x-model-version": k.model_version}

        def done(status: int, body: Any) -> Response:
            b.finish(KIND, status, status == 200)
            return json_response(status, body, headers)

        raw = await request.body()  # read first: an unread body would spoil the keep-alive connection
        name, version = request.path_params["name"], request.path_params.get("version", "")
        if not b.knows_model(name, version):
            return done(404, {"error": f"model {name!r} not found"})
        if not b.model_ready:
            return done(503, {"error": f"model {name!r} is not ready"})
        try:
            batch, requested, request_id = parse_infer_body(json.loads(raw))
        except (InvalidInput, ValueError) as err:
            return done(400, {"error": str(err)})
        async with b.limiter.slot():
            if plan.latency_s > 0:
                await asyncio.sleep(plan.latency_s)
            if plan.fail:
                return done(k.error_status, {"error": "injected error"})
            result = model.predict(batch)
        outputs = [
            {"name": out, "shape": list(result[out].shape), "datatype": output_datatype(result[out]),
             "data": result[out].ravel().tolist()}
            for out in TinyMLP.outputs if requested is None or out in requested
        ]
        body: dict[str, Any] = {"model_name": k.model_name, "model_version": k.model_version, "outputs": outputs}
        if request_id is not None:
            body["id"] = request_id
        return done(200, body)

    return [
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/models/{name}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
    ]
