"""Versioned, pre-serialised xDS snapshots.

A snapshot is the complete Envoy configuration for one node group at one
moment. Every resource is serialised exactly once, when the snapshot is built:
its Any bytes (for state-of-the-world responses) and its Resource bytes (for
delta responses) are kept and reused for every proxy, so a push to 5,000
proxies costs 5,000 byte concatenations and no protobuf encoding.

A snapshot is checked for consistency before it may be published (the
go-control-plane rule): every route names an existing cluster, every EDS
cluster has endpoints, every listener's RDS name exists. Publishing an
inconsistent snapshot would make Envoy serve 503s, so it is refused with the
list of problems instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from .wire import discovery_pb2 as wire

LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
ENDPOINT = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

#: Make-before-break order: clusters and their endpoints exist before the
#: listeners and routes that name them.
PUSH_ORDER: tuple[str, ...] = (CLUSTER, ENDPOINT, LISTENER, ROUTE)
ALL_TYPES = frozenset(PUSH_ORDER)
#: Types Envoy subscribes to by name (the others are wildcard).
NAMED_TYPES = frozenset((ENDPOINT, ROUTE))

SHORT_NAMES = {LISTENER: "lds", ROUTE: "rds", CLUSTER: "cds", ENDPOINT: "eds"}


class InconsistentSnapshotError(ValueError):
    """A snapshot that would leave Envoy with dangling references."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("inconsistent snapshot:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True, slots=True)
class CachedResource:
    """One resource, serialised once, with the names it depends on."""

    type_url: str
    name: str
    version: str
    any_bytes: bytes  # a serialised google.protobuf.Any holding the resource
    delta_bytes: bytes  # a serialised envoy.service.discovery.v3.Resource
    references: frozenset[str] = frozenset()

    @classmethod
    def build(cls, type_url: str, name: str, payload: bytes, references: Iterable[str] = ()) -> "CachedResource":
        """Wrap already-serialised resource bytes; the version is a hash of them."""
        version = hashlib.sha256(payload).hexdigest()[:16]
        any_msg = wire.Any(type_url=type_url, value=payload)
        resource = wire.Resource(name=name, version=version, resource=any_msg)
        return cls(
            type_url=type_url,
            name=name,
            version=version,
            any_bytes=any_msg.SerializeToString(),
            delta_bytes=resource.SerializeToString(),
            references=frozenset(references),
        )


@dataclass(eq=False)
class View:
    """A set of resources of one type as one client should see it.

    Views are shared between every stream that sees the same content, and so
    is their pre-encoded state-of-the-world response body (everything but the
    per-stream nonce).
    """

    type_url: str
    version: str
    resources: Mapping[str, CachedResource]
    key: str = field(init=False)
    _body: bytes | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        h = hashlib.blake2b(digest_size=12)
        for name in sorted(self.resources):
            h.update(name.encode())
            h.update(b"\0")
            h.update(self.resources[name].version.encode())
            h.update(b"\0")
        self.key = h.hexdigest()

    @property
    def sotw_body(self) -> bytes:
        """DiscoveryResponse bytes without the nonce (appended per stream)."""
        if self._body is None:
            parts = [len_field(1, self.version.encode())]
            parts.extend(len_field(2, r.any_bytes) for r in self.resources.values())
            parts.append(len_field(4, self.type_url.encode()))
            self._body = b"".join(parts)
        return self._body

    def versions(self) -> dict[str, str]:
        return {name: r.version for name, r in self.resources.items()}


class Snapshot:
    """Every resource of one node group at one version. Immutable once built."""

    def __init__(self, resources: Mapping[str, Mapping[str, CachedResource]], version: str | None = None):
        self.resources: dict[str, dict[str, CachedResource]] = {t: dict(resources.get(t, {})) for t in PUSH_ORDER}
        unknown = set(resources) - ALL_TYPES
        if unknown:
            raise ValueError(f"unsupported resource types: {sorted(unknown)}")
        self.version = version or self._content_version()
        self._views: dict[tuple[str, frozenset[str] | None], View] = {}

    def _content_version(self) -> str:
        h = hashlib.sha256()
        for type_url in PUSH_ORDER:
            for name in sorted(self.resources[type_url]):
                h.update(f"{type_url}\0{name}\0{self.resources[type_url][name].version}\n".encode())
        return h.hexdigest()[:12]

    # -- views -------------------------------------------------------------
    def view(self, type_url: str, names: frozenset[str] | None = None) -> View:
        """The resources of a type, all of them (names=None) or those named."""
        key = (type_url, names)
        view = self._views.get(key)
        if view is None:
            items = self.resources[type_url]
            if names is not None:
                items = {n: items[n] for n in sorted(names) if n in items}
            view = View(type_url, self.version, items)
            self._views[key] = view
        return view

    def names(self, type_url: str) -> frozenset[str]:
        return frozenset(self.resources[type_url])

    # -- consistency -------------------------------------------------------
    def consistency_problems(self) -> list[str]:
        """Dangling references that would make Envoy drop traffic."""
        problems: list[str] = []
        clusters = self.resources[CLUSTER]
        endpoints = self.resources[ENDPOINT]
        routes = self.resources[ROUTE]
        for name, route in sorted(self.resources[ROUTE].items()):
            for ref in sorted(route.references - clusters.keys()):
                problems.append(f"route configuration {name!r} names cluster {ref!r}, which is not in the snapshot")
        for name, cluster in sorted(clusters.items()):
            for ref in sorted(cluster.references - endpoints.keys()):
                problems.append(f"EDS cluster {name!r} has no endpoints (ClusterLoadAssignment {ref!r} missing)")
        for name, listener in sorted(self.resources[LISTENER].items()):
            for ref in sorted(listener.references - routes.keys()):
                problems.append(f"listener {name!r} names route configuration {ref!r}, which is not in the snapshot")
        return problems

    def check(self) -> "Snapshot":
        problems = self.consistency_problems()
        if problems:
            raise InconsistentSnapshotError(problems)
        return self

    def __repr__(self) -> str:
        counts = ", ".join(f"{SHORT_NAMES[t]}={len(self.resources[t])}" for t in PUSH_ORDER)
        return f"Snapshot(version={self.version!r}, {counts})"


# -- building from envoy-data-plane messages ----------------------------------

def snapshot_from_envoy(resources, version: str | None = None) -> Snapshot:
    """Serialise translated Envoy resources (an ``EnvoyResources``) once each."""
    from . import references as refs

    built: dict[str, dict[str, CachedResource]] = {t: {} for t in PUSH_ORDER}

    def add(type_url: str, name: str, msg, references: Iterable[str]) -> None:
        if name in built[type_url]:
            raise InconsistentSnapshotError([f"duplicate {SHORT_NAMES[type_url].upper()} resource name {name!r}"])
        built[type_url][name] = CachedResource.build(type_url, name, bytes(msg), references)

    for msg in resources.clusters:
        add(CLUSTER, msg.name, msg, refs.cluster_eds_names(msg))
    for msg in resources.endpoints:
        add(ENDPOINT, msg.cluster_name, msg, ())
    for msg in resources.listeners:
        add(LISTENER, msg.name, msg, refs.listener_route_names(msg))
    for msg in resources.routes:
        add(ROUTE, msg.name, msg, refs.route_cluster_names(msg))
    return Snapshot(built, version)


# -- tiny protobuf wire helpers (length-delimited fields only) ------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def len_field(number: int, data: bytes) -> bytes:
    """Encode one length-delimited protobuf field (strings, bytes, messages)."""
    return _varint((number << 3) | 2) + _varint(len(data)) + data
