"""The load generator: its open-loop schedule, what it records per protocol, its HTTP/1.1 client.

Against real demo model servers on 127.0.0.1 (in-process, plus one subprocess
for the CLI), and against a hand-written socket server for the HTTP/1.1
framings a proxy may send. Nothing asserts how fast this machine is: rates
are checked only where the schedule fixes them.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys

import pytest

from devtools import loadgen
from devtools.http1 import Http1Pool, ResponseError
from devtools.loadgen import LoadSpec
from devtools.model_servers import ModelServer, ModelServerProcess


@pytest.fixture
async def serve():
    servers: list[ModelServer] = []

    async def start(**knobs) -> ModelServer:
        server = ModelServer(**knobs)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop()


def test_schedule_is_open_loop_uniform_or_poisson():
    uniform = list(loadgen.schedule(LoadSpec("rest", "http://x", rate=50, duration_s=1.0, arrival="uniform")))
    assert len(uniform) == 50 and uniform[:3] == pytest.approx([0.0, 0.02, 0.04])
    poisson = list(loadgen.schedule(LoadSpec("rest", "http://x", rate=200, requests=4000, seed=3)))
    gaps = [b - a for a, b in zip(poisson, poisson[1:])]
    assert len(poisson) == 4000
    assert statistics.fmean(gaps) == pytest.approx(1 / 200, rel=0.1)
    assert statistics.pstdev(gaps) == pytest.approx(1 / 200, rel=0.1)  # exponential: sd == mean
    assert list(loadgen.schedule(LoadSpec("rest", "http://x", rate=200, requests=50, seed=3))) == poisson[:50]
    with pytest.raises(ValueError):
        LoadSpec("rest", "http://x", rate=10)  # no end
    with pytest.raises(ValueError):
        LoadSpec("udp", "http://x", rate=10, requests=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("client", ["raw", "httpx"])
async def test_rest_records_versions_and_errors(serve, client):
    server = await serve(model_version="v1", latency_ms=5, error_rate=0.3, seed=2)
    n = 300 if client == "raw" else 150  # httpx costs ~7x the CPU per request
    result = await loadgen.run(protocol="rest", target=server.rest_url, rate=400, requests=n, http_client=client)
    recs = result.records
    assert len(recs) == n and all(r.status in ("200", "500") for r in recs)
    for r in recs:
        assert r.model_version == "v1"  # errors are attributed through the x-model-version header
        assert r.ttfb is not None and r.total is not None and 0.005 <= r.ttfb <= r.total
        assert r.start >= r.scheduled
    summary = result.summary()
    server_side = server.stats()["kinds"]["oip_rest"]["statuses"]
    assert summary["ok"] == server_side["200"] and summary["errors"] == {"500": server_side["500"]}
    assert summary["per_version"]["v1"]["requests"] == n
    assert summary["latency_ms"]["p50"] >= 5 and summary["sent"] == n and summary["dropped"] == 0
    assert summary["cpu_ms_per_request"] > 0 and summary["lag_ms"]["p50"] >= 0


async def test_grpc_records_status_names_and_version_from_trailers(serve):
    server = await serve(model_version="v2", grpc_error_rate=0.5, grpc_error_code="UNAVAILABLE", seed=4)
    result = await loadgen.run(protocol="grpc", target=server.grpc_target, rate=500, requests=300)
    statuses = {r.status for r in result.records}
    assert statuses == {"OK", "UNAVAILABLE"}
    assert all(r.model_version == "v2" for r in result.records)  # OK: the message; failures: trailing metadata
    summary = result.summary()
    assert summary["errors"]["UNAVAILABLE"] == server.stats()["kinds"]["oip_grpc"]["statuses"]["UNAVAILABLE"]


async def test_chat_records_time_to_first_chunk_and_tokens(serve):
    server = await serve(model_version="v3", ttfc_ms=60, token_ms=2, tokens=6)
    result = await loadgen.run(protocol="chat", target=server.rest_url, rate=100, requests=40)
    for r in result.records:
        assert r.ok and r.status == "200" and r.model_version == "v3" and r.tokens == 6
        assert r.ttfb < r.ttfc <= r.total  # headers leave at once; the first token after ttfc
        assert r.ttfc >= 0.06
    summary = result.summary()
    assert summary["tokens"] == 240 and summary["ttfc_ms"]["p50"] >= 60
    full = await loadgen.run(protocol="chat", target=server.rest_url, rate=100, requests=10, stream=False,
                             max_tokens=3, http_client="httpx")
    assert all(r.ok and r.model_version == "v3" and r.ttfc is None for r in full.records)


async def test_per_version_split_follows_the_answering_backend(serve):
    """A knob change mid-run (a new version answering) shows up per version, errors included."""
    server = await serve(model_version="v1", latency_ms=2)
    switched = asyncio.Event()

    def on_record(rec: loadgen.RequestRecord) -> None:
        if rec.index == 99 and not switched.is_set():
            server.set_knobs(model_version="v2", error_rate=1.0)
            switched.set()

    result = await loadgen.run(protocol="rest", target=server.rest_url, rate=300, requests=300,
                               arrival="uniform", on_record=on_record)
    per = result.summary()["per_version"]
    assert set(per) == {"v1", "v2"} and per["v1"]["requests"] + per["v2"]["requests"] == 300
    # Requests sent before the switch may still be answered by v1 (how many depends on the machine's load):
    # what must hold is that every v1 answer succeeded, every v2 answer failed, and the first 100 were v1.
    assert per["v1"]["errors"] == 0 and per["v2"]["ok"] == 0
    assert per["v1"]["requests"] >= 100 and per["v2"]["requests"] >= 1
    assert all(r.model_version == "v1" for r in result.records if r.index < 100)


async def test_arrivals_beyond_max_in_flight_are_dropped_not_queued(serve):
    server = await serve(latency_ms=1500)
    result = await loadgen.run(protocol="grpc", target=server.grpc_target, rate=100, requests=20,
                               arrival="uniform", max_in_flight=5)
    statuses = [r.status for r in result.records]
    assert statuses[:5] == ["OK"] * 5 and statuses[5:] == ["dropped"] * 15
    assert result.summary()["dropped"] == 15


async def test_stop_event_ends_the_schedule(serve):
    server = await serve()
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, stop.set)
    result = await loadgen.run(protocol="grpc", target=server.grpc_target, rate=100, duration_s=60, stop=stop)
    assert 10 <= len(result.records) <= 60 and all(r.ok for r in result.records)


async def test_transport_failures_are_recorded_not_raised():
    result = await loadgen.run(protocol="rest", target="http://127.0.0.1:9", rate=50, requests=3)
    assert [r.status for r in result.records] == ["error:ConnectionRefusedError"] * 3


# -- the HTTP/1.1 client ------------------------------------------------------------------


class ScriptedServer:
    """A socket server that answers each request with the next scripted response, written in pieces."""

    def __init__(self, responses: list[bytes], close_after: set[int] = frozenset()) -> None:
        self.responses = responses
        self.close_after = close_after
        self.connections = 0
        self.served = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.served < len(self.responses):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int([h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0])
                await reader.readexactly(length)
                response = self.responses[self.served]
                index = self.served
                self.served += 1
                for i in range(0, len(response), 7):  # 7-byte pieces: every parser state sees a split
                    writer.write(response[i:i + 7])
                    await writer.drain()
                    await asyncio.sleep(0)
                if index in self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def fetch(pool: Http1Pool) -> tuple[int, dict, bytes]:
    got: dict = {}
    body: list[bytes] = []

    def on_headers(status, headers):
        got.update(headers)

    status = await pool.request("POST", "/x", b"{}", on_headers=on_headers, on_body=body.append)
    return status, got, b"".join(body)


async def test_http1_client_framings_and_keep_alive():
    chunked = (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-model-version: v9\r\n\r\n"
               b"5;ext=1\r\nhello\r\n1a\r\n" + b"abcdefghijklmnopqrstuvwxyz" + b"\r\n0\r\nx-trailer: 1\r\n\r\n")
    length = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbusy"
    empty = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    closing = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    until_close = b"HTTP/1.0 200 OK\r\n\r\nall of it"
    scripted = ScriptedServer([chunked, length, empty, closing, length, until_close], close_after={3, 5})
    port = await scripted.start()
    pool = Http1Pool("127.0.0.1", port, max_connections=1)
    try:
        status, headers, body = await fetch(pool)
        assert (status, headers["x-model-version"], body) == (200, "v9", b"hello" + b"abcdefghijklmnopqrstuvwxyz")
        assert (await fetch(pool))[::2] == (503, b"busy")
        assert (await fetch(pool))[::2] == (204, b"")
        assert (await fetch(pool))[::2] == (200, b"ok")
        assert scripted.connections == 1  # four answers on one keep-alive connection
        assert (await fetch(pool))[::2] == (503, b"busy")  # connection: close honoured: a new one
        assert (await fetch(pool))[::2] == (200, b"all of it")
        assert scripted.connections == 2 and pool.connections_opened == 2
    finally:
        await pool.close()
        await scripted.stop()


async def test_http1_client_reports_a_connection_cut_mid_response():
    cut = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part"
    scripted = ScriptedServer([cut], close_after={0})
    port = await scripted.start()
    pool = Http1Pool("127.0.0.1", port)
    try:
        with pytest.raises(ResponseError, match="mid-response"):
            await fetch(pool)
    finally:
        await pool.close()
        await scripted.stop()


async def test_http1_pool_survives_the_servers_keep_alive_timeout(serve):
    """uvicorn closes idle connections (here after 0.2 s); the pool notices and opens a new one."""
    server = await serve(keep_alive_s=0.2)
    pool = Http1Pool("127.0.0.1", server.ports.rest, idle_expiry_s=60)
    body = b'{"inputs":[{"name":"i","shape":[1,4],"datatype":"FP64","data":[1,2,3,4]}]}'

    async def infer() -> int:
        return await pool.request("POST", "/v2/models/demo/infer", body, on_headers=lambda s, h: None,
                                  on_body=lambda b: None)

    try:
        assert await infer() == 200 and await infer() == 200
        assert pool.connections_opened == 1
        await asyncio.sleep(0.6)  # the server has closed the idle connection by now
        assert await infer() == 200
        assert pool.connections_opened == 2
    finally:
        await pool.close()


# -- the command line ----------------------------------------------------------------------


def test_cli_prints_one_json_summary_line():
    with ModelServerProcess(model_version="v8", latency_ms=3) as srv:
        for protocol, target in (("grpc", srv.grpc_target), ("chat", srv.rest_url)):
            out = subprocess.run([sys.executable, "-m", "devtools.loadgen", "--protocol", protocol,
                                  "--target", target, "--rate", "200", "--requests", "40"],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            lines = out.stdout.strip().splitlines()
            assert len(lines) == 1
            summary = json.loads(lines[0])
            assert summary["sent"] == summary["ok"] == 40 and list(summary["per_version"]) == ["v8"]
