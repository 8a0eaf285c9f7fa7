"""The gRPC (grpc.aio) Aggregated Discovery Service.

The servicer is registered with plain method paths and our own protobuf-upb
messages: requests are decoded with Weir's small wire types, and responses are
already bytes (assembled from cached resource bytes in ``streams.py``), so the
response serializer is the identity.

Scale settings (measured, docs/envoy-behaviour.md): grpc.aio handles thousands of
streams on one core; the default pending-request limits cancelled ~40% of a
5,000-proxy reconnect storm, so they are raised. Each proxy holds one file
descriptor: raise ``ulimit -n`` above the fleet size (the server stalls at
~1,010 streams under the common default of 1024).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import time
from typing import Iterable

import grpc

from .cache import SnapshotCache
from .ratelog import RateLimitedLog
from .status import StatusRegistry
from .streams import AdsStream, DeltaStream, SotwStream
from .wire import discovery_pb2 as wire

log = logging.getLogger("weir.xds")

ADS_SERVICE = "envoy.service.discovery.v3.AggregatedDiscoveryService"

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.server.max_pending_requests", 100_000),
    ("grpc.server.max_pending_requests_hard_limit", 100_000),
    ("grpc.max_concurrent_streams", 1_000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # gRPC sets SO_REUSEPORT by default: a second server on the same port would
    # start cleanly and share the proxies with the first. A port is ours alone.
    ("grpc.so_reuseport", 0),
)

def _identity(data: bytes) -> bytes:
    return data


def raise_fd_limit() -> int:
    """Raise the soft file-descriptor limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class AggregatedDiscoveryService:
    """ADS over gRPC: one StreamAggregatedResources / DeltaAggregatedResources call per proxy."""

    def __init__(self, cache: SnapshotCache, registry: StatusRegistry):
        self.cache = cache
        self.registry = registry
        # Anyone who can connect can send garbage: one line per stream, at most 10 a minute, then a count.
        self.malformed_log = RateLimitedLog(log, "malformed xDS streams")

    async def _serve(self, stream: AdsStream, request_iterator, context, parse) -> None:
        """Run one ADS stream.

        The protocol logic is synchronous, so it runs where its input arrives:
        requests in this handler's read loop, snapshot changes inside the
        cache's fan-out (``stream.wake``). Neither waits for a task switch;
        only writes are asynchronous, one at a time per stream, in order
        (:class:`_Writer`). That is the same shape as a bare grpc.aio server:
        per proxy and push, one write task and one read (bench/README.md).
        """
        writer = _Writer(stream, context)

        def changed() -> None:
            stream.apply_pending()
            writer.flush()

        stream.wake = changed
        try:
            async for raw in request_iterator:  # bytes: decoded here so a bad message is ours to report
                stream.on_request(parse(raw))
                if stream.outbox:
                    writer.flush()
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        except Exception as err:  # a malformed message ends this stream only
            self.malformed_log.log(logging.WARNING, "xDS stream from %s closed: malformed request (%s: %s)",
                                   stream.peer, type(err).__name__, " ".join(str(err).split())[:200])
        finally:
            stream.wake = None
            writer.close()
            stream.close()

    async def stream_sotw(self, request_iterator, context) -> None:
        await self._serve(SotwStream(self.cache, self.registry, context.peer()), request_iterator, context,
                          wire.DiscoveryRequest.FromString)

    async def stream_delta(self, request_iterator, context) -> None:
        await self._serve(DeltaStream(self.cache, self.registry, context.peer()), request_iterator, context,
                          wire.DeltaDiscoveryRequest.FromString)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            ADS_SERVICE,
            {
                "StreamAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.stream_sotw,
                    request_deserializer=None,  # raw bytes: _serve decodes them
                    response_serializer=_identity,
                ),
                "DeltaAggregatedResources": grpc.stream_stream_rpc_method_handler(
                    self.stream_delta,
                    request_deserializer=None,
                    response_serializer=_identity,
                ),
            },
        )


class _Writer:
    """Writes one stream's outbox in order, one ``context.write`` in flight at a time.

    Each write is its own task on grpc's ``context.write`` coroutine. Nothing
    waits on it unless more output arrives while it is in flight: only then is
    the next write chained with a done callback. A push (one response per
    proxy) thus costs one task and no callback, as in a bare grpc.aio server.
    """

    __slots__ = ("stream", "context", "inflight", "chained", "closed")

    def __init__(self, stream: AdsStream, context) -> None:
        self.stream = stream
        self.context = context
        self.inflight: asyncio.Future | None = None
        self.chained = False
        self.closed = False

    def flush(self) -> None:
        if self.closed or not self.stream.outbox:
            return
        task = self.inflight
        if task is not None:
            if not task.done():
                if not self.chained:
                    self.chained = True
                    task.add_done_callback(self._written)
                return
            if task.cancelled() or task.exception() is not None:
                self.closed = True  # the stream is ending: nothing more goes out
                return
        outbox = self.stream.outbox
        payload = outbox.pop(0) if len(outbox) > 1 else outbox.pop()
        self.inflight = task = asyncio.ensure_future(self.context.write(payload))
        self.chained = bool(outbox)
        if outbox:  # more to send after this one
            task.add_done_callback(self._written)

    def _written(self, task: asyncio.Future) -> None:
        self.chained = False
        self.flush()

    def close(self) -> None:
        self.closed = True
        task, self.inflight = self.inflight, None
        if task is not None:
            if task.done():
                if not task.cancelled():
                    task.exception()  # retrieved: a failed last write is no "never retrieved" warning
            else:
                task.cancel()


class PortInUse(OSError):
    """The xDS port is taken (or the address is not ours): refuse to start rather than share it."""


class GcGovernor:
    """Keeps full garbage collections off the push path.

    With thousands of streams the heap holds millions of long-lived objects and
    a full collection takes 100-650 ms (bench/README.md); one landing during a
    fan-out stalls every proxy. Freezing the heap once a second moves what
    survived into the permanent generation, so collections during a push only
    scan young objects; every `full_every_s` the heap is thawed and collected
    once, so cyclic garbage is still reclaimed.
    """

    def __init__(self, freeze_every_s: float = 1.0, full_every_s: float = 300.0):
        self.freeze_every_s = freeze_every_s
        self.full_every_s = full_every_s

    async def run(self) -> None:
        last_full = time.monotonic()
        while True:
            await asyncio.sleep(self.freeze_every_s)
            if time.monotonic() - last_full >= self.full_every_s:
                gc.unfreeze()
                gc.collect()
                last_full = time.monotonic()
            gc.freeze()


class XdsServer:
    """A grpc.aio server carrying ADS (and, later, other Weir gRPC services)."""

    def __init__(
        self,
        cache: SnapshotCache | None = None,
        registry: StatusRegistry | None = None,
        extra_handlers: Iterable[grpc.GenericRpcHandler] = (),
        credentials: grpc.ServerCredentials | None = None,
    ):
        # `is None`, not `or`: an empty StatusRegistry is falsy (it has __len__).
        self.cache = cache if cache is not None else SnapshotCache()
        self.registry = registry if registry is not None else StatusRegistry()
        self.ads = AggregatedDiscoveryService(self.cache, self.registry)
        self._extra = list(extra_handlers)
        self._credentials = credentials  # TLS (mTLS with a client CA: xds/tls.py); None: plaintext
        self._server: grpc.aio.Server | None = None
        self._gc_task: asyncio.Task | None = None
        self.gc = GcGovernor()
        self.port: int | None = None
        self.malformed_log = self.ads.malformed_log

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Bind and start serving; returns the bound port (port=0 picks a free one)."""
        raise_fd_limit()
        server = grpc.aio.server(options=SERVER_OPTIONS)
        server.add_generic_rpc_handlers([self.ads.handler(), *self._extra])
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if self._credentials is not None:
                bound = server.add_secure_port(address, self._credentials)
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise PortInUse(
                f"cannot listen for xDS on {address}: the address is in use or not local "
                "(is another `weir serve` running? pick another port with --xds-port)"
            )
        await server.start()
        self._server, self.port = server, bound
        self._gc_task = asyncio.create_task(self.gc.run(), name="weir-xds-gc")
        log.info("xDS server listening on %s:%d%s", host, bound, " (TLS)" if self._credentials is not None else "")
        return bound

    async def stop(self, grace: float | None = 0.5) -> None:
        if self._gc_task is not None:
            self._gc_task.cancel()
            self._gc_task = None
            gc.unfreeze()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()
