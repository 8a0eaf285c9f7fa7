"""The access-log relay: every follower forwards what its proxies log to the leader.

Only the leader analyses, but each proxy sends its access logs (gRPC ALS) and
timing records (OTLP) to the replica it is connected to. So each follower
relays them to the leader over one bidirectional gRPC stream of our own
(``/weir.relay.v1.AccessLogRelay/Relay``, ``control_plane/ha/wire/relay.proto``)
on the leader's xDS port, with the xDS TLS credentials when they are
configured. The leader opens a relayed stream in its
:class:`~analysis.sources.access_log.AccessLogSource` for each of the
follower's proxy streams and ingests the messages under the proxies' own node
ids (docs/ha.md explains the choice).

Cheap: a message travels as the bytes it arrived in (never decoded, never
re-encoded on the follower), batched up to ``max_batch_bytes`` per request.

Exactly once, or a gap in the evidence:

* the follower numbers what happens at it (a stream opened, a message, a
  stream closed, a timing export) 1, 2, 3, ... per process (an
  *incarnation*) and keeps every item until the leader acknowledges it, in a
  buffer bounded by ``max_buffer_bytes`` (:class:`RelayBuffer`): while no
  leader is known, or the leader does not keep up, the oldest items are
  dropped, counted and warned about (rate-limited);
* a session starts with the leader's welcome: the last item it holds of this
  incarnation. The follower resends from there, so a broken stream to the same
  leader loses nothing and counts nothing twice, and a new leader receives
  everything still unacknowledged;
* whatever cannot be delivered shows in the leader's coverage
  (:class:`~analysis.sources.access_log.RelayOrigin`): a hole in the numbers
  is a gap, a new leader holds the follower's entries only from the follower's
  ``complete_since``, a replica that serves proxies but whose relay is not
  connected makes coverage incomplete. Missing data is never zero errors.

No loop and no double count: a replica relays only what its *own* proxies
sent (relayed entries reach the source through another path than its taps),
relays nothing while it leads (its own proxies are already in its source), and
a replica that does not lead refuses relay sessions, so the follower looks
for the leader again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable

import grpc
from google.protobuf.message import DecodeError

from analysis.sources.access_log import AccessLogSource, RelayOrigin, _Stream
from xds.ratelog import RateLimitedLog
from xds.wire import accesslog_pb2 as als_wire
from xds.wire import otlp_logs_pb2 as otlp_wire

from ..etcd.client import EtcdClient, pb as etcd_pb
from .replication import KeyWatch
from .wire import relay_pb2 as pb

log = logging.getLogger("weir.ha.relay")

__all__ = ["RELAY_METHOD_PATH", "AccessLogRelay", "LeaderWatch", "RelayBuffer", "RelayReceiver", "encode_batch"]

RELAY_SERVICE = "weir.relay.v1.AccessLogRelay"
RELAY_METHOD = "Relay"
RELAY_METHOD_PATH = f"/{RELAY_SERVICE}/{RELAY_METHOD}"

OPEN, CLOSE, ALS, OTLP = "open", "close", "als", "otlp"
_EVENT_BYTES = 64  # what an open or close item counts toward the buffer bound

_CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.use_local_subchannel_pool", 1),  # one connection per leader, never shared with another channel
)


# --------------------------------------------------------------------------- the follower's buffer (pure)


@dataclass(slots=True)
class Item:
    seq: int
    at: float  # arrival at this replica (its clock)
    kind: str  # OPEN | CLOSE | ALS | OTLP
    stream: int
    payload: Any  # bytes (ALS, OTLP), the _Stream (OPEN), None (CLOSE)
    size: int


class RelayBuffer:
    """Numbered items kept until the leader acknowledges them, at most ``max_bytes`` (the oldest go first).

    ``complete_since``: every item that arrived after it is still here, or was
    acknowledged by the leader it was sent to. A new leader therefore holds this
    replica's entries from ``complete_since`` on; an acknowledgement, a drop and
    the end of leading move it forward.
    """

    def __init__(self, max_bytes: int = 64 * 1024 * 1024, *, clock: Callable[[], float] = time.time):
        if max_bytes <= 0:
            raise ValueError("the relay buffer needs a positive size")
        self.max_bytes = max_bytes
        self.clock = clock
        self._items: list[Item] = []
        self._head = 0  # index of the oldest item kept
        self.bytes = 0
        self.next_seq = 1
        self.cursor = 1  # the next seq to send
        self.retaining = True  # False while this replica leads: its own entries are not relayed
        self.complete_since = clock()
        self.dropped = 0
        self.dropped_bytes = 0
        self.dropped_since_log = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    @property
    def oldest_seq(self) -> int:
        return self._items[self._head].seq if len(self) else self.next_seq

    @property
    def unsent(self) -> int:
        return self.next_seq - max(self.cursor, self.oldest_seq)

    def append(self, kind: str, stream: int, payload: Any = None, *, at: float | None = None) -> int | None:
        """Keep one item (None while leading: nothing is relayed); returns its seq."""
        if not self.retaining:
            return None
        size = len(payload) if isinstance(payload, (bytes, bytearray)) else _EVENT_BYTES
        seq = self.next_seq
        self.next_seq += 1
        self._items.append(Item(seq, self.clock() if at is None else at, kind, stream, payload, size))
        self.bytes += size
        while self.bytes > self.max_bytes and len(self) > 1:
            self._forget(dropped=True)
        return seq

    def _forget(self, *, dropped: bool) -> Item:
        item = self._items[self._head]
        self._items[self._head] = None  # type: ignore[call-overload]  # (free the payload now)
        self._head += 1
        self.bytes -= item.size
        if item.at > self.complete_since:
            self.complete_since = item.at
        if dropped:
            self.dropped += 1
            self.dropped_bytes += item.size
            self.dropped_since_log += 1
        if self._head > 1024 and self._head * 2 > len(self._items):
            del self._items[: self._head]
            self._head = 0
        return item

    def ack(self, seq: int) -> int:
        """The leader holds every item up to ``seq``: forget them. Returns how many were forgotten."""
        n = 0
        while len(self) and self._items[self._head].seq <= seq:
            self._forget(dropped=False)
            n += 1
        if self.cursor <= seq:
            self.cursor = seq + 1
        return n

    def rewind(self, after_seq: int) -> int:
        """A session starts: the leader holds everything up to ``after_seq``; returns the first seq to send."""
        self.ack(after_seq)
        self.cursor = max(after_seq + 1, self.oldest_seq)
        return self.cursor

    def take(self, max_bytes: int = 512 * 1024, max_items: int = 512) -> list[Item]:
        """The next items to send (at least one if any), up to ``max_bytes``/``max_items``; advances the cursor."""
        if not len(self):
            return []
        first = self._items[self._head].seq
        if self.cursor < first:
            self.cursor = first
        i = self._head + (self.cursor - first)
        out: list[Item] = []
        size = 0
        items = self._items
        while i < len(items) and len(out) < max_items:
            item = items[i]
            if out and size + item.size > max_bytes:
                break
            out.append(item)
            size += item.size
            i += 1
        if out:
            self.cursor = out[-1].seq + 1
        return out

    def lead(self) -> None:
        """This replica leads: its own entries are in its own source, nothing to relay or keep."""
        if self.retaining:
            self.retaining = False
            self._items, self._head, self.bytes = [], 0, 0
            self.cursor = self.next_seq

    def follow(self, now: float | None = None) -> None:
        """This replica no longer leads: keep everything from now on for the leader."""
        if not self.retaining:
            self.retaining = True
            self.complete_since = max(self.complete_since, self.clock() if now is None else now)


def _stream_info(stream: _Stream) -> pb.RelayStream:
    return pb.RelayStream(id=stream.id, node=stream.node, node_cluster=stream.node_cluster,
                          log_name=stream.log_name, opened_at=stream.opened_at)


def encode_batch(items: list[Item]) -> bytes:
    """One request carrying ``items`` (the payloads are copied as they are, never parsed)."""
    req = pb.RelayRequest()
    add = req.items.add
    for it in items:
        kind = it.kind
        if kind == ALS:
            add(seq=it.seq, at=it.at, stream=it.stream, als=it.payload)
        elif kind == OTLP:
            add(seq=it.seq, at=it.at, otlp=it.payload)
        elif kind == OPEN:
            add(seq=it.seq, at=it.at, stream=it.stream, open=_stream_info(it.payload))
        else:
            add(seq=it.seq, at=it.at, stream=it.stream, close=True)
    return req.SerializeToString()


# --------------------------------------------------------------------------- the follower's side


class RelayRefused(Exception):
    """The replica named as leader refused the session (it does not lead, or it is this replica)."""


class AccessLogRelay:
    """A follower's relay of its own proxies' logs to the leader (module docstring).

    ``leading()`` says whether this replica leads now (then nothing is kept);
    :meth:`set_leader` names the leader to send to (:class:`LeaderWatch` calls it).
    """

    def __init__(self, replica: str, source: AccessLogSource, *, leading: Callable[[], bool] = lambda: False,
                 credentials: grpc.ChannelCredentials | None = None, max_buffer_bytes: int = 64 * 1024 * 1024,
                 max_batch_bytes: int = 512 * 1024, clock: Callable[[], float] = time.time,
                 welcome_timeout_s: float = 5.0):
        self.replica = replica
        self.source = source
        self.leading = leading
        self.credentials = credentials
        self.clock = clock
        self.buffer = RelayBuffer(max_buffer_bytes, clock=clock)
        self.max_batch_bytes = max_batch_bytes
        self.welcome_timeout_s = welcome_timeout_s
        self.incarnation = secrets.token_hex(8)
        self.streams: dict[int, _Stream] = {}  # this replica's open proxy streams (for a session's snapshot)
        self.target: tuple[str, str] | None = None  # (leader replica, xDS address)
        self.connected_to: str | None = None
        self.counters = dict.fromkeys(("sessions", "batches", "items", "bytes", "refused", "errors"), 0)
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._task: asyncio.Task | None = None
        self.drop_log = RateLimitedLog(log, "relay buffer warnings", max_lines=1, window_s=10.0)
        self.error_log = RateLimitedLog(log, "relay connection errors", max_lines=3, window_s=60.0)

    # -- taps (the source calls these for each stream of this replica's own proxies) ---------------
    def attach(self) -> "AccessLogRelay":
        self.source.stream_taps.append(self)
        self.source.timing.export_taps.append(self.on_export)
        return self

    def _keep(self, kind: str, stream: int, payload: Any = None) -> None:
        buf = self.buffer
        if self.leading():
            buf.lead()
            return
        buf.follow()
        dropped = buf.dropped
        buf.append(kind, stream, payload)
        if buf.dropped != dropped:
            self._warn_drops()
        self._wake.set()

    def on_open(self, stream: _Stream) -> None:
        self.streams[stream.id] = stream
        self._keep(OPEN, stream.id, stream)

    def on_message(self, stream: _Stream, raw: bytes) -> None:
        self._keep(ALS, stream.id, raw)

    def on_close(self, stream: _Stream) -> None:
        self.streams.pop(stream.id, None)
        self._keep(CLOSE, stream.id)

    def on_export(self, raw: bytes) -> None:
        self._keep(OTLP, 0, raw)

    def _warn_drops(self) -> None:
        buf = self.buffer
        where = f"the leader {self.target[0]}" if self.target else "no leader is known"
        if self.drop_log.log(logging.WARNING, "access-log relay buffer full (%d MiB; %s): dropped the %d oldest "
                             "items (%d in all); the leader's coverage reports the gap", buf.max_bytes >> 20, where,
                             buf.dropped_since_log, buf.dropped):
            buf.dropped_since_log = 0

    # -- roles and the leader --------------------------------------------------------------------
    def lead(self) -> None:
        self.buffer.lead()
        self._changed.set()

    def follow(self) -> None:
        self.buffer.follow()
        self._changed.set()

    def set_leader(self, replica: str | None, address: str | None) -> None:
        target = (replica, address) if replica and address else None
        if target != self.target:
            self.target = target
            self._changed.set()

    def status(self) -> dict[str, Any]:
        buf = self.buffer
        return {"leader": self.target[0] if self.target else None, "connected": self.connected_to is not None,
                "relaying": buf.retaining, "buffered_items": len(buf), "buffered_bytes": buf.bytes,
                "unsent_items": buf.unsent, "dropped_items": buf.dropped, "complete_since": buf.complete_since,
                "last_error": self.last_error, **self.counters}

    # -- running ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="weir-ha-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*(c.close() for c in self._channels.values()), return_exceptions=True)
        self._channels.clear()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            self._changed.clear()
            target = self.target
            if target is None or target[0] == self.replica or self.leading():
                await self._changed.wait()
                continue
            session = asyncio.ensure_future(self._session(*target))
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                done, _ = await asyncio.wait({session, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
                if not session.done():
                    session.cancel()
                await asyncio.gather(session, changed, return_exceptions=True)
            if session in done and not session.cancelled():
                err = session.exception()
                if err is None:
                    backoff = 0.1
                    continue
                self.last_error = f"{type(err).__name__}: {_describe(err)}"
                refused = isinstance(err, RelayRefused) or (isinstance(err, grpc.aio.AioRpcError) and err.code() in (
                    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT))
                self.counters["refused" if refused else "errors"] += 1
                self.error_log.log(logging.WARNING, "access-log relay to %s at %s: %s; trying again", target[0],
                                   target[1], self.last_error)
                try:
                    await asyncio.wait_for(self._changed.wait(), backoff)
                except asyncio.TimeoutError:
                    pass
                backoff = min(2.0, backoff * 2)
            else:
                backoff = 0.1

    async def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            old = list(self._channels.values())  # one leader at a time
            self._channels.clear()
            await asyncio.gather(*(c.close() for c in old), return_exceptions=True)
            channel = (grpc.aio.secure_channel(address, self.credentials, options=_CHANNEL_OPTIONS)
                       if self.credentials is not None else
                       grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS))
            self._channels[address] = channel
        return channel

    async def _session(self, leader: str, address: str) -> None:
        call = (await self._channel(address)).stream_stream(RELAY_METHOD_PATH, request_serializer=None,
                                                    response_deserializer=pb.RelayAck.FromString)()
        reader: asyncio.Task | None = None
        try:
            await call.write(pb.RelayRequest(hello=pb.RelayHello(replica=self.replica,
                                                                 incarnation=self.incarnation)).SerializeToString())
            welcome = await asyncio.wait_for(call.read(), self.welcome_timeout_s)
            if welcome is grpc.aio.EOF:
                await _raise_status(call)
            buf = self.buffer
            first = buf.rewind(welcome.seq)
            start = pb.RelayStart(first_seq=first, complete_since=buf.complete_since,
                                  streams=[_stream_info(s) for s in self.streams.values()])
            await call.write(pb.RelayRequest(start=start).SerializeToString())
            self.connected_to = leader
            self.last_error = None
            self.counters["sessions"] += 1
            log.info("relaying access logs to the leader %s at %s (from item %d)", leader, address, first)
            reader = asyncio.ensure_future(self._acks(call))
            while True:
                batch = buf.take(self.max_batch_bytes)
                if not batch:
                    self._wake.clear()
                    wake = asyncio.ensure_future(self._wake.wait())
                    try:
                        await asyncio.wait({wake, reader}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        wake.cancel()
                    if reader.done():
                        reader.result()  # raises what ended the stream
                        raise ConnectionError("the leader ended the relay stream")
                    continue
                data = encode_batch(batch)
                await call.write(data)
                c = self.counters
                c["batches"] += 1
                c["items"] += len(batch)
                c["bytes"] += len(data)
        finally:
            self.connected_to = None
            if reader is not None:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
            call.cancel()

    async def _acks(self, call) -> None:
        while True:
            ack = await call.read()
            if ack is grpc.aio.EOF:
                await _raise_status(call)
            self.buffer.ack(ack.seq)


async def _raise_status(call) -> None:
    code = await call.code()
    details = await call.details()
    if code == grpc.StatusCode.FAILED_PRECONDITION or code == grpc.StatusCode.INVALID_ARGUMENT:
        raise RelayRefused(details or code.name)
    raise ConnectionError(f"the leader ended the relay stream ({code.name if code else '?'}: {details})")


def _describe(err: BaseException) -> str:
    if isinstance(err, grpc.aio.AioRpcError):
        return f"{err.code().name}: {' '.join((err.details() or '').split())[:200]}"
    return " ".join(str(err).split())[:200] or type(err).__name__


class LeaderWatch(KeyWatch):
    """Tells the relay where the leader's xDS port is, from the leadership key (and every change of it)."""

    task_name = "weir-ha-relay-leader"

    def __init__(self, client: EtcdClient, key: bytes, relay: AccessLogRelay):
        super().__init__(client, key)
        self.relay = relay

    def _apply(self, kv: etcd_pb.KeyValue | None) -> None:
        identity: dict[str, Any] = {}
        if kv is not None and kv.value:
            try:
                identity = json.loads(kv.value)
            except ValueError:
                pass
        self.relay.set_leader(identity.get("replica"), identity.get("xds"))

    def reset(self, kvs) -> None:
        self._apply(kvs[0] if kvs else None)

    def changed(self, event: etcd_pb.Event) -> None:
        self._apply(event.kv if event.type == etcd_pb.Event.PUT else None)


# --------------------------------------------------------------------------- the leader's side


class RelayReceiver:
    """The leader's end of the relay: sessions from followers into the access-log source (module docstring).

    Created before the xDS server starts (its handler goes on the port) and
    bound to the source and the leadership once they exist; until then, and
    whenever this replica does not lead, sessions are refused.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.source: AccessLogSource | None = None
        self.replica = ""
        self.is_leader: Callable[[], bool] = lambda: False
        self._sessions: dict[str, object] = {}  # replica -> token of its current session
        self.counters = dict.fromkeys(("sessions", "refused", "items", "gaps", "malformed"), 0)
        self.malformed_log = RateLimitedLog(log, "malformed relayed messages")

    def bind(self, source: AccessLogSource, *, replica: str, is_leader: Callable[[], bool]) -> None:
        self.source, self.replica, self.is_leader = source, replica, is_leader

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(RELAY_SERVICE, {
            RELAY_METHOD: grpc.stream_stream_rpc_method_handler(
                self._serve, request_deserializer=pb.RelayRequest.FromString,
                response_serializer=pb.RelayAck.SerializeToString),
        })

    async def _serve(self, request_iterator, context) -> None:
        if self.source is None or not self.is_leader():
            self.counters["refused"] += 1
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"replica {self.replica or '?'} does not lead: relay to the leader named in etcd")
        requests = request_iterator.__aiter__()
        first = await anext(requests, None)
        hello = first.hello if first is not None and first.HasField("hello") else None
        if hello is None or not hello.replica or not hello.incarnation or hello.replica == self.replica:
            self.counters["refused"] += 1
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a relay session starts with a hello naming the "
                                f"sender's replica (other than this one, {self.replica}) and its incarnation")
        origin, token = self.open_session(hello.replica, hello.incarnation)
        try:
            await context.write(pb.RelayAck(seq=origin.last_seq))
            second = await anext(requests, None)
            if second is None:
                return
            if not second.HasField("start"):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the second message of a relay session is its start")
            self.start_session(origin, second.start)
            async for req in requests:
                if self._sessions.get(origin.replica) is not token:
                    await context.abort(grpc.StatusCode.ABORTED, "a newer relay session of this replica took over")
                if not self.is_leader():
                    await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                        f"replica {self.replica} no longer leads: relay to the new leader")
                self.apply(origin, req.items)
                await context.write(pb.RelayAck(seq=origin.last_seq))
        finally:
            self.end_session(origin, token)

    # -- the session's state, synchronous (tests drive these directly) ---------------------------
    def open_session(self, replica: str, incarnation: str) -> tuple[RelayOrigin, object]:
        source = self.source
        assert source is not None
        origin = source.relays.get(replica)
        if origin is not None and origin.incarnation != incarnation:
            # The follower restarted: its earlier process's streams are over; the new one starts afresh.
            self._close_all(origin)
            origin = None
        if origin is None:
            origin = source.relays[replica] = RelayOrigin(replica, incarnation, complete_since=self.clock())
        token = object()
        self._sessions[replica] = token
        self.counters["sessions"] += 1
        return origin, token

    def start_session(self, origin: RelayOrigin, start: pb.RelayStart) -> None:
        source = self.source
        assert source is not None
        since = start.complete_since
        continuous = origin.last_seq > 0 and start.first_seq <= origin.last_seq + 1
        if not continuous:
            if origin.last_seq == 0:  # nothing received yet: complete from what the follower still holds
                origin.complete_since = since
            else:
                origin.add_gap(origin.last_at, since)  # what it no longer holds never reached this replica
                self.counters["gaps"] += 1
            self._close_all(origin)
            origin.last_seq = start.first_seq - 1  # what lies before is either held here or a gap
            origin.last_at = max(origin.last_at, since)
        else:
            for s in origin.streams.values():
                if s.suspended:  # nothing was lost meanwhile: the stream never ended
                    s.closed_at, s.suspended = None, False
        for info in start.streams:
            if info.id not in origin.streams:
                self._open(origin, info, info.opened_at if continuous else max(info.opened_at, since))
        origin.connected, origin.disconnected_at = True, None

    def _close_all(self, origin: RelayOrigin) -> None:
        now = self.clock()
        for s in origin.streams.values():
            if s.closed_at is None:
                s.closed_at = now
            s.suspended = False  # a suspended stream stays closed from when its session broke
        origin.streams.clear()

    def _open(self, origin: RelayOrigin, info: pb.RelayStream | None, at: float, stream_id: int = 0) -> _Stream:
        source = self.source
        assert source is not None
        s = source.open_stream(f"relay:{origin.replica}", at=at, relay=origin.replica)
        if info is not None:
            stream_id = info.id
            s.node, s.node_cluster, s.log_name = info.node, info.node_cluster, info.log_name
            if info.node:
                origin.nodes_seen.add(info.node)
        origin.streams[stream_id] = s
        return s

    def apply(self, origin: RelayOrigin, items) -> int:
        """Account one batch of items; returns how many were new."""
        source = self.source
        assert source is not None
        new = 0
        last = origin.last_seq
        for it in items:
            seq = it.seq
            if seq <= last:
                continue  # resent after a broken stream: already accounted
            if seq != last + 1:
                origin.add_gap(origin.last_at, it.at)  # the follower dropped what lies between
                self.counters["gaps"] += 1
            last = seq
            at = it.at
            if at > origin.last_at:
                origin.last_at = at
            new += 1
            kind = it.WhichOneof("kind")
            if kind == "als":
                s = origin.streams.get(it.stream)
                if s is None:  # its open item was dropped: the stream is known from its messages
                    s = self._open(origin, None, at, it.stream)
                try:
                    source.ingest_message(als_wire.StreamAccessLogsMessage.FromString(it.als), s, notify=False)
                except DecodeError as err:
                    self._malformed(origin, "access-log message", err)
                if s.node and s.node not in origin.nodes_seen:
                    origin.nodes_seen.add(s.node)
            elif kind == "otlp":
                try:
                    source.timing.ingest_export(otlp_wire.ExportLogsServiceRequest.FromString(it.otlp))
                except DecodeError as err:
                    self._malformed(origin, "timing export", err)
            elif kind == "open":
                if it.stream not in origin.streams:
                    self._open(origin, it.open, it.open.opened_at or at)
            elif kind == "close":
                s = origin.streams.pop(it.stream, None)
                if s is not None:
                    source.close_stream(s, at=at)
        origin.last_seq = last
        origin.items += new
        self.counters["items"] += new
        return new

    def _malformed(self, origin: RelayOrigin, what: str, err: Exception) -> None:
        self.counters["malformed"] += 1
        self.malformed_log.log(logging.INFO, "a relayed %s from %s does not decode: %s", what, origin.replica, err)

    def end_session(self, origin: RelayOrigin, token: object) -> None:
        if self._sessions.get(origin.replica) is not token:
            return  # a newer session took over
        del self._sessions[origin.replica]
        now = self.clock()
        origin.connected, origin.disconnected_at = False, now
        for s in origin.streams.values():
            if s.closed_at is None:
                s.closed_at, s.suspended = now, True
