"""Fan-out benchmark: N simulated Envoys on N ADS connections, one route weight change.

    .venv/bin/python bench/xds_fanout.py --proxies 1000 [--delta] [--client-procs K]
                                         [--services S] [--repeats R] [--profile FILE]

Three kinds of process (this same file, selected by the hidden ``--role``):

* the orchestrator (what you run): starts the others, drives the phases through
  their stdin/stdout (one JSON object per line) and prints ONE JSON line;
* the server: an ``XdsServer`` alone in its process, so its RSS and CPU are its
  own, with a ``StatusRegistry`` subclass that timestamps (server clock) the
  moment each proxy converges to the version being measured;
* K clients: each runs N/K grpc.aio streams, every one on its own channel and TCP
  connection (``grpc.use_local_subchannel_pool=1`` plus a distinct channel arg),
  behaving like Envoy: node only in the first message, CDS+LDS first, every
  response ACKed at once, EDS subscribed to the clusters received, RDS to the
  listener's route configuration. A failed stream is counted and reconnects.

Measured: time from ``cache.set_snapshot`` to each proxy's ACK of the new version
as seen by the server (``set_converged(proxy, new_version)``), per push; the
JSON reports medians over ``--repeats`` pushes of the per-push p50/p99, the
server's CPU (user+sys, all threads) per push, its RSS, and the connect time.
Progress on stderr also shows, per push, when the clients received the response
and wrote their ACK (CLOCK_MONOTONIC is shared by all processes), GC pauses in
the server, per-thread CPU and run-queue wait, and CPU used by other processes.

Diagnostics (not needed for the headline figures):
  --client-impl h2    minimal HTTP/2 gRPC clients (about 1/3 of grpc.aio's client CPU)
  --server-impl floor bare grpc.aio ADS stand-in: the transport's own cost
  --gc-freeze         gc.collect(); gc.freeze() in the server before each push
  --pin               the server's event-loop thread alone on CPU 0
  --profile FILE      cProfile of the server during the pushes
  --pyspy FILE        py-spy (raw stacks) of the server during the pushes
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import queue
import random
import resource
import signal
import subprocess
import sys
import threading
import time

from _benchlib import (GROUP, background_pct, die_with_parent, emit, log, machine_cpu, median, percentile,
                       raise_fd_limit, rss_kb, wait_quiet)

SOTW_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
DELTA_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
STREAMS_PER_CLIENT = 1250
WEIGHTS = (80, 90)  # service 0's v1 weight: starts at 90, then 80, 90, 80, ...


# =============================================================================
# Cheap protobuf reading (only for CDS/LDS payloads, i.e. at connect time)
# =============================================================================

def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of each top-level field."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            ln, i = _varint(buf, i)
            v, i = buf[i:i + ln], i + ln
        elif wt == 1:
            v, i = buf[i:i + 8], i + 8
        elif wt == 5:
            v, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wt}")
        yield num, wt, v


def _field(buf: bytes, number: int) -> bytes | int | None:
    for num, _, v in _fields(buf):
        if num == number:
            return v
    return None


def resource_name(payload: bytes) -> str:
    """Field 1 of Cluster / Listener / RouteConfiguration / ClusterLoadAssignment."""
    v = _field(payload, 1)
    return v.decode() if isinstance(v, bytes) else ""


def cluster_eds_name(payload: bytes) -> str | None:
    """The ClusterLoadAssignment an EDS cluster asks for (None for other cluster types)."""
    name, ctype, eds_cfg = "", 0, None
    for num, _, v in _fields(payload):
        if num == 1:
            name = v.decode()
        elif num == 2:
            ctype = v
        elif num == 3:
            eds_cfg = v
    if ctype != 3:  # Cluster.DiscoveryType.EDS
        return None
    service = _field(eds_cfg, 2) if eds_cfg else None  # EdsClusterConfig.service_name
    return service.decode() if service else name


def listener_rds_names(payload: bytes) -> list[str]:
    """route_config_name of every HCM using RDS (Listener.filter_chains[].filters[].typed_config)."""
    names = []
    for num, _, chain in _fields(payload):
        if num != 3 and num != 25:  # filter_chains, default_filter_chain
            continue
        for fnum, _, flt in _fields(chain):
            if fnum != 3:  # filters
                continue
            typed = _field(flt, 4)  # typed_config (Any)
            if not typed or _field(typed, 1) != HCM.encode():
                continue
            rds = _field(_field(typed, 2) or b"", 3)  # HttpConnectionManager.rds
            if rds:
                route = _field(rds, 2)  # Rds.route_config_name
                if route:
                    names.append(route.decode())
    return names


class PayloadNames:
    """Per-process memo: payload bytes -> names, computed once per distinct payload."""

    def __init__(self):
        self.eds: dict[bytes, str | None] = {}
        self.rds: dict[bytes, tuple[str, ...]] = {}

    def cluster(self, payload: bytes) -> str | None:
        try:
            return self.eds[payload]
        except KeyError:
            v = self.eds[payload] = cluster_eds_name(payload)
            return v

    def listener(self, payload: bytes) -> tuple[str, ...]:
        try:
            return self.rds[payload]
        except KeyError:
            v = self.rds[payload] = tuple(listener_rds_names(payload))
            return v


# =============================================================================
# Client process: many simulated Envoys
# =============================================================================

class ClientStats:
    def __init__(self):
        self.errors: dict[str, int] = {}
        self.streams_started = 0
        self.responses = 0
        #: (response received, ACK written) perf_counter() pairs of RDS responses (CLOCK_MONOTONIC,
        #: the same clock in every process of this machine, so comparable with the server's t0).
        self.route_times: list[tuple[float, float]] = []

    def error(self, code: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1


class SotwEnvoy:
    """What Envoy sends on a state-of-the-world ADS stream (transport-free)."""

    def __init__(self, idx: int, memo: PayloadNames):
        from xds.wire import discovery_pb2 as wire

        self.Req = wire.DiscoveryRequest
        self.Resp = wire.DiscoveryResponse
        self.node = wire.Node(id=f"bench-proxy-{idx}", cluster=GROUP)
        self.memo = memo
        self.eds_names: tuple[str, ...] = ()
        self.rds_names: tuple[str, ...] = ()
        self.last: dict[str, tuple[str, str]] = {}  # type_url -> (version, nonce) of the newest response

    def first(self) -> list:
        # CDS and LDS first; the node only in the first message (set_node_on_first_message_only).
        return [self.Req(node=self.node, type_url=CLUSTER), self.Req(type_url=LISTENER)]

    def on_response(self, resp) -> list:
        Req, t = self.Req, resp.type_url
        self.last[t] = (resp.version_info, resp.nonce)
        if t == CLUSTER:
            out = [Req(version_info=resp.version_info, type_url=t, response_nonce=resp.nonce)]
            names = tuple(sorted({n for a in resp.resources if (n := self.memo.cluster(a.value))}))
            if names != self.eds_names:
                self.eds_names = names
                v, nonce = self.last.get(ENDPOINT, ("", ""))
                out.append(Req(version_info=v, resource_names=names, type_url=ENDPOINT, response_nonce=nonce))
            return out
        if t == LISTENER:
            out = [Req(version_info=resp.version_info, type_url=t, response_nonce=resp.nonce)]
            names = tuple(sorted({n for a in resp.resources for n in self.memo.listener(a.value)}))
            if names != self.rds_names:
                self.rds_names = names
                v, nonce = self.last.get(ROUTE, ("", ""))
                out.append(Req(version_info=v, resource_names=names, type_url=ROUTE, response_nonce=nonce))
            return out
        names = self.eds_names if t == ENDPOINT else self.rds_names
        return [Req(version_info=resp.version_info, resource_names=names, type_url=t, response_nonce=resp.nonce)]


class DeltaEnvoy:
    """What Envoy sends on an incremental ADS stream (transport-free)."""

    def __init__(self, idx: int, memo: PayloadNames):
        from xds.wire import discovery_pb2 as wire

        self.Req = wire.DeltaDiscoveryRequest
        self.Resp = wire.DeltaDiscoveryResponse
        self.node = wire.Node(id=f"bench-proxy-{idx}", cluster=GROUP)
        self.memo = memo
        self.clusters: dict[str, str | None] = {}  # cluster name -> the EDS name it waits for
        self.listeners: dict[str, tuple[str, ...]] = {}  # listener -> its RDS names
        self.eds_names: set[str] = set()
        self.rds_names: set[str] = set()

    def first(self) -> list:
        # LDS/CDS are wildcard: an empty subscribe list.
        return [self.Req(node=self.node, type_url=CLUSTER), self.Req(type_url=LISTENER)]

    def on_response(self, resp) -> list:
        Req, t = self.Req, resp.type_url
        out = [Req(type_url=t, response_nonce=resp.nonce)]  # delta ACK: the nonce only
        if t == CLUSTER or t == LISTENER:
            memo = self.memo
            if t == CLUSTER:
                for r in resp.resources:
                    self.clusters[r.name] = memo.cluster(r.resource.value)
                for name in resp.removed_resources:
                    self.clusters.pop(name, None)
                want, sub_type, have = {n for n in self.clusters.values() if n}, ENDPOINT, self.eds_names
            else:
                for r in resp.resources:
                    self.listeners[r.name] = memo.listener(r.resource.value)
                for name in resp.removed_resources:
                    self.listeners.pop(name, None)
                want = {n for names in self.listeners.values() for n in names}
                sub_type, have = ROUTE, self.rds_names
            add, drop = sorted(want - have), sorted(have - want)
            if add or drop:
                out.append(Req(type_url=sub_type, resource_names_subscribe=add, resource_names_unsubscribe=drop))
                have.clear()
                have.update(want)
        return out


# -- transport 1: grpc.aio, one channel (and TCP connection) per proxy -----------

def _channel_options(idx: int):
    return (
        ("grpc.use_local_subchannel_pool", 1),
        ("weir.bench.proxy", idx),  # distinct args as well: never share a connection
        ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ("grpc.enable_retries", 0),
    )


async def grpc_proxy(port: int, idx: int, delta: bool, stats: ClientStats, memo: PayloadNames,
                     stop: asyncio.Event) -> None:
    import grpc

    while not stop.is_set():
        envoy = DeltaEnvoy(idx, memo) if delta else SotwEnvoy(idx, memo)
        channel = grpc.aio.insecure_channel(f"ipv4:127.0.0.1:{port}", options=_channel_options(idx))
        try:
            call = channel.stream_stream(
                DELTA_METHOD if delta else SOTW_METHOD,
                request_serializer=envoy.Req.SerializeToString,
                response_deserializer=envoy.Resp.FromString,
            )()
            stats.streams_started += 1
            for req in envoy.first():
                await call.write(req)
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    raise EOFError("stream ended by the server")
                t_recv = time.perf_counter()
                stats.responses += 1
                for req in envoy.on_response(resp):
                    await call.write(req)
                if resp.type_url == ROUTE:
                    stats.route_times.append((t_recv, time.perf_counter()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - counted, then reconnect like Envoy
            if stop.is_set():
                return
            stats.error(exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__)
        finally:
            if not stop.is_set():
                await channel.close(None)
        await asyncio.sleep(0.5 + random.random())


# -- transport 2: a minimal HTTP/2 gRPC client on asyncio.Protocol ----------------
#
# The same requests on the same kind of connection (h2c, one gRPC stream, HPACK
# literals, flow control, PING/SETTINGS ACKs), without grpc.aio's per-message
# coroutine and completion-queue cost. With Python gRPC clients on the same two
# cores, the clients use about as much CPU per push as the server; this
# transport lets the server have most of the machine.

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST, _SETTINGS, _PING, _GOAWAY, _WINDOW = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8
_END_STREAM, _ACK, _END_HEADERS, _PADDED = 0x1, 0x1, 0x4, 0x8
_RECV_WINDOW = 1 << 24


def _frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream.to_bytes(4, "big") + payload


def _hpack_literal(name_index: int, value: bytes) -> bytes:
    """Literal header field without indexing, indexed name (name_index < 15), no Huffman."""
    assert name_index < 15 and len(value) < 127
    return bytes((name_index, len(value))) + value


def _request_headers(path: str, port: int) -> bytes:
    block = (
        b"\x83"  # :method POST (static 3)
        + b"\x86"  # :scheme http (static 6)
        + _hpack_literal(4, path.encode())  # :path
        + _hpack_literal(1, f"127.0.0.1:{port}".encode())  # :authority
        + b"\x0f\x10" + bytes((16,)) + b"application/grpc"  # content-type (static 31)
        + b"\x00\x02te\x08trailers"
    )
    return _frame(_HEADERS, _END_HEADERS, 1, block)


class H2Proxy(asyncio.Protocol):
    """One simulated Envoy on one HTTP/2 connection carrying one ADS stream (stream id 1)."""

    def __init__(self, port: int, idx: int, delta: bool, stats: ClientStats, memo: PayloadNames,
                 stop: asyncio.Event):
        self.port, self.idx, self.delta, self.stats, self.memo, self.stop = port, idx, delta, stats, memo, stop
        self.transport = None
        self.envoy = None
        self.inbuf = bytearray()
        self.msgbuf = bytearray()
        self.consumed = 0
        self.send_conn = self.send_stream = 65535  # our send windows (peer's initial settings)
        self.pending: list[bytes] = []  # gRPC messages waiting for send window
        self.done = False

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: self, "127.0.0.1", self.port)
        except OSError as exc:
            self._failed(type(exc).__name__)

    def connection_made(self, transport) -> None:
        import socket

        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.envoy = DeltaEnvoy(self.idx, self.memo) if self.delta else SotwEnvoy(self.idx, self.memo)
        self.inbuf.clear()
        self.msgbuf.clear()
        self.consumed = 0
        self.send_conn = self.send_stream = self.peer_initial_window = 65535
        self.pending = []
        self.done = False
        self.stats.streams_started += 1
        settings = (2).to_bytes(2, "big") + (0).to_bytes(4, "big") + (4).to_bytes(2, "big") + _RECV_WINDOW.to_bytes(4, "big")
        transport.write(
            _H2_PREFACE
            + _frame(_SETTINGS, 0, 0, settings)
            + _frame(_WINDOW, 0, 0, (_RECV_WINDOW - 65535).to_bytes(4, "big"))
            + _request_headers(DELTA_METHOD if self.delta else SOTW_METHOD, self.port)
        )
        self._send([r.SerializeToString() for r in self.envoy.first()])

    def connection_lost(self, exc) -> None:
        if not self.done:
            self._failed("connection_lost")

    def _failed(self, code: str) -> None:
        if self.done:
            return
        self.done = True
        if self.stop.is_set():
            return
        self.stats.error(code)
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        asyncio.get_running_loop().call_later(0.5 + random.random(), self.start)

    # -- sending -------------------------------------------------------------------
    def _send(self, messages: list[bytes]) -> None:
        self.pending.extend(messages)
        out = []
        while self.pending:
            msg = self.pending[0]
            n = len(msg) + 5
            if n > self.send_conn or n > self.send_stream:
                break  # wait for WINDOW_UPDATE
            self.pending.pop(0)
            self.send_conn -= n
            self.send_stream -= n
            out.append(_frame(_DATA, 0, 1, b"\x00" + len(msg).to_bytes(4, "big") + msg))
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    # -- receiving -----------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        buf = self.inbuf
        buf += data
        pos, n = 0, len(buf)
        control = []
        while n - pos >= 9:
            length = int.from_bytes(buf[pos:pos + 3], "big")
            if n - pos < 9 + length:
                break
            ftype, flags = buf[pos + 3], buf[pos + 4]
            stream = int.from_bytes(buf[pos + 5:pos + 9], "big") & 0x7FFFFFFF
            payload = bytes(buf[pos + 9:pos + 9 + length])
            pos += 9 + length
            if ftype == _DATA:
                if flags & _PADDED:
                    payload = payload[1:len(payload) - payload[0]]
                self.consumed += length
                self.msgbuf += payload
                self._messages()
                if flags & _END_STREAM:
                    self._failed("END_STREAM")
                    return
            elif ftype == _HEADERS:
                if flags & _END_STREAM:  # trailers: the server ended the call
                    self._failed("TRAILERS")
                    return
            elif ftype == _SETTINGS:
                if not flags & _ACK:
                    for i in range(0, len(payload) - 5, 6):
                        key, value = int.from_bytes(payload[i:i + 2], "big"), int.from_bytes(payload[i + 2:i + 6], "big")
                        if key == 4:  # SETTINGS_INITIAL_WINDOW_SIZE: applies as a delta to open streams
                            self.send_stream += value - self.peer_initial_window
                            self.peer_initial_window = value
                    control.append(_frame(_SETTINGS, _ACK, 0, b""))
            elif ftype == _PING:
                if not flags & _ACK:
                    control.append(_frame(_PING, _ACK, 0, payload))
            elif ftype == _WINDOW:
                inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                if stream == 0:
                    self.send_conn += inc
                else:
                    self.send_stream += inc
                if self.pending:
                    self._send([])
            elif ftype == _RST:
                self._failed("RST_STREAM")
                return
            elif ftype == _GOAWAY:
                self._failed("GOAWAY")
                return
        del buf[:pos]
        if self.consumed > _RECV_WINDOW // 2:
            inc = self.consumed.to_bytes(4, "big")
            control.append(_frame(_WINDOW, 0, 0, inc) + _frame(_WINDOW, 0, 1, inc))
            self.consumed = 0
        if control and self.transport is not None:
            self.transport.write(b"".join(control))

    def _messages(self) -> None:
        buf = self.msgbuf
        while len(buf) >= 5:
            length = int.from_bytes(buf[1:5], "big")
            if len(buf) < 5 + length:
                return
            msg = bytes(buf[5:5 + length])
            del buf[:5 + length]
            t_recv = time.perf_counter()
            resp = self.envoy.Resp.FromString(msg)
            self.stats.responses += 1
            self._send([r.SerializeToString() for r in self.envoy.on_response(resp)])
            if resp.type_url == ROUTE:
                self.stats.route_times.append((t_recv, time.perf_counter()))


async def client_main(args) -> None:
    import grpc  # noqa: F401 - import before "ready", so "go" starts connecting at once
    from xds.wire import discovery_pb2  # noqa: F401

    raise_fd_limit()
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue = asyncio.Queue()
    _stdin_commands(loop, commands)
    stats, memo, stop = ClientStats(), PayloadNames(), asyncio.Event()
    emit({"ready": True, "pid": os.getpid()})
    tasks: list = []
    while True:
        cmd = await commands.get()
        if cmd is None or cmd.get("cmd") == "stop":
            break
        if cmd.get("cmd") == "go":
            for idx in range(args.first, args.first + args.count):
                if args.client_impl == "h2":
                    proxy = H2Proxy(args.port, idx, args.delta, stats, memo, stop)
                    proxy.start()
                    tasks.append(proxy)
                else:
                    tasks.append(asyncio.create_task(grpc_proxy(args.port, idx, args.delta, stats, memo, stop)))
                if args.connect_batch and len(tasks) % args.connect_batch == 0:
                    await asyncio.sleep(0)  # let a batch start its connections
        elif cmd.get("cmd") == "times":
            t0 = cmd["t0"]
            times = [(r - t0, a - t0) for r, a in stats.route_times if r >= t0]
            stats.route_times = []
            emit({"recv_s": [r for r, _ in times], "ack_s": [a for _, a in times]})
        elif cmd.get("cmd") == "stats":
            emit({"streams_started": stats.streams_started, "responses": stats.responses, "errors": stats.errors,
                  "cpu_s": _cpu_s()})
    stop.set()
    emit({"final": True, "streams_started": stats.streams_started, "responses": stats.responses,
          "errors": stats.errors, "cpu_s": _cpu_s()})
    # Sockets close with the process; closing 1,250 channels one by one only adds time.
    os._exit(0)


def _stdin_commands(loop: asyncio.AbstractEventLoop, commands: asyncio.Queue) -> None:
    """Feed JSON lines from stdin into an asyncio queue (None at EOF)."""
    import json

    def reader():
        for line in sys.stdin:
            line = line.strip()
            if line:
                loop.call_soon_threadsafe(commands.put_nowait, json.loads(line))
        loop.call_soon_threadsafe(commands.put_nowait, None)

    threading.Thread(target=reader, daemon=True).start()


def _pin_threads(loop_cpu: int, others: set[int]) -> None:
    """This (event-loop) thread on loop_cpu alone; every other thread of the process on `others`."""
    me = threading.get_native_id()
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {loop_cpu} if int(tid) == me else others)
        except OSError:
            pass


def _thread_sched() -> dict[str, tuple[str, int, int]]:
    """tid -> (thread name, ns on CPU, ns waiting on a run queue), from /proc/self/task/*/schedstat."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                run, wait, _ = f.read().split()
        except OSError:
            continue
        out[tid] = (name, int(run), int(wait))
    return out


def _sched_delta(before: dict, after: dict) -> list[dict]:
    """Per thread that ran: ms on CPU and ms runnable but waiting for a CPU."""
    rows = []
    for tid, (name, run, wait) in after.items():
        _, run0, wait0 = before.get(tid, (name, 0, 0))
        if run - run0 > 500_000:  # > 0.5 ms
            rows.append({"thread": name, "cpu_ms": round((run - run0) / 1e6, 1), "runq_ms": round((wait - wait0) / 1e6, 1)})
    return sorted(rows, key=lambda r: -r["cpu_ms"])


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# =============================================================================
# Server process
# =============================================================================

class FloorAds:
    """``--server-impl floor``: grpc.aio with no xDS logic, to measure the cost floor.

    Same wire behaviour as far as the simulated proxies can tell (every request
    without a nonce is answered with the whole type, ACKs are recognised by
    nonce), but no cache, protocol state machine, registry or per-stream queue:
    a push is one ``context.write`` task per stream and an ACK one read.
    """

    def __init__(self, snapshot, timing, delta: bool):
        self.snapshot = snapshot
        self.timing = timing
        self.delta = delta
        self.streams: set = set()
        self.versions: dict[str, int] = {}

    def body(self, type_url: str, snap) -> bytes:
        from xds.snapshot import len_field

        if not self.delta:
            return snap.view(type_url).sotw_body
        parts = [len_field(1, snap.version.encode())]
        parts.extend(len_field(2, r.delta_bytes) for r in snap.resources[type_url].values())
        parts.append(len_field(4, type_url.encode()))
        return b"".join(parts)

    def counts(self, group: str, version: str) -> tuple[int, int]:
        return self.versions.get(version, 0), len(self.streams)

    def _acked(self, st, version: str) -> None:
        if st.version is not None:
            self.versions[st.version] -= 1
        st.version = version
        self.versions[version] = self.versions.get(version, 0) + 1
        t = self.timing
        if version == t.target and st not in t.times:
            t.times[st] = time.perf_counter()
            if len(t.times) >= t.expected and t.done is not None and not t.done.done():
                t.done.set_result(None)

    async def serve(self, request_iterator, context) -> None:
        from xds.snapshot import len_field

        class St:
            __slots__ = ("nonce", "route_nonce", "route_version", "version", "context")

        st = St()
        st.nonce, st.route_nonce, st.route_version, st.version, st.context = 0, "", "", None, context
        self.streams.add(st)
        try:
            async for req in request_iterator:
                nonce = req.response_nonce
                if not nonce:
                    st.nonce += 1
                    n = str(st.nonce)
                    if req.type_url == ROUTE:
                        st.route_nonce, st.route_version = n, self.snapshot.version
                    await context.write(self.body(req.type_url, self.snapshot) + len_field(5, n.encode()))
                elif nonce == st.route_nonce:
                    self._acked(st, st.route_version)
        finally:
            self.streams.discard(st)
            if st.version is not None:
                self.versions[st.version] -= 1

    def publish(self, snap) -> None:
        from xds.snapshot import len_field

        self.snapshot = snap
        body = self.body(ROUTE, snap)
        for st in self.streams:
            st.nonce += 1
            st.route_nonce, st.route_version = str(st.nonce), snap.version
            asyncio.ensure_future(st.context.write(body + len_field(5, st.route_nonce.encode())))

    def handler(self):
        import grpc

        from xds.wire import discovery_pb2 as wire

        method = "DeltaAggregatedResources" if self.delta else "StreamAggregatedResources"
        request = wire.DeltaDiscoveryRequest if self.delta else wire.DiscoveryRequest
        return grpc.method_handlers_generic_handler(
            "envoy.service.discovery.v3.AggregatedDiscoveryService",
            {method: grpc.stream_stream_rpc_method_handler(
                self.serve, request_deserializer=request.FromString, response_serializer=lambda b: b)},
        )


async def server_main(args) -> None:
    from _benchlib import build_snapshot
    from xds.cache import SnapshotCache
    from xds.server import XdsServer
    from xds.status import StatusRegistry

    class TimingRegistry(StatusRegistry):
        """Timestamps the first time each proxy converges to `target` (server clock)."""

        target: str | None = None
        times: dict = {}
        expected = 0
        done: asyncio.Future | None = None

        def set_converged(self, proxy, version):
            if version is not None and version == self.target and proxy.converged_version != version:
                now = time.perf_counter()
                if proxy not in self.times:
                    self.times[proxy] = now
                    if len(self.times) >= self.expected and self.done is not None and not self.done.done():
                        self.done.set_result(now)
            super().set_converged(proxy, version)

        def disconnect(self, proxy):
            if proxy in self._connected:
                self.disconnects += 1
            super().disconnect(proxy)

        disconnects = 0


    raise_fd_limit()
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue = asyncio.Queue()
    _stdin_commands(loop, commands)

    import gc

    gc_stats = {"ms": 0.0, "runs": [0, 0, 0]}
    gc_t0 = [0.0]

    def gc_callback(phase, info):
        if phase == "start":
            gc_t0[0] = time.perf_counter()
        else:
            gc_stats["ms"] += (time.perf_counter() - gc_t0[0]) * 1000.0
            gc_stats["runs"][info["generation"]] += 1

    gc.callbacks.append(gc_callback)

    cache, registry = SnapshotCache(), TimingRegistry()
    snapshot = build_snapshot(args.services, 90)
    cache.set_snapshot(GROUP, snapshot)
    current_version = snapshot.version
    if args.server_impl == "floor":
        import grpc

        from xds.server import SERVER_OPTIONS

        floor = FloorAds(snapshot, registry, args.delta)
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers([floor.handler()])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        publish, counts = floor.publish, floor.counts
    else:
        server = XdsServer(cache=cache, registry=registry)
        port = await server.start("127.0.0.1", 0)
        publish, counts = (lambda snap: cache.set_snapshot(GROUP, snap)), registry.counts
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
    # Warm up everything a push touches once, so the first measured push is not paying imports.
    build_snapshot(args.services, 80)
    await asyncio.sleep(0.2)
    emit({"port": port, "rss_kb": rss_kb(), "version": current_version, "pid": os.getpid()})

    while True:
        cmd = await commands.get()
        if cmd is None or cmd["cmd"] == "stop":
            break
        if cmd["cmd"] == "wait":
            # Every expected proxy connected and converged to the current version.
            deadline = loop.time() + cmd["timeout"]
            n = cmd["n"]
            while True:
                converged, connected = counts(GROUP, current_version)
                if converged >= n and connected >= n or loop.time() > deadline:
                    break
                await asyncio.sleep(0.02)
            emit({"converged": converged, "connected": connected, "rss_kb": rss_kb()})
        elif cmd["cmd"] == "rss":
            emit({"rss_kb": rss_kb()})
        elif cmd["cmd"] == "disconnects":
            emit({"disconnects": registry.disconnects})
        elif cmd["cmd"] == "push":
            snap = build_snapshot(args.services, cmd["weight"])
            _, connected = counts(GROUP, current_version)
            registry.target, registry.times, registry.expected = snap.version, {}, connected
            registry.done = loop.create_future()
            if args.gc_freeze:
                gc.collect()
                gc.freeze()
            gc_stats["ms"], gc_stats["runs"] = 0.0, [0, 0, 0]
            if args.pin_loop is not None:
                _pin_threads(args.pin_loop, {int(c) for c in args.pin_others.split(",")})
            sched0 = _thread_sched()
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            if profiler is not None:
                profiler.enable()
            t0 = time.perf_counter()
            publish(snap)
            t_set = time.perf_counter()
            try:
                await asyncio.wait_for(asyncio.shield(registry.done), cmd["timeout"])
            except asyncio.TimeoutError:
                pass
            t_end = time.perf_counter()
            if profiler is not None:
                profiler.disable()
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            sched1 = _thread_sched()
            current_version = snap.version
            lat = sorted((t - t0) * 1000.0 for t in registry.times.values())
            registry.target = None
            emit({
                "expected": connected,
                "acked": len(lat),
                "t0": t0,
                "min_ms": lat[0] if lat else float("nan"),
                "p50_ms": percentile(lat, 50),
                "p90_ms": percentile(lat, 90),
                "p99_ms": percentile(lat, 99),
                "max_ms": lat[-1] if lat else float("nan"),
                "set_snapshot_ms": (t_set - t0) * 1000.0,
                "wall_ms": (t_end - t0) * 1000.0,
                "cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
                "user_s": ru1.ru_utime - ru0.ru_utime,
                "sys_s": ru1.ru_stime - ru0.ru_stime,
                "rss_kb": rss_kb(),
                "gc_ms": gc_stats["ms"],
                "gc_runs": list(gc_stats["runs"]),
                "threads": _sched_delta(sched0, sched1),
                **({"lat_ms": lat} if cmd.get("raw") else {}),
            })
    if profiler is not None:
        import io
        import pstats

        profiler.dump_stats(args.profile)
        for order in ("tottime", "cumulative"):
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(order).print_stats(35)
            log(out.getvalue())
        log(f"server: profile written to {args.profile}")
    emit({"final": True, "disconnects": registry.disconnects})
    os._exit(0)


# =============================================================================
# Orchestrator
# =============================================================================

class Child:
    """A subprocess speaking JSON lines on stdin/stdout."""

    def __init__(self, name: str, argv: list[str], cpus: set[int] | None = None):
        import json

        self.name = name
        self._json = json

        def preexec():
            die_with_parent()
            if cpus:
                os.sched_setaffinity(0, cpus)

        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, preexec_fn=preexec,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.strip()
            if line:
                try:
                    self.lines.put(self._json.loads(line))
                except ValueError:
                    log(f"{self.name}: {line}")
        self.lines.put(None)

    def send(self, obj) -> None:
        self.proc.stdin.write(self._json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float) -> dict:
        try:
            msg = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"{self.name}: no answer within {timeout:.0f} s") from None
        if msg is None:
            raise RuntimeError(f"{self.name} exited (code {self.proc.wait()})")
        return msg

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _clients_cpu(clients: list[Child]) -> float:
    for c in clients:
        c.send({"cmd": "stats"})
    return sum(c.recv(30)["cpu_s"] for c in clients)


def orchestrate(args) -> int:
    raise_fd_limit()
    n = args.proxies
    k = args.client_procs or max(2, math.ceil(n / STREAMS_PER_CLIENT))
    k = min(k, n)
    protocol = "delta" if args.delta else "sotw"
    me = [sys.executable, os.path.abspath(__file__)]
    children: list[Child] = []
    client_cpus = None
    pin_args: list[str] = []
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            # The server's asyncio thread gets CPU 0 to itself; gRPC core threads and clients share the rest.
            client_cpus = set(cpus[1:])
            pin_args = ["--pin-loop", str(cpus[0]), "--pin-others", ",".join(map(str, cpus[1:]))]
    replicas = args.replicas
    k = max(k, replicas)
    k += (-k) % replicas  # every server gets the same number of client processes
    try:
        servers = []
        for j in range(replicas):
            servers.append(Child(f"server{j}", me + ["--role", "server", "--services", str(args.services),
                                                     "--server-impl", args.server_impl] + (["--delta"] if args.delta else [])
                                 + (["--profile", f"{args.profile}.{j}"] if args.profile else [])
                                 + (["--gc-freeze"] if args.gc_freeze else []) + pin_args))
        children.extend(servers)
        hellos = [server.recv(60) for server in servers]
        hello = hellos[0]
        ports = [h["port"] for h in hellos]
        rss_before = sum(h["rss_kb"] for h in hellos)
        for h in hellos:
            log(f"server pid {h['pid']} on :{h['port']}, RSS {h['rss_kb'] / 1024:.1f} MB, version {h['version']}")

        clients = []
        per = [n // k + (1 if i < n % k else 0) for i in range(k)]
        share = [0] * replicas  # proxies per server
        first = 0
        for i, count in enumerate(per):
            argv = me + ["--role", "client", "--port", str(ports[i % replicas]), "--first", str(first), "--count",
                         str(count), "--connect-batch", str(args.connect_batch), "--client-impl", args.client_impl]
            argv += ["--delta"] if args.delta else []
            clients.append(Child(f"client{i}", argv, cpus=client_cpus))
            share[i % replicas] += count
            first += count
        children.extend(clients)
        for c in clients:
            c.recv(60)  # imported and ready
        log(f"{k} client processes ready ({per[0]} streams each); connecting {n} {protocol} proxies")

        t0 = time.perf_counter()
        for c in clients:
            c.send({"cmd": "go"})
        for server, want in zip(servers, share):
            server.send({"cmd": "wait", "n": want, "timeout": args.connect_timeout})
        statuses = [server.recv(args.connect_timeout + 30) for server in servers]
        connect_s = time.perf_counter() - t0
        converged = sum(st["converged"] for st in statuses)
        if converged < n:
            raise RuntimeError(f"only {converged}/{n} proxies converged "
                               f"({sum(st['connected'] for st in statuses)} connected) after {args.connect_timeout} s")
        log(f"all {n} connected and converged in {connect_s:.2f} s ({replicas} server process(es): {share})")
        time.sleep(args.settle)
        for server in servers:
            server.send({"cmd": "rss"})
        rss_after = sum(server.recv(30)["rss_kb"] for server in servers)

        our_pids = [c.proc.pid for c in children]
        wait_quiet(args.wait_quiet, our_pids)
        spy = None
        if args.pyspy:
            spy = subprocess.Popen([args.pyspy_bin, "record", "--pid", str(hello["pid"]), "--rate", str(args.pyspy_rate),
                                    "--native", "--format", "raw", "--output", args.pyspy],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
            time.sleep(1.0)  # py-spy attaches
        runs = []
        for r in range(args.repeats):
            weight = WEIGHTS[r % 2]
            if r:
                wait_quiet(args.wait_quiet, our_pids)  # samples 1 s: also the pause between pushes
            cpu0 = _clients_cpu(clients)
            mc0 = machine_cpu(our_pids)
            for server in servers:  # as every replica's routing watch fires: all at once
                server.send({"cmd": "push", "weight": weight, "timeout": args.push_timeout, "raw": True})
            res = _merge([server.recv(args.push_timeout + 60) for server in servers])
            res["background_cpu_pct"] = background_pct(mc0, machine_cpu(our_pids))
            time.sleep(0.2)  # let the clients finish their last ACK writes
            res["client_cpu_s"] = _clients_cpu(clients) - cpu0
            recv, ack = [], []
            for c in clients:
                c.send({"cmd": "times", "t0": res["t0"]})
            for c in clients:
                m = c.recv(30)
                recv.extend(m["recv_s"])
                ack.extend(m["ack_s"])
            recv.sort()
            ack.sort()
            for key, values in (("recv", recv), ("ack_sent", ack)):
                for q in (0, 50, 99):
                    v = (percentile(values, q) if q else values[0]) if values else float("nan")
                    res[f"client_{key}_p{q}_ms"] = v * 1000.0
            runs.append(res)
            log(f"push {r + 1}/{args.repeats} (v1={weight}): {res['acked']}/{res['expected']} ACKed, "
                f"min {res['min_ms']:.1f} ms, p50 {res['p50_ms']:.1f} ms, p99 {res['p99_ms']:.1f} ms, max {res['max_ms']:.1f} ms, "
                f"server CPU {res['cpu_s']:.3f} s, clients CPU {res['client_cpu_s']:.3f} s, "
                f"set_snapshot {res['set_snapshot_ms']:.1f} ms, GC {res['gc_ms']:.1f} ms {res['gc_runs']}")
            log(f"    other processes on the machine: {res['background_cpu_pct']:.0f}% CPU during this push")
            log("    server threads: " + ", ".join(f"{t['thread']} cpu {t['cpu_ms']} ms runq {t['runq_ms']} ms"
                                               for t in res["threads"]))
            log(f"    clients: RDS response received min/p50/p99 {res['client_recv_p0_ms']:.1f}/"
                f"{res['client_recv_p50_ms']:.1f}/{res['client_recv_p99_ms']:.1f} ms, ACK written "
                f"{res['client_ack_sent_p0_ms']:.1f}/{res['client_ack_sent_p50_ms']:.1f}/"
                f"{res['client_ack_sent_p99_ms']:.1f} ms after set_snapshot")
            if res["acked"] < res["expected"]:
                log(f"WARNING: push {r + 1} incomplete after {args.push_timeout} s")

        if spy is not None:
            spy.send_signal(signal.SIGINT)
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
            log(f"py-spy samples (collapsed stacks, server, push phase only) in {args.pyspy}")
        for server in servers:
            server.send({"cmd": "disconnects"})  # before the clients go away
        disconnects = sum(server.recv(30)["disconnects"] for server in servers)
        errors: dict[str, int] = {}
        client_cpu = 0.0
        for c in clients:
            c.send({"cmd": "stop"})
        for c in clients:
            final = c.recv(30)
            client_cpu += final["cpu_s"]
            for code, count in final["errors"].items():
                errors[code] = errors.get(code, 0) + count
        for server in servers:
            server.send({"cmd": "stop"})
        for server in servers:
            server.recv(60)

        result = {
            "bench": "xds_fanout",
            "proxies": n,
            "protocol": protocol,
            "services": args.services,
            "repeats": args.repeats,
            "p50_ms": round(median([r["p50_ms"] for r in runs]), 2),
            "p99_ms": round(median([r["p99_ms"] for r in runs]), 2),
            "max_ms": round(max(r["max_ms"] for r in runs), 2),
            "server_rss_mb": round(rss_after / 1024, 1),
            "rss_kb_per_proxy": round((rss_after - rss_before) / n, 1),
            "server_cpu_s": round(median([r["cpu_s"] for r in runs]), 3),
            "server_cpu_us_per_proxy": round(median([r["cpu_s"] for r in runs]) / n * 1e6, 1),
            "replicas": replicas,
            "push_skew_ms": round(median([r["skew_ms"] for r in runs]), 2),
            "clients_cpu_s": round(median([r["client_cpu_s"] for r in runs]), 3),
            "connect_s": round(connect_s, 2),
            "cancelled_streams": sum(errors.values()),
            "stream_errors": errors,
            "server_disconnects": disconnects,
            "background_cpu_pct": round(median([r["background_cpu_pct"] for r in runs]), 1),
            "background_cpu_pct_max": round(max(r["background_cpu_pct"] for r in runs), 1),
            "incomplete_pushes": sum(1 for r in runs if r["acked"] < r["expected"]),
            "per_repeat_p99_ms": [round(r["p99_ms"], 1) for r in runs],
            "client_procs": k,
            "client_impl": args.client_impl,
            "server_impl": args.server_impl,
            "pinned": bool(args.pin),
            "gc_freeze": bool(args.gc_freeze),
        }
        return result
    finally:
        for c in children:
            c.kill()


def compare_impls(args, n: int, impls: list[str]) -> None:
    """``--server-impl weir,floor``: the servers alternate for ``--rounds`` rounds in one run; one line each, then the ratio.

    Alternating keeps slow drifts of the shared machine (other processes, thermal)
    out of the comparison; the summary compares medians over the rounds.
    """
    results: dict[str, list[dict]] = {impl: [] for impl in impls}
    for r in range(args.rounds):
        for impl in impls:
            case = argparse.Namespace(**{**vars(args), "proxies": n, "replicas": 1, "server_impl": impl})
            result = orchestrate(case)
            result["round"] = r + 1
            results[impl].append(result)
            emit(result)
    first, base = impls[0], impls[-1]
    summary = {"bench": "xds_fanout_compare", "proxies": n, "rounds": args.rounds, "client_impl": args.client_impl}
    for impl in impls:
        summary[f"{impl}_p99_ms"] = round(median([x["p99_ms"] for x in results[impl]]), 1)
        summary[f"{impl}_p50_ms"] = round(median([x["p50_ms"] for x in results[impl]]), 1)
        summary[f"{impl}_server_cpu_s"] = round(median([x["server_cpu_s"] for x in results[impl]]), 3)
    summary["p99_ratio"] = round(summary[f"{first}_p99_ms"] / summary[f"{base}_p99_ms"], 3)
    summary["cpu_ratio"] = round(summary[f"{first}_server_cpu_s"] / summary[f"{base}_server_cpu_s"], 3)
    summary["per_round_p99_ratio"] = [round(a["p99_ms"] / b["p99_ms"], 3)
                                      for a, b in zip(results[first], results[base])]
    summary["background_cpu_pct"] = round(median([x["background_cpu_pct"] for v in results.values() for x in v]), 1)
    emit(summary)


def _merge(results: list[dict]) -> dict:
    """One push seen by several server processes: latencies pooled, CPU and GC added up."""
    if len(results) == 1:
        return {**results[0], "skew_ms": 0.0}
    lat = sorted(x for r in results for x in r["lat_ms"])
    out = dict(results[0])
    t0s = [r["t0"] for r in results]
    out.update({
        "expected": sum(r["expected"] for r in results), "acked": len(lat), "t0": min(t0s),
        "skew_ms": (max(t0s) - min(t0s)) * 1000.0,
        "min_ms": lat[0] if lat else float("nan"), "p50_ms": percentile(lat, 50), "p90_ms": percentile(lat, 90),
        "p99_ms": percentile(lat, 99), "max_ms": lat[-1] if lat else float("nan"),
        "set_snapshot_ms": max(r["set_snapshot_ms"] for r in results),
        "wall_ms": max(r["wall_ms"] for r in results),
        **{key: sum(r[key] for r in results) for key in ("cpu_s", "user_s", "sys_s", "rss_kb", "gc_ms")},
        "gc_runs": [sum(r["gc_runs"][g] for r in results) for g in range(3)],
        "threads": [dict(t, thread=f"s{j}:{t['thread']}") for j, r in enumerate(results) for t in r["threads"]],
    })
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxies", default="1000", help="fleet size; comma-separated for several cases in one run")
    p.add_argument("--replicas", default="1",
                   help="server processes the proxies are spread over (Weir replicas); comma-separated, e.g. 1,2: "
                        "each fleet size is measured with each, in the same run, and the ratio reported")
    p.add_argument("--delta", action="store_true", help="incremental ADS instead of state-of-the-world")
    p.add_argument("--client-procs", type=int, default=0, help=f"default: ceil(N/{STREAMS_PER_CLIENT}), at least 2")
    p.add_argument("--services", type=int, default=1, help="services (one listener/route config each)")
    p.add_argument("--repeats", type=int, default=5, help="route weight changes (alternating 80/20, 90/10)")
    p.add_argument("--profile", metavar="FILE", help="cProfile the server during the pushes; pstats dump to FILE")
    p.add_argument("--client-impl", choices=("grpc", "h2"), default="grpc",
                   help="grpc: grpc.aio channels (default); h2: minimal HTTP/2 client, far less client CPU")
    p.add_argument("--server-impl", default="weir",
                   help="weir (default) or floor: a bare grpc.aio ADS stand-in (no xDS logic), the gRPC cost floor; "
                        "weir,floor alternates both for --rounds rounds in one run and reports the ratio")
    p.add_argument("--rounds", type=int, default=3, help="with --server-impl weir,floor: rounds of each (default 3)")
    p.add_argument("--pin", action="store_true",
                   help="experiment: the server's event-loop thread alone on the first CPU, "
                        "its gRPC core threads and the clients on the others")
    p.add_argument("--pin-loop", type=int, help=argparse.SUPPRESS)
    p.add_argument("--pin-others", help=argparse.SUPPRESS)
    p.add_argument("--gc-freeze", action="store_true",
                   help="experiment: gc.collect()+gc.freeze() in the server before each push")
    p.add_argument("--pyspy", metavar="FILE", help="sample the server with py-spy during the pushes (raw stacks)")
    p.add_argument("--pyspy-rate", type=int, default=250, help="py-spy samples per second (it pauses the server)")
    p.add_argument("--pyspy-bin", default="py-spy", help="py-spy executable (pip install py-spy in any venv)")
    p.add_argument("--wait-quiet", type=float, default=120.0,
                   help="wait up to S seconds for other processes to leave the CPUs idle before measuring")
    p.add_argument("--connect-timeout", type=float, default=180.0)
    p.add_argument("--push-timeout", type=float, default=30.0)
    p.add_argument("--settle", type=float, default=1.0, help="seconds idle after connect, before RSS and pushes")
    p.add_argument("--connect-batch", type=int, default=0, help="client: yield to the loop every B new streams")
    p.add_argument("--role", choices=("orchestrator", "server", "client"), default="orchestrator",
                   help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "server":
        asyncio.run(server_main(args))
        return 0
    if args.role == "client":
        asyncio.run(client_main(args))
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        impls = str(args.server_impl).split(",")
        if set(impls) - {"weir", "floor"}:
            p.error(f"--server-impl: expected weir, floor or weir,floor (got {args.server_impl!r})")
        for n in [int(x) for x in str(args.proxies).split(",")]:
            if len(impls) > 1:
                compare_impls(args, n, impls)
                continue
            baseline = None
            for replicas in [int(x) for x in str(args.replicas).split(",")]:
                case = argparse.Namespace(**{**vars(args), "proxies": n, "replicas": replicas})
                result = orchestrate(case)
                if baseline is None:
                    baseline = result
                else:
                    result["p99_ratio_vs_first"] = round(result["p99_ms"] / baseline["p99_ms"], 3)
                    result["cpu_ratio_vs_first"] = round(result["server_cpu_s"] / baseline["server_cpu_s"], 3)
                emit(result)
        return 0
    except KeyboardInterrupt:
        log("interrupted")
        return 130


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
