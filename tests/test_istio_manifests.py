"""manifests/ validated offline: Kubernetes's own schemas (kubernetes-validate, strict: unknown fields
are errors), Istio's schemas for the Istio objects, the CRD for the policies, and what the pieces
must agree on (probes, ports, labels, least-privilege RBAC, the policy ConfigMap).

Nothing here is applied to a cluster: no Kubernetes runs on the test machines.
"""

from __future__ import annotations

import copy
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from control_plane.mesh.istio.render import IstioOptions, render_policy
from policies import load_policy
from policies.document import read_document
from tests.conftest import require
from tests.istio_validation import CRD_VALIDATOR_MISSING, closed_schema_errors, crd_schema_errors, crd_validator_ready
from tests.test_istio_crd import _errors as policy_crd_errors

MANIFESTS = Path("manifests")
FILES = sorted(p for p in MANIFESTS.glob("**/*.yaml") if "policies" not in p.parts and not p.name.endswith("-policy.yaml"))
ISTIO_KINDS = {"VirtualService", "DestinationRule"}
CUSTOM_KINDS = ISTIO_KINDS | {"RolloutPolicy"}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


ALL = [(f"{p}:{d['kind']}/{d['metadata']['name']}", d) for p in FILES for d in _docs(p)]
BY_KIND: dict[str, list[dict]] = {}
for _, _doc in ALL:
    BY_KIND.setdefault(_doc["kind"], []).append(_doc)


def _one(kind: str, name: str) -> dict:
    (found,) = [d for d in BY_KIND.get(kind, []) if d["metadata"]["name"] == name]
    return found


CORE = [(n, d) for n, d in ALL if d["kind"] not in CUSTOM_KINDS]


@pytest.mark.parametrize("name,doc", CORE, ids=[n for n, _ in CORE])
def test_every_kubernetes_object_validates_strictly(name, doc):
    kubernetes_validate.validate(doc, latest_version(), strict=True)


def test_the_strict_validator_rejects_unknown_fields():
    deployment = copy.deepcopy(_one("Deployment", "weir"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {"httpGet": {"path": "/readyz", "port": 8080}}
    with pytest.raises(kubernetes_validate.ValidationError, match="'readinessprobe' was unexpected"):
        kubernetes_validate.validate(deployment, latest_version(), strict=True)


def test_the_istio_objects_validate_against_istios_schemas():
    istio = [d for _, d in ALL if d["kind"] in ISTIO_KINDS]
    assert {d["kind"] for d in istio} == ISTIO_KINDS
    assert [closed_schema_errors(d) for d in istio] == [[] for _ in istio]
    require(crd_validator_ready(), CRD_VALIDATOR_MISSING)
    assert crd_schema_errors(istio) == [[] for _ in istio]


def test_the_istio_example_is_what_weir_istio_render_prints():
    policy = load_policy(MANIFESTS / "istio" / "sentiment-policy.yaml")
    rendered = render_policy(policy, 0, IstioOptions(namespace="weir-system")).documents()
    assert _docs(MANIFESTS / "istio" / "sentiment-istio.yaml") == rendered, (
        "regenerate: weir istio render -f manifests/istio/sentiment-policy.yaml --namespace weir-system"
    )


def test_weir_deployment_service_probes_and_identity():
    deployment = _one("Deployment", "weir")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["serviceAccountName"] == "weir" and _one("ServiceAccount", "weir")["metadata"]["namespace"] == "weir-system"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 8080}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 8080}
    ports = {p["name"]: p for p in _one("Service", "weir")["spec"]["ports"]}
    assert (ports["xds"]["port"], ports["xds"]["appProtocol"], ports["api"]["port"]) == (18000, "grpc", 8080)
    assert "--policies=/etc/weir/policies" in container["args"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["policies"] == "/etc/weir/policies" and volumes["policies"]["configMap"]["name"] == "weir-policies"
    assert f"--tokens={mounts['tokens']}/tokens.txt" in container["args"]


def test_the_policy_config_map_holds_the_policy_files_and_they_are_valid():
    data = _one("ConfigMap", "weir-policies")["data"]
    files = {p.name: p.read_text() for p in (MANIFESTS / "policies").glob("*.yaml")}
    assert data == files
    for name in data:
        load_policy(MANIFESTS / "policies" / name)  # raises with every problem if invalid


def test_disruption_budgets_select_their_pods():
    assert _one("PodDisruptionBudget", "weir")["spec"]["selector"]["matchLabels"] == {"app": "weir"}
    gateway = _one("PodDisruptionBudget", "envoy-gateway")["spec"]
    assert gateway["minAvailable"] == 1
    assert _one("Deployment", "envoy-gateway")["spec"]["replicas"] > gateway["minAvailable"]


def test_rbac_grants_only_the_virtual_services_weir_drives():
    assert "ClusterRole" not in BY_KIND and "ClusterRoleBinding" not in BY_KIND
    (role,) = BY_KIND["Role"]
    driven = {d["metadata"]["name"] for d in BY_KIND["VirtualService"]}
    for rule in role["rules"]:
        assert rule["apiGroups"] == ["networking.istio.io"] and rule["resources"] == ["virtualservices"]
        assert set(rule["verbs"]) <= {"get", "patch", "create"}
        assert rule["resourceNames"] and set(rule["resourceNames"]) <= driven | {"sentiment"}
    (binding,) = BY_KIND["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "weir", "namespace": "weir-system"}]
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"]


def test_model_servers_match_the_istio_subsets_and_the_headless_service():
    service = _one("Service", "sentiment")
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["selector"] == {"app": "sentiment"}
    rule = _one("DestinationRule", "sentiment")
    assert rule["spec"]["host"] == f"sentiment.{service['metadata']['namespace']}.svc.cluster.local"
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in BY_KIND["Deployment"] if d["metadata"]["name"].startswith("sentiment-")]
    for subset in rule["spec"]["subsets"]:
        assert sum(all(labels.get(k) == v for k, v in subset["labels"].items()) for labels in pod_labels) == 1, subset
        assert any(labels["app"] == "sentiment" for labels in pod_labels)


def test_the_policies_are_valid_rollout_policy_resources():
    for path in sorted((MANIFESTS / "policies").glob("*.yaml")) + [MANIFESTS / "istio" / "sentiment-policy.yaml"]:
        assert policy_crd_errors(read_document(path.read_text()).data) == [], path
