"""`weir crd`: the RolloutPolicy CustomResourceDefinition, generated from the policy JSON Schema.

Checked three ways: kubernetes-validate (strict, offline) accepts it as an
apiextensions.k8s.io/v1 CRD; its schema obeys Kubernetes's structural-schema
rules; and the schema, read with the API server's semantics (unknown fields
rejected, nullable, OpenAPI 3.0 bounds), accepts every example policy and
rejects broken ones. manifests/crd-rolloutpolicy.yaml is its output.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import latest_version

from control_plane import cli
from control_plane.mesh.crd import crd, structural_problems
from policies.document import read_document

MANIFEST = Path("manifests/crd-rolloutpolicy.yaml")
POLICY_FILES = sorted(Path("policies/examples").glob("*.yaml")) + sorted(Path("manifests/istio").glob("*policy*.yaml")) + sorted(
    Path("manifests/policies").glob("*.yaml")
)


def _as_apiserver_reads_it(node: dict[str, Any], *, root: bool = True) -> dict[str, Any]:
    """The CRD's OpenAPI schema as a JSON Schema with the API server's semantics (closed objects)."""
    if node.get("x-kubernetes-preserve-unknown-fields") and "type" not in node:
        return {}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties":
            out[key] = {
                name: (
                    {"type": "object"} if root and name == "metadata"  # ObjectMeta is the API server's, not the CRD's
                    else _as_apiserver_reads_it(sub, root=False)
                )
                for name, sub in value.items()
            }
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _as_apiserver_reads_it(value, root=False)
        elif key in ("oneOf", "anyOf", "allOf"):
            out[key] = [_as_apiserver_reads_it(b, root=False) for b in value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and value is True:
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[key] = node[bound]
        elif key in ("nullable",) or key.startswith("x-kubernetes-"):
            continue
        else:
            out[key] = value
    for key in ("exclusiveMinimum", "exclusiveMaximum"):
        if node.get(key) is True:
            out.pop("minimum" if key == "exclusiveMinimum" else "maximum", None)
    if node.get("type") == "object" and "properties" in node:
        out["additionalProperties"] = False
    return {"anyOf": [out, {"type": "null"}]} if node.get("nullable") else out


SCHEMA = _as_apiserver_reads_it(crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def _errors(data: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data))


def test_the_manifest_is_what_weir_crd_prints(capsys):
    assert cli.main(["crd"]) == 0
    printed = capsys.readouterr().out
    assert yaml.safe_load(printed) == crd()
    assert MANIFEST.read_text() == printed, "regenerate it: .venv/bin/weir crd > manifests/crd-rolloutpolicy.yaml"


def test_kubernetes_accepts_it_as_a_custom_resource_definition():
    kubernetes_validate.validate(crd(), latest_version(), strict=True)
    assert crd()["metadata"]["name"] == "rolloutpolicies.weir.dev"


def test_its_schema_is_structural():
    schema = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert structural_problems(schema) == []
    assert "$ref" not in str(schema) and "const" not in str(schema)


def test_structural_problems_are_found():
    bad = {"type": "object", "properties": {
        "a": {"oneOf": [{"type": "string"}, {"type": "number"}]},
        "b": {"$ref": "#/x", "type": "string"},
        "c": {"description": "no type"},
    }}
    assert structural_problems(bad) == [
        "a: no type", "a.oneOf[0]: type inside a junctor", "a.oneOf[1]: type inside a junctor", "b: $ref", "c: no type",
    ]


@pytest.mark.parametrize("path", POLICY_FILES, ids=str)
def test_every_example_policy_is_a_valid_custom_resource(path):
    data = read_document(path.read_text(), source=str(path)).data
    assert _errors(data) == []


def test_the_schema_rejects_what_weir_rejects():
    good = read_document(Path("policies/examples/sentiment.yaml").read_text()).data
    bad = copy.deepcopy(good)
    bad["spec"]["stratgy"] = bad["spec"].pop("strategy")
    bad["spec"]["strategy"] = {"canary": {"steps": [{"weight": 120}, {"weight": 5, "pause": {}}]}}
    bad["spec"]["analysis"]["slos"][0]["metric"] = "throughput"
    bad["spec"]["stable"]["endpoints"] = []
    errors = _errors(bad)
    assert errors == [
        "spec.analysis.slos.0.metric: 'throughput' is not one of ['error-rate', 'latency', 'ttfb', 'tpot', 'custom']",
        "spec.analysis.slos.0: {'metric': 'throughput', 'maxIncrease': 0.005} is not valid under any of the given schemas",
        "spec.stable: {'version': 'v1', 'endpoints': []} is not valid under any of the given schemas",  # or null
        "spec.strategy.canary.steps.0.weight: 120 is not valid under any of the given schemas",  # 0-100 or null
        "spec.strategy.canary.steps.1: {'weight': 5, 'pause': {}} is valid under each of {'required': ['pause']}, "
        "{'required': ['weight']}",
        "spec: Additional properties are not allowed ('stratgy' was unexpected)",
    ]
