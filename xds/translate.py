"""Desired routing -> Envoy resources (envoy-data-plane / betterproto2 messages).

Pure and deterministic: the same ``DesiredRouting`` always gives byte-identical
``bytes(resource)``, because the snapshot cache versions each resource by the
hash of its bytes and a spurious byte change would push to every proxy.
Everything whose order carries no meaning is sorted (services by port then
name, clusters and endpoints by name/address); route order is meaningful and
follows the rules below.

Layout:

* one Listener and one RouteConfiguration per port (``weir_listener_{port}`` /
  ``weir_route_{port}``), routes fetched over RDS on the ADS stream;
* per service, normally one virtual host named after it with its domains. Envoy
  NACKs a RouteConfiguration in which two virtual hosts share a domain, so when
  services on one port share a domain (with different path prefixes, as
  validation demands) that domain gets one virtual host holding the routes of
  every service claiming it, longest path prefix first; a wildcard service
  (``*``) also serves as the fallback inside more specific hosts;
* per service: header routes first (testers pinned to a version), then the
  default weighted route (mirror and sticky hashing apply to it);
* one EDS cluster and one ClusterLoadAssignment per (service, version).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import groupby

# Modules imported for their message types *and* so Any.pack/unpack can find the
# type URLs of the messages we pack (registered at import time).
from envoy_data_plane.envoy.config.accesslog import v3 as accesslog_v3
from envoy_data_plane.envoy.config.cluster import v3 as cluster_v3
from envoy_data_plane.envoy.config.core import v3 as core_v3
from envoy_data_plane.envoy.config.endpoint import v3 as endpoint_v3
from envoy_data_plane.envoy.config.listener import v3 as listener_v3
from envoy_data_plane.envoy.config.route import v3 as route_v3
from envoy_data_plane.envoy.extensions.access_loggers.grpc import v3 as grpc_log_v3
from envoy_data_plane.envoy.extensions.access_loggers.open_telemetry import v3 as otel_log_v3
from envoy_data_plane.opentelemetry.proto.common import v1 as otel_common_v1
from envoy_data_plane.envoy.extensions.filters.http.router import v3 as router_v3
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm_v3
from envoy_data_plane.envoy.extensions.upstreams.http import v3 as upstream_http_v3
from envoy_data_plane.envoy.type.matcher import v3 as matcher_v3
from envoy_data_plane.envoy.type import v3 as type_v3
from envoy_data_plane.google.protobuf import Any as AnyMessage

from .log_formats import TIMING_ATTRIBUTES, TIMING_LOG_NAME
from .routing import Backend, DesiredRouting, Endpoint, ServiceRouting, retry_conditions

__all__ = [
    "ACCESS_LOG_NAME",
    "EnvoyResources",
    "fractional_percent",
    "LISTENER_NAME",
    "ROUTE_NAME",
    "listener_name",
    "route_name",
    "translate",
]

LISTENER_NAME = "weir_listener_{port}"
ROUTE_NAME = "weir_route_{port}"
#: ``log_name`` of the gRPC access log; the access-log service can tell our streams by it.
ACCESS_LOG_NAME = "weir"

_CONNECT_TIMEOUT = timedelta(seconds=1)
_ACCESS_LOG_FLUSH = timedelta(milliseconds=100)
_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
#: gRPC puts its status in trailers, or in headers for a trailers-only response: log both.
GRPC_STATUS = "grpc-status"


def listener_name(port: int) -> str:
    return LISTENER_NAME.format(port=port)


def route_name(port: int) -> str:
    return ROUTE_NAME.format(port=port)


@dataclass
class EnvoyResources:
    """One complete configuration, one list per xDS type, each in a stable order."""

    listeners: list[listener_v3.Listener] = field(default_factory=list)
    routes: list[route_v3.RouteConfiguration] = field(default_factory=list)
    clusters: list[cluster_v3.Cluster] = field(default_factory=list)
    endpoints: list[endpoint_v3.ClusterLoadAssignment] = field(default_factory=list)


def translate(routing: DesiredRouting, *, access_log_cluster: str | None = None) -> EnvoyResources:
    """Envoy resources for ``routing``.

    ``access_log_cluster`` names the bootstrap cluster of Weir's access-log
    service (``bootstrap.CONTROL_PLANE_CLUSTER``); when set, every listener
    streams each request's log entry there.
    """
    services = sorted(routing.services, key=lambda s: (s.port, s.name))
    out = EnvoyResources()
    for port, group in groupby(services, key=lambda s: s.port):
        on_port = list(group)
        out.listeners.append(_listener(routing.listen_address, port, access_log_cluster))
        out.routes.append(_route_configuration(port, on_port))
    for service in services:
        for backend in service.backends:
            name = service.cluster_name(backend.version)
            out.clusters.append(_cluster(service, name, backend))
            out.endpoints.append(_load_assignment(name, backend.endpoints))
    out.clusters.sort(key=lambda c: c.name)
    out.endpoints.sort(key=lambda e: e.cluster_name)
    return out


# --------------------------------------------------------------------------- listeners


def _ads() -> core_v3.ConfigSource:
    """Fetch over the same ADS stream the bootstrap opened (ordering guarantees)."""
    return core_v3.ConfigSource(ads=core_v3.AggregatedConfigSource(), resource_api_version=core_v3.ApiVersion.V3)


def _socket_address(host: str, port: int) -> core_v3.Address:
    return core_v3.Address(socket_address=core_v3.SocketAddress(address=host, port_value=port))


def _listener(address: str, port: int, access_log_cluster: str | None) -> listener_v3.Listener:
    access_log = [_access_log(access_log_cluster), _timing_log(access_log_cluster)] if access_log_cluster else []
    # Envoy logs mirrored (shadow) requests only through the router's
    # upstream_log (as UpstreamEnd entries with a "-shadow" Host), never in the
    # listener's access log: shadow analysis needs both.
    router = router_v3.Router(upstream_log=list(access_log))
    manager = hcm_v3.HttpConnectionManager(
        codec_type=hcm_v3.HttpConnectionManagerCodecType.AUTO,
        stat_prefix=f"weir_{port}",
        rds=hcm_v3.Rds(config_source=_ads(), route_config_name=route_name(port)),
        http_filters=[hcm_v3.HttpFilter(name="envoy.filters.http.router", typed_config=AnyMessage.pack(router))],
        # ApacheBench (and other load tools) still speak HTTP/1.0.
        http_protocol_options=core_v3.Http1ProtocolOptions(accept_http_10=True),
        access_log=access_log,
    )
    chain = listener_v3.FilterChain(
        filters=[
            listener_v3.Filter(
                name="envoy.filters.network.http_connection_manager", typed_config=AnyMessage.pack(manager)
            )
        ]
    )
    return listener_v3.Listener(
        name=listener_name(port), address=_socket_address(address, port), filter_chains=[chain]
    )


def _access_log(cluster: str) -> accesslog_v3.AccessLog:
    """Stream every request's log entry to Weir: the analysis reads traffic from it."""
    config = grpc_log_v3.HttpGrpcAccessLogConfig(
        common_config=grpc_log_v3.CommonGrpcAccessLogConfig(
            log_name=ACCESS_LOG_NAME,
            grpc_service=core_v3.GrpcService(envoy_grpc=core_v3.GrpcServiceEnvoyGrpc(cluster_name=cluster)),
            transport_api_version=core_v3.ApiVersion.V3,
            buffer_flush_interval=_ACCESS_LOG_FLUSH,
        ),
        additional_response_headers_to_log=[GRPC_STATUS],
        additional_response_trailers_to_log=[GRPC_STATUS],
    )
    return accesslog_v3.AccessLog(name="envoy.access_loggers.http_grpc", typed_config=AnyMessage.pack(config))


def _timing_log(cluster: str) -> accesslog_v3.AccessLog:
    """Per-request timings the gRPC access log cannot carry (first body byte, tokens), as OTLP log records."""
    attributes = otel_common_v1.KeyValueList(values=[
        otel_common_v1.KeyValue(key=key, value=otel_common_v1.AnyValue(string_value=fmt))
        for key, fmt in TIMING_ATTRIBUTES.items()
    ])
    config = otel_log_v3.OpenTelemetryAccessLogConfig(
        log_name=TIMING_LOG_NAME,
        grpc_service=core_v3.GrpcService(envoy_grpc=core_v3.GrpcServiceEnvoyGrpc(cluster_name=cluster)),
        buffer_flush_interval=_ACCESS_LOG_FLUSH,
        attributes=attributes,
        disable_builtin_labels=True,
    )
    return accesslog_v3.AccessLog(name="envoy.access_loggers.open_telemetry", typed_config=AnyMessage.pack(config))


# --------------------------------------------------------------------------- routes


def _route_configuration(port: int, services: list[ServiceRouting]) -> route_v3.RouteConfiguration:
    return route_v3.RouteConfiguration(name=route_name(port), virtual_hosts=_virtual_hosts(services))


def _virtual_hosts(services: list[ServiceRouting]) -> list[route_v3.VirtualHost]:
    """One virtual host per distinct set of services claiming a domain.

    Without shared domains this is exactly one virtual host per service, named
    after it. A domain claimed by several services becomes one virtual host
    named ``a+b`` holding all their routes (Envoy forbids a domain in two
    virtual hosts).
    """
    claimants: dict[str, list[str]] = {}
    for service in services:
        for domain in service.domains:
            claimants.setdefault(domain.lower(), []).append(service.name)
    groups: dict[tuple[str, ...], list[str]] = {}
    for domain, names in claimants.items():
        groups.setdefault(tuple(sorted(set(names))), []).append(domain)
    by_name = {s.name: s for s in services}
    hosts = []
    for names, domains in sorted(groups.items()):
        primary = [by_name[n] for n in names]
        fallback = [
            s
            for s in services
            if s.name not in names and _covers_all(s.domains, domains) and not _shadowed(s, primary)
        ]
        hosts.append(
            route_v3.VirtualHost(
                name="+".join(names),
                domains=sorted(domains),
                routes=_routes_by_prefix(primary) + _routes_by_prefix(fallback),
            )
        )
    return hosts


def _shadowed(service: ServiceRouting, by: list[ServiceRouting]) -> bool:
    """A fallback route that an earlier catch-all default route would always win over."""
    return any(service.path_prefix.startswith(other.path_prefix) for other in by)


def _covers_all(patterns: Iterable[str], domains: Iterable[str]) -> bool:
    """True when every domain is matched by one of Envoy's wildcard ``patterns``."""
    wildcards = [p.lower() for p in patterns if "*" in p]
    return bool(wildcards) and all(any(_covers(w, d) for w in wildcards) for d in domains)


def _covers(pattern: str, domain: str) -> bool:
    """Envoy's wildcard domains: ``*``, suffix ``*.example.com``, prefix ``example.*``."""
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        return domain.endswith(pattern[1:]) and len(domain) > len(pattern) - 1
    if pattern.endswith("*"):
        return domain.startswith(pattern[:-1]) and len(domain) > len(pattern) - 1
    return False


def _routes_by_prefix(services: list[ServiceRouting]) -> list[route_v3.Route]:
    """Envoy takes the first matching route: longer (more specific) prefixes go first."""
    ordered = sorted(services, key=lambda s: (-len(s.path_prefix), s.path_prefix, s.name))
    return [route for service in ordered for route in _service_routes(service)]


def _service_routes(service: ServiceRouting) -> list[route_v3.Route]:
    """Header routes (in the order given), then the default split route."""
    routes = [
        route_v3.Route(
            name=f"{service.name}-header-{i}",
            match=route_v3.RouteMatch(
                prefix=service.path_prefix,
                headers=[
                    route_v3.HeaderMatcher(
                        name=rule.header, string_match=matcher_v3.StringMatcher(exact=rule.exact)
                    )
                ],
            ),
            route=route_v3.RouteAction(
                cluster=service.cluster_name(rule.version), timeout=service.timeout, retry_policy=retry_policy(service)
            ),
        )
        for i, rule in enumerate(service.header_routes)
    ]
    routes.append(
        route_v3.Route(
            name=f"{service.name}-default",
            match=route_v3.RouteMatch(prefix=service.path_prefix),
            route=_split_action(service),
        )
    )
    return routes


def _split_action(service: ServiceRouting) -> route_v3.RouteAction:
    """The live-traffic route: weights, shadow traffic and stickiness.

    Weighted clusters keep the backends' order. With a sticky header Envoy maps
    the hash onto consecutive weight ranges in that order, so listing the canary
    last means growing its weight only ever moves users onto it, never off it.
    """
    common = dict(
        timeout=service.timeout,
        request_mirror_policies=_mirror_policies(service),
        hash_policy=_hash_policy(service),
        retry_policy=retry_policy(service),
    )
    whole = [v for v, w in service.split.items() if w == 100]
    if whole:
        return route_v3.RouteAction(cluster=service.cluster_name(whole[0]), **common)
    weighted = route_v3.WeightedCluster(
        clusters=[
            route_v3.WeightedClusterClusterWeight(
                name=service.cluster_name(b.version), weight=service.split[b.version]
            )
            for b in service.backends
            if b.version in service.split
        ],
        # Envoy >= 1.29: pick the cluster from the request hash, not at random.
        use_hash_policy=True if service.sticky_header else None,
    )
    return route_v3.RouteAction(weighted_clusters=weighted, **common)


def retry_policy(service: ServiceRouting) -> route_v3.RetryPolicy | None:
    retries = service.retries
    if retries.attempts == 0:
        return None
    return route_v3.RetryPolicy(retry_on=retry_conditions(retries), num_retries=retries.attempts)


def _mirror_policies(service: ServiceRouting) -> list[route_v3.RouteActionRequestMirrorPolicy]:
    mirror = service.mirror
    if mirror is None or mirror.percent <= 0:
        return []
    return [
        route_v3.RouteActionRequestMirrorPolicy(
            cluster=service.cluster_name(mirror.version),
            runtime_fraction=core_v3.RuntimeFractionalPercent(default_value=fractional_percent(mirror.percent)),
        )
    ]


def fractional_percent(percent: float) -> type_v3.FractionalPercent:
    """Whole percentages as n/100; anything finer as n/1,000,000 (Envoy's finest)."""
    if float(percent).is_integer():
        return type_v3.FractionalPercent(
            numerator=int(percent), denominator=type_v3.FractionalPercentDenominatorType.HUNDRED
        )
    return type_v3.FractionalPercent(
        numerator=round(percent * 10_000), denominator=type_v3.FractionalPercentDenominatorType.MILLION
    )


def _hash_policy(service: ServiceRouting) -> list[route_v3.RouteActionHashPolicy]:
    if not service.sticky_header:
        return []
    return [route_v3.RouteActionHashPolicy(header=route_v3.RouteActionHashPolicyHeader(header_name=service.sticky_header))]


# --------------------------------------------------------------------------- clusters and endpoints


def _protocol_options(service: ServiceRouting) -> dict[str, AnyMessage]:
    """HTTP/1.1 or HTTP/2 (h2c) to the upstream, and an idle timeout below the servers' keep-alive."""
    if service.protocol in ("http2", "grpc"):
        explicit = upstream_http_v3.HttpProtocolOptionsExplicitHttpConfig(http2_protocol_options=core_v3.Http2ProtocolOptions())
    else:
        explicit = upstream_http_v3.HttpProtocolOptionsExplicitHttpConfig(http_protocol_options=core_v3.Http1ProtocolOptions())
    options = upstream_http_v3.HttpProtocolOptions(
        common_http_protocol_options=core_v3.HttpProtocolOptions(idle_timeout=service.idle_timeout),
        explicit_http_config=explicit,
    )
    return {_HTTP_OPTIONS: AnyMessage.pack(options)}


def _health_checks(service: ServiceRouting, backend: Backend) -> list[core_v3.HealthCheck]:
    check = backend.health_check
    if check is None:
        return []
    common = dict(
        timeout=check.timeout, interval=check.interval,
        unhealthy_threshold=check.unhealthy_threshold, healthy_threshold=check.healthy_threshold,
    )
    if check.grpc_service is not None:
        return [core_v3.HealthCheck(grpc_health_check=core_v3.HealthCheckGrpcHealthCheck(service_name=check.grpc_service),
                                    **common)]
    h2 = service.protocol in ("http2", "grpc")
    http = core_v3.HealthCheckHttpHealthCheck(
        path=check.path,
        expected_statuses=[type_v3.Int64Range(start=check.expected_status, end=check.expected_status + 1)],
        codec_client_type=type_v3.CodecClientType.HTTP2 if h2 else type_v3.CodecClientType.HTTP1,
    )
    return [core_v3.HealthCheck(http_health_check=http, **common)]


def _cluster(service: ServiceRouting, name: str, backend: Backend) -> cluster_v3.Cluster:
    """An EDS cluster for one version; endpoints arrive separately on the ADS stream."""
    least_request = service.lb_policy == "least-request"
    extra: dict[str, object] = {}
    if least_request and (service.least_request_choice_count is not None or service.least_request_active_bias is not None):
        bias = None
        if service.least_request_active_bias is not None:
            bias = core_v3.RuntimeDouble(default_value=service.least_request_active_bias,
                                         runtime_key="weir.least_request.active_request_bias")
        extra["least_request_lb_config"] = cluster_v3.ClusterLeastRequestLbConfig(
            choice_count=service.least_request_choice_count, active_request_bias=bias,
        )
    if service.outlier_detection is not None:
        od = service.outlier_detection
        extra["outlier_detection"] = cluster_v3.OutlierDetection(
            consecutive_5xx=od.consecutive_5xx,
            base_ejection_time=od.base_ejection_time,
            max_ejection_percent=od.max_ejection_percent,
        )
    health_checks = _health_checks(service, backend)
    if health_checks:
        extra["health_checks"] = health_checks
        # Envoy's panic mode sends traffic to unhealthy hosts once fewer than 50% are healthy; an
        # unready model must never get traffic, and new hosts wait for their first check.
        extra["common_lb_config"] = cluster_v3.ClusterCommonLbConfig(
            healthy_panic_threshold=type_v3.Percent(value=0.0), ignore_new_hosts_until_first_hc=True,
        )
    return cluster_v3.Cluster(
        name=name,
        type=cluster_v3.ClusterDiscoveryType.EDS,
        eds_cluster_config=cluster_v3.ClusterEdsClusterConfig(eds_config=_ads()),
        connect_timeout=_CONNECT_TIMEOUT,
        typed_extension_protocol_options=_protocol_options(service),
        lb_policy=cluster_v3.ClusterLbPolicy.LEAST_REQUEST if least_request else cluster_v3.ClusterLbPolicy.ROUND_ROBIN,
        **extra,
    )


def _load_assignment(cluster: str, endpoints: list[Endpoint]) -> endpoint_v3.ClusterLoadAssignment:
    """One weighted locality (proxyless gRPC silently drops localities without a
    weight); endpoints sorted so discovery order never changes the bytes."""
    ordered = sorted(endpoints, key=lambda e: (e.host, e.port))
    return endpoint_v3.ClusterLoadAssignment(
        cluster_name=cluster,
        endpoints=[
            endpoint_v3.LocalityLbEndpoints(
                load_balancing_weight=1,
                lb_endpoints=[
                    endpoint_v3.LbEndpoint(
                        endpoint=endpoint_v3.Endpoint(address=_socket_address(e.host, e.port)),
                        load_balancing_weight=e.weight,
                    )
                    for e in ordered
                ],
            )
        ],
    )
