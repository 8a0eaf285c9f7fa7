"""A small asyncio client for etcd's v3 gRPC API (KV, Txn, Lease, Watch).

Why our own: the maintained Python etcd v3 clients on PyPI are either
synchronous (a thread per call) or ship protobuf modules generated for older
protobuf runtimes; Weir needs five RPCs, all asyncio, on the grpcio and
protobuf it already uses. The messages are our own small ``.proto``
(:mod:`.wire.etcd_pb2`, etcd's field numbers) and the methods are called by
their real paths, as the xDS server does.

Every call carries a deadline (a store that does not answer is an error, never
a hang) and the ``hasleader`` metadata, so a member that lost its cluster's
quorum answers at once with "no leader" instead of waiting for one. A failed
call moves the client to the next endpoint for the following call; writes are
never retried here (a timed-out transaction may have committed: the caller
re-reads and decides).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Sequence
from urllib.parse import urlsplit

import grpc

from ..errors import Unavailable
from .wire import etcd_pb2 as pb

log = logging.getLogger("weir.etcd")

__all__ = ["EtcdClient", "EtcdError", "EtcdUnavailable", "TlsFiles", "parse_etcd_url", "prefix_end", "pb"]

_METADATA = (("hasleader", "true"),)

_KV = "/etcdserverpb.KV/"
_LEASE = "/etcdserverpb.Lease/"
_WATCH = "/etcdserverpb.Watch/Watch"


class EtcdError(Exception):
    """etcd refused a request (not a transport problem)."""


class EtcdUnavailable(Unavailable):
    """etcd cannot be reached or has no quorum: nothing was decided (HTTP 503)."""

    kind = "store-unavailable"
    title = "Store unavailable"


@dataclass(frozen=True)
class TlsFiles:
    """Client TLS to etcd: the CA that signed the members' certificates, and optionally our own certificate."""

    ca: Path
    cert: Path | None = None
    key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None, flag: str) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as err:
                raise ValueError(f"{flag} {path}: cannot read: {err.strerror or err}") from None

        if (self.cert is None) != (self.key is None):
            raise ValueError("--etcd-cert and --etcd-key go together (a client certificate needs its key)")
        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca, "--etcd-cacert"),
            private_key=read(self.key, "--etcd-key"),
            certificate_chain=read(self.cert, "--etcd-cert"),
        )


def parse_etcd_url(url: str) -> list[tuple[str, int]]:
    """``etcd://HOST:PORT[,HOST:PORT...]`` -> [(host, port), ...], or a ValueError naming the flag."""
    if not url.startswith("etcd://"):
        raise ValueError(f"--store: expected etcd://HOST:PORT[,HOST:PORT...] (got {url!r})")
    rest = url[len("etcd://"):].rstrip("/")
    endpoints = []
    for part in rest.split(","):
        parsed = urlsplit(f"//{part.strip()}")
        try:
            port = parsed.port
        except ValueError:
            port = None
        if not parsed.hostname or port is None or not 0 < port < 65536:
            raise ValueError(f"--store: {part!r} is not HOST:PORT with a port 1-65535 (in {url!r})")
        endpoints.append((parsed.hostname, port))
    return endpoints


def prefix_end(prefix: bytes) -> bytes:
    """The range_end that selects every key starting with ``prefix``."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


def _target(host: str, port: int) -> str:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"dns:///{host}:{port}"
    return f"ipv6:[{ip}]:{port}" if ip.version == 6 else f"ipv4:{ip}:{port}"


def _describe(err: grpc.aio.AioRpcError) -> str:
    details = err.details() or err.code().name
    if "no leader" in details:
        return f"{details} (the etcd cluster has lost quorum)"
    return details


class EtcdClient:
    """One channel per endpoint; calls go to the current endpoint and move on after a failure."""

    def __init__(self, endpoints: Sequence[tuple[str, int]], *, tls: TlsFiles | None = None, timeout_s: float = 2.0):
        if not endpoints:
            raise ValueError("--store: at least one etcd endpoint is needed")
        self.endpoints = list(endpoints)
        self.timeout_s = timeout_s
        creds = tls.credentials() if tls is not None else None
        options = (("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 5_000),
                   ("grpc.max_receive_message_length", 64 * 1024 * 1024))
        self._channels: list[grpc.aio.Channel] = []
        for host, port in self.endpoints:
            if creds is not None:
                # The member's certificate names the host we dial, not the resolver target.
                self._channels.append(grpc.aio.secure_channel(f"{host}:{port}", creds, options=options))
            else:
                self._channels.append(grpc.aio.insecure_channel(_target(host, port), options=options))
        self._current = 0
        self._closed = False

    def __str__(self) -> str:
        return ",".join(f"{h}:{p}" for h, p in self.endpoints)

    @property
    def endpoint(self) -> str:
        host, port = self.endpoints[self._current]
        return f"{host}:{port}"

    def _next(self, index: int) -> None:
        if self._current == index:
            self._current = (index + 1) % len(self._channels)

    async def _unary(self, method: str, request, response_type, *, retry: bool, timeout_s: float | None = None):
        attempts = len(self._channels) if retry else 1
        last: grpc.aio.AioRpcError | None = None
        for _ in range(attempts):
            index = self._current
            call = self._channels[index].unary_unary(
                method, request_serializer=type(request).SerializeToString, response_deserializer=response_type.FromString)
            try:
                return await call(request, timeout=timeout_s or self.timeout_s, metadata=_METADATA)
            except grpc.aio.AioRpcError as err:
                last = err
                if err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
                                  grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE):
                    raise EtcdError(err.details() or err.code().name) from None
                self._next(index)
        assert last is not None
        raise EtcdUnavailable(f"etcd ({self}) did not answer {method.rsplit('/', 1)[-1]}: {_describe(last)}") from None

    # -- KV --------------------------------------------------------------------------------
    async def range(self, key: bytes, range_end: bytes = b"", *, limit: int = 0, revision: int = 0,
                    keys_only: bool = False, descend: bool = False) -> pb.RangeResponse:
        req = pb.RangeRequest(key=key, range_end=range_end, limit=limit, revision=revision, keys_only=keys_only)
        if descend:
            req.sort_order = pb.RangeRequest.DESCEND
            req.sort_target = pb.RangeRequest.KEY
        return await self._unary(_KV + "Range", req, pb.RangeResponse, retry=True)

    async def get(self, key: bytes) -> pb.KeyValue | None:
        resp = await self.range(key)
        return resp.kvs[0] if resp.kvs else None

    async def prefix(self, prefix: bytes, *, limit: int = 0) -> pb.RangeResponse:
        return await self.range(prefix, prefix_end(prefix), limit=limit)

    async def put(self, key: bytes, value: bytes, *, lease: int = 0) -> pb.PutResponse:
        return await self._unary(_KV + "Put", pb.PutRequest(key=key, value=value, lease=lease), pb.PutResponse,
                                 retry=False)

    async def delete(self, key: bytes, range_end: bytes = b"") -> pb.DeleteRangeResponse:
        return await self._unary(_KV + "DeleteRange", pb.DeleteRangeRequest(key=key, range_end=range_end),
                                 pb.DeleteRangeResponse, retry=False)

    async def txn(self, compare: Sequence[pb.Compare], success: Sequence[pb.RequestOp],
                  failure: Sequence[pb.RequestOp] = ()) -> pb.TxnResponse:
        req = pb.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))
        return await self._unary(_KV + "Txn", req, pb.TxnResponse, retry=False)

    async def read(self, keys: Sequence[bytes]) -> list[pb.KeyValue | None]:
        """Several keys at one revision (a read-only transaction, safe to retry on another endpoint)."""
        req = pb.TxnRequest(success=[get_op(k) for k in keys])
        resp = await self._unary(_KV + "Txn", req, pb.TxnResponse, retry=True)
        return [r.response_range.kvs[0] if r.response_range.kvs else None for r in resp.responses]

    # -- leases ----------------------------------------------------------------------------
    async def lease_grant(self, ttl_s: int) -> int:
        resp = await self._unary(_LEASE + "LeaseGrant", pb.LeaseGrantRequest(TTL=ttl_s), pb.LeaseGrantResponse,
                                 retry=True)
        if resp.error:
            raise EtcdError(resp.error)
        return resp.ID

    async def lease_revoke(self, lease: int) -> None:
        try:
            await self._unary(_LEASE + "LeaseRevoke", pb.LeaseRevokeRequest(ID=lease), pb.LeaseRevokeResponse,
                              retry=False)
        except EtcdError:  # already expired: nothing to revoke
            pass

    async def lease_keepalive(self, lease: int, *, timeout_s: float | None = None) -> int:
        """Refresh a lease once; its remaining TTL in seconds (0 or less: it has expired)."""
        index = self._current
        call = self._channels[index].stream_stream(
            _LEASE + "LeaseKeepAlive", request_serializer=pb.LeaseKeepAliveRequest.SerializeToString,
            response_deserializer=pb.LeaseKeepAliveResponse.FromString)(timeout=timeout_s or self.timeout_s,
                                                                        metadata=_METADATA)
        try:
            await call.write(pb.LeaseKeepAliveRequest(ID=lease))
            resp = await call.read()
            await call.done_writing()
        except grpc.aio.AioRpcError as err:
            self._next(index)
            raise EtcdUnavailable(f"etcd ({self}) did not refresh lease {lease:x}: {_describe(err)}") from None
        finally:
            call.cancel()
        if resp is grpc.aio.EOF:
            self._next(index)
            raise EtcdUnavailable(f"etcd ({self}) closed the keep-alive of lease {lease:x}")
        return resp.TTL

    # -- watch -----------------------------------------------------------------------------
    async def watch(self, key: bytes, range_end: bytes = b"", *, start_revision: int = 0) -> AsyncIterator[pb.WatchResponse]:
        """Watch one key or range from ``start_revision`` (inclusive); yields responses carrying events.

        Ends with :class:`EtcdUnavailable` when the stream breaks; the caller
        re-reads and watches again from the revision it has.
        """
        index = self._current
        call = self._channels[index].stream_stream(
            _WATCH, request_serializer=pb.WatchRequest.SerializeToString,
            response_deserializer=pb.WatchResponse.FromString)(metadata=_METADATA)
        try:
            await call.write(pb.WatchRequest(create_request=pb.WatchCreateRequest(
                key=key, range_end=range_end, start_revision=start_revision, progress_notify=True)))
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    self._next(index)
                    raise EtcdUnavailable(f"etcd ({self}) ended the watch")
                if resp.canceled:
                    reason = resp.cancel_reason or (f"compacted at {resp.compact_revision}" if resp.compact_revision else "")
                    raise EtcdError(f"etcd cancelled the watch: {reason}")
                if resp.events:
                    yield resp
        except grpc.aio.AioRpcError as err:
            self._next(index)
            raise EtcdUnavailable(f"etcd ({self}) watch failed: {_describe(err)}") from None
        finally:
            call.cancel()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(c.close() for c in self._channels), return_exceptions=True)


# -- building transactions -------------------------------------------------------------------
def put_op(key: bytes, value: bytes, lease: int = 0) -> pb.RequestOp:
    return pb.RequestOp(request_put=pb.PutRequest(key=key, value=value, lease=lease))


def get_op(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_range=pb.RangeRequest(key=key))


def delete_op(key: bytes) -> pb.RequestOp:
    return pb.RequestOp(request_delete_range=pb.DeleteRangeRequest(key=key))


def mod_is(key: bytes, revision: int) -> pb.Compare:
    """The key was last written at ``revision`` (0: the key does not exist)."""
    return pb.Compare(key=key, target=pb.Compare.MOD, result=pb.Compare.EQUAL, mod_revision=revision)


def lease_is(key: bytes, lease: int) -> pb.Compare:
    """The key exists and is held by ``lease`` (the fencing check)."""
    return pb.Compare(key=key, target=pb.Compare.LEASE, result=pb.Compare.EQUAL, lease=lease)


def absent(key: bytes) -> pb.Compare:
    return pb.Compare(key=key, target=pb.Compare.CREATE, result=pb.Compare.EQUAL, create_revision=0)
