"""An in-memory Envoy for engine and router tests: it speaks the SotW protocol to a real stream object.

It subscribes to whatever its snapshot holds and ACKs every response, like a
healthy Envoy, or NACKs a chosen type (``reject``), so engine tests can use the
real xDS router and stream protocol without a network. End-to-end tests use a
real Envoy instead (tests/e2e).
"""

from __future__ import annotations

from xds.cache import SnapshotCache
from xds.snapshot import CLUSTER, ENDPOINT, LISTENER, ROUTE
from xds.status import StatusRegistry
from xds.streams import SotwStream
from xds.wire import discovery_pb2 as wire

_ORDER = (CLUSTER, ENDPOINT, LISTENER, ROUTE)


class ProxyDouble:
    """One proxy on one SotW stream; :meth:`sync` plays Envoy's side until nothing is left to answer."""

    def __init__(self, cache: SnapshotCache, registry: StatusRegistry, node_id: str = "gw-1", cluster: str = "gw"):
        self.stream = SotwStream(cache, registry, peer=f"ipv4:127.0.0.1:{node_id}")
        self.node = wire.Node(id=node_id, cluster=cluster)
        self.started = False
        self.subscribed: dict[str, tuple[str, ...]] = {}
        self.last: dict[str, wire.DiscoveryResponse] = {}
        self.reject: set[str] = set()  # type URLs to NACK
        self.paused = False  # a proxy that stops answering (slow, stuck)
        self.closed = False

    def _send(self, type_url: str, names=(), nonce: str = "", version: str = "", error: str | None = None) -> None:
        req = wire.DiscoveryRequest(type_url=type_url, resource_names=list(names), response_nonce=nonce,
                                    version_info=version)
        if not self.started:
            req.node.CopyFrom(self.node)
            self.started = True
        if error:
            req.error_detail.code = 13
            req.error_detail.message = error
        self.stream.on_request(req)

    def _wanted(self, type_url: str) -> tuple[str, ...]:
        snap = self.stream.snapshot
        if snap is None or type_url not in (ENDPOINT, ROUTE):
            return ()
        return tuple(sorted(snap.resources[type_url]))

    def sync(self, rounds: int = 20) -> None:
        """Subscribe and ACK (or NACK) until the stream has nothing more to say."""
        if self.paused or self.closed:
            return
        if not self.started:
            for type_url in _ORDER:
                self.subscribed[type_url] = self._wanted(type_url)
                self._send(type_url, self.subscribed[type_url])
        for _ in range(rounds):
            out = [wire.DiscoveryResponse.FromString(p) for p in self.stream.outbox]
            self.stream.outbox.clear()
            for resp in out:
                self.last[resp.type_url] = resp
                names = self.subscribed.get(resp.type_url, ())
                if resp.type_url in self.reject:
                    prev = self.stream.types[resp.type_url].acked
                    self._send(resp.type_url, names, resp.nonce, prev.version if prev is not None else "",
                               error=f"rejected {resp.type_url.rsplit('.', 1)[-1]} by the test")
                else:
                    self._send(resp.type_url, names, resp.nonce, resp.version_info)
            changed = False
            for type_url in (ENDPOINT, ROUTE):  # Envoy re-subscribes when clusters or listeners change
                wanted = self._wanted(type_url)
                if wanted != self.subscribed.get(type_url) and type_url in self.last:
                    self.subscribed[type_url] = wanted
                    last = self.last[type_url]
                    self._send(type_url, wanted, last.nonce, last.version_info)
                    changed = True
            if not out and not changed and not self.stream.outbox:
                return

    def close(self) -> None:
        self.closed = True
        self.stream.close()


def sync_all(proxies: list[ProxyDouble]) -> None:
    for proxy in proxies:
        proxy.sync()


def engine_with_proxies(store, analyzer, *, clock=None, hooks=None, proxies: int = 1, **engine_options):
    """An Engine over the real xDS router whose ``tick()`` also lets the in-memory proxies answer.

    Returns (engine, registry, cache, proxies). For tests of parts around the engine (API, CLI,
    metrics) that drive rollouts by hand and need the proxies to converge.
    """
    import time

    from control_plane.rollouts.engine import Engine
    from control_plane.routing.xds_router import XdsRouter

    cache, registry = SnapshotCache(), StatusRegistry()
    clock = clock or time.time
    router = XdsRouter(cache, registry, listen_address="127.0.0.1", clock=clock)
    kwargs = dict(engine_options)
    if hooks is not None:
        kwargs["webhooks"] = hooks
    engine = Engine(store, router, analyzer, clock=clock, **kwargs)
    doubles = [ProxyDouble(cache, registry, f"gw-{i + 1}") for i in range(proxies)]
    plain_tick = engine.tick

    async def tick() -> None:
        sync_all(doubles)
        await plain_tick()
        sync_all(doubles)

    engine.tick = tick  # type: ignore[method-assign]
    return engine, registry, cache, doubles
