"""The ADS protocol rules, driven without a network (xds/streams.py)."""

from __future__ import annotations

import asyncio

import pytest

from xds.cache import SnapshotCache
from xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE, CachedResource, InconsistentSnapshotError, Snapshot
from xds.status import StatusRegistry
from xds.streams import DeltaStream, SotwStream
from xds.wire import discovery_pb2 as wire


def snap(clusters: dict[str, str], routes: dict[str, tuple[str, ...]], listeners=("l1",), tag: str = "") -> Snapshot:
    """clusters: name -> content tag; routes: route name -> clusters it names."""
    res = {CLUSTER: {}, ENDPOINT: {}, LISTENER: {}, ROUTE: {}}
    for name, content in clusters.items():
        res[CLUSTER][name] = CachedResource.build(CLUSTER, name, f"c:{name}:{content}".encode(), [name])
        res[ENDPOINT][name] = CachedResource.build(ENDPOINT, name, f"e:{name}:{content}{tag}".encode())
    for name, refs in routes.items():
        res[ROUTE][name] = CachedResource.build(ROUTE, name, f"r:{name}:{refs}".encode(), refs)
    for name in listeners:
        res[LISTENER][name] = CachedResource.build(LISTENER, name, f"l:{name}".encode(), routes.keys())
    return Snapshot(res)


def decode_sotw(payload: bytes) -> wire.DiscoveryResponse:
    return wire.DiscoveryResponse.FromString(payload)


def decode_delta(payload: bytes) -> wire.DeltaDiscoveryResponse:
    return wire.DeltaDiscoveryResponse.FromString(payload)


NODE = wire.Node(id="envoy-1", cluster="gw")


def sotw_req(type_url, names=(), nonce="", version="", error=None, node=NODE):
    req = wire.DiscoveryRequest(type_url=type_url, resource_names=list(names), response_nonce=nonce, version_info=version)
    if node is not None:
        req.node.CopyFrom(node)
    if error:
        req.error_detail.code = 13
        req.error_detail.message = error
    return req


class SotwClient:
    """Plays Envoy's side of a SotW stream: requests, ACKs, NACKs."""

    def __init__(self, stream: SotwStream):
        self.stream = stream
        self.sent_node = False

    def request(self, type_url, names=(), nonce="", version="", error=None) -> list[wire.DiscoveryResponse]:
        node = None if self.sent_node else NODE
        self.sent_node = True
        self.stream.on_request(sotw_req(type_url, names, nonce, version, error, node))
        return self.drain()

    def drain(self) -> list[wire.DiscoveryResponse]:
        out = [decode_sotw(p) for p in self.stream.outbox]
        self.stream.outbox.clear()
        return out

    def ack(self, resp: wire.DiscoveryResponse, names=()) -> list[wire.DiscoveryResponse]:
        return self.request(resp.type_url, names, resp.nonce, resp.version_info)


def resource_names(resp) -> list[str]:
    return sorted(_name_of(a) for a in resp.resources)


def _name_of(any_msg) -> str:
    # Our fake payloads are "kind:name:content".
    return any_msg.value.decode().split(":")[1]


@pytest.fixture
def env():
    cache = SnapshotCache()
    registry = StatusRegistry()
    return cache, registry


def connect_sotw(cache, registry, eds_names=("a", "b"), rds_names=("r",)):
    """A client that has fetched and ACKed everything of the current snapshot."""
    client = SotwClient(SotwStream(cache, registry))
    for type_url, names in ((CLUSTER, ()), (LISTENER, ())):
        for resp in client.request(type_url, names):
            client.ack(resp)
    for resp in client.request(ENDPOINT, eds_names):
        client.ack(resp, eds_names)
    # LDS is only sent once clusters are ACKed; ACK whatever is out.
    pending = client.drain()
    for resp in client.request(ROUTE, rds_names):
        pending.append(resp)
    for resp in pending:
        client.ack(resp, rds_names if resp.type_url == ROUTE else eds_names if resp.type_url == ENDPOINT else ())
    return client


def test_first_requests_get_full_views_and_routes_wait_for_clusters(env):
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("a", "b")}))
    client = SotwClient(SotwStream(cache, registry))
    (cds,) = client.request(CLUSTER)
    assert resource_names(cds) == ["a", "b"]
    # LDS requested before clusters are ACKed: held (make-before-break).
    assert client.request(LISTENER) == []
    (eds,) = client.request(ENDPOINT, ["a", "b"])
    assert resource_names(eds) == ["a", "b"]
    # The CDS ACK releases the listener.
    out = client.ack(cds)
    assert [r.type_url for r in out] == [LISTENER]


def test_ack_nack_stale_nonce_and_send_only_on_change(env):
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("a", "b")}))
    client = connect_sotw(cache, registry)
    assert client.stream.converged()
    first_version = cache.snapshot("*").version
    assert registry.is_converged("*", first_version)

    # Publishing the same content again sends nothing.
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("a", "b")}))
    assert client.drain() == []

    # A route change sends RDS only.
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("a",)}))
    (rds,) = client.drain()
    assert rds.type_url == ROUTE
    # A stale nonce (an older one) is ignored.
    assert client.request(ROUTE, ["r"], nonce="1", version="x") == []
    # NACK: recorded, nothing resent, not converged.
    assert client.request(ROUTE, ["r"], nonce=rds.nonce, version=first_version, error="Sum of weights must be > 0") == []
    status = registry.proxies()[0]
    assert status.nacks[-1].message == "Sum of weights must be > 0"
    assert status.nacks[-1].type_url == ROUTE
    assert not client.stream.converged()
    assert status.converged_version is None
    # The next change is sent; its ACK converges the proxy.
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("b",)}))
    (rds2,) = client.drain()
    assert client.ack(rds2, ["r"]) == []
    assert registry.is_converged("*", cache.snapshot("*").version)


def test_new_cluster_before_route_and_removal_after_route_ack(env):
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("a", "b")}))
    client = connect_sotw(cache, registry)
    # Replace b by c: the route moves to c, b goes away.
    cache.set_snapshot("*", snap({"a": "1", "c": "1"}, {"r": ("a", "c")}))
    out = client.drain()
    assert [r.type_url for r in out] == [CLUSTER, ENDPOINT]
    cds, eds = out
    assert resource_names(cds) == ["a", "b", "c"]  # b retained until routes moved
    assert resource_names(eds) == ["a"]  # only subscribed names; c not yet subscribed
    # Envoy subscribes to c's endpoints right after the ACK: a fresh request, answered.
    assert client.ack(eds, ["a", "b"]) == []
    out = client.request(ENDPOINT, ["a", "b", "c"], nonce=eds.nonce)
    assert [resource_names(r) for r in out] == [["a", "c"]]


def test_eds_answered_without_waiting_for_cds_ack(env):
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("a", "b")}))
    client = connect_sotw(cache, registry)
    cache.set_snapshot("*", snap({"a": "1", "c": "1"}, {"r": ("a", "c")}))
    cds, eds = client.drain()
    # Envoy NACKs nothing; it ACKs the EDS response with a new subscription including c.
    out = client.ack(eds, ["a", "b", "c"])
    assert [r.type_url for r in out] == [ENDPOINT]
    assert resource_names(out[0]) == ["a", "c"]
    eds2 = out[0]
    assert client.ack(eds2, ["a", "b", "c"]) == []
    # CDS ACK (after warming) releases the route, not the removal.
    out = client.ack(cds)
    assert [r.type_url for r in out] == [ROUTE]
    assert not client.stream.converged()
    # Route ACK releases the final CDS without b.
    out = client.ack(out[0], ["r"])
    assert [r.type_url for r in out] == [CLUSTER]
    assert resource_names(out[0]) == ["a", "c"]
    assert client.ack(out[0]) == []
    assert client.stream.converged()


def test_repeated_eds_request_with_acked_nonce_is_answered(env):
    """Envoy re-creates a changed cluster and asks for its endpoints again (docs/envoy-behaviour.md)."""
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("a", "b")}))
    client = connect_sotw(cache, registry)
    eds_state = client.stream.types[ENDPOINT]
    out = client.request(ENDPOINT, ["a", "b"], nonce=eds_state.nonce, version=eds_state.sent.version)
    assert [r.type_url for r in out] == [ENDPOINT]
    assert resource_names(out[0]) == ["a", "b"]


def test_delta_removal_nack_and_forced_endpoints(env):
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("a", "b")}))
    stream = DeltaStream(cache, registry)

    def req(type_url, subscribe=(), unsubscribe=(), nonce="", error=None, node=None):
        r = wire.DeltaDiscoveryRequest(
            type_url=type_url,
            resource_names_subscribe=list(subscribe),
            resource_names_unsubscribe=list(unsubscribe),
            response_nonce=nonce,
        )
        if node is not None:
            r.node.CopyFrom(node)
        if error:
            r.error_detail.code = 13
            r.error_detail.message = error
        stream.on_request(r)
        out = [decode_delta(p) for p in stream.outbox]
        stream.outbox.clear()
        return out

    (cds,) = req(CLUSTER, node=NODE)
    assert sorted(r.name for r in cds.resources) == ["a", "b"]
    assert req(LISTENER) == []  # held until clusters ACKed
    (eds,) = req(ENDPOINT, ["a", "b"])
    assert req(ENDPOINT, nonce=eds.nonce) == []
    (lds,) = req(CLUSTER, nonce=cds.nonce)
    assert lds.type_url == LISTENER
    assert req(LISTENER, nonce=lds.nonce) == []
    (rds,) = req(ROUTE, ["r"])
    assert req(ROUTE, nonce=rds.nonce) == []
    assert stream.converged()

    # Modify cluster a (content change), remove b, route to a only.
    cache.set_snapshot("*", snap({"a": "2"}, {"r": ("a",)}))
    out = [decode_delta(p) for p in stream.outbox]
    stream.outbox.clear()
    assert [r.type_url for r in out] == [CLUSTER, ENDPOINT]
    cds2, eds2 = out
    assert [r.name for r in cds2.resources] == ["a"] and list(cds2.removed_resources) == []
    assert [r.name for r in eds2.resources] == ["a"]
    # NACK of the CDS: the proxy did not take it; nothing is resent until it changes.
    assert req(CLUSTER, nonce=cds2.nonce, error="bad cluster") == []
    assert registry.proxies()[0].nacks[-1].message == "bad cluster"
    assert req(ENDPOINT, nonce=eds2.nonce) == []
    # A fixed snapshot goes out; its ACK releases the route, then the removal of b.
    cache.set_snapshot("*", snap({"a": "3"}, {"r": ("a",)}))
    out = [decode_delta(p) for p in stream.outbox]
    stream.outbox.clear()
    cds3 = out[0]
    assert cds3.type_url == CLUSTER and [r.name for r in cds3.resources] == ["a"]
    # Endpoints of the modified (re-created) cluster are resent even though unchanged.
    eds3 = out[1]
    assert eds3.type_url == ENDPOINT and [r.name for r in eds3.resources] == ["a"]
    req(ENDPOINT, nonce=eds3.nonce)
    (rds2,) = req(CLUSTER, nonce=cds3.nonce)
    assert rds2.type_url == ROUTE
    out = req(ROUTE, nonce=rds2.nonce)
    assert [(r.type_url, list(r.removed_resources)) for r in out] == [(CLUSTER, ["b"]), (ENDPOINT, ["b"])]
    for r in out:
        req(r.type_url, nonce=r.nonce)
    assert stream.converged()
    assert registry.is_converged("*", cache.snapshot("*").version)


def test_delta_reconnect_with_initial_versions_sends_only_differences(env):
    cache, registry = env
    s = snap({"a": "1", "b": "1"}, {"r": ("a", "b")})
    cache.set_snapshot("*", s)
    stream = DeltaStream(cache, registry)
    initial = {"a": s.resources[CLUSTER]["a"].version, "b": "stale-version", "gone": "v0"}
    r = wire.DeltaDiscoveryRequest(type_url=CLUSTER, initial_resource_versions=initial)
    r.node.CopyFrom(NODE)
    stream.on_request(r)
    (cds,) = [decode_delta(p) for p in stream.outbox]
    assert [x.name for x in cds.resources] == ["b"]
    assert list(cds.removed_resources) == []  # removal waits for routes


async def test_converged_waits_for_every_proxy(env):
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("a", "b")}))
    c1 = connect_sotw(cache, registry)
    c2 = connect_sotw(cache, registry)
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("a",)}))
    version = cache.snapshot("*").version
    waiter = asyncio.create_task(registry.converged("*", version, timeout=5))
    await asyncio.sleep(0)
    (r1,) = c1.drain()
    c1.ack(r1, ["r"])
    await asyncio.sleep(0)
    assert not waiter.done()
    (r2,) = c2.drain()
    c2.ack(r2, ["r"])
    assert await waiter is True
    # A proxy that never ACKs makes the wait time out.
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("b",)}))
    assert await registry.converged("*", cache.snapshot("*").version, timeout=0.05) is False
    # ...until it disconnects: then the remaining ones decide.
    (r1,) = c1.drain()
    c1.ack(r1, ["r"])
    c2.stream.close()
    assert await registry.converged("*", cache.snapshot("*").version, timeout=1) is True


def test_inconsistent_snapshot_is_refused_and_nothing_published(env):
    cache, _ = env
    good = snap({"a": "1"}, {"r": ("a",)})
    cache.set_snapshot("*", good)
    bad = snap({"a": "1"}, {"r": ("a", "missing")})
    with pytest.raises(InconsistentSnapshotError) as err:
        cache.set_snapshot("*", bad)
    assert "'missing'" in str(err.value)
    assert cache.snapshot("*") is good


def test_groups_by_node_cluster_with_default_fallback(env):
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1"}, {"r": ("a",)}))
    client = SotwClient(SotwStream(cache, registry))
    (cds,) = client.request(CLUSTER)
    assert resource_names(cds) == ["a"]
    assert registry.proxies()[0].group == "*"
    client.ack(cds)
    # A snapshot for the proxy's own group takes over.
    cache.set_snapshot("gw", snap({"z": "1"}, {"r": ("z",)}))
    (cds2,) = client.drain()
    assert resource_names(cds2) == ["a", "z"]  # a retained until routes moved
    assert registry.proxies()[0].group == "gw"


def test_server_uses_the_registry_it_is_given():
    """An empty registry is falsy (it has __len__): it must still be the one the server uses."""
    from xds.server import XdsServer

    cache, registry = SnapshotCache(), StatusRegistry()
    server = XdsServer(cache, registry)
    assert server.registry is registry and server.cache is cache


def test_disconnected_proxy_history_does_not_keep_streams_alive(env):
    import gc
    import weakref

    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1"}, {"r": ("a",)}))
    client = connect_sotw(cache, registry, eds_names=("a",))
    ref = weakref.ref(client.stream)
    client.stream.close()
    status = registry.disconnected[-1]
    del client
    gc.collect()
    assert ref() is None
    assert status.to_json()["acked"]["cds"] == {"a": cache.snapshot("*").resources[CLUSTER]["a"].version}


def test_a_proxy_reconnecting_with_an_older_version_keeps_the_clusters_its_routes_use(env):
    """Make-before-break across streams: a proxy that moves to a replica with newer routing (or reconnects
    after a change) still runs routes naming the old cluster; dropping it at once would 503 its requests."""
    cache, registry = env
    old = snap({"a": "1", "b": "1"}, {"r": ("a", "b")})
    cache.set_snapshot("*", old)
    first = connect_sotw(cache, registry)
    first.stream.close()  # the stream is lost; the proxy keeps running `old`
    cache.set_snapshot("*", snap({"a": "1", "c": "1"}, {"r": ("a", "c")}))  # b leaves while it is away
    client = SotwClient(SotwStream(cache, registry))
    (cds,) = client.request(CLUSTER, (), version=old.version)
    assert resource_names(cds) == ["a", "b", "c"]  # b kept: the proxy's routes still name it
    assert client.request(LISTENER, (), version=old.version) == []  # routes wait for the new clusters
    (eds,) = client.request(ENDPOINT, ["a", "b"], version=old.version)
    client.ack(eds, ["a", "b"])
    (lds,) = client.ack(cds)  # clusters ACKed: listeners and routes may go now
    assert lds.type_url == LISTENER
    (rds,) = client.request(ROUTE, ["r"], version=old.version)
    client.ack(lds)
    (cds2,) = client.ack(rds, ["r"])  # routes moved: b can go
    assert resource_names(cds2) == ["a", "c"]
    # An unknown version is a proxy we know nothing about: it gets the current view at once.
    stranger = SotwClient(SotwStream(cache, registry))
    (cds3,) = stranger.request(CLUSTER, (), version="not-a-version")
    assert resource_names(cds3) == ["a", "c"]


# --------------------------------------------------------------------------- rules the scenarios above leave open


def delta_client(stream):
    def req(type_url, subscribe=(), unsubscribe=(), nonce="", error=None, initial=None, node=NODE):
        r = wire.DeltaDiscoveryRequest(type_url=type_url, resource_names_subscribe=list(subscribe),
                                       resource_names_unsubscribe=list(unsubscribe), response_nonce=nonce)
        if initial:
            r.initial_resource_versions.update(initial)
        if node is not None and stream.status is None:
            r.node.CopyFrom(node)
        if error:
            r.error_detail.code = 13
            r.error_detail.message = error
        stream.on_request(r)
        out = [decode_delta(p) for p in stream.outbox]
        stream.outbox.clear()
        return out
    return req


def test_snapshot_changes_coalesce_behind_wake(env):
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1"}, {"r": ("a",)}))
    stream = SotwStream(cache, registry)
    client = SotwClient(stream)
    (cds,) = client.request(CLUSTER)
    client.ack(cds)
    woken = []
    stream.wake = lambda: woken.append(1)
    cache.set_snapshot("*", snap({"a": "2"}, {"r": ("a",)}))
    cache.set_snapshot("*", snap({"a": "3"}, {"r": ("a",)}))
    assert woken == [1] and client.drain() == []  # one wake for a burst; nothing sent until applied
    stream.apply_pending()
    (cds2,) = client.drain()
    assert cds2.version_info == cache.snapshot("*").version  # the newest, not the first of the burst
    stream.apply_pending()  # nothing pending: nothing happens
    assert client.drain() == []
    cache.set_snapshot("*", snap({"a": "4"}, {"r": ("a",)}))
    assert woken == [1, 1]


def test_sotw_nack_is_recorded_with_what_the_proxy_runs(env):
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1"}, {"r": ("a",)}))
    client = SotwClient(SotwStream(cache, registry))
    (cds,) = client.request(CLUSTER)
    assert client.request(CLUSTER, nonce=cds.nonce, version="v-old", error="no such cluster") == []
    [nack] = registry.proxies()[0].nacks
    assert (nack.type_url, nack.nonce, nack.code, nack.message, nack.version_info) == (
        CLUSTER, cds.nonce, 13, "no such cluster", "v-old")
    assert registry.nack_total[CLUSTER] == 1
    assert client.stream.acked_version(CLUSTER, "a") is None  # a NACK acknowledges nothing
    # The same request again (Envoy retrying with the NACKed nonce): nothing in flight, a fresh request: answered.
    (again,) = client.request(CLUSTER, nonce=cds.nonce, version="v-old")
    assert resource_names(again) == ["a"] and again.nonce != cds.nonce
    client.ack(again)
    assert client.stream.acked_version(CLUSTER, "a") == cache.snapshot("*").resources[CLUSTER]["a"].version
    assert client.stream.acked_version(CLUSTER, "zz") is None and client.stream.acked_version(ROUTE, "r") is None


def test_sotw_wildcard_and_changed_subscriptions(env):
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("a", "b")}))
    client = connect_sotw(cache, registry)
    st = client.stream.types[ENDPOINT]
    assert st.names == frozenset({"a", "b"})
    # "*" is a wildcard: every endpoint, and a new response even though nothing changed in the snapshot.
    out = client.request(ENDPOINT, ["*"], nonce=st.nonce)
    assert [resource_names(r) for r in out] == [["a", "b"]]
    assert st.names is None
    client.ack(out[0], ["*"])
    # Narrowing the subscription sends the narrower view.
    out = client.request(ENDPOINT, ["a"], nonce=st.nonce)
    assert [resource_names(r) for r in out] == [["a"]]
    assert client.ack(out[0], ["a"]) == []
    # The same names again with the already-ACKed nonce is a fresh request (a re-created cluster): answered.
    out = client.request(ENDPOINT, ["a"], nonce=st.nonce)
    assert [resource_names(r) for r in out] == [["a"]]


def test_convergence_needs_a_snapshot_and_every_type(env):
    cache, registry = env
    stream = SotwStream(cache, registry)
    assert stream.converged() is False  # no snapshot yet
    cache.set_snapshot("*", snap({"a": "1"}, {"r": ("a",)}))
    client = SotwClient(stream)
    (cds,) = client.request(CLUSTER)
    assert not stream.converged()
    client.ack(cds)
    assert not stream.converged()  # listeners, endpoints and routes not yet held
    client = connect_sotw(cache, registry, eds_names=("a",))
    assert client.stream.converged()
    assert client.stream.status.converged_version == cache.snapshot("*").version
    assert stream.status.converged_version is None


def test_delta_subscriptions(env):
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("a", "b"), "r2": ("a",)}))
    stream = DeltaStream(cache, registry)
    req = delta_client(stream)
    (cds,) = req(CLUSTER)
    assert stream.types[CLUSTER].names is None  # legacy wildcard: CDS with an empty list
    req(CLUSTER, nonce=cds.nonce)
    (eds,) = req(ENDPOINT, ["a"])
    assert stream.types[ENDPOINT].names == frozenset({"a"}) and [r.name for r in eds.resources] == ["a"]
    req(ENDPOINT, nonce=eds.nonce)
    # Subscribing adds; unsubscribing removes and forgets (the proxy dropped it itself: no removal).
    (eds2,) = req(ENDPOINT, ["b"])
    assert [r.name for r in eds2.resources] == ["b"] and stream.types[ENDPOINT].names == frozenset({"a", "b"})
    req(ENDPOINT, nonce=eds2.nonce)
    assert req(ENDPOINT, unsubscribe=["a"]) == []
    assert stream.types[ENDPOINT].names == frozenset({"b"}) and set(stream.types[ENDPOINT].acked) == {"b"}
    # An explicit wildcard subscription, then unsubscribing the wildcard keeps what was named with it.
    (eds3,) = req(ENDPOINT, ["*"])
    assert sorted(r.name for r in eds3.resources) == ["a"] and stream.types[ENDPOINT].names is None
    req(ENDPOINT, nonce=eds3.nonce)
    req(ENDPOINT, subscribe=["b"], unsubscribe=["*"])
    assert stream.types[ENDPOINT].names == frozenset({"b"})
    # RDS names start empty (never a wildcard): nothing until a name is subscribed.
    (lds,) = [r for r in req(LISTENER)]
    assert req(ROUTE) == [] and stream.types[ROUTE].names == frozenset()
    (rds,) = req(ROUTE, ["r2"])
    assert [r.name for r in rds.resources] == ["r2"]


def test_delta_nacked_versions_are_not_resent_until_they_change(env):
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1"}, {"r": ("a",)}))
    stream = DeltaStream(cache, registry)
    req = delta_client(stream)
    (cds,) = req(CLUSTER)
    assert req(CLUSTER, nonce=cds.nonce, error="bad") == []
    assert stream.types[CLUSTER].rejected == {"a": cds.resources[0].version}
    assert stream.types[CLUSTER].acked == {} and not stream.types[CLUSTER].awaiting
    [nack] = registry.proxies()[0].nacks
    assert (nack.nonce, nack.message, nack.version_info) == (cds.nonce, "bad", "")
    # Another request for the type: the rejected version is not sent again.
    assert req(CLUSTER) == []
    cache.set_snapshot("*", snap({"a": "2"}, {"r": ("a",)}))
    (cds2,) = stream_out(stream)
    assert [r.name for r in cds2.resources] == ["a"]
    req(CLUSTER, nonce=cds2.nonce)
    assert stream.types[CLUSTER].rejected == {} and set(stream.types[CLUSTER].acked) == {"a"}
    # A stale nonce is ignored (no ACK of the newer response).
    assert req(CLUSTER, nonce="999") == []


def stream_out(stream):
    out = [decode_delta(p) for p in stream.outbox]
    stream.outbox.clear()
    return out


def test_delta_initial_versions_of_unknown_content_are_replaced(env):
    cache, registry = env
    s = snap({"a": "1", "b": "1"}, {"r": ("a", "b")})
    cache.set_snapshot("*", s)
    stream = DeltaStream(cache, registry)
    req = delta_client(stream)
    (cds,) = req(CLUSTER, initial={"a": s.resources[CLUSTER]["a"].version, "b": "other", "gone": "v0"})
    held = stream.types[CLUSTER].acked
    assert held["a"] is s.resources[CLUSTER]["a"]  # the same content: up to date
    assert held["b"].version == "other" and held["b"] is not s.resources[CLUSTER]["b"]
    assert set(held) == {"a", "b", "gone"}
    assert [r.name for r in cds.resources] == ["b"]
    assert stream.acked_versions()[CLUSTER] == {"a": s.resources[CLUSTER]["a"].version, "b": "other", "gone": "v0"}


def test_close_before_any_request_and_after(env):
    cache, registry = env
    stream = SotwStream(cache, registry)
    stream.close()  # never identified: nothing to disconnect
    assert registry.proxies() == [] and list(registry.disconnected) == []
    cache.set_snapshot("*", snap({"a": "1"}, {"r": ("a",)}))
    client = connect_sotw(cache, registry, eds_names=("a",))
    acked = client.stream.acked_versions()
    client.stream.close()
    status = registry.disconnected[-1]
    assert status.acked_versions() == acked
    assert status.acked_version(CLUSTER, "a") == acked[CLUSTER]["a"]
    assert status.acked_version(CLUSTER, "zz") is None and status.acked_version("type.unknown", "a") is None
    # A closed stream no longer hears about snapshots.
    cache.set_snapshot("*", snap({"a": "2"}, {"r": ("a",)}))
    assert client.drain() == []


def snap_parts(cluster_content: dict[str, str], endpoint_content: dict[str, str], routes: dict[str, tuple[str, ...]]):
    """Like snap(), but clusters and their endpoints change independently."""
    res = {CLUSTER: {}, ENDPOINT: {}, LISTENER: {}, ROUTE: {}}
    for name, content in cluster_content.items():
        res[CLUSTER][name] = CachedResource.build(CLUSTER, name, f"c:{name}:{content}".encode(), [name])
        res[ENDPOINT][name] = CachedResource.build(ENDPOINT, name, f"e:{name}:{endpoint_content[name]}".encode())
    for name, refs in routes.items():
        res[ROUTE][name] = CachedResource.build(ROUTE, name, f"r:{name}:{refs}".encode(), refs)
    res[LISTENER]["l1"] = CachedResource.build(LISTENER, "l1", b"l:l1", routes.keys())
    return Snapshot(res)


def test_delta_resends_the_unchanged_endpoints_of_a_modified_cluster_only(env):
    cache, registry = env
    cache.set_snapshot("*", snap_parts({"a": "1", "b": "1"}, {"a": "x", "b": "x"}, {"r": ("a", "b")}))
    stream = DeltaStream(cache, registry)
    req = delta_client(stream)
    (cds,) = req(CLUSTER)
    assert req(LISTENER) == []
    (eds,) = req(ENDPOINT, ["a", "b"])
    req(ENDPOINT, nonce=eds.nonce)
    (lds,) = req(CLUSTER, nonce=cds.nonce)
    req(LISTENER, nonce=lds.nonce)
    (rds,) = req(ROUTE, ["r"])
    req(ROUTE, nonce=rds.nonce)
    assert stream.converged()
    # Cluster a changes, its endpoints do not; b is untouched. Envoy re-creates a and needs a's endpoints again.
    cache.set_snapshot("*", snap_parts({"a": "2", "b": "1"}, {"a": "x", "b": "x"}, {"r": ("a", "b")}))
    out = stream_out(stream)
    assert [(r.type_url, [x.name for x in r.resources]) for r in out] == [(CLUSTER, ["a"]), (ENDPOINT, ["a"])]
    assert stream.types[ENDPOINT].force == set()  # sent, so no longer owed
    # Without an EDS subscription there is nothing to resend.
    other = DeltaStream(cache, registry)
    req2 = delta_client(other)
    (c1,) = req2(CLUSTER)
    req2(CLUSTER, nonce=c1.nonce)
    cache.set_snapshot("*", snap_parts({"a": "3", "b": "1"}, {"a": "x", "b": "x"}, {"r": ("a", "b")}))
    assert ENDPOINT not in other.types
    stream_out(other)


def test_delta_explicit_cluster_names_are_not_a_wildcard(env):
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("a", "b")}))
    stream = DeltaStream(cache, registry)
    req = delta_client(stream)
    (cds,) = req(CLUSTER, ["a"])
    assert [r.name for r in cds.resources] == ["a"] and stream.types[CLUSTER].names == frozenset({"a"})
    # Subscriptions are interned: one shared set per distinct subscription.
    assert stream.types[CLUSTER].names is cache.intern_names(frozenset({"a"}))
    req(CLUSTER, nonce=cds.nonce)
    (eds,) = req(ENDPOINT, ["a", "b"])
    assert stream.types[ENDPOINT].names is cache.intern_names(frozenset({"a", "b"}))


def test_the_proxy_status_names_the_peer_and_the_protocol(env):
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1"}, {"r": ("a",)}))
    stream = SotwStream(cache, registry, peer="ipv4:10.1.2.3:5555")
    SotwClient(stream).request(CLUSTER)
    status = registry.proxies()[0]
    assert (status.node_id, status.node_cluster, status.protocol, status.peer) == ("envoy-1", "gw", "sotw", "ipv4:10.1.2.3:5555")
    delta = DeltaStream(cache, registry, peer="p2")
    delta_client(delta)(CLUSTER)
    assert (delta.status.protocol, delta.status.peer) == ("delta", "p2")


def test_a_delta_nack_rejects_only_what_that_response_changed(env):
    """Resources the proxy already held at the same version were not in question: only the changed one is rejected,
    so an unchanged cluster is still sent again when it does change."""
    cache, registry = env
    cache.set_snapshot("*", snap({"a": "1", "b": "1"}, {"r": ("a", "b")}))
    stream = DeltaStream(cache, registry)
    req = delta_client(stream)
    (cds,) = req(CLUSTER)
    req(CLUSTER, nonce=cds.nonce)  # ACK a and b
    cache.set_snapshot("*", snap({"a": "2", "b": "1"}, {"r": ("a", "b")}))
    (cds2,) = stream_out(stream)
    assert [r.name for r in cds2.resources] == ["a"]
    req(CLUSTER, nonce=cds2.nonce, error="bad a")
    assert stream.types[CLUSTER].rejected == {"a": cds2.resources[0].version}
    cache.set_snapshot("*", snap({"a": "2", "b": "2"}, {"r": ("a", "b")}))
    (cds3,) = stream_out(stream)
    assert [r.name for r in cds3.resources] == ["b"]  # b changed: sent; a still at its rejected version: not


def test_the_registry_reads_each_resource_s_acked_version_from_the_live_stream(env):
    cache, registry = env
    s = snap({"a": "1"}, {"r": ("a",)})
    cache.set_snapshot("*", s)
    client = connect_sotw(cache, registry)
    (status,) = registry.proxies()
    assert status.acked_version(CLUSTER, "a") == s.resources[CLUSTER]["a"].version
    cache.set_snapshot("*", snap({"a": "2"}, {"r": ("a",)}))
    (cds,) = [r for r in client.drain() if r.type_url == CLUSTER]
    client.ack(cds)
    assert status.acked_version(CLUSTER, "a") == cache.snapshot("*").resources[CLUSTER]["a"].version
    assert status.acked_version(CLUSTER, "a") != s.resources[CLUSTER]["a"].version


def test_a_reconnecting_proxy_holds_only_the_endpoints_it_subscribes_to(env):
    """The held view of a named type is the subscription's, not every resource of the old snapshot."""
    cache, registry = env
    old = snap({"a": "1", "b": "1"}, {"r": ("a", "b")})
    cache.set_snapshot("*", old)
    client = SotwClient(SotwStream(cache, registry))
    client.request(CLUSTER, (), version=old.version)
    (eds,) = client.request(ENDPOINT, ["a"], version=old.version)
    assert resource_names(eds) == ["a"]
    assert set(client.stream.types[ENDPOINT].acked.resources) == {"a"}
