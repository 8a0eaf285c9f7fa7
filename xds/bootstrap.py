"""Envoy bootstrap: the few lines of static config that point a proxy at Weir.

Everything else (listeners, routes, clusters, endpoints) arrives over one ADS
stream, so a proxy needs only its identity, the control-plane cluster and an
admin port. The result is a plain JSON-able dict in Envoy's v3 JSON; write it
with ``json.dump`` (JSON is valid YAML too) and start ``envoy -c FILE``.
"""

from __future__ import annotations

from typing import Any, Sequence

from policies.endpoints import is_ip_literal

from .tls import ClientTls, upstream_tls_transport_socket

__all__ = ["CONTROL_PLANE_CLUSTER", "render_bootstrap"]

#: The bootstrap's only static cluster: the ADS stream goes there, and so do the
#: access logs of the listeners Weir generates (``translate(access_log_cluster=...)``).
CONTROL_PLANE_CLUSTER = "weir_control_plane"

_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def render_bootstrap(
    node_id: str,
    cluster: str,
    xds_host: str,
    xds_port: int,
    *,
    delta: bool = False,
    admin_port: int = 9901,
    admin_address: str = "127.0.0.1",
    tls: ClientTls | None = None,
    standby_xds: Sequence[tuple[str, int]] = (),
) -> dict[str, Any]:
    """Bootstrap for one proxy ``node_id`` in node cluster ``cluster`` (Weir's proxy group).

    ``delta`` selects incremental xDS (DELTA_GRPC) instead of state-of-the-world.
    ``xds_host`` may be an IP literal (STATIC cluster) or a DNS name (STRICT_DNS,
    re-resolved by Envoy, e.g. a Kubernetes Service name). ``tls`` makes the
    control-plane connection mutual TLS (:mod:`xds.tls`; the server name is
    ``xds_host``, so one certificate names every replica).
    ``standby_xds``: more Weir replicas (``weir serve --store etcd://...``); see
    :func:`_replicas`.
    """
    _require(bool(node_id), f"node_id must not be empty (got {node_id!r})")
    _require(bool(cluster), f"cluster must not be empty (got {cluster!r})")
    _require(bool(xds_host), f"xds_host must not be empty (got {xds_host!r})")
    _require_port("xds_port", xds_port)
    for host, port in standby_xds:
        _require(bool(host), f"a standby xDS host must not be empty (got {host!r})")
        _require_port("standby xDS port", port)
    _require_port("admin_port", admin_port, lowest=0)  # 0: Envoy picks (see --admin-address-path)
    _require(is_ip_literal(admin_address), f"admin_address must be an IP address (got {admin_address!r})")
    control_plane = _control_plane_cluster(xds_host, xds_port, standby_xds)
    if tls is not None:
        control_plane["transport_socket"] = upstream_tls_transport_socket(tls, xds_host)
    return {
        "node": {"id": node_id, "cluster": cluster},
        "dynamic_resources": _dynamic_resources(delta),
        "static_resources": {"clusters": [control_plane]},
        "admin": {"address": _socket_address(admin_address, admin_port)},
        # Histograms reach /stats (and Prometheus) only on a stats flush; the
        # default 5 s is too coarse for the envoy-stats analysis source.
        "stats_flush_interval": "1s",
    }


def _dynamic_resources(delta: bool) -> dict[str, Any]:
    ads = {"ads": {}, "resource_api_version": "V3"}
    return {
        "ads_config": {
            "api_type": "DELTA_GRPC" if delta else "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [{"envoy_grpc": {"cluster_name": CONTROL_PLANE_CLUSTER}}],
            # Otherwise every request repeats the full Node (~61 KB of extension list).
            "set_node_on_first_message_only": True,
        },
        "lds_config": dict(ads),
        "cds_config": dict(ads),
    }


def _control_plane_cluster(host: str, port: int, standby: Sequence[tuple[str, int]] = ()) -> dict[str, Any]:
    """HTTP/2 (gRPC) cluster to Weir; STATIC for an IP, STRICT_DNS for a name.

    For a name, IPv4 is preferred: Envoy's default (AUTO) picks ``::1`` for
    ``localhost`` while Weir listens on 127.0.0.1 by default, and the failed
    connections are logged below warning level, so the proxy silently never
    connects. A name with only IPv6 addresses still works (V4_PREFERRED falls back).
    """
    hosts = [host, *(h for h, _ in standby)]
    all_ips = all(is_ip_literal(h) for h in hosts)
    cluster: dict[str, Any] = {
        "name": CONTROL_PLANE_CLUSTER,
        "type": "STATIC" if all_ips else "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            _HTTP_OPTIONS: {
                "@type": f"type.googleapis.com/{_HTTP_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": CONTROL_PLANE_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket_address(host, port)}}]}],
        },
    }
    if standby:
        _replicas(cluster, standby)
    if not all_ips:
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    return cluster


def _replicas(cluster: dict[str, Any], standby: Sequence[tuple[str, int]]) -> None:
    """Several Weir replicas: the first is preferred, the others take over when it is down.

    Every replica serves the same routing (same resource versions), so the
    ADS stream may land on any. The first address is priority 0 and the rest
    priority 1, balanced among themselves; a TCP health check every second
    (two failures mark a replica down, one success brings it back) moves a
    proxy whose replica died to a standby within about two seconds plus
    Envoy's reconnect back-off. List the replica nearest the proxy (its zone)
    first, and spread a fleet by giving proxies different first addresses.
    """
    endpoints = cluster["load_assignment"]["endpoints"]
    endpoints.append({"priority": 1, "lb_endpoints": [
        {"endpoint": {"address": _socket_address(h, p)}} for h, p in standby]})
    cluster["health_checks"] = [{
        "timeout": "0.5s", "interval": "1s", "no_traffic_interval": "1s",
        "unhealthy_threshold": 2, "healthy_threshold": 1, "tcp_health_check": {},
    }]


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _require_port(name: str, port: int, *, lowest: int = 1) -> None:
    valid = isinstance(port, int) and not isinstance(port, bool) and lowest <= port <= 65535
    _require(valid, f"{name} must be between {lowest} and 65535 (got {port!r})")
