"""Open Inference Protocol over gRPC (grpc.aio, h2c): inference.GRPCInferenceService.

Handlers are registered under the real method paths
(`/inference.GRPCInferenceService/ModelInfer`, ...) with a generic handler,
while the messages are our own wire-compatible ones (wire/oip.proto), so real
OIP clients (KServe's, Triton's) talk to it unchanged.

What a proxy sees matters here: a successful ModelInfer sends headers carrying
`x-model-name` / `x-model-version`, the message, then trailers with
grpc-status 0. Every failure (injected or not) is decided before anything is
sent, so it leaves as a trailers-only response: one HEADERS frame with
END_STREAM holding grpc-status, grpc-message and the same `x-model-*` keys.
That is how real servers fail fast, and it is the case a proxy's gRPC status
accounting most often gets wrong.
"""

from __future__ import annotations

import asyncio

import grpc
import numpy as np

from devtools.model_servers.behaviour import Behaviour
from devtools.model_servers.model import TinyMLP, mlp_metadata
from devtools.model_servers.tensors import InvalidInput, batch_from, decode_raw, output_datatype
from devtools.model_servers.wire import oip_pb2 as pb

SERVICE = "inference.GRPCInferenceService"
KIND = "oip_grpc"

# Which InferTensorContents field carries each data type.
_CONTENTS_FIELD = {
    "FP64": "fp64_contents", "FP32": "fp32_contents", "INT64": "int64_contents", "INT32": "int_contents",
    "INT16": "int_contents", "INT8": "int_contents", "UINT64": "uint64_contents", "UINT32": "uint_contents",
    "UINT16": "uint_contents", "UINT8": "uint_contents",
}
_RAW_DTYPE = {"FP64": "<f8", "INT64": "<i8"}


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _batch_of(request: pb.ModelInferRequest) -> tuple[np.ndarray, bool]:
    """The request's single input as [batch, 4], and whether it came as raw bytes."""
    if len(request.inputs) != 1:
        raise InvalidInput(f"the model takes exactly one input tensor, got {len(request.inputs)}")
    tensor = request.inputs[0]
    if request.raw_input_contents:
        values = decode_raw(request.raw_input_contents[0], tensor.datatype)
        raw = True
    else:
        field = _CONTENTS_FIELD.get(tensor.datatype)
        if field is None:
            raise InvalidInput(f"unsupported datatype {tensor.datatype!r}")
        values = np.asarray(getattr(tensor.contents, field), dtype=np.float64)
        raw = False
    return batch_from(values, list(tensor.shape), tensor.datatype), raw


class OipGrpcService:
    """The handlers; `handler()` is what a grpc.aio server registers."""

    def __init__(self, behaviour: Behaviour, model: TinyMLP) -> None:
        self.b = behaviour
        self.model = model

    async def server_live(self, request: pb.ServerLiveRequest, context) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: pb.ServerReadyRequest, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.b.server_ready)

    async def server_metadata(self, request: pb.ServerMetadataRequest, context) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="weir-demo-model-server", version="1")

    async def model_ready(self, request: pb.ModelReadyRequest, context) -> pb.ModelReadyResponse:
        if not self.b.knows_model(request.name, request.version):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model {request.name!r} not found")
        return pb.ModelReadyResponse(ready=self.b.model_ready)

    async def model_metadata(self, request: pb.ModelMetadataRequest, context) -> pb.ModelMetadataResponse:
        if not self.b.knows_model(request.name, request.version):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model {request.name!r} not found")
        meta = mlp_metadata(self.b.knobs.model_name, self.b.knobs.model_version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
            outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]],
        )

    async def model_infer(self, request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        b = self.b
        plan = b.admit(KIND, grpc=True)
        k = plan.knobs
        metadata = (("x-model-name", k.model_name), ("x-model-version", k.model_version))
        try:
            if not b.knows_model(request.model_name, request.model_version):
                raise _Abort(grpc.StatusCode.NOT_FOUND, f"model {request.model_name!r} not found")
            if not b.model_ready:
                raise _Abort(grpc.StatusCode.UNAVAILABLE, f"model {request.model_name!r} is not ready")
            try:
                batch, raw = _batch_of(request)
            except InvalidInput as err:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, str(err)) from None
            requested = [o.name for o in request.outputs]
            unknown = sorted(set(requested) - set(TinyMLP.outputs))
            if unknown:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown outputs {unknown}")
            async with b.limiter.slot():
                if plan.latency_s > 0:
                    await asyncio.sleep(plan.latency_s)
                if plan.fail:
                    raise _Abort(_status(k.grpc_error_code), "injected error")
                result = self.model.predict(batch)
        except _Abort as abort:
            b.finish(KIND, abort.code.name, False)
            await context.abort(abort.code, abort.message, trailing_metadata=metadata)
        response = pb.ModelInferResponse(model_name=k.model_name, model_version=k.model_version, id=request.id)
        for name in TinyMLP.outputs:
            if requested and name not in requested:
                continue
            array = result[name]
            out = response.outputs.add(name=name, datatype=output_datatype(array), shape=list(array.shape))
            if raw:
                response.raw_output_contents.append(array.astype(_RAW_DTYPE[out.datatype]).tobytes())
            elif out.datatype == "FP64":
                out.contents.fp64_contents.extend(array.ravel().tolist())
            else:
                out.contents.int64_contents.extend(array.ravel().tolist())
        await context.send_initial_metadata(metadata)
        context.set_trailing_metadata(metadata)
        b.finish(KIND, "OK", True)
        return response

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(fn, request_type, response_type):
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=request_type.FromString, response_serializer=response_type.SerializeToString)

        return grpc.method_handlers_generic_handler(SERVICE, {
            "ServerLive": unary(self.server_live, pb.ServerLiveRequest, pb.ServerLiveResponse),
            "ServerReady": unary(self.server_ready, pb.ServerReadyRequest, pb.ServerReadyResponse),
            "ServerMetadata": unary(self.server_metadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
            "ModelReady": unary(self.model_ready, pb.ModelReadyRequest, pb.ModelReadyResponse),
            "ModelMetadata": unary(self.model_metadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
            "ModelInfer": unary(self.model_infer, pb.ModelInferRequest, pb.ModelInferResponse),
        })


def _status(code: int) -> grpc.StatusCode:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status
    raise ValueError(f"unknown gRPC status code {code}")
