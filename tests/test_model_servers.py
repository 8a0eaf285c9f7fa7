"""The demo model servers speak the real protocols and their knobs do what they say.

Everything runs for real on 127.0.0.1 with OS-assigned ports: uvicorn for
OIP REST and OpenAI SSE, grpc.aio for OIP gRPC, clients that are not ours
(httpx, grpcio with descriptors built here from KServe's field table, a raw
h2 connection, raw sockets). Timing assertions only bound injected delays,
generously; error rates are checked against binomial 99.9% intervals.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import socket
import subprocess
import sys
import time

import grpc
import h2.config
import h2.connection
import h2.events
import httpx
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from scipy.stats import binom

from devtools.http1 import Http1Pool
from devtools.model_servers import Knobs, ModelServer, ModelServerProcess
from devtools.model_servers.model import TokenGenerator
from devtools.model_servers.wire import oip_pb2

# -- helpers ---------------------------------------------------------------------------


@pytest.fixture
async def serve():
    """Start in-process servers with knobs; all are stopped at the end of the test."""
    servers: list[ModelServer] = []

    async def start(**knobs) -> ModelServer:
        server = ModelServer(**knobs)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def infer_body(rows: list[list[float]], datatype: str = "FP64") -> dict:
    return {"inputs": [{"name": "input-0", "shape": [len(rows), 4], "datatype": datatype,
                        "data": [v for row in rows for v in row]}]}


def reference_mlp(row: list[float]) -> list[float]:
    """The MLP computed independently: the weight formula restated, plain floats, no numpy."""
    w1 = [[math.sin(1.0 + i * 8 + j) for j in range(8)] for i in range(4)]
    b1 = [0.1 * math.cos(j + 1.0) for j in range(8)]
    w2 = [[math.cos(0.5 + i * 3 + k) for k in range(3)] for i in range(8)]
    b2 = [0.05 * (k - 1) for k in range(3)]
    hidden = [math.tanh(sum(row[i] * w1[i][j] for i in range(4)) + b1[j]) for j in range(8)]
    logits = [sum(hidden[i] * w2[i][k] for i in range(8)) + b2[k] for k in range(3)]
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    return [e / sum(exps) for e in exps]


async def many(n: int, concurrency: int, one) -> list:
    """Call `one(i)` n times, at most `concurrency` at once, results in order."""
    results: list = [None] * n
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            results[i] = await one(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def binomial_ok(count: int, n: int, p: float) -> bool:
    low, high = binom.interval(0.999, n, p)
    return low <= count <= high


async def rest_statuses(server: ModelServer, n: int, concurrency: int = 16) -> list[int]:
    pool = Http1Pool("127.0.0.1", server.ports.rest, max_connections=concurrency)
    body = json.dumps(infer_body([[0.1, 0.2, 0.3, 0.4]])).encode()

    async def one(i: int) -> int:
        return await pool.request("POST", "/v2/models/demo/infer", body, headers={"content-type": "application/json"},
                                  on_headers=lambda s, h: None, on_body=lambda b: None)

    try:
        return await many(n, concurrency, one)
    finally:
        await pool.close()


# -- KServe's grpc_predict_v2.proto, restated independently of our .proto ----------------
# (name, number, type, repeated) for every field of the messages the server uses; the
# `parameters` maps (field 4 / 2) are included so the client below sends fields our
# messages do not declare.

T = descriptor_pb2.FieldDescriptorProto
UPSTREAM: dict[str, list[tuple[str, int, int | str, bool]]] = {
    "ServerLiveRequest": [],
    "ServerLiveResponse": [("live", 1, T.TYPE_BOOL, False)],
    "ServerReadyRequest": [],
    "ServerReadyResponse": [("ready", 1, T.TYPE_BOOL, False)],
    "ModelReadyRequest": [("name", 1, T.TYPE_STRING, False), ("version", 2, T.TYPE_STRING, False)],
    "ModelReadyResponse": [("ready", 1, T.TYPE_BOOL, False)],
    "ServerMetadataRequest": [],
    "ServerMetadataResponse": [("name", 1, T.TYPE_STRING, False), ("version", 2, T.TYPE_STRING, False),
                               ("extensions", 3, T.TYPE_STRING, True)],
    "ModelMetadataRequest": [("name", 1, T.TYPE_STRING, False), ("version", 2, T.TYPE_STRING, False)],
    "ModelMetadataResponse": [("name", 1, T.TYPE_STRING, False), ("versions", 2, T.TYPE_STRING, True),
                              ("platform", 3, T.TYPE_STRING, False),
                              ("inputs", 4, "ModelMetadataResponse.TensorMetadata", True),
                              ("outputs", 5, "ModelMetadataResponse.TensorMetadata", True)],
    "ModelMetadataResponse.TensorMetadata": [("name", 1, T.TYPE_STRING, False), ("datatype", 2, T.TYPE_STRING, False),
                                             ("shape", 3, T.TYPE_INT64, True)],
    "InferParameter": [("bool_param", 1, T.TYPE_BOOL, False), ("int64_param", 2, T.TYPE_INT64, False),
                       ("string_param", 3, T.TYPE_STRING, False)],
    "InferTensorContents": [("bool_contents", 1, T.TYPE_BOOL, True), ("int_contents", 2, T.TYPE_INT32, True),
                            ("int64_contents", 3, T.TYPE_INT64, True), ("uint_contents", 4, T.TYPE_UINT32, True),
                            ("uint64_contents", 5, T.TYPE_UINT64, True), ("fp32_contents", 6, T.TYPE_FLOAT, True),
                            ("fp64_contents", 7, T.TYPE_DOUBLE, True), ("bytes_contents", 8, T.TYPE_BYTES, True)],
    "ModelInferRequest": [("model_name", 1, T.TYPE_STRING, False), ("model_version", 2, T.TYPE_STRING, False),
                          ("id", 3, T.TYPE_STRING, False), ("parameters", 4, "map", True),
                          ("inputs", 5, "ModelInferRequest.InferInputTensor", True),
                          ("outputs", 6, "ModelInferRequest.InferRequestedOutputTensor", True),
                          ("raw_input_contents", 7, T.TYPE_BYTES, True)],
    "ModelInferRequest.InferInputTensor": [("name", 1, T.TYPE_STRING, False), ("datatype", 2, T.TYPE_STRING, False),
                                           ("shape", 3, T.TYPE_INT64, True), ("parameters", 4, "map", True),
                                           ("contents", 5, "InferTensorContents", False)],
    "ModelInferRequest.InferRequestedOutputTensor": [("name", 1, T.TYPE_STRING, False),
                                                     ("parameters", 2, "map", True)],
    "ModelInferResponse": [("model_name", 1, T.TYPE_STRING, False), ("model_version", 2, T.TYPE_STRING, False),
                           ("id", 3, T.TYPE_STRING, False), ("parameters", 4, "map", True),
                           ("outputs", 5, "ModelInferResponse.InferOutputTensor", True),
                           ("raw_output_contents", 6, T.TYPE_BYTES, True)],
    "ModelInferResponse.InferOutputTensor": [("name", 1, T.TYPE_STRING, False), ("datatype", 2, T.TYPE_STRING, False),
                                             ("shape", 3, T.TYPE_INT64, True), ("parameters", 4, "map", True),
                                             ("contents", 5, "InferTensorContents", False)],
}


def test_our_oip_messages_have_kserves_numbers_and_types():
    """Every field our oip.proto declares has KServe's number, type and cardinality; only maps are left out."""
    checked = 0
    for name, fields in UPSTREAM.items():
        if name == "InferParameter":
            continue
        ours = oip_pb2.DESCRIPTOR.message_types_by_name[name.split(".")[0]]
        for part in name.split(".")[1:]:
            ours = ours.nested_types_by_name[part]
        declared = {f.name: f for f in ours.fields}
        for fname, number, ftype, repeated in fields:
            if ftype == "map":
                assert fname not in declared
                continue
            f = declared.pop(fname)
            assert f.number == number, (name, fname)
            expected = T.TYPE_MESSAGE if isinstance(ftype, str) else ftype
            assert f.type == expected, (name, fname)
            assert f.is_repeated == repeated, (name, fname)
            if isinstance(ftype, str):
                assert f.message_type.full_name == "weir.demo.oip.v1." + ftype
            checked += 1
        assert not declared, f"{name} declares fields KServe does not have: {sorted(declared)}"
    assert checked == 46


def upstream_messages() -> dict[str, type]:
    """Message classes in package `inference`, built from the table in a private descriptor pool."""
    file = descriptor_pb2.FileDescriptorProto(name="test_upstream_inference.proto", package="inference",
                                              syntax="proto3")
    protos: dict[str, descriptor_pb2.DescriptorProto] = {}
    for name in UPSTREAM:  # parents precede their nested types in the table
        parent, _, leaf = name.rpartition(".")
        proto = (protos[parent].nested_type if parent else file.message_type).add(name=leaf)
        protos[name] = proto
    for name, fields in UPSTREAM.items():
        for fname, number, ftype, repeated in fields:
            field = protos[name].field.add(name=fname, number=number,
                                           label=T.LABEL_REPEATED if repeated else T.LABEL_OPTIONAL)
            if ftype == "map":
                entry = protos[name].nested_type.add(name="ParametersEntry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=T.TYPE_STRING, label=T.LABEL_OPTIONAL)
                entry.field.add(name="value", number=2, type=T.TYPE_MESSAGE, label=T.LABEL_OPTIONAL,
                                type_name=".inference.InferParameter")
                field.type, field.type_name = T.TYPE_MESSAGE, f".inference.{name}.ParametersEntry"
            elif isinstance(ftype, str):
                field.type, field.type_name = T.TYPE_MESSAGE, f".inference.{ftype}"
            else:
                field.type = ftype
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName("inference." + name))
            for name in UPSTREAM}


class UpstreamClient:
    """A grpcio client with upstream message types and the real method paths."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.m = upstream_messages()
        self.channel = channel

    def call(self, method: str, request, response_type: str):
        rpc = self.channel.unary_unary(f"/inference.GRPCInferenceService/{method}",
                                       request_serializer=lambda msg: msg.SerializeToString(),
                                       response_deserializer=self.m[response_type].FromString)
        return rpc(request, timeout=5)


# -- OIP REST --------------------------------------------------------------------------


async def test_rest_health_metadata_and_infer_shapes(serve):
    server = await serve(model_name="sentiment", model_version="v7")
    async with httpx.AsyncClient(base_url=server.rest_url) as c:
        assert (await c.get("/v2/health/live")).json() == {"live": True}
        ready = await c.get("/v2/health/ready")
        assert ready.status_code == 200 and ready.json() == {"ready": True}
        meta = (await c.get("/v2/models/sentiment")).json()
        assert meta["name"] == "sentiment" and meta["versions"] == ["v7"]
        assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
        assert [o["name"] for o in meta["outputs"]] == ["probabilities", "label"]
        assert (await c.get("/v2/models/sentiment/ready")).json() == {"name": "sentiment", "ready": True}
        assert (await c.get("/v2/models/sentiment/versions/v7/ready")).status_code == 200
        assert (await c.get("/v2/models/sentiment/versions/v1/ready")).status_code == 404
        assert (await c.get("/v2/models/other")).status_code == 404

        resp = await c.post("/v2/models/sentiment/infer", json={**infer_body([[1, 2, 3, 4], [0, 0, 0, 0]]), "id": "r1"})
        assert resp.status_code == 200
        assert resp.headers["x-model-name"] == "sentiment" and resp.headers["x-model-version"] == "v7"
        body = resp.json()
        assert body["model_name"] == "sentiment" and body["model_version"] == "v7" and body["id"] == "r1"
        probs, label = body["outputs"]
        assert probs["name"] == "probabilities" and probs["shape"] == [2, 3] and probs["datatype"] == "FP64"
        assert label["name"] == "label" and label["shape"] == [2] and label["datatype"] == "INT64"

        only = await c.post("/v2/models/sentiment/infer",
                            json={**infer_body([[1, 2, 3, 4]]), "outputs": [{"name": "label"}]})
        assert [o["name"] for o in only.json()["outputs"]] == ["label"]
        for bad in ({"inputs": []}, infer_body([[1, 2, 3]]), {"inputs": [{"name": "x", "shape": [1, 4],
                                                                           "datatype": "BYTES", "data": ["a"] * 4}]}):
            resp = await c.post("/v2/models/sentiment/infer", json=bad)
            assert resp.status_code == 400 and "error" in resp.json()
        assert (await c.post("/v2/models/sentiment/infer", content=b"not json")).status_code == 400
        assert (await c.post("/v2/models/nope/infer", json=infer_body([[1, 2, 3, 4]]))).status_code == 404
    kinds = server.stats()["kinds"]["oip_rest"]
    assert kinds["requests"] == 7 and kinds["statuses"] == {"200": 2, "400": 4, "404": 1}


async def test_rest_outputs_match_an_independent_computation(serve):
    server = await serve()
    rng = random.Random(7)
    rows = [[rng.uniform(-3, 3) for _ in range(4)] for _ in range(16)]
    async with httpx.AsyncClient(base_url=server.rest_url) as c:
        fp64 = (await c.post("/v2/models/demo/infer", json=infer_body(rows))).json()["outputs"]
        nested = {"inputs": [{"name": "input-0", "shape": [16, 4], "datatype": "FP32", "data": rows}]}
        fp32 = (await c.post("/v2/models/demo/infer", json=nested)).json()["outputs"]
    for i, row in enumerate(rows):
        expected = reference_mlp(row)
        assert fp64[0]["data"][3 * i:3 * i + 3] == pytest.approx(expected, abs=1e-12)
        assert fp64[1]["data"][i] == expected.index(max(expected))
        assert fp32[0]["data"][3 * i:3 * i + 3] == pytest.approx(expected, abs=1e-12)
    assert len({tuple(fp64[0]["data"][3 * i:3 * i + 3]) for i in range(16)}) == 16  # depends on the input


# -- OIP gRPC --------------------------------------------------------------------------


async def test_grpc_real_method_paths_with_upstream_messages(serve):
    server = await serve(model_name="sentiment", model_version="v3")
    rng = random.Random(3)
    rows = [[rng.uniform(-2, 2) for _ in range(4)] for _ in range(5)]
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        client = UpstreamClient(channel)
        m = client.m
        assert (await client.call("ServerLive", m["ServerLiveRequest"](), "ServerLiveResponse")).live
        assert (await client.call("ServerReady", m["ServerReadyRequest"](), "ServerReadyResponse")).ready
        assert (await client.call("ModelReady", m["ModelReadyRequest"](name="sentiment"), "ModelReadyResponse")).ready
        meta = await client.call("ModelMetadata", m["ModelMetadataRequest"](name="sentiment"), "ModelMetadataResponse")
        assert meta.name == "sentiment" and list(meta.versions) == ["v3"]
        assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("input-0", "FP64", [-1, 4])]
        server_meta = await client.call("ServerMetadata", m["ServerMetadataRequest"](), "ServerMetadataResponse")
        assert server_meta.name == "weir-demo-model-server"

        request = m["ModelInferRequest"](model_name="sentiment", id="abc")
        request.parameters["priority"].string_param = "high"  # a field our messages do not declare
        tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[5, 4])
        tensor.parameters["binary_data"].bool_param = False
        tensor.contents.fp64_contents.extend(v for row in rows for v in row)
        call = client.call("ModelInfer", request, "ModelInferResponse")
        response = await call
        assert dict(await call.initial_metadata())["x-model-version"] == "v3"
        assert dict(await call.trailing_metadata())["x-model-version"] == "v3"
        assert (response.model_name, response.model_version, response.id) == ("sentiment", "v3", "abc")
        probs, labels = response.outputs
        assert (probs.name, probs.datatype, list(probs.shape)) == ("probabilities", "FP64", [5, 3])
        assert (labels.name, labels.datatype, list(labels.shape)) == ("label", "INT64", [5])
        for i, row in enumerate(rows):
            expected = reference_mlp(row)
            assert list(probs.contents.fp64_contents[3 * i:3 * i + 3]) == pytest.approx(expected, abs=1e-12)
            assert labels.contents.int64_contents[i] == expected.index(max(expected))

        # Triton-style raw tensors: raw in, raw out.
        raw_request = m["ModelInferRequest"](model_name="sentiment")
        raw_request.inputs.add(name="input-0", datatype="FP32", shape=[5, 4])
        raw_request.raw_input_contents.append(np.asarray(rows, dtype="<f4").tobytes())
        raw_request.outputs.add(name="probabilities")
        raw = await client.call("ModelInfer", raw_request, "ModelInferResponse")
        assert [o.name for o in raw.outputs] == ["probabilities"] and len(raw.raw_output_contents) == 1
        got = np.frombuffer(raw.raw_output_contents[0], dtype="<f8").reshape(5, 3)
        for i, row in enumerate(rows):
            assert list(got[i]) == pytest.approx(reference_mlp(row), abs=1e-6)  # FP32 input


async def test_grpc_status_codes_reach_a_real_client_with_trailers(serve):
    server = await serve(grpc_error_rate=1.0, grpc_error_code=14, model_version="v2")
    async with grpc.aio.insecure_channel(server.grpc_target) as channel:
        client = UpstreamClient(channel)
        m = client.m

        def request(name="demo", shape=(1, 4)):
            r = m["ModelInferRequest"](model_name=name)
            t = r.inputs.add(name="input-0", datatype="FP64", shape=list(shape))
            t.contents.fp64_contents.extend([0.5] * (shape[0] * shape[1]))
            return r

        async def status_of(req):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await client.call("ModelInfer", req, "ModelInferResponse")
            return err.value

        injected = await status_of(request())
        assert injected.code() == grpc.StatusCode.UNAVAILABLE and injected.details() == "injected error"
        assert dict(injected.trailing_metadata())["x-model-version"] == "v2"
        for code in ("INTERNAL", "NOT_FOUND", "INVALID_ARGUMENT"):
            server.set_knobs(grpc_error_code=code)
            assert (await status_of(request())).code() == getattr(grpc.StatusCode, code)
        server.set_knobs(grpc_error_rate=0.0)
        assert (await status_of(request(name="other"))).code() == grpc.StatusCode.NOT_FOUND
        assert (await status_of(request(shape=(1, 3)))).code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.call("ModelReady", m["ModelReadyRequest"](name="other"), "ModelReadyResponse")
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        ok = await client.call("ModelInfer", request(), "ModelInferResponse")
        assert ok.model_version == "v2"
    statuses = server.stats()["kinds"]["oip_grpc"]["statuses"]
    assert statuses == {"INTERNAL": 1, "INVALID_ARGUMENT": 2, "NOT_FOUND": 2, "OK": 1, "UNAVAILABLE": 1}


async def h2_exchange(port: int, path: str, message: bytes) -> list[tuple]:
    """One gRPC call over a raw h2 connection: the frames as received, in order."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                            (":authority", f"127.0.0.1:{port}"), ("content-type", "application/grpc"),
                            ("te", "trailers")])
    conn.send_data(sid, b"\x00" + len(message).to_bytes(4, "big") + message, end_stream=True)
    writer.write(conn.data_to_send())
    frames: list[tuple] = []
    try:
        while not frames or frames[-1][0] != "end":
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data, "connection closed before the stream ended"
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    frames.append(("headers", dict(event.headers), event.stream_ended is not None))
                elif isinstance(event, h2.events.DataReceived):
                    frames.append(("data", event.data))
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.TrailersReceived):
                    frames.append(("trailers", dict(event.headers)))
                elif isinstance(event, h2.events.StreamEnded):
                    frames.append(("end",))
            writer.write(conn.data_to_send())
    finally:
        writer.close()
    return frames


async def test_grpc_failures_are_trailers_only_on_the_wire(serve):
    server = await serve(model_version="v9")
    request = oip_pb2.ModelInferRequest(model_name="demo")
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4])
    tensor.contents.fp64_contents.extend([1, 2, 3, 4])
    path = "/inference.GRPCInferenceService/ModelInfer"

    ok = await h2_exchange(server.ports.grpc, path, request.SerializeToString())
    assert [f[0] for f in ok] == ["headers", "data", "trailers", "end"]
    assert ok[0][1][":status"] == "200" and "grpc-status" not in ok[0][1] and ok[0][1]["x-model-version"] == "v9"
    assert ok[2][1]["grpc-status"] == "0" and ok[2][1]["x-model-version"] == "v9"
    assert oip_pb2.ModelInferResponse.FromString(ok[1][1][5:]).model_version == "v9"

    server.set_knobs(grpc_error_rate=1.0, grpc_error_code="INTERNAL")
    failed = await h2_exchange(server.ports.grpc, path, request.SerializeToString())
    assert [f[0] for f in failed] == ["headers", "end"]
    headers, ended_with_headers = failed[0][1], failed[0][2]
    assert ended_with_headers, "a trailers-only response is one HEADERS frame with END_STREAM"
    assert headers[":status"] == "200" and headers["grpc-status"] == "13"
    assert headers["grpc-message"] == "injected error" and headers["x-model-version"] == "v9"


# -- OpenAI chat / completions -----------------------------------------------------------


def sse_events(raw: bytes) -> list:
    out = []
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data: "):
            payload = event[6:]
            out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return out


async def test_chat_stream_and_full_answer_shapes(serve):
    server = await serve(model_name="llm", model_version="v2", tokens=5)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is a canary"}]
    async with httpx.AsyncClient(base_url=server.rest_url) as c:
        async with c.stream("POST", "/v1/chat/completions",
                            json={"model": "llm", "messages": messages, "stream": True, "max_tokens": 7}) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/event-stream")
            assert resp.headers["x-model-version"] == "v2" and "x-output-tokens" not in resp.headers
            raw = await resp.aread()
        events = sse_events(raw)
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert all(ch["object"] == "chat.completion.chunk" and ch["model"] == "llm" for ch in chunks)
        assert len({ch["id"] for ch in chunks}) == 1 and chunks[0]["system_fingerprint"] == "v2"
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        content = [ch["choices"][0]["delta"]["content"] for ch in chunks[1:-1]]
        expected = TokenGenerator(0).tokens("be brief\nwhat is a canary", 7)
        assert content == expected and len(content) == 7
        last = chunks[-1]
        assert last["choices"][0]["finish_reason"] == "length" and last["choices"][0]["delta"] == {}
        assert last["usage"] == {"prompt_tokens": 6, "completion_tokens": 7, "total_tokens": 13}

        resp = await c.post("/v1/chat/completions", json={"messages": messages, "stream": True,
                                                          "stream_options": {"include_usage": True}})
        events = sse_events(resp.content)
        assert events[-2]["choices"] == [] and events[-2]["usage"]["completion_tokens"] == 5
        assert events[-3]["choices"][0]["finish_reason"] == "stop"

        full = await c.post("/v1/chat/completions", json={"model": "llm", "messages": messages})
        assert full.headers["x-output-tokens"] == "5" and full.headers["x-prompt-tokens"] == "6"
        body = full.json()
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] == 5
        assert body["choices"][0]["message"] == {"role": "assistant",
                                                 "content": "".join(TokenGenerator(0).tokens(
                                                     "be brief\nwhat is a canary", 5))}

        completion = await c.post("/v1/completions", json={"model": "llm", "prompt": "hello", "stream": True,
                                                           "max_tokens": 3})
        events = sse_events(completion.content)
        assert [e["choices"][0]["text"] for e in events[:3]] == TokenGenerator(0).tokens("hello", 3)
        assert events[0]["object"] == "text_completion" and events[3]["usage"]["completion_tokens"] == 3

        assert (await c.post("/v1/chat/completions", json={"model": "gpt-x", "messages": messages})).status_code == 404
        bad = await c.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 0})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
        assert (await c.get("/v1/models")).json()["data"][0]["id"] == "llm"
    stats = server.stats()["kinds"]
    assert stats["chat"]["tokens"] == 7 + 5 + 5 and stats["chat"]["statuses"] == {"200": 3, "400": 1, "404": 1}
    assert stats["completion"]["tokens"] == 3


async def chunk_times(url: str, body: dict) -> tuple[float, list[float]]:
    """(seconds to response headers, seconds to each body chunk) of one streamed request."""
    async with httpx.AsyncClient(base_url=url) as c:
        t0 = time.perf_counter()
        async with c.stream("POST", "/v1/chat/completions", json=body) as resp:
            headers_at = time.perf_counter() - t0
            arrivals = [time.perf_counter() - t0 async for _ in resp.aiter_raw()]
    return headers_at, arrivals


async def test_time_to_first_chunk_shift_is_visible_in_chunk_arrivals(serve):
    server = await serve(ttfc_ms=40, token_ms=30, tokens=4)
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers_at, chunks = await chunk_times(server.rest_url, body)
    assert headers_at < 0.035, "headers leave before the first token unless defer_headers"
    assert 0.04 <= chunks[0] < 0.04 + 0.5
    gaps = [b - a for a, b in zip(chunks, chunks[1:4])]
    assert all(g >= 0.025 for g in gaps), gaps  # one token per 30 ms

    server.set_knobs(ttfc_ms=300, defer_headers=True)
    headers_at, chunks = await chunk_times(server.rest_url, body)
    assert 0.3 <= headers_at < 0.3 + 0.5, "deferred headers wait for the first token"
    assert 0.3 <= chunks[0] < 0.3 + 0.5


async def test_a_client_leaving_mid_stream_frees_its_slot(serve):
    """The queue-depth gauges must not leak: a stream cut by its client ends (as 499) and frees its slot."""
    server = await serve(token_ms=200, tokens=20, max_concurrency=2)
    body = json.dumps({"messages": [{"role": "user", "content": "x"}], "stream": True}).encode()
    for defer in (False, True):
        server.set_knobs(defer_headers=defer)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.ports.rest)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n" % len(body) + body)
        assert b"data: " in await reader.readuntil(b"\n\n")
        assert server.stats()["running"] == 1
        writer.close()
        deadline = time.monotonic() + 5
        while server.stats()["running"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    assert server.stats()["kinds"]["chat"]["statuses"] == {"499": 2}


# -- knobs: statistics, regression, keep-alive, readiness, admin --------------------------


async def test_http_error_rate_is_binomial(serve):
    server = await serve(error_rate=0.2, error_status=503, seed=11)
    statuses = await rest_statuses(server, 2000)
    assert set(statuses) == {200, 503}
    assert binomial_ok(statuses.count(503), 2000, 0.2), statuses.count(503)
    assert server.stats()["kinds"]["oip_rest"]["errors"] == statuses.count(503)


async def test_grpc_error_rate_is_binomial_and_seeded(serve):
    async def codes(seed: int) -> list[str]:
        server = await serve(grpc_error_rate=0.1, grpc_error_code="UNAVAILABLE", seed=seed)
        request = oip_pb2.ModelInferRequest(model_name="demo")
        request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend([0] * 4)
        async with grpc.aio.insecure_channel(server.grpc_target) as channel:
            rpc = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                      request_serializer=oip_pb2.ModelInferRequest.SerializeToString,
                                      response_deserializer=oip_pb2.ModelInferResponse.FromString)

            async def one(i: int) -> str:  # sequential: the seed fixes the outcome of each arrival
                try:
                    await rpc(request, timeout=5)
                    return "OK"
                except grpc.aio.AioRpcError as err:
                    return err.code().name

            return await many(2000, 1, one)

    first = await codes(seed=5)
    assert set(first) == {"OK", "UNAVAILABLE"}
    assert binomial_ok(first.count("UNAVAILABLE"), 2000, 0.1), first.count("UNAVAILABLE")
    assert await codes(seed=5) == first


async def test_latency_median_and_lognormal_spread(serve):
    server = await serve(latency_ms=20, seed=1)
    body = json.dumps(infer_body([[1, 2, 3, 4]])).encode()

    async def timings(n: int) -> list[float]:
        pool = Http1Pool("127.0.0.1", server.ports.rest, max_connections=5)

        async def one(i: int) -> float:
            t0 = time.perf_counter()
            status = await pool.request("POST", "/v2/models/demo/infer", body, on_headers=lambda s, h: None,
                                        on_body=lambda b: None)
            assert status == 200
            return time.perf_counter() - t0

        try:
            return sorted(await many(n, 5, one))
        finally:
            await pool.close()

    fixed = await timings(150)
    assert 0.02 <= fixed[75] < 0.02 + 0.03
    server.set_knobs(latency_sigma=0.6)
    spread = await timings(300)
    q25, q50, q75 = spread[75], spread[150], spread[225]
    assert 0.02 * 0.8 <= q50 < 0.02 + 0.03
    assert q75 / q25 > 1.4, (q25, q75)  # lognormal sigma 0.6: q75/q25 = e^(2*0.674*0.6) = 2.2 before overheads


async def test_regression_starts_exactly_after_n_requests_on_every_protocol(serve):
    server = await serve(regression_after=37, regression_error_rate=1.0, regression_latency_factor=1.0)
    request = oip_pb2.ModelInferRequest(model_name="demo")
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend([0] * 4)
    async with httpx.AsyncClient(base_url=server.rest_url) as c, \
            grpc.aio.insecure_channel(server.grpc_target) as channel:
        rpc = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                  request_serializer=oip_pb2.ModelInferRequest.SerializeToString,
                                  response_deserializer=oip_pb2.ModelInferResponse.FromString)

        async def one(i: int) -> bool:
            kind = i % 3
            if kind == 0:
                return (await c.post("/v2/models/demo/infer", json=infer_body([[1, 2, 3, 4]]))).status_code == 200
            if kind == 1:
                try:
                    await rpc(request, timeout=5)
                    return True
                except grpc.aio.AioRpcError:
                    return False
            resp = await c.post("/v1/chat/completions",
                                json={"messages": [{"role": "user", "content": "x"}], "stream": True})
            return resp.status_code == 200

        outcomes = [await one(i) for i in range(60)]
        assert outcomes == [True] * 37 + [False] * 23
        regression = server.stats()["regression"]
        assert regression["started"] and regression["onset_request"] == 38

        # Re-armed at run time: N counts from the change; factors apply from request N+1.
        server.set_knobs(regression_after=4, regression_error_rate=0.0, latency_ms=10,
                         regression_latency_factor=20.0)
        times = []
        for _ in range(6):
            t0 = time.perf_counter()
            assert (await c.post("/v2/models/demo/infer", json=infer_body([[1, 2, 3, 4]]))).status_code == 200
            times.append(time.perf_counter() - t0)
        assert all(0.01 <= t < 0.15 for t in times[:4]), times
        assert all(t >= 0.2 for t in times[4:]), times
        assert server.stats()["regression"]["onset_request"] == 60 + 5


async def test_keep_alive_timeout_closes_idle_connections(serve):
    server = await serve(keep_alive_s=0.5)

    def idle_close_after(port: int, requests: int = 1) -> float:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for _ in range(requests):
                s.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
                got = b""
                while not got.endswith(b'{"live":true}'):
                    got += s.recv(4096)
            t0 = time.perf_counter()
            assert s.recv(4096) == b"", "the server should close, not send"
            return time.perf_counter() - t0

    closed_after = await asyncio.to_thread(idle_close_after, server.ports.rest, 2)
    assert 0.4 <= closed_after < 0.5 + 2.0, closed_after

    server.set_knobs(keep_alive_s=1.5)  # for connections opened from now on
    closed_after = await asyncio.to_thread(idle_close_after, server.ports.rest)
    assert 1.4 <= closed_after < 1.5 + 2.0, closed_after

    default = await serve()
    assert default.knobs.keep_alive_s == 5.0  # uvicorn's default, kept on purpose


async def test_readiness_knobs(serve):
    server = await serve(ready_after_s=0.8)
    infer = oip_pb2.ModelInferRequest(model_name="demo")
    infer.inputs.add(name="input-0", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend([0] * 4)
    async with httpx.AsyncClient(base_url=server.rest_url) as c, \
            grpc.aio.insecure_channel(server.grpc_target) as channel:
        ready = channel.unary_unary("/inference.GRPCInferenceService/ServerReady",
                                    request_serializer=oip_pb2.ServerReadyRequest.SerializeToString,
                                    response_deserializer=oip_pb2.ServerReadyResponse.FromString)
        model_infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                          request_serializer=oip_pb2.ModelInferRequest.SerializeToString,
                                          response_deserializer=oip_pb2.ModelInferResponse.FromString)
        assert (await c.get("/v2/health/live")).status_code == 200
        assert (await c.get("/v2/health/ready")).status_code == 503
        assert (await c.get("/v2/models/demo/ready")).json() == {"name": "demo", "ready": False}
        assert (await c.post("/v2/models/demo/infer", json=infer_body([[1, 2, 3, 4]]))).status_code == 503
        assert not (await ready(oip_pb2.ServerReadyRequest(), timeout=5)).ready
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await model_infer(infer, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

        server.set_knobs(server_ready_without_model=True)  # MLServer-like: server ready, model not
        assert (await c.get("/v2/health/ready")).status_code == 200
        assert (await ready(oip_pb2.ServerReadyRequest(), timeout=5)).ready
        assert (await c.get("/v2/models/demo/ready")).status_code == 503

        deadline = time.monotonic() + 5
        while (await c.get("/v2/models/demo/ready")).status_code != 200:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert (await c.post("/v2/models/demo/infer", json=infer_body([[1, 2, 3, 4]]))).status_code == 200

        server.set_knobs(ready_after_s=30, server_ready_without_model=False)  # unload: ready again in 30 s
        assert (await c.get("/v2/health/ready")).status_code == 503


async def test_admin_knobs_stats_and_queue_gauges(serve):
    server = await serve()
    async with httpx.AsyncClient(base_url=server.rest_url) as c:
        # Long enough that "1 running, 2 waiting" lasts well past a busy machine's scheduling hiccups.
        resp = await c.post("/admin/knobs", json={"latency_ms": 1500, "max_concurrency": 1, "model_version": "v5"})
        assert resp.status_code == 200 and resp.json()["knobs"]["model_version"] == "v5"
        for bad in ({"latency_msec": 1}, {"error_rate": 1.5}, {"latency_ms": "slow"}, [1]):
            resp = await c.post("/admin/knobs", json=bad)
            assert resp.status_code == 400 and "error" in resp.json()
        assert (await c.get("/admin/knobs")).json()["knobs"]["latency_ms"] == 1500  # nothing half-applied

        calls = [asyncio.create_task(c.post("/v2/models/demo/infer", json=infer_body([[1, 2, 3, 4]])))
                 for _ in range(3)]
        deadline = time.monotonic() + 5
        while True:
            metrics = (await c.get("/metrics")).text
            if 'vllm:num_requests_waiting{model_name="demo"} 2' in metrics:
                break
            assert time.monotonic() < deadline, metrics
            await asyncio.sleep(0.02)
        assert 'vllm:num_requests_running{model_name="demo"} 1' in metrics
        assert 'nv_inference_pending_request_count{model="demo",version="v5"} 2' in metrics
        assert all(r.status_code == 200 for r in await asyncio.gather(*calls))
        stats = (await c.get("/admin/stats")).json()
        assert stats["kinds"]["oip_rest"]["requests"] == 3 and stats["waiting"] == 0 and stats["running"] == 0
        assert 'weir_demo_requests_total{kind="oip_rest",status="200"} 3' in (await c.get("/metrics")).text


def test_knobs_validate_everything():
    assert Knobs(latency_ms=5).latency_ms == 5.0
    for bad in ({"error_rate": -0.1}, {"grpc_error_code": 0}, {"tokens": 0}, {"keep_alive_s": 0},
                {"regression_after": -2}, {"model_name": "a/b"}, {"defer_headers": 1}, {"seed": 1.5}):
        with pytest.raises(ValueError):
            Knobs().changed(bad)
    assert Knobs().changed({"grpc_error_code": "not_found"}).grpc_error_code == 5


# -- processes -----------------------------------------------------------------------------


async def test_launcher_runs_the_cli_as_a_subprocess():
    proc = ModelServerProcess(model_version="v4", error_rate=0.0, grpc_error_code=14, defer_headers=True)
    assert "--defer-headers" in proc.command() and "--grpc-error-code" in proc.command()
    await proc.astart()
    try:
        assert proc.rest_port and proc.grpc_port
        async with httpx.AsyncClient(base_url=proc.rest_url) as c:
            body = (await c.post("/v2/models/demo/infer", json=infer_body([[1, 2, 3, 4]]))).json()
        assert body["model_version"] == "v4"
        async with grpc.aio.insecure_channel(proc.grpc_target) as channel:
            live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive",
                                       request_serializer=oip_pb2.ServerLiveRequest.SerializeToString,
                                       response_deserializer=oip_pb2.ServerLiveResponse.FromString)
            assert (await live(oip_pb2.ServerLiveRequest(), timeout=5)).live
        knobs = await proc.aset_knobs(error_rate=1.0)
        assert knobs["error_rate"] == 1.0 and knobs["grpc_error_code"] == 14 and knobs["defer_headers"] is True
        with pytest.raises(ValueError, match="unknown knobs"):
            await proc.aset_knobs(nope=1)
        async with httpx.AsyncClient(base_url=proc.rest_url) as c:
            assert (await c.post("/v2/models/demo/infer", json=infer_body([[1, 2, 3, 4]]))).status_code == 500
        assert (await proc.astats())["kinds"]["oip_rest"]["statuses"] == {"200": 1, "500": 1}
    finally:
        await proc.astop()
    assert proc.proc.returncode == 0, "SIGTERM is a clean shutdown"


def test_cli_refuses_a_bad_knob():
    out = subprocess.run([sys.executable, "-m", "devtools.model_servers", "--error-rate", "2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "error_rate must be within [0, 1]" in out.stderr
