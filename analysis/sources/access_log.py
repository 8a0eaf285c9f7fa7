"""Envoy's gRPC access-log service (ALS): every request, attributed to its arm.

Weir's listeners stream each request's log entry to
``envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs`` on Weir's own
gRPC server (``xds.translate(access_log_cluster=...)``; the servicer here is a
generic handler that ``XdsServer(extra_handlers=[source.handler()])`` carries).
Messages are decoded by our small protobuf-upb wire types
(``xds/wire/accesslog.proto``), never by betterproto2 (~1.5k entries/s): the
decoder below runs at several hundred thousand entries per second on one core
(``bench/als_decode.py``).

What one entry becomes (:class:`Entry`)
---------------------------------------
* **arm**: ``upstream_cluster`` is ``<service>-<version>``; ``upstream_remote_address``
  is the endpoint. Entries without a cluster (no route, local replies before
  routing) cannot belong to a version and are only counted as ``unattributed``.
* **traffic**: ``live`` (a client's request, the HCM's DownstreamEnd entry),
  ``shadow`` (a mirrored request) or ``pinned`` (a request a header route sent
  to a fixed version - testers; not randomly assigned, so it is kept out of the
  live arm). What Envoy 1.40 does, observed with a real proxy: mirrored
  requests are *not* in the HCM access log at all. They appear only when the
  router filter has ``upstream_log`` configured, as UpstreamEnd entries
  (``access_log_type`` 9) whose ``upstream_cluster`` is the mirror's cluster,
  whose ``request.authority`` host ends in ``-shadow`` (``127.0.0.1-shadow:10000``)
  and whose ``route_name`` is empty. So: an entry whose authority host ends in
  ``-shadow`` is shadow traffic; any other UpstreamEnd entry is one upstream
  attempt of a live request, already counted by its DownstreamEnd entry, and is
  skipped (retries would double-count it). Without ``upstream_log`` the shadow
  arm stays empty and :meth:`AccessLogSource.coverage` says why.
* **time**: the entry's own ``start_time`` (the proxy's clock), never the
  arrival time: a step counts exactly the requests that *started* at or after
  its convergence. (Envoy's and Weir's clocks must agree - NTP.)
* **latency**: ``time_to_last_upstream_rx_byte`` in ms - from the start of the
  request to the last byte of the upstream's response, the same span for live
  and shadow entries and for Envoy's ``upstream_rq_time``. Falls back to
  ``duration`` when there was no upstream response (only errors, which carry
  no latency sample).
* **error**: response code >= 500, or no response at all (code 0: a reset
  before the response), or a :data:`ERROR_FLAGS` response flag. 4xx are not
  errors. gRPC calls answer HTTP 200 whatever happened: the ``grpc-status``
  Weir's listeners log (a trailer, or a header for a trailers-only response)
  decides instead - any code but OK is an error, except the client's own
  faults (:data:`DEFAULT_GRPC_CLIENT_CODES`, the codes gRPC maps to HTTP 4xx;
  a policy may name others, registered per service).

Memory, and what is kept
------------------------
Per arm (cluster, traffic):

* **counts** - requests and errors per (1 s bucket of ``start_time``, endpoint):
  exact, two integers a bucket. To make ``since`` exact to the request, a
  bucket also keeps each request's offset within its second (8 bytes a
  request) while it is younger than ``exact_window_s`` (default 300 s) - or
  forever if a query's ``since``/``until`` falls in it (:meth:`pin`; every
  query pins its bounds, so the engine's first look at a step keeps its
  boundary exact for the whole step). A boundary second that lost its offsets
  is left out whole (never counting pre-``since`` traffic) and coverage says so.
* **latency samples** - an arrival-ordered log of (start_time float64,
  latency float32, endpoint uint16): 14 bytes a sample. Successful requests up
  to ``max_samples_per_s`` per *service* (default 500/s) are all kept; above
  it they are thinned systematically with one keep-probability per service,
  set every second from the previous second's rate - the same probability for
  every arm of the service, so thinning never biases the split between arms
  nor favours fast requests. Below the cap ``latencies_ms`` has one sample per
  successful request; above it, fewer.
* everything older than ``retention_s`` (default 3600 s) is dropped.

So the worst case is about ``services x max_samples_per_s x retention_s x 14 B``
(25 MB per busy service-hour at the defaults) plus
``request rate x exact_window_s x 8 B`` plus a few hundred bytes per bucket
(one bucket per arm, endpoint and second with traffic).

Between two looks with the same ``since`` the latency array only grows at the
end (new arrivals are appended; nothing inside the window is dropped until it
is older than ``retention_s``).

Gaps
----
While no receiver is connected Envoy drops entries silently (they count in its
``logs_written``). This source never reads a gap as zero errors: coverage is
incomplete when the receiver started after ``since``, when a proxy's stream
ended and no stream of that proxy was open until a new one started, when the
window is older than what is kept, or when no stream has connected at all.

Several replicas
----------------
Each proxy's stream reaches one replica; the analysis runs on the leader. A
follower relays what its proxies send to the leader
(``control_plane/ha/relay.py``), which opens a *relayed* stream here for each
of the follower's streams (:meth:`AccessLogSource.open_stream` with
``relay=``) and ingests the messages as they arrived, so every entry keeps
its proxy's node id. Relayed entries are not handed to ``entry_listeners``
(each replica balances its own proxies). What each relay could deliver is a
:class:`RelayOrigin`; with ``fleet_proxies`` (the proxies every other replica
serves) coverage is incomplete for a replica that serves proxies but whose
relay is not connected, connected only after the window began, or lost
entries (gaps).
"""

from __future__ import annotations

import logging
import math
import re
import time
from array import array
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterable, Mapping, NamedTuple, Protocol

import grpc
import numpy as np

from analysis.samples import ArmSamples
from xds.ratelog import RateLimitedLog
from xds.wire import accesslog_pb2 as wire

from . import Coverage, cluster_of
from .timing_log import TimingLog
from .totals import ArmTotals

log = logging.getLogger("weir.analysis.access_log")

__all__ = [
    "ALS_METHOD_PATH",
    "ALS_SERVICE",
    "AccessLogSource",
    "DEFAULT_GRPC_CLIENT_CODES",
    "ERROR_FLAGS",
    "Entry",
    "LIVE",
    "PINNED",
    "RelayOrigin",
    "SHADOW",
    "StreamTap",
    "decode",
    "decode_message",
    "is_shadow_authority",
]

ALS_SERVICE = "envoy.service.accesslog.v3.AccessLogService"
ALS_METHOD = "StreamAccessLogs"
ALS_METHOD_PATH = f"/{ALS_SERVICE}/{ALS_METHOD}"

LIVE, SHADOW, PINNED = "live", "shadow", "pinned"
TRAFFIC_KINDS = (LIVE, SHADOW, PINNED)

# envoy.data.accesslog.v3.AccessLogType
_NOT_SET, _DOWNSTREAM_END, _UPSTREAM_END = 0, 6, 9

#: Response flags that make a request an error whatever its code (Envoy's names).
ERROR_FLAGS = (
    "no_healthy_upstream",
    "upstream_request_timeout",
    "local_reset",
    "upstream_remote_reset",
    "upstream_connection_failure",
    "upstream_connection_termination",
    "upstream_overflow",
    "upstream_retry_limit_exceeded",
    "stream_idle_timeout",
    "upstream_max_stream_duration_reached",
    "duration_timeout",
    "upstream_protocol_error",
    "no_cluster_found",
    "overload_manager",
    "dns_resolution_failure",
    "downstream_remote_reset",
    "downstream_connection_termination",
)

#: gRPC codes that are the client's fault (gRPC's HTTP mapping gives them 4xx): not errors by default.
#: CANCELLED, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED, RESOURCE_EXHAUSTED,
#: FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE, UNAUTHENTICATED.
DEFAULT_GRPC_CLIENT_CODES = frozenset({1, 3, 5, 6, 7, 8, 9, 10, 11, 16})
_GRPC_STATUS = "grpc-status"

# Weir's route names (xds.translate): "<service>-default", "<service>-header-<i>".
_HEADER_ROUTE = re.compile(r"^(?P<service>.+)-header-\d+$")
_DEFAULT_ROUTE_SUFFIX = "-default"


class Entry(NamedTuple):
    """One decoded log entry, reduced to what the analysis uses."""

    cluster: str  # "" when the request never reached a cluster
    endpoint: str  # "ip:port" of the upstream host, "" if none
    start: float  # start_time, epoch seconds (proxy clock)
    latency_ms: float
    code: int  # 0: no response
    error: bool
    traffic: str  # LIVE | SHADOW | PINNED
    route: str  # route_name ("" for shadow entries)


@dataclass
class DecodedBatch:
    identifier: tuple[str, str, str] | None  # (node id, node cluster, log_name), first message of a stream
    entries: list[Entry]
    skipped: int  # entries that are not one request's outcome (upstream attempts, periodic logs)
    upstream: int  # UpstreamEnd entries (shadow ones included): the router's upstream_log is on


def is_shadow_authority(authority: str) -> bool:
    """True for a mirrored request's Host: ``host-shadow`` or ``host-shadow:port`` (IPv6 ``[::1]-shadow:80`` too)."""
    host = authority
    colon = authority.rfind(":")
    if colon > authority.rfind("]") and authority[colon + 1 :].isdigit():
        host = authority[:colon]
    return host.endswith("-shadow")


def _flag_error(flags: Any) -> bool:
    return any(getattr(flags, name) for name in ERROR_FLAGS)


def decode(data: bytes, grpc_client_codes: Mapping[str, frozenset[int]] | None = None) -> DecodedBatch:
    """Decode one serialised ``StreamAccessLogsMessage``."""
    return decode_message(wire.StreamAccessLogsMessage.FromString(data), grpc_client_codes)


def grpc_error(status: str, client_codes: frozenset[int]) -> bool:
    """A gRPC status (the header or trailer text) that counts as the server's failure."""
    try:
        code = int(status)
    except ValueError:
        return True  # not a gRPC status at all: something broke
    return code != 0 and code not in client_codes


def decode_message(msg: wire.StreamAccessLogsMessage,
                   grpc_client_codes: Mapping[str, frozenset[int]] | None = None) -> DecodedBatch:
    """Reduce a parsed message to :class:`Entry` tuples (the hot path: keep it tight).

    ``grpc_client_codes`` maps a cluster to the gRPC codes that are not errors for it
    (:data:`DEFAULT_GRPC_CLIENT_CODES` otherwise).
    """
    overrides = grpc_client_codes or {}
    ident = None
    if msg.HasField("identifier"):
        i = msg.identifier
        ident = (i.node.id, i.node.cluster, i.log_name)
    entries: list[Entry] = []
    append = entries.append
    new = tuple.__new__
    skipped = upstream = 0
    for e in msg.http_logs.log_entry:
        c = e.common_properties
        kind = c.access_log_type
        if kind != _DOWNSTREAM_END and kind != _NOT_SET:
            if kind != _UPSTREAM_END:
                skipped += 1
                continue
            upstream += 1
        authority = e.request.authority
        route = c.route_name
        if "-shadow" in authority and is_shadow_authority(authority):
            traffic = SHADOW
        elif kind == _UPSTREAM_END:
            skipped += 1  # one attempt of a live request: its DownstreamEnd entry counts it
            continue
        elif "-header-" in route and _HEADER_ROUTE.match(route):
            traffic = PINNED
        else:
            traffic = LIVE
        response = e.response
        code = response.response_code.value
        error = code >= 500 or code == 0
        if not error and c.HasField("response_flags"):
            error = _flag_error(c.response_flags)
        if not error and (response.response_trailers or response.response_headers):
            status = response.response_trailers.get(_GRPC_STATUS) or response.response_headers.get(_GRPC_STATUS)
            if status is not None:
                error = grpc_error(status, overrides.get(c.upstream_cluster, DEFAULT_GRPC_CLIENT_CODES))
        d = c.time_to_last_upstream_rx_byte if c.HasField("time_to_last_upstream_rx_byte") else c.duration
        st = c.start_time
        ua = c.upstream_remote_address.socket_address
        address = ua.address
        append(
            new(
                Entry,
                (
                    c.upstream_cluster,
                    f"{address}:{ua.port_value}" if address else "",
                    st.seconds + st.nanos * 1e-9,
                    d.seconds * 1e3 + d.nanos * 1e-6,
                    code,
                    error,
                    traffic,
                    route,
                ),
            )
        )
    return DecodedBatch(ident, entries, skipped, upstream)


def _identity(data: bytes) -> bytes:
    return data


# --------------------------------------------------------------------------- storage


class _Bucket:
    """Counts of one (second, endpoint) of an arm; offsets make ``since`` exact inside the second."""

    __slots__ = ("n", "err", "offs", "eoffs")

    def __init__(self, exact: bool):
        self.n = 0
        self.err = 0
        self.offs: array | None = array("d") if exact else None  # start - second, every request
        self.eoffs: array | None = None  # the same, errors only (created on the first error)

    def count(self, lo: float, hi: float) -> tuple[int, int]:
        """Requests and errors with offset in [lo, hi) (requires offsets)."""
        return _count_in(self.offs, lo, hi), _count_in(self.eoffs, lo, hi)


def _count_in(values: array | None, lo: float, hi: float) -> int:
    if not values:
        return 0
    if len(values) < 64:
        return sum(1 for v in values if lo <= v < hi)
    v = np.frombuffer(values, dtype=np.float64)
    return int(np.count_nonzero((v >= lo) & (v < hi)))


class _Thin:
    """Keep-probability for latency samples of one service (shared by all its arms)."""

    __slots__ = ("service", "p", "acc", "sec", "count", "check", "level", "thinned")

    def __init__(self, service: str):
        self.service = service
        self.p = 1.0
        self.acc = 0.0
        self.sec = -1
        self.count = 0
        self.check = 0
        self.level = 0
        self.thinned = False

    def roll(self, sec: int, cap: int) -> None:
        """A new arrival second: the previous second's rate sets this second's probability."""
        rate = self.count if sec == self.sec + 1 else 0
        self.p = 1.0 if rate <= cap else cap / rate
        self.thinned = self.thinned or self.p < 1.0
        self.sec = sec
        self.count = 0
        self.check = 2 * max(cap, rate)  # twice what this second's probability expects
        self.level = 0

    def overload(self, cap: int) -> None:
        """A burst inside the current second (twice the expected count): each further doubling
        keeps at most cap / 2^k samples, so no second keeps more than about 3 x cap."""
        self.level += 1
        self.p = min(self.p, cap / self.count / (1 << self.level))
        self.thinned = True
        self.check *= 2


class _Arm:
    """One (cluster, traffic) arm."""

    __slots__ = ("cluster", "traffic", "seconds", "t", "lat", "ep", "endpoints", "ep_index", "thin", "compacted_to",
                 "evicted_to", "totals")

    def __init__(self, cluster: str, traffic: str, thin: _Thin, totals: ArmTotals | None = None):
        self.totals = totals if totals is not None else ArmTotals()  # since the process started (/metrics)
        self.cluster = cluster
        self.traffic = traffic
        self.seconds: dict[int, dict[int, _Bucket]] = {}
        self.t = array("d")  # latency log, arrival order: start times
        self.lat = array("f")  # latency ms
        self.ep = array("H")  # endpoint index
        self.endpoints: list[str] = []
        self.ep_index: dict[str, int] = {}
        self.thin = thin
        self.compacted_to: int | None = None  # seconds below this have dropped their offsets (unless pinned)
        self.evicted_to: int | None = None

    def endpoint_id(self, endpoint: str) -> int:
        i = self.ep_index.get(endpoint)
        if i is None:
            i = len(self.endpoints)
            if i >= 65535:
                i = 65535  # absurdly many endpoints: the rest share one slot
                self.ep_index[endpoint] = i
                if len(self.endpoints) == 65535:
                    self.endpoints.append("(other)")
                return i
            self.endpoints.append(endpoint)
            self.ep_index[endpoint] = i
        return i

    # -- queries

    def boundary_exact(self, t: float) -> bool:
        """Can requests of t's second be split at t? (offsets kept, or t on a whole second)"""
        sec = math.floor(t)
        if t == sec:
            return True
        eps = self.seconds.get(sec)
        return eps is None or all(b.offs is not None or b.n == 0 for b in eps.values())

    def counts(self, lo: float, hi: float, epi: int | None) -> tuple[int, int]:
        """Requests and errors that started in [lo, hi) (boundary seconds must be exact or whole)."""
        s_lo = math.floor(lo)
        f_lo = lo - s_lo
        if math.isinf(hi):
            s_hi, f_hi = math.inf, 1.0
        else:
            s_hi = math.floor(hi)
            f_hi = hi - s_hi
        n = err = 0
        for sec, eps in self.seconds.items():
            if sec < s_lo or sec > s_hi:
                continue
            buckets = eps.values() if epi is None else ([eps[epi]] if epi in eps else [])
            partial = sec == s_lo and f_lo > 0.0 or sec == s_hi
            for b in buckets:
                if not partial:
                    n += b.n
                    err += b.err
                elif b.offs is not None:
                    a, e = b.count(f_lo if sec == s_lo else 0.0, f_hi if sec == s_hi else 1.0)
                    n += a
                    err += e
        return n, err

    def latencies(self, lo: float, hi: float, epi: int | None) -> np.ndarray:
        if not self.t:
            return np.empty(0, dtype=np.float64)
        t = np.frombuffer(self.t, dtype=np.float64)
        mask = t >= lo
        if not math.isinf(hi):
            mask &= t < hi
        if epi is not None:
            mask &= np.frombuffer(self.ep, dtype=np.uint16) == epi
        return np.frombuffer(self.lat, dtype=np.float32)[mask].astype(np.float64)


@dataclass
class ArmWindow:
    """What :meth:`AccessLogSource.window` copies out: per-second counts and time-stamped samples."""

    seconds: np.ndarray  # int64 epoch seconds that had requests
    requests: np.ndarray  # per second
    errors: np.ndarray
    latency_t: np.ndarray  # start time of each kept latency sample
    latency_ms: np.ndarray
    ttfb_t: np.ndarray
    ttfb_ms: np.ndarray

    @classmethod
    def empty(cls) -> "ArmWindow":
        e = np.empty(0)
        return cls(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), e, e, e, e)


@dataclass
class _Stream:
    """One StreamAccessLogs call (a proxy opens one per worker thread, lazily, at its first flush)."""

    id: int
    peer: str
    opened_at: float
    node: str = ""
    node_cluster: str = ""
    log_name: str = ""
    closed_at: float | None = None
    clean: bool = False  # ended by the proxy half-closing (not a broken connection)
    messages: int = 0
    entries: int = 0
    upstream_entries: int = 0  # UpstreamEnd entries seen: the router's upstream_log is on
    clusters: set = field(default_factory=set)
    relay: str = ""  # the replica that relayed this stream of one of its proxies ("": a proxy of ours)
    suspended: bool = False  # closed because its relay session broke; reopened if the next one resumes it

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node or self.peer,
            "opened_at": self.opened_at,
            "closed_at": self.closed_at,
            "messages": self.messages,
            "entries": self.entries,
            **({"relay": self.relay} if self.relay else {}),
        }


class StreamTap(Protocol):
    """Sees every access-log stream of this process's own proxies, with each message's bytes as received."""

    def on_open(self, stream: _Stream) -> None: ...
    def on_message(self, stream: _Stream, raw: bytes) -> None: ...
    def on_close(self, stream: _Stream) -> None: ...


@dataclass
class RelayOrigin:
    """What the relay of one other replica has delivered here (``control_plane/ha/relay.py`` keeps it).

    Times are the relaying replica's clock (epoch seconds, like the proxies' start
    times). ``complete_since``: every entry that reached that replica since then
    was delivered (or is a gap); ``gaps``: intervals whose entries may be lost
    (``None`` end: still open).
    """

    replica: str
    incarnation: str
    complete_since: float
    connected: bool = False
    disconnected_at: float | None = None
    gaps: list[tuple[float, float]] = field(default_factory=list)
    streams: dict[int, _Stream] = field(default_factory=dict)  # the relayed streams, by the replica's number
    last_seq: int = 0  # the last item accounted for
    last_at: float = 0.0
    items: int = 0
    nodes_seen: set = field(default_factory=set)

    def add_gap(self, start: float, end: float) -> None:
        if end > start:
            self.gaps.append((start, end))
            del self.gaps[:-1000]  # bounded: a relay that keeps losing shows the latest thousand

    def to_json(self) -> dict[str, Any]:
        return {"replica": self.replica, "connected": self.connected, "complete_since": self.complete_since,
                "disconnected_at": self.disconnected_at, "gaps": len(self.gaps), "items": self.items,
                "streams_open": sum(1 for s in self.streams.values() if s.closed_at is None),
                "nodes": sorted(self.nodes_seen)}


# --------------------------------------------------------------------------- the source


class AccessLogSource:
    """Receives Envoy's access-log streams and answers ``arm_samples`` from them.

    All state lives on the event loop's thread (ingest and queries are plain
    calls there, no locks): queries are O(buckets) + O(latency log) numpy work,
    a few ms at the default bounds (~8 ms for 1.6M samples and 29k buckets).

    * ``retention_s``, ``exact_window_s``, ``max_samples_per_s``: the memory
      bounds (module docstring).
    * ``log_names``: accept only streams with these ``log_name`` s (``None``: all).
    * ``proxies_alive``: returns the node ids still connected to xDS (e.g.
      ``lambda: {p.node_id for p in registry.proxies()}``); a proxy whose
      access-log stream ended and that is gone from xDS too was scaled in, not
      cut off, so its ended stream is not an open gap. Without it, every
      ended stream that did not come back counts as a gap.
    * ``fleet_proxies``: with several replicas, the node ids every *other* replica
      serves (replica -> nodes, from etcd). They count as alive too, and
      coverage requires each of those replicas' relay (module docstring).
    * ``clock``: Weir's wall clock (stream times, thinning seconds).

    Usage: ``XdsServer(cache, registry, extra_handlers=[source.handler()])``;
    then ``await source.arm_samples(service, version, since)`` or the richer
    :meth:`samples` / :meth:`samples_by_endpoint` / :meth:`coverage_now`.
    """

    name = "access-log"

    def __init__(
        self,
        *,
        retention_s: float = 3600.0,
        exact_window_s: float = 300.0,
        max_samples_per_s: int = 500,
        log_names: Iterable[str] | None = None,
        proxies_alive: Callable[[], Iterable[str]] | None = None,
        clock: Callable[[], float] = time.time,
        timing: "TimingLog | None" = None,
        fleet_proxies: Callable[[], Mapping[str, Collection[str]]] | None = None,
    ):
        if retention_s <= 0 or exact_window_s < 0 or max_samples_per_s <= 0:
            raise ValueError("retention_s and max_samples_per_s must be > 0 and exact_window_s >= 0")
        self.retention_s = float(retention_s)
        self.exact_window_s = float(min(exact_window_s, retention_s))
        self.max_samples_per_s = int(max_samples_per_s)
        self.log_names = frozenset(log_names) if log_names is not None else None
        self.proxies_alive = proxies_alive
        self.fleet_proxies = fleet_proxies
        self.clock = clock
        #: time to first body byte and per output token (Envoy's OpenTelemetry access logger; see timing_log)
        self.timing = timing if timing is not None else TimingLog(
            retention_s=retention_s, max_samples_per_s=max_samples_per_s, clock=clock,
            service_of=lambda cluster: self._service_of.get(cluster) or cluster.rsplit("-", 1)[0])
        self.started_at = clock()
        self._arms: dict[tuple[str, str], _Arm] = {}
        #: (cluster, traffic) -> totals since the process started; outlives an arm dropped after retention
        self.totals: dict[tuple[str, str], ArmTotals] = {}
        self._thins: dict[str, _Thin] = {}
        self._service_of: dict[str, str] = {}  # cluster -> service (registered or learned)
        self._grpc_client_codes: dict[str, frozenset[int]] = {}  # cluster -> codes that are not errors
        self._pinned: set[int] = set()
        self._streams: list[_Stream] = []
        self._next_stream = 0
        self.malformed_log = RateLimitedLog(log, "malformed access-log streams")  # shares the xDS port
        self._newest_sec: int | None = None  # newest start second seen (proxy clock)
        self._maintained_sec: int | None = None
        #: Called with every batch of entries of this process's own proxies as it is ingested (e.g. the
        #: latency-aware balancer); relayed entries are not.
        self.entry_listeners: list[Callable[[list[Entry]], None]] = []
        #: See every stream of this process's own proxies and its messages' bytes (the relay to the leader).
        self.stream_taps: list[StreamTap] = []
        #: Other replicas' relays, by replica id (control_plane/ha/relay.py).
        self.relays: dict[str, RelayOrigin] = {}
        self.counters: dict[str, int] = dict.fromkeys(
            ("messages", "entries", "live", "shadow", "pinned", "skipped", "unattributed", "expired", "ignored_messages"), 0
        )

    # ----------------------------------------------------------------- gRPC

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        """The gRPC services Envoy sends to: the access log, and the OTLP logs of the timing records."""
        return [self.handler(), self.timing.handler()]

    def handler(self) -> grpc.GenericRpcHandler:
        """The generic handler to pass to ``XdsServer(extra_handlers=[...])``."""
        return grpc.method_handlers_generic_handler(
            ALS_SERVICE,
            {
                ALS_METHOD: grpc.stream_unary_rpc_method_handler(
                    self._serve,
                    request_deserializer=None,  # raw bytes: a message that does not decode is ours to report
                    response_serializer=_identity,  # StreamAccessLogsResponse is empty
                )
            },
        )

    async def _serve(self, request_iterator, context) -> bytes:
        stream = self.open_stream(context.peer())
        taps = self.stream_taps
        for tap in taps:
            tap.on_open(stream)
        try:
            async for raw in request_iterator:
                self.ingest_message(wire.StreamAccessLogsMessage.FromString(raw), stream)
                for tap in taps:
                    tap.on_message(stream, raw)
            stream.clean = True
        except Exception as err:  # noqa: BLE001 - a broken stream ends this stream only; one line, rate-limited
            self.malformed_log.log(logging.INFO, "access-log stream from %s ended abnormally (%s: %s)",
                                   stream.node or stream.peer, type(err).__name__, " ".join(str(err).split())[:200])
        finally:
            self.close_stream(stream)
            for tap in taps:
                tap.on_close(stream)
        return b""

    # ----------------------------------------------------------------- streams

    def open_stream(self, peer: str = "", *, at: float | None = None, relay: str = "") -> _Stream:
        """A new stream (``relay``: one of that replica's proxies' streams, opened at ``at`` on its clock)."""
        self._next_stream += 1
        stream = _Stream(self._next_stream, peer, self.clock() if at is None else at, relay=relay)
        self._streams.append(stream)
        return stream

    def close_stream(self, stream: _Stream, at: float | None = None) -> None:
        stream.closed_at = self.clock() if at is None else at

    @property
    def open_streams(self) -> int:
        return sum(1 for s in self._streams if s.closed_at is None)

    # ----------------------------------------------------------------- ingest

    def ingest_message(self, msg: wire.StreamAccessLogsMessage, stream: _Stream | None = None, *,
                       notify: bool = True) -> int:
        """Account one message of a stream; returns the entries counted (``notify=False``: a relayed message,
        not for ``entry_listeners``)."""
        batch = decode_message(msg, self._grpc_client_codes)
        if stream is not None:
            stream.messages += 1
            if batch.identifier is not None:
                stream.node, stream.node_cluster, stream.log_name = batch.identifier
            if self.log_names is not None and stream.log_name not in self.log_names:
                self.counters["ignored_messages"] += 1
                return 0
            stream.upstream_entries += batch.upstream
        self.counters["messages"] += 1
        self.counters["skipped"] += batch.skipped
        return self.ingest(batch.entries, stream, notify=notify)

    def ingest(self, entries: list[Entry], stream: _Stream | None = None, *, notify: bool = True) -> int:
        """Account decoded entries (the receiver's path; tests call it directly)."""
        if not entries:
            return 0
        if notify:
            for listener in self.entry_listeners:
                listener(entries)
        now_sec = int(self.clock())
        cap = self.max_samples_per_s
        arms = self._arms
        pinned = self._pinned
        newest = self._newest_sec
        batch_newest = max(int(e[2]) for e in entries)
        if newest is None or batch_newest > newest:
            newest = self._newest_sec = batch_newest
        exact_cut = newest - self.exact_window_s
        horizon = newest - self.retention_s
        counted = expired = unattributed = 0
        kinds = {LIVE: 0, SHADOW: 0, PINNED: 0}
        clusters = set()
        for cluster, endpoint, start, latency, _code, error, traffic, route in entries:
            if not cluster:
                unattributed += 1
                continue
            if start < horizon:
                expired += 1
                continue
            arm = arms.get((cluster, traffic))
            if arm is None:
                arm = self._new_arm(cluster, traffic, route)
            clusters.add(cluster)
            epi = arm.ep_index.get(endpoint)
            if epi is None:
                epi = arm.endpoint_id(endpoint)
            sec = int(start)
            eps = arm.seconds.get(sec)
            if eps is None:
                eps = arm.seconds[sec] = {}
            b = eps.get(epi)
            if b is None:
                b = eps[epi] = _Bucket(sec >= exact_cut or sec in pinned)
            b.n += 1
            tot = arm.totals
            tot.requests += 1
            if b.offs is not None:
                off = start - sec
                b.offs.append(off)
                if error:
                    if b.eoffs is None:
                        b.eoffs = array("d")
                    b.eoffs.append(off)
            kinds[traffic] += 1
            counted += 1
            if error:
                b.err += 1
                tot.errors += 1
                continue
            th = arm.thin
            if th.sec != now_sec:
                th.roll(now_sec, cap)
            th.count += 1
            if th.count > th.check:
                th.overload(cap)
            th.acc += th.p
            if th.acc >= 1.0:
                th.acc -= 1.0
                arm.t.append(start)
                arm.lat.append(latency)
                arm.ep.append(epi)
                tot.observe(latency)
        c = self.counters
        c["entries"] += len(entries)
        c["unattributed"] += unattributed
        c["expired"] += expired
        for k, v in kinds.items():
            c[k] += v
        if stream is not None:
            stream.entries += counted
            stream.clusters |= clusters
        if self._maintained_sec != newest:
            self._maintain(newest)
        return counted

    def _new_arm(self, cluster: str, traffic: str, route: str) -> _Arm:
        service = self._service_of.get(cluster)
        if service is None:
            service = _service_from_route(route, cluster)
            if service is not None:
                self._service_of[cluster] = service
            else:  # the longest known service this cluster belongs to, else a guess
                known = [s for s in self._thins if cluster.startswith(s + "-")]
                service = max(known, key=len) if known else cluster.rsplit("-", 1)[0]
        totals = self.totals.get((cluster, traffic))
        if totals is None:
            totals = self.totals[(cluster, traffic)] = ArmTotals()
        arm = self._arms[(cluster, traffic)] = _Arm(cluster, traffic, self._thin(service), totals)
        return arm

    def _thin(self, service: str) -> _Thin:
        th = self._thins.get(service)
        if th is None:
            th = self._thins[service] = _Thin(service)
        return th

    def register(self, service: str, versions: Iterable[str], *, grpc_client_codes: Iterable[int] | None = None) -> None:
        """Tell the source which clusters form one service (thinning is shared per service).

        Without it the service of a cluster is learned from Weir's route names
        (``<service>-default``), from queries, or guessed as the cluster name
        up to its last ``-``. ``grpc_client_codes`` (a policy's
        ``analysis.grpcClientErrors``) are the gRPC codes that are not errors for
        this service's calls from now on.
        """
        codes = frozenset(grpc_client_codes) if grpc_client_codes is not None else None
        for version in versions:
            cluster = cluster_of(service, version)
            self._set_service(cluster, service)
            if codes is not None and codes != DEFAULT_GRPC_CLIENT_CODES:
                self._grpc_client_codes[cluster] = codes
            else:
                self._grpc_client_codes.pop(cluster, None)

    def _set_service(self, cluster: str, service: str) -> None:
        if self._service_of.get(cluster) == service:
            return
        self._service_of[cluster] = service
        th = self._thin(service)
        for kind in TRAFFIC_KINDS:
            arm = self._arms.get((cluster, kind))
            if arm is not None:
                arm.thin = th

    def pin(self, t: float) -> None:
        """Keep the per-request offsets of t's second, so that a window starting (or ending) at t stays exact."""
        self._pinned.add(math.floor(t))

    # ----------------------------------------------------------------- maintenance

    def _maintain(self, newest: int) -> None:
        """Drop offsets older than the exact window (unless pinned) and data older than retention."""
        self._maintained_sec = newest
        exact_cut = math.floor(newest - self.exact_window_s)
        horizon = math.floor(newest - self.retention_s)
        pinned = self._pinned
        if pinned:
            self._pinned = pinned = {s for s in pinned if s >= horizon}
        empty = []
        for key, arm in self._arms.items():
            secs = arm.seconds
            for attr, cut in (("evicted_to", horizon), ("compacted_to", exact_cut)):
                start = getattr(arm, attr)
                if start is None:
                    start = min(secs) if secs else cut
                if start < cut:
                    todo = range(start, cut) if cut - start <= len(secs) else [s for s in secs if start <= s < cut]
                    for s in todo:
                        eps = secs.get(s)
                        if eps is None:
                            continue
                        if attr == "evicted_to":
                            del secs[s]
                        elif s not in pinned:
                            for b in eps.values():
                                b.offs = b.eoffs = None
                setattr(arm, attr, max(start, cut))
            if arm.t and arm.t[0] < horizon:
                t = np.frombuffer(arm.t, dtype=np.float64)
                keep = np.flatnonzero(t >= horizon)
                k = int(keep[0]) if keep.size else len(t)
                del t, keep
                del arm.t[:k], arm.lat[:k], arm.ep[:k]
            if not secs and not arm.t:
                empty.append(key)
        for key in empty:
            del self._arms[key]
        wall_horizon = self.clock() - self.retention_s
        self._streams = [s for s in self._streams if s.closed_at is None or s.closed_at >= wall_horizon]

    @property
    def horizon(self) -> float | None:
        """Oldest start time still kept in full (None before any entry)."""
        if self._newest_sec is None:
            return None
        return float(math.floor(self._newest_sec - self.retention_s))

    # ----------------------------------------------------------------- queries

    def samples(
        self,
        service: str,
        version: str,
        since: float,
        until: float | None = None,
        *,
        endpoint: str | None = None,
        traffic: str = LIVE,
    ) -> ArmSamples:
        """Cumulative samples of requests to ``service``/``version`` that started in [since, until).

        ``endpoint`` ("ip:port") narrows to one endpoint; ``traffic`` is
        ``live`` (default), ``shadow`` or ``pinned``.
        """
        if traffic not in TRAFFIC_KINDS:
            raise ValueError(f"traffic must be one of {', '.join(TRAFFIC_KINDS)} (got {traffic!r})")
        cluster = cluster_of(service, version)
        self._set_service(cluster, service)
        arm = self._arms.get((cluster, traffic))
        self.pin(since)
        if until is not None:
            self.pin(until)
        if arm is None:
            return ArmSamples()
        epi = None
        if endpoint is not None:
            epi = arm.ep_index.get(endpoint)
            if epi is None:
                return ArmSamples()
        lo, hi = self._effective_window(arm, since, until)
        if hi <= lo:
            return ArmSamples()
        n, err = arm.counts(lo, hi, epi)
        samples = ArmSamples(requests=n, errors=err, latencies_ms=arm.latencies(lo, hi, epi))
        if self.timing is not None and endpoint is None:
            samples.ttfb_ms, samples.tpot_ms = self.timing.samples(cluster, traffic, lo, hi if not math.isinf(hi) else None)
        return samples

    def window(self, service: str, version: str, since: float, until: float | None = None, *,
               traffic: str = LIVE) -> "ArmWindow":
        """Copies of one arm's per-second counts and time-stamped latency samples in [since, until), for plots.

        Unlike :meth:`samples` it pins nothing (plots may ask about any window without
        making the source keep per-request offsets) and counts whole seconds. Copies,
        so the caller may work on them in a thread while entries keep arriving.
        """
        cluster = cluster_of(service, version)
        arm = self._arms.get((cluster, traffic))
        hi = math.inf if until is None else until
        if arm is None:
            return ArmWindow.empty()
        secs = sorted(s for s in arm.seconds if since - 1 < s < hi)
        seconds = np.array(secs, dtype=np.int64)
        requests = np.array([sum(b.n for b in arm.seconds[s].values()) for s in secs], dtype=np.int64)
        errors = np.array([sum(b.err for b in arm.seconds[s].values()) for s in secs], dtype=np.int64)
        t = np.frombuffer(arm.t, dtype=np.float64) if arm.t else np.empty(0)
        mask = (t >= since) & (t < hi)
        lat_t = t[mask].copy()
        lat = np.frombuffer(arm.lat, dtype=np.float32)[mask].astype(np.float64) if arm.t else np.empty(0)
        ttfb_t, ttfb = (self.timing.timed(cluster, traffic, since, until) if self.timing is not None
                        else (np.empty(0), np.empty(0)))
        return ArmWindow(seconds, requests, errors, lat_t, lat, ttfb_t, ttfb)

    def service_version(self, cluster: str) -> tuple[str, str]:
        """(service, version) of a ``<service>-<version>`` cluster (the registered split when known)."""
        service = self._service_of.get(cluster)
        if service is not None and cluster.startswith(service + "-"):
            return service, cluster[len(service) + 1:]
        head, _, tail = cluster.rpartition("-")
        return (head, tail) if head else (cluster, "")

    def samples_by_endpoint(
        self, service: str, version: str, since: float, until: float | None = None, *, traffic: str = LIVE
    ) -> dict[str, ArmSamples]:
        """:meth:`samples` for each endpoint of the arm that has had traffic."""
        arm = self._arms.get((cluster_of(service, version), traffic))
        if arm is None:
            return {}
        return {
            ep: self.samples(service, version, since, until, endpoint=ep, traffic=traffic)
            for ep in arm.endpoints
        }

    def _effective_window(self, arm: _Arm, since: float, until: float | None) -> tuple[float, float]:
        """[since, until) narrowed to what can be counted exactly: a boundary second without
        offsets is left out whole, and nothing older than the retention horizon counts."""
        lo = float(since)
        if not arm.boundary_exact(lo):
            lo = float(math.floor(lo) + 1)
        horizon = self.horizon
        if horizon is not None and lo < horizon:
            lo = horizon
        hi = math.inf if until is None else float(until)
        if not math.isinf(hi) and not arm.boundary_exact(hi):
            hi = float(math.floor(hi))
        return lo, hi

    # ----------------------------------------------------------------- MetricSource

    async def arm_samples(
        self, service: str, version: str, since: float, *, shadow: bool = False, until: float | None = None
    ) -> ArmSamples:
        return self.samples(service, version, since, until, traffic=SHADOW if shadow else LIVE)

    async def is_online(self) -> bool:
        """True while at least one proxy's access-log stream is open."""
        return self.open_streams > 0

    async def coverage(self, service: str, since: float, *, until: float | None = None, shadow: bool = False) -> Coverage:
        return self.coverage_now(service, since, until, shadow=shadow)

    def coverage_now(self, service: str, since: float, until: float | None = None, *, shadow: bool = False) -> Coverage:
        """Whether entries of ``service`` in [since, until) may be missing, and why."""
        now = self.clock()
        end = now if until is None else min(until, now)
        cov = Coverage(self.name, since, until)
        if self.started_at > since:
            cov.missing(
                f"the access-log receiver started at {_iso(self.started_at)}, after the window began "
                f"({_iso(since)}): requests before it were not seen"
            )
        horizon = self.horizon
        if horizon is not None and since < horizon:
            cov.missing(f"the window begins before the oldest data kept ({_iso(horizon)}, retention {self.retention_s:g} s)")
        prefix = service + "-"
        arms = [a for (c, _), a in self._arms.items() if c.startswith(prefix)]
        inexact = [a.cluster for a in arms if not a.boundary_exact(since) or (until is not None and not a.boundary_exact(until))]
        if inexact:
            cov.missing(
                "the window's boundary second is older than the exact window and was not pinned: "
                f"requests of that second are left out ({', '.join(sorted(set(inexact)))})"
            )
        if not self._streams:
            cov.missing("no proxy has opened an access-log stream since the receiver started")
        relevant = {s.node or s.peer for s in self._streams if any(c.startswith(prefix) for c in s.clusters)}
        gaps = []
        by_node: dict[str, list[_Stream]] = {}
        for s in self._streams:
            by_node.setdefault(s.node or s.peer, []).append(s)
        fleet = {r: set(nodes) for r, nodes in self.fleet_proxies().items() if nodes} if self.fleet_proxies else {}
        alive = set(self.proxies_alive()) if self.proxies_alive is not None else None
        if alive is not None:
            for nodes in fleet.values():
                alive |= nodes
        for node, streams in by_node.items():
            if relevant and node not in relevant:
                continue
            for gap_start, gap_end in _node_gaps(streams):
                if gap_end is None and alive is not None and node not in alive:
                    continue  # the proxy is gone (no xDS stream either): it serves nothing, loses nothing
                if gap_start < end and (gap_end is None or gap_end > since):
                    gaps.append({"node": node, "from": gap_start, "to": gap_end})
        if gaps:
            cov.missing(
                f"{len(gaps)} access-log stream gap(s) in the window (entries are dropped while a proxy has no stream): "
                + "; ".join(f"{g['node']} from {_iso(g['from'])} to {_iso(g['to']) if g['to'] else 'now'}" for g in gaps[:5])
            )
        relays = self._relay_coverage(cov, fleet, relevant, since, end)
        if shadow and not any(s.upstream_entries for s in self._streams):
            cov.missing(
                "no upstream access-log entries seen: mirrored requests reach the access log only through the "
                "router filter's upstream_log, so shadow traffic is invisible"
            )
        cov.details = {
            "streams_open": self.open_streams,
            "nodes": sorted(by_node),
            "gaps": gaps,
            "receiver_started_at": self.started_at,
            "horizon": horizon,
            "thinned_services": sorted(t.service for t in self._thins.values() if t.thinned),
            **({"relays": relays} if relays else {}),
        }
        return cov

    def _relay_coverage(self, cov: Coverage, fleet: dict[str, set[str]], relevant: set[str], since: float,
                        end: float) -> dict[str, Any]:
        """Coverage of the proxies other replicas serve: their relay must have delivered the whole window."""
        out: dict[str, Any] = {}
        for replica, nodes in sorted(fleet.items()):
            origin = self.relays.get(replica)
            shown = ", ".join(sorted(nodes)[:5]) + (f" and {len(nodes) - 5} more" if len(nodes) > 5 else "")
            proxies = f"{len(nodes)} prox{'y' if len(nodes) == 1 else 'ies'} ({shown})"
            if origin is None:
                cov.missing(f"replica {replica} serves {proxies} whose access logs do not reach this replica "
                            "(its relay has not connected)")
                out[replica] = {"connected": False}
                continue
            out[replica] = origin.to_json()
            if origin.complete_since > since:
                cov.missing(f"the relay from replica {replica} holds the access logs of its {proxies} only since "
                            f"{_iso(origin.complete_since)}, after the window began ({_iso(since)})")
            if relevant and origin.nodes_seen and not (origin.nodes_seen & relevant):
                continue  # its proxies never carried this service
            lost = [(a, b) for a, b in origin.gaps if a < end and b > since]
            if not origin.connected and origin.disconnected_at is not None:
                lost.append((origin.disconnected_at, None))
            if lost:
                cov.missing(
                    f"the relay from replica {replica} lost access-log entries of its {proxies} in the window: "
                    + "; ".join(f"from {_iso(a)} to {_iso(b) if b else 'now'}" for a, b in lost[:5])
                )
        return out

    # ----------------------------------------------------------------- introspection

    def endpoints(self, service: str, version: str, traffic: str = LIVE) -> list[str]:
        arm = self._arms.get((cluster_of(service, version), traffic))
        return list(arm.endpoints) if arm else []

    def memory(self) -> dict[str, int]:
        """What is held: buckets, per-request offsets, latency samples, and a byte estimate."""
        buckets = offsets = samples = 0
        for arm in self._arms.values():
            samples += len(arm.t)
            for eps in arm.seconds.values():
                buckets += len(eps)
                for b in eps.values():
                    offsets += (len(b.offs) if b.offs is not None else 0) + (len(b.eoffs) if b.eoffs is not None else 0)
        return {
            "arms": len(self._arms),
            "buckets": buckets,
            "offsets": offsets,
            "latency_samples": samples,
            "approx_bytes": buckets * 200 + offsets * 8 + samples * 14,
        }


def _service_from_route(route: str, cluster: str) -> str | None:
    """Weir's route names carry the service: ``<service>-default`` / ``<service>-header-<i>``."""
    if route.endswith(_DEFAULT_ROUTE_SUFFIX):
        service = route[: -len(_DEFAULT_ROUTE_SUFFIX)]
    else:
        m = _HEADER_ROUTE.match(route)
        if m is None:
            return None
        service = m.group("service")
    return service if cluster.startswith(service + "-") else None


def _node_gaps(streams: list[_Stream]) -> list[tuple[float, float | None]]:
    """Intervals during which a proxy had no open stream after having had one.

    A proxy opens its stream(s) lazily and keeps them; a stream that ends while
    no other stream of the proxy is open starts a gap, which lasts until the
    proxy's next stream opens (``None``: still open).
    """
    events = sorted(
        [(s.opened_at, 1) for s in streams] + [(s.closed_at, -1) for s in streams if s.closed_at is not None]
    )
    gaps = []
    open_count = 0
    gap_start = None
    for t, delta in events:
        open_count += delta
        if delta < 0 and open_count == 0:
            gap_start = t
        elif delta > 0 and gap_start is not None:
            if t > gap_start:
                gaps.append((gap_start, t))
            gap_start = None
    if gap_start is not None:
        gaps.append((gap_start, None))
    return gaps


def _iso(t: float | None) -> str:
    if t is None:
        return "?"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int((t % 1) * 1000):03d}Z"
