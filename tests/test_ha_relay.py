"""The access-log relay's parts: the follower's bounded buffer and batches, the leader's sessions and coverage.

The state of both ends is plain code (no network) and is tested as such; one
test runs a real grpc.aio stream between a follower's relay and a leader's
receiver, broken and resumed. The whole loop (etcd, two replicas, an Envoy on
the follower) is tests/e2e/test_ha_relay.py.
"""

from __future__ import annotations

import asyncio

import pytest

from analysis.sources.access_log import AccessLogSource
from control_plane.ha.relay import ALS, CLOSE, OPEN, OTLP, AccessLogRelay, RelayBuffer, RelayReceiver, encode_batch
from control_plane.ha.wire import relay_pb2 as pb
from tests.test_ha_leadership import client, etcd, until  # noqa: F401  (a real etcd member, its client, a bounded wait)
from tests.test_timing_log import export, record
from xds.server import XdsServer
from xds.wire import accesslog_pb2 as wire

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def message(node: str | None, starts, *, cluster: str = "echo-v2", code: int = 200) -> bytes:
    """An ALS message (our own wire types: the same bytes Envoy sends for these fields)."""
    msg = wire.StreamAccessLogsMessage()
    if node is not None:
        msg.identifier.node.id, msg.identifier.node.cluster, msg.identifier.log_name = node, "gw", "weir"
    for t in starts:
        e = msg.http_logs.log_entry.add()
        c = e.common_properties
        c.start_time.seconds, c.start_time.nanos = int(t), int((t % 1) * 1e9)
        c.time_to_last_upstream_rx_byte.nanos = 5_000_000
        c.upstream_cluster, c.route_name, c.access_log_type = cluster, "echo-default", 6
        c.upstream_remote_address.socket_address.address = "10.0.0.2"
        c.upstream_remote_address.socket_address.port_value = 8080
        e.response.response_code.value = code
    return msg.SerializeToString()


def relay_item(seq: int, at: float, stream: int = 1, **kind) -> pb.RelayItem:
    return pb.RelayItem(seq=seq, at=at, stream=stream, **kind)


def leader(clock: Clock, fleet: dict | None = None, alive=()) -> tuple[AccessLogSource, RelayReceiver]:
    """The leader's source (started long before the windows asked about) and its relay receiver."""
    now, clock.t = clock.t, T0 - 100
    src = AccessLogSource(clock=clock, proxies_alive=lambda: set(alive),
                          fleet_proxies=(lambda: fleet) if fleet is not None else None)
    clock.t = now
    receiver = RelayReceiver(clock=clock)
    receiver.bind(src, replica="a", is_leader=lambda: True)
    return src, receiver


def session(receiver: RelayReceiver, *, first_seq=1, complete_since=T0, streams=(), incarnation="i1", replica="b"):
    origin, token = receiver.open_session(replica, incarnation)
    receiver.start_session(origin, pb.RelayStart(first_seq=first_seq, complete_since=complete_since,
                                                 streams=list(streams)))
    return origin, token


# --------------------------------------------------------------------------- the follower's buffer


def test_the_buffer_drops_the_oldest_past_its_bound_counts_it_and_moves_complete_since():
    clock = Clock()
    buf = RelayBuffer(1000, clock=clock)
    for i in range(10):
        clock.t = T0 + i
        assert buf.append(ALS, 1, b"x" * 200) == i + 1
    assert len(buf) == 5 and buf.bytes == 1000  # the five newest
    assert (buf.dropped, buf.dropped_bytes) == (5, 1000)
    assert buf.oldest_seq == 6
    assert buf.complete_since == T0 + 4  # a new leader holds nothing older than the newest dropped item
    # An oversized item is kept alone rather than lost at once.
    buf.append(ALS, 1, b"y" * 5000)
    assert len(buf) == 1 and buf.oldest_seq == 11


def test_acknowledged_items_are_forgotten_and_a_session_resumes_after_what_the_leader_holds():
    clock = Clock()
    buf = RelayBuffer(10_000, clock=clock)
    for i in range(6):
        clock.t = T0 + i
        buf.append(ALS, 1, b"m%d" % i)
    assert [it.seq for it in buf.take(max_items=4)] == [1, 2, 3, 4]
    assert buf.ack(2) == 2 and buf.complete_since == T0 + 1  # forgotten once acknowledged
    # The stream broke: the same leader holds up to 3, so 4.. are sent again (nothing lost, nothing twice).
    assert buf.rewind(3) == 4
    assert [it.seq for it in buf.take()] == [4, 5, 6]
    assert buf.take() == [] and buf.unsent == 0
    # A new leader holds nothing of ours: everything still kept goes to it.
    assert buf.rewind(0) == 4 and [it.seq for it in buf.take()] == [4, 5, 6]


def test_batches_are_bounded_and_carry_the_payloads_as_received():
    clock = Clock()
    buf = RelayBuffer(1 << 20, clock=clock)
    raw = message("gw-2", [T0 + 0.5])
    source = AccessLogSource(clock=clock)
    stream = source.open_stream("peer")
    buf.append(OPEN, stream.id, stream)
    for _ in range(10):
        buf.append(ALS, stream.id, raw)
    buf.append(OTLP, 0, b"otlp-bytes")
    buf.append(CLOSE, stream.id)
    first = buf.take(max_bytes=3 * len(raw))
    assert [it.kind for it in first] == [OPEN, ALS, ALS]  # 64 + 2 x len(raw): a third would pass the bound
    rest = buf.take(max_items=100)
    assert [it.kind for it in rest] == [ALS] * 8 + [OTLP, CLOSE]
    decoded = pb.RelayRequest.FromString(encode_batch(first + rest))
    assert [i.seq for i in decoded.items] == list(range(1, 14))
    assert decoded.items[0].open.id == stream.id and decoded.items[0].WhichOneof("kind") == "open"
    assert all(i.als == raw for i in decoded.items[1:11])  # byte for byte: never re-encoded
    assert decoded.items[11].otlp == b"otlp-bytes" and decoded.items[12].close


def test_nothing_is_kept_while_leading_and_keeping_restarts_when_the_leadership_ends():
    clock = Clock()
    buf = RelayBuffer(1 << 20, clock=clock)
    buf.append(ALS, 1, b"a")
    buf.lead()
    assert len(buf) == 0 and buf.append(ALS, 1, b"b") is None and buf.dropped == 0
    clock.t = T0 + 30
    buf.follow()
    assert buf.complete_since == T0 + 30  # what arrived while leading is in this replica's own source only
    assert buf.append(ALS, 1, b"c") is not None


def test_a_replica_that_leads_relays_nothing_and_relays_only_its_own_proxies_streams():
    """The taps see the streams of this process's proxies only; a relayed stream never reaches them (no loop)."""
    clock = Clock()
    leading = [False]
    src, receiver = leader(clock)
    relay = AccessLogRelay("a", src, leading=lambda: leading[0], clock=clock).attach()
    seen: list = []
    src.entry_listeners.append(seen.extend)
    origin, _ = session(receiver)
    receiver.apply(origin, [relay_item(1, T0, open=pb.RelayStream(id=1, node="gw-2", opened_at=T0)),
                            relay_item(2, T0, als=message("gw-2", [T0 + 0.1]))])
    assert src.counters["entries"] == 1 and len(relay.buffer) == 0  # ingested, not re-relayed
    assert seen == []  # nor handed to the balancer: each replica balances its own proxies
    # Its own proxy's stream is kept for the leader while it follows...
    own = src.open_stream("peer")
    relay.on_open(own)
    relay.on_message(own, message("gw-1", [T0]))
    assert len(relay.buffer) == 2
    # ...and not while it leads (its own entries are already in its source).
    leading[0] = True
    relay.on_message(own, message(None, [T0 + 1]))
    assert len(relay.buffer) == 0 and relay.buffer.dropped == 0


# --------------------------------------------------------------------------- the leader: sessions and coverage


def test_relayed_entries_keep_their_node_and_coverage_knows_the_fleet():
    clock = Clock(T0 + 10)
    fleet = {"b": {"gw-2"}}
    src, receiver = leader(clock, fleet)
    # gw-2 is on replica b, which has not relayed anything: never read as zero errors.
    cov = src.coverage_now("echo", T0)
    assert not cov.complete and any("replica b serves 1 proxy (gw-2)" in r and "relay" in r for r in cov.reasons)
    origin, token = session(receiver, complete_since=T0 - 5)
    receiver.apply(origin, [relay_item(1, T0 + 1, open=pb.RelayStream(id=7, node="", opened_at=T0 - 60)),
                            relay_item(2, T0 + 1, stream=7, als=message("gw-2", [T0 + 0.5, T0 + 0.7])),
                            relay_item(3, T0 + 2, stream=7, als=message(None, [T0 + 1.5], code=503))])
    s = src.samples("echo", "v2", T0)
    assert (s.requests, s.errors) == (3, 1)
    [stream] = [st for st in src._streams if st.relay == "b"]
    assert stream.node == "gw-2" and stream.opened_at == T0 - 60  # the proxy's own identity and stream
    cov = src.coverage_now("echo", T0)
    assert cov.complete, cov.reasons
    assert cov.details["relays"]["b"]["nodes"] == ["gw-2"] and "gw-2" in cov.details["nodes"]
    # The follower's relay broke and did not come back while gw-2 is still served there: a gap.
    receiver.end_session(origin, token)
    clock.t = T0 + 20
    cov = src.coverage_now("echo", T0)
    assert not cov.complete and any("relay from replica b lost" in r for r in cov.reasons)
    # gw-2 left the fleet (scaled in, its replica's report says so): nothing is missing any more.
    fleet.clear()
    assert src.coverage_now("echo", T0).complete


def test_a_relay_that_holds_the_follower_entries_only_since_after_the_window_began_is_incomplete():
    clock = Clock(T0 + 10)
    src, receiver = leader(clock, {"b": {"gw-2"}})
    # E.g. a new leader: what b sent to its predecessor is not here.
    session(receiver, complete_since=T0 + 3, streams=[pb.RelayStream(id=1, node="gw-2", opened_at=T0 - 60)])
    cov = src.coverage_now("echo", T0)
    assert not cov.complete and any("only since" in r for r in cov.reasons)
    assert src.coverage_now("echo", T0 + 4).complete  # a window that begins later is whole


def test_a_hole_in_the_numbers_is_a_gap_and_resent_items_count_once():
    clock = Clock(T0 + 10)
    src, receiver = leader(clock, {"b": {"gw-2"}})
    origin, _ = session(receiver, complete_since=T0 - 5, streams=[pb.RelayStream(id=1, node="gw-2", opened_at=T0)])
    assert receiver.apply(origin, [relay_item(1, T0 + 1, als=message("gw-2", [T0 + 1]))]) == 1
    assert receiver.apply(origin, [relay_item(1, T0 + 1, als=message("gw-2", [T0 + 1])),    # sent again
                                   relay_item(2, T0 + 2, als=message(None, [T0 + 2]))]) == 1
    assert src.samples("echo", "v2", T0).requests == 2
    assert src.coverage_now("echo", T0).complete
    receiver.apply(origin, [relay_item(5, T0 + 6, als=message(None, [T0 + 6]))])  # 3 and 4 were dropped
    cov = src.coverage_now("echo", T0)
    assert not cov.complete and origin.gaps == [(T0 + 2, T0 + 6)]
    assert src.coverage_now("echo", T0 + 7).complete  # after the gap


def test_a_session_that_resumes_where_it_broke_loses_nothing_and_one_that_cannot_is_a_gap():
    clock = Clock(T0 + 10)
    src, receiver = leader(clock, {"b": {"gw-2"}})
    origin, token = session(receiver, complete_since=T0 - 5,
                            streams=[pb.RelayStream(id=1, node="gw-2", opened_at=T0 - 1)])
    receiver.apply(origin, [relay_item(1, T0 + 1, als=message("gw-2", [T0 + 1])),
                            relay_item(2, T0 + 2, als=message(None, [T0 + 2]))])
    receiver.end_session(origin, token)  # the stream broke: its relayed streams are suspended
    assert not src.coverage_now("echo", T0).complete
    # The same follower again, still holding 2.. (not yet acknowledged when the stream broke).
    origin2, token2 = session(receiver, first_seq=2, complete_since=T0 + 1,
                              streams=[pb.RelayStream(id=1, node="gw-2", opened_at=T0 - 1)])
    assert origin2 is origin
    receiver.apply(origin, [relay_item(2, T0 + 2, als=message(None, [T0 + 2])),
                            relay_item(3, T0 + 3, als=message(None, [T0 + 3]))])
    assert src.samples("echo", "v2", T0).requests == 3  # 2 once
    cov = src.coverage_now("echo", T0)
    assert cov.complete, cov.reasons
    # Broken again, and meanwhile the follower dropped 4..9 (its buffer was full): a gap.
    receiver.end_session(origin, token2)
    session(receiver, first_seq=10, complete_since=T0 + 8,
            streams=[pb.RelayStream(id=1, node="gw-2", opened_at=T0 - 1)])
    assert origin.gaps == [(T0 + 3, T0 + 8)]
    assert not src.coverage_now("echo", T0).complete and src.coverage_now("echo", T0 + 8.5).complete


def test_a_restarted_follower_starts_afresh_and_its_old_streams_end():
    clock = Clock(T0 + 10)
    src, receiver = leader(clock, {"b": {"gw-2"}})
    origin, _ = session(receiver, complete_since=T0 - 5, streams=[pb.RelayStream(id=1, node="gw-2", opened_at=T0)])
    old = origin.streams[1]
    clock.t = T0 + 12
    fresh, _ = session(receiver, incarnation="i2", complete_since=T0 + 11,
                       streams=[pb.RelayStream(id=1, node="gw-2", opened_at=T0 + 11)])
    assert fresh is not origin and src.relays["b"] is fresh
    assert old.closed_at == T0 + 12 and fresh.streams[1] is not old
    assert not src.coverage_now("echo", T0).complete  # its entries before the restart are not all here


def test_timing_exports_are_relayed_too():
    clock = Clock(T0 + 10)
    src, receiver = leader(clock)
    origin, _ = session(receiver)
    receiver.apply(origin, [relay_item(1, T0, otlp=export(record(), record(c="chat-v1"))),
                            relay_item(2, T0, otlp=b"\xff\xff not protobuf")])
    assert src.timing.counters["records"] == 2 and receiver.counters["malformed"] == 1
    ttfb, _ = src.timing.samples("chat-v2", "live", T0)
    assert ttfb.size == 1


# --------------------------------------------------------------------------- over gRPC


async def test_over_grpc_a_refusing_replica_then_a_broken_stream_resumed_without_loss_or_double_count():
    lead_src = AccessLogSource(fleet_proxies=lambda: {"b": {"gw-2"}})
    leads = [False]
    receiver = RelayReceiver()
    receiver.bind(lead_src, replica="a", is_leader=lambda: leads[0])
    server = XdsServer(extra_handlers=[receiver.handler()])
    port = await server.start("127.0.0.1", 0)
    follower = AccessLogSource()
    relay = AccessLogRelay("b", follower).attach()
    relay.start()
    try:
        stream = follower.open_stream("ipv4:127.0.0.1:1")
        relay.on_open(stream)
        t = follower.clock()
        raw = message("gw-2", [t])
        relay.on_message(stream, raw)
        relay.set_leader("a", f"127.0.0.1:{port}")
        # a does not lead (yet): it refuses, and the follower keeps everything meanwhile.
        await until(lambda: relay.counters["refused"] >= 1)
        assert lead_src.counters["entries"] == 0 and len(relay.buffer) == 2
        leads[0] = True
        await until(lambda: lead_src.counters["entries"] == 1 and len(relay.buffer) == 0)
        # The leader stops leading for a moment: it ends the session; the follower keeps what arrives.
        leads[0] = False
        relay.on_message(stream, message(None, [t + 0.1, t + 0.2]))
        await until(lambda: relay.connected_to is None)
        relay.on_message(stream, message(None, [t + 0.3]))
        leads[0] = True
        await until(lambda: lead_src.counters["entries"] == 4 and len(relay.buffer) == 0)
        await asyncio.sleep(0.2)
        assert lead_src.counters["entries"] == 4  # each entry once
        assert lead_src.samples("echo", "v2", t).requests == 4
        origin = lead_src.relays["b"]
        assert origin.gaps == [] and origin.connected
        cov = lead_src.coverage_now("echo", t)
        assert cov.complete, cov.reasons  # resumed where it broke: nothing lost
    finally:
        await relay.stop()
        await server.stop()


async def test_a_relay_session_must_name_another_replica():
    import grpc

    src = AccessLogSource()
    receiver = RelayReceiver()
    receiver.bind(src, replica="a", is_leader=lambda: True)
    server = XdsServer(extra_handlers=[receiver.handler()])
    port = await server.start("127.0.0.1", 0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.stream_stream("/weir.relay.v1.AccessLogRelay/Relay")()
            await call.write(pb.RelayRequest(hello=pb.RelayHello(replica="a", incarnation="x")).SerializeToString())
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert src.relays == {}
    finally:
        await server.stop()


# --------------------------------------------------------------------------- which proxies each replica serves (etcd)


async def test_each_replica_lists_its_proxies_on_its_lease_and_the_others_see_them(client):  # noqa: F811
    from control_plane.ha.replication import ConvergenceReporter, FleetProxies, ObservedRegistry, RoutingFollower
    from control_plane.ha.session import Session
    from xds.status import ProxyStatus

    session = Session(client, 2)
    session.start()
    await session.wait_lease()
    registry = ObservedRegistry()
    follower = RoutingFollower(client, b"/relay-test/routing", router=None)  # no routing: the report lists no service
    reporter = ConvergenceReporter(client, session, b"/relay-test/convergence/b", "b", follower, None, registry,
                                   nodes_key=b"/relay-test/proxies/b", nodes_every_s=0.1)
    seen_by_a = FleetProxies(client, b"/relay-test/proxies/", "a")
    seen_by_b = FleetProxies(client, b"/relay-test/proxies/", "b")
    for part in (reporter, seen_by_a, seen_by_b):
        part.start()
    try:
        gw2 = ProxyStatus("gw-2", "gw", "sotw", "ipv4:127.0.0.1:1")
        registry.connect(gw2, "gw")
        registry.connect(ProxyStatus("gw-3", "gw", "delta", "ipv4:127.0.0.1:2"), "gw")
        await until(lambda: seen_by_a.view() == {"b": {"gw-2", "gw-3"}})
        assert seen_by_b.view() == {} and seen_by_b.replicas["b"] == {"gw-2", "gw-3"}  # a replica's own: not "other"
        registry.disconnect(gw2)
        await until(lambda: seen_by_a.view() == {"b": {"gw-3"}})
        await session.close(revoke=True)  # the replica is gone: its list goes with its lease
        await until(lambda: seen_by_a.view() == {})
    finally:
        for part in (reporter, seen_by_a, seen_by_b):
            await part.stop()
        await session.close(revoke=True)
