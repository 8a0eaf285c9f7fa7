"""An open-loop load generator for model servers: OIP REST, OIP gRPC and streamed chat (SSE).

Open loop means arrivals follow the schedule (Poisson or evenly spaced at
`rate`) whether or not earlier requests have finished, as real users do; a
closed loop (send when the last answer arrives) slows down exactly when the
server does and so hides the latency a canary analysis must see. Each request
records when it was scheduled and actually sent (their difference is the
generator's own lag), its status (HTTP code, gRPC status name, or
`error:<Exception>` for a transport failure), time to first byte (response
headers or gRPC initial metadata), time to first content chunk (chat), total
time and the model version that answered (OIP `model_version`, the
`x-model-version` header or trailer, or the chat chunks' `system_fingerprint`),
so a summary can split everything by backend.

HTTP/1.1 goes through a keep-alive pool: devtools.http1 by default, or httpx
(`http_client="httpx"`). Measured here against a local uvicorn server at
200 rps, httpx costs ~2.1 ms of CPU per REST request and ~6.7 ms per 16-token
stream (it cannot offer 200 streams/s on one core; queueing in the client then
shows up as server latency), devtools.http1 ~0.3 ms and ~0.9 ms. Every summary
reports the generator's own CPU per request and its send lag, so a run that
overloaded the generator is visible as such.

    python -m devtools.loadgen --protocol rest --target http://127.0.0.1:8000 --rate 200 --duration 10

prints one JSON line (the summary); `await run(LoadSpec(...))` returns the records too.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, Literal

import grpc
import httpx
import numpy as np

from devtools.http1 import Http1Pool
from devtools.model_servers.wire import oip_pb2 as pb

Protocol = Literal["rest", "grpc", "chat"]
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


@dataclasses.dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to send. `target` is a base URL for rest/chat and host:port for grpc.

    The run ends after `requests` arrivals or `duration_s` of schedule,
    whichever comes first (at least one must be set), or when `stop` is set;
    requests still in flight then get up to `timeout_s` to finish. When
    `max_in_flight` requests are outstanding, a new arrival is recorded as
    "dropped" instead of queueing inside the generator (which would turn the
    open loop into a closed one).
    """

    protocol: Protocol
    target: str
    rate: float
    duration_s: float | None = None
    requests: int | None = None
    arrival: Literal["poisson", "uniform"] = "poisson"
    seed: int = 0
    model: str = "demo"
    batch: int = 2  # OIP: rows of the [batch, 4] FP64 input
    stream: bool = True  # chat: stream (SSE) or one JSON answer
    max_tokens: int | None = None  # chat: None lets the server choose
    timeout_s: float = 10.0
    max_in_flight: int = 2000
    connections: int = 64  # HTTP/1.1 keep-alive pool size
    keepalive_expiry_s: float = 4.0  # below uvicorn's 5 s, so the client closes idle connections first
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)  # HTTP headers / gRPC metadata
    authority: str | None = None  # Host header / gRPC :authority (for routing through a proxy)
    http_client: Literal["raw", "httpx"] = "raw"  # raw: devtools.http1, ~7x less CPU than httpx (module doc)

    def __post_init__(self) -> None:
        if self.protocol not in ("rest", "grpc", "chat"):
            raise ValueError(f"protocol must be rest, grpc or chat, not {self.protocol!r}")
        if not self.rate > 0:
            raise ValueError("rate must be > 0")
        if self.duration_s is None and self.requests is None:
            raise ValueError("set duration_s or requests (or both)")
        if self.arrival not in ("poisson", "uniform"):
            raise ValueError("arrival must be poisson or uniform")
        if self.http_client not in ("raw", "httpx"):
            raise ValueError("http_client must be raw or httpx")


@dataclasses.dataclass(slots=True)
class RequestRecord:
    """One request. Times are seconds; `scheduled`/`start` are offsets from the run's start."""

    index: int
    scheduled: float
    start: float
    start_unix: float
    status: str  # "200", "503", "OK", "INTERNAL", "error:ReadTimeout", "dropped", "truncated"
    ok: bool
    ttfb: float | None = None  # to response headers (HTTP) or initial metadata (gRPC)
    ttfc: float | None = None  # chat: to the first chunk with content
    total: float | None = None
    model_version: str | None = None
    tokens: int = 0  # chat: content chunks received

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(slots=True)
class LoadResult:
    spec: LoadSpec
    records: list[RequestRecord]
    elapsed_s: float  # first send to last completion
    cpu_s: float  # this process's CPU time during the run (the generator's own cost, plus anything sharing it)

    def summary(self) -> dict[str, Any]:
        return summarize(self)


# -- the clients -----------------------------------------------------------------


def oip_rest_body(model: str, batch: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    return {"inputs": [{"name": "input-0", "shape": [batch, 4], "datatype": "FP64",
                        "data": [round(rng.uniform(-2, 2), 4) for _ in range(batch * 4)]}]}


def oip_grpc_request(model: str, batch: int, seed: int) -> pb.ModelInferRequest:
    body = oip_rest_body(model, batch, seed)["inputs"][0]
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name=body["name"], datatype="FP64", shape=body["shape"])
    tensor.contents.fp64_contents.extend(body["data"])
    return request


Sender = Callable[[RequestRecord, float], Awaitable[None]]


def _http_request(spec: LoadSpec) -> tuple[str, bytes]:
    """(path, body) of the request every arrival sends."""
    if spec.protocol == "rest":
        return f"/v2/models/{spec.model}/infer", json.dumps(oip_rest_body(spec.model, spec.batch, spec.seed)).encode()
    chat: dict[str, Any] = {"model": spec.model, "stream": spec.stream,
                            "messages": [{"role": "user", "content": "tell me about canaries"}]}
    if spec.max_tokens is not None:
        chat["max_tokens"] = spec.max_tokens
    return "/v1/chat/completions", json.dumps(chat).encode()


class _SseReader:
    """Feeds on a streamed chat body: counts content chunks, times the first, notes [DONE]."""

    __slots__ = ("rec", "t0", "buffer", "done")

    def __init__(self, rec: RequestRecord, t0: float) -> None:
        self.rec, self.t0, self.buffer, self.done = rec, t0, b"", False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        if b"\n\n" not in self.buffer:
            return
        *events, self.buffer = self.buffer.split(b"\n\n")
        rec = self.rec
        for event in events:
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    self.done = True
                    continue
                try:
                    obj = json.loads(payload)
                except ValueError:
                    continue
                for choice in obj.get("choices") or ():
                    if (choice.get("delta") or {}).get("content") or choice.get("text"):
                        rec.tokens += 1
                        if rec.ttfc is None:
                            rec.ttfc = time.perf_counter() - self.t0
                if rec.model_version is None:
                    rec.model_version = obj.get("system_fingerprint")

    def close(self) -> None:
        self.rec.ok = self.done and self.rec.status == "200"
        if self.rec.status == "200" and not self.done:
            self.rec.status = "truncated"


def _finish_json(rec: RequestRecord, status: int, body: bytes) -> None:
    rec.ok = status == 200
    if rec.ok and rec.model_version is None:
        try:
            parsed = json.loads(body)
            rec.model_version = parsed.get("model_version") or parsed.get("system_fingerprint")
        except (ValueError, AttributeError):
            pass


class _Httpx:
    """REST infer or chat through httpx's keep-alive pool."""

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        headers = {"content-type": "application/json", **spec.headers}
        if spec.authority:
            headers["host"] = spec.authority
        self.client = httpx.AsyncClient(
            base_url=spec.target, headers=headers, timeout=httpx.Timeout(spec.timeout_s),
            limits=httpx.Limits(max_connections=spec.connections, max_keepalive_connections=spec.connections,
                                keepalive_expiry=spec.keepalive_expiry_s))
        self.path, self.body = _http_request(spec)
        self.streaming = spec.protocol == "chat" and spec.stream

    async def send(self, rec: RequestRecord, t0: float) -> None:
        async with self.client.stream("POST", self.path, content=self.body) as resp:
            rec.ttfb = time.perf_counter() - t0
            rec.status = str(resp.status_code)
            rec.model_version = resp.headers.get("x-model-version")
            if self.streaming and resp.status_code == 200:
                reader = _SseReader(rec, t0)
                async for chunk in resp.aiter_raw():
                    reader.feed(chunk)
                reader.close()
            else:
                _finish_json(rec, resp.status_code, await resp.aread())
        rec.total = time.perf_counter() - t0

    async def close(self) -> None:
        await self.client.aclose()


class _RawHttp:
    """REST infer or chat through devtools.http1 (callbacks in data_received; no await per chunk)."""

    def __init__(self, spec: LoadSpec) -> None:
        url = httpx.URL(spec.target)
        headers = {"content-type": "application/json", **spec.headers}
        if spec.authority:
            headers["host"] = spec.authority
        self.pool = Http1Pool(url.host, url.port or 80, max_connections=spec.connections,
                              idle_expiry_s=spec.keepalive_expiry_s, headers=headers)
        self.prefix = url.raw_path.decode().rstrip("/")
        path, self.body = _http_request(spec)
        self.path = self.prefix + path
        self.streaming = spec.protocol == "chat" and spec.stream

    async def send(self, rec: RequestRecord, t0: float) -> None:
        reader = _SseReader(rec, t0)
        body: list[bytes] = []
        sse = False

        def on_headers(status: int, headers: dict[str, str]) -> None:
            nonlocal sse
            rec.ttfb = time.perf_counter() - t0
            rec.status = str(status)
            rec.model_version = headers.get("x-model-version")
            sse = self.streaming and status == 200

        def on_body(data: bytes) -> None:
            reader.feed(data) if sse else body.append(data)

        status = await self.pool.request("POST", self.path, self.body, on_headers=on_headers, on_body=on_body)
        if sse:
            reader.close()
        else:
            _finish_json(rec, status, b"".join(body))
        rec.total = time.perf_counter() - t0

    async def close(self) -> None:
        await self.pool.close()


class _Grpc:
    """OIP ModelInfer over one grpc.aio channel (HTTP/2 multiplexes every call)."""

    def __init__(self, spec: LoadSpec) -> None:
        options = [("grpc.default_authority", spec.authority)] if spec.authority else []
        self.channel = grpc.aio.insecure_channel(spec.target, options=options)
        self.call = self.channel.unary_unary(MODEL_INFER, request_serializer=None,
                                             response_deserializer=pb.ModelInferResponse.FromString)
        self.request = oip_grpc_request(spec.model, spec.batch, spec.seed).SerializeToString()
        self.metadata = tuple(spec.headers.items()) or None
        self.timeout = spec.timeout_s

    async def send(self, rec: RequestRecord, t0: float) -> None:
        call = self.call(self.request, timeout=self.timeout, metadata=self.metadata)
        try:
            await call.initial_metadata()
            rec.ttfb = time.perf_counter() - t0
            response = await call
        except grpc.aio.AioRpcError as err:
            rec.total = time.perf_counter() - t0
            rec.status = err.code().name
            rec.model_version = _metadata_value(err.trailing_metadata(), "x-model-version")
            return
        rec.total = time.perf_counter() - t0
        rec.status, rec.ok, rec.model_version = "OK", True, response.model_version

    async def close(self) -> None:
        await self.channel.close()


def _metadata_value(metadata: Any, key: str) -> str | None:
    for k, v in metadata or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else v
    return None


# -- the open loop -----------------------------------------------------------------


def schedule(spec: LoadSpec) -> Iterator[float]:
    """Arrival offsets in seconds: Poisson (exponential gaps, seeded) or evenly spaced at spec.rate."""
    rng = random.Random(spec.seed)
    t, i = 0.0, 0
    while (spec.requests is None or i < spec.requests) and (spec.duration_s is None or t < spec.duration_s):
        yield t
        i += 1
        t += rng.expovariate(spec.rate) if spec.arrival == "poisson" else 1.0 / spec.rate


async def run(spec: LoadSpec | None = None, *, on_record: Callable[[RequestRecord], None] | None = None,
              stop: asyncio.Event | None = None, **fields: Any) -> LoadResult:
    """Offer `spec.rate` requests/s on schedule; return every request's record.

    `run(protocol="grpc", target="127.0.0.1:9000", rate=200, duration_s=10)`
    builds the LoadSpec from keywords. `on_record` sees each record as it
    completes (a bench can watch the canary's share live); setting `stop`
    ends the schedule early.
    """
    spec = spec if spec is not None else LoadSpec(**fields)
    client = _Grpc(spec) if spec.protocol == "grpc" else _RawHttp(spec) if spec.http_client == "raw" else _Httpx(spec)
    records: list[RequestRecord] = []
    tasks: set[asyncio.Task] = set()
    cpu0 = time.process_time()
    origin = time.perf_counter()
    origin_unix = time.time()

    async def one(rec: RequestRecord) -> None:
        t0 = time.perf_counter()
        rec.start = t0 - origin
        rec.start_unix = origin_unix + rec.start
        try:
            async with asyncio.timeout(spec.timeout_s + 1.0):
                await client.send(rec, t0)
        except (httpx.HTTPError, OSError, asyncio.TimeoutError, grpc.RpcError) as err:
            rec.ok, rec.status = False, f"error:{type(err).__name__}"
            rec.total = time.perf_counter() - t0
        if on_record is not None:
            on_record(rec)

    try:
        for i, scheduled in enumerate(schedule(spec)):
            if stop is not None and stop.is_set():
                break
            delay = origin + scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            rec = RequestRecord(index=i, scheduled=scheduled, start=scheduled, start_unix=origin_unix + scheduled,
                                status="dropped", ok=False)
            records.append(rec)
            if len(tasks) < spec.max_in_flight:
                task = asyncio.create_task(one(rec))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif on_record is not None:
                on_record(rec)
        if tasks:
            await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await client.close()
    elapsed = time.perf_counter() - origin
    return LoadResult(spec=spec, records=records, elapsed_s=elapsed, cpu_s=time.process_time() - cpu0)


# -- the summary ------------------------------------------------------------------


def _quantiles_ms(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    a = np.asarray(values) * 1000.0
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": round(float(p50), 3), "p90": round(float(p90), 3), "p99": round(float(p99), 3),
            "max": round(float(a.max()), 3)}


def summarize(result: LoadResult) -> dict[str, Any]:
    spec, recs = result.spec, result.records
    sent = [r for r in recs if r.status != "dropped"]
    ok = [r for r in sent if r.ok]
    starts = sorted(r.start for r in sent)
    window = starts[-1] - starts[0] if len(starts) > 1 else 0.0
    errors = collections.Counter(r.status for r in recs if not r.ok)
    versions: dict[str, dict[str, Any]] = {}
    for version in sorted({r.model_version or "unknown" for r in sent}):
        mine = [r for r in sent if (r.model_version or "unknown") == version]
        mine_ok = [r.total for r in mine if r.ok and r.total is not None]
        versions[version] = {"requests": len(mine), "ok": len(mine_ok), "errors": len(mine) - len(mine_ok),
                             "latency_ms": _quantiles_ms(mine_ok)}
    out = {
        "protocol": spec.protocol, "target": spec.target, "arrival": spec.arrival,
        "offered_rps": spec.rate, "scheduled": len(recs), "sent": len(sent), "ok": len(ok),
        "dropped": errors.pop("dropped", 0), "errors": dict(sorted(errors.items())),
        "achieved_rps": round((len(starts) - 1) / window, 2) if window > 0 else None,
        "elapsed_s": round(result.elapsed_s, 3),
        "latency_ms": _quantiles_ms([r.total for r in ok if r.total is not None]),
        "ttfb_ms": _quantiles_ms([r.ttfb for r in ok if r.ttfb is not None]),
        "per_version": versions,
        "lag_ms": _quantiles_ms([r.start - r.scheduled for r in sent]),
        "cpu_s": round(result.cpu_s, 3),
        "cpu_ms_per_request": round(1000 * result.cpu_s / len(sent), 3) if sent else None,
    }
    if spec.protocol == "chat":
        out["ttfc_ms"] = _quantiles_ms([r.ttfc for r in ok if r.ttfc is not None])
        out["tokens"] = sum(r.tokens for r in ok)
    return out


# -- the command line ----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devtools.loadgen", description=__doc__.splitlines()[0])
    p.add_argument("--protocol", choices=["rest", "grpc", "chat"], required=True)
    p.add_argument("--target", required=True, help="http://host:port (rest, chat) or host:port (grpc)")
    p.add_argument("--rate", type=float, required=True, help="offered requests per second")
    p.add_argument("--duration", type=float, default=None, help="seconds of schedule")
    p.add_argument("--requests", type=int, default=None, help="number of arrivals")
    p.add_argument("--arrival", choices=["poisson", "uniform"], default="poisson")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="demo")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--no-stream", action="store_true", help="chat: ask for one JSON answer")
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--http-client", choices=["raw", "httpx"], default="raw")
    p.add_argument("--authority", default=None)
    p.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    p.add_argument("--records", default=None, metavar="FILE", help="also write every record as JSON lines")
    args = p.parse_args(argv)
    headers = dict(h.split(":", 1) for h in args.header)
    spec = LoadSpec(protocol=args.protocol, target=args.target, rate=args.rate, duration_s=args.duration,
                    requests=args.requests, arrival=args.arrival, seed=args.seed, model=args.model,
                    batch=args.batch, stream=not args.no_stream, max_tokens=args.max_tokens,
                    timeout_s=args.timeout, connections=args.connections, authority=args.authority,
                    http_client=args.http_client, headers={k.strip().lower(): v.strip() for k, v in headers.items()})
    result = asyncio.run(run(spec))
    if args.records:
        with open(args.records, "w") as f:
            for rec in result.records:
                f.write(json.dumps(rec.as_dict()) + "\n")
    print(json.dumps(result.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
