"""`weir istio render`: a policy's routing at a step as a VirtualService + DestinationRule.

Every rendered object is checked against Istio's own schemas (tests/istio_validation.py):
closed to unknown fields (cloudcoil-models-istio) and against Istio 1.29's CRD
validators (@kubernetes-models/istio, through node).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from control_plane import cli
from control_plane.mesh.adapter import routing_at_step
from control_plane.mesh.errors import MeshError
from control_plane.mesh.istio.render import (
    IstioOptions,
    format_duration,
    render,
    render_policy,
)
from policies import load_policy, validate_policy_data
from tests.conftest import require
from tests.istio_validation import CRD_VALIDATOR_MISSING, closed_schema_errors, crd_schema_errors, crd_validator_ready

EXAMPLES = Path("policies/examples")
GATEWAY = IstioOptions(namespace="models", gateways=("istio-system/ingressgateway",))


def _data(name: str) -> dict:
    """An example policy as file-shaped data (plain YAML would read its `on:` keys as booleans)."""
    return load_policy(EXAMPLES / name).model_dump(mode="json", by_alias=True, exclude_none=True)


def _policy(**changes) -> dict:
    data = _data("sentiment.yaml")
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    return data


def _corpus() -> list[tuple[str, dict]]:
    """Objects rendered from every renderable example, at every step and in the shadow phase."""
    out = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        policy = load_policy(path)
        try:
            render_policy(policy, 0, GATEWAY)
        except MeshError:
            continue  # versions that cannot name subsets: covered by the bad-input tests
        steps = list(range(len(policy.spec.strategy.canary.steps)))
        if policy.spec.strategy.shadow is not None:
            steps.append("shadow")
        for step in steps:
            for options in (GATEWAY, IstioOptions(namespace="ml", gateways=("ml/gw", "ml/internal-gw"), version_label="app.kubernetes.io/version")):
                for doc in render_policy(policy, step, options).documents():
                    out.append((f"{path.name} step {step} {doc['kind']}", doc))
    return out


CORPUS = _corpus()


def test_the_corpus_covers_every_feature():
    names = {n.split(" ")[0] for n, _ in CORPUS}
    assert {"sentiment.yaml", "minimal.yaml", "mann-whitney.yaml", "threshold.yaml", "prometheus-custom.yaml"} <= names
    routes = [r for _, d in CORPUS if d["kind"] == "VirtualService" for r in d["spec"]["http"]]
    assert any("mirror" in r for r in routes) and any("headers" in r["match"][0] for r in routes)
    policies = [d["spec"]["trafficPolicy"] for _, d in CORPUS if d["kind"] == "DestinationRule"]
    assert any("consistentHash" in p["loadBalancer"] for p in policies)
    assert {p["loadBalancer"].get("simple") for p in policies} >= {"ROUND_ROBIN", "LEAST_REQUEST"}
    assert any("outlierDetection" in p for p in policies)


@pytest.mark.parametrize("name,doc", CORPUS, ids=[n for n, _ in CORPUS])
def test_rendered_objects_have_no_field_istio_does_not_know(name, doc):
    assert closed_schema_errors(doc) == []


def test_rendered_objects_pass_istios_crd_schemas():
    require(crd_validator_ready(), CRD_VALIDATOR_MISSING)
    results = crd_schema_errors([doc for _, doc in CORPUS])
    assert {name: errors for (name, _), errors in zip(CORPUS, results) if errors} == {}


def test_both_validators_reject_what_istio_rejects():
    """The checks have teeth: an unknown field, a wrongly typed value, an unknown enum value."""
    vs, dr = render_policy(load_policy(EXAMPLES / "minimal.yaml"), 0, GATEWAY).documents()
    unknown = copy.deepcopy(vs)
    unknown["spec"]["http"][0]["retryPolicy"] = {"attempts": 3}  # Envoy's name; Istio's is retries
    unknown["spec"]["http"][0]["route"][0]["destination"]["subsets"] = "v1"
    assert closed_schema_errors(unknown) == [
        "spec.http[0].route[0].destination.subsets: unknown field (Istio's schema has no such field)",
        "spec.http[0].retryPolicy: unknown field (Istio's schema has no such field)",
    ]
    typed = copy.deepcopy(vs)
    typed["spec"]["http"][0]["route"][0]["weight"] = "90"
    enum = copy.deepcopy(dr)
    enum["spec"]["trafficPolicy"]["loadBalancer"] = {"simple": "FASTEST"}
    assert closed_schema_errors(typed) == ["spec.http[0].route[0].weight: '90' was coerced to 90 (wrong type)"]
    assert any("simple" in e for e in closed_schema_errors(enum))
    require(crd_validator_ready(), CRD_VALIDATOR_MISSING)
    assert crd_schema_errors([typed, enum, vs]) == [
        ["/spec/http/0/route/0/weight: must be integer"],
        ["/spec/trafficPolicy/loadBalancer/simple: must be equal to one of the allowed values"],
        [],
    ]


# --------------------------------------------------------------------------- what maps to what


def test_a_step_renders_header_routes_first_then_the_weighted_default():
    vs, dr = render_policy(load_policy(EXAMPLES / "sentiment.yaml"), 1, GATEWAY).documents()
    host = "sentiment.models.svc.cluster.local"
    retries = {"attempts": 1, "retryOn": "connect-failure,reset-before-request"}  # the policy's default retries
    assert vs["metadata"] == {"name": "sentiment", "namespace": "models", "labels": {"app.kubernetes.io/managed-by": "weir"}}
    assert vs["spec"] == {
        "hosts": ["sentiment.models.internal", "*"],
        "gateways": ["istio-system/ingressgateway"],
        "http": [
            {
                "name": "sentiment-header-0",
                "match": [{"uri": {"prefix": "/v2/models/sentiment"}, "headers": {"x-canary": {"exact": "true"}}}],
                "route": [{"destination": {"host": host, "subset": "v2"}}],
                "timeout": "5s",
                "retries": retries,
            },
            {
                "name": "sentiment-default",
                "match": [{"uri": {"prefix": "/v2/models/sentiment"}}],
                "route": [
                    {"destination": {"host": host, "subset": "v1"}, "weight": 75},
                    {"destination": {"host": host, "subset": "v2"}, "weight": 25},
                ],
                "timeout": "5s",
                "retries": retries,
            },
        ],
    }
    assert dr["spec"] == {
        "host": host,
        "trafficPolicy": {
            "loadBalancer": {"consistentHash": {"httpHeaderName": "x-user-id"}},
            "connectionPool": {"http": {"idleTimeout": "3s"}},  # the policy's default idle timeout
            "outlierDetection": {"consecutive5xxErrors": 5, "baseEjectionTime": "30s", "maxEjectionPercent": 50},
        },
        "subsets": [{"name": "v1", "labels": {"version": "v1"}}, {"name": "v2", "labels": {"version": "v2"}}],
    }


def test_the_shadow_phase_mirrors_and_sends_no_live_traffic_to_the_canary():
    vs = render_policy(load_policy(EXAMPLES / "sentiment.yaml"), "shadow", GATEWAY).virtual_service
    (default,) = vs["spec"]["http"]  # no header routes before the first step, as in the xDS routing
    assert [r["weight"] for r in default["route"]] == [100, 0]
    assert default["mirror"] == {"host": "sentiment.models.svc.cluster.local", "subset": "v2"}
    assert default["mirrorPercentage"] == {"value": 100.0}


def test_a_pause_step_keeps_the_weight_before_it():
    policy = load_policy(EXAMPLES / "sentiment.yaml")  # steps 5, 25, 50, pause, 100
    route = render_policy(policy, 3, GATEWAY).virtual_service["spec"]["http"][-1]["route"]
    assert [r["weight"] for r in route] == [50, 50]


def test_options_name_the_host_the_label_and_the_mesh():
    policy = validate_policy_data(_policy(**{"spec.service.domains": ["sentiment.models.internal"]}))
    options = IstioOptions(namespace="ml", host="sentiment-svc.ml.svc.cluster.local", version_label="app.kubernetes.io/version")
    vs, dr = render_policy(policy, 0, options).documents()
    assert "gateways" not in vs["spec"]  # bound to the mesh
    assert {r["destination"]["host"] for r in vs["spec"]["http"][-1]["route"]} == {"sentiment-svc.ml.svc.cluster.local"}
    assert dr["spec"]["host"] == "sentiment-svc.ml.svc.cluster.local"
    assert dr["spec"]["subsets"][1] == {"name": "v2", "labels": {"app.kubernetes.io/version": "v2"}}


def test_lb_policy_without_stickiness_and_no_outlier_detection():
    dr = render_policy(load_policy(EXAMPLES / "prometheus-custom.yaml"), 0, GATEWAY).destination_rule
    assert dr["spec"]["trafficPolicy"]["loadBalancer"] == {"simple": "ROUND_ROBIN"}
    dr = render_policy(load_policy(EXAMPLES / "minimal.yaml"), 0, GATEWAY).destination_rule
    assert dr["spec"]["trafficPolicy"] == {
        "loadBalancer": {"simple": "LEAST_REQUEST"},
        "connectionPool": {"http": {"idleTimeout": "3s"}},
    }


def test_retries_and_the_idle_timeout_come_from_the_policy_as_for_envoy():
    """The same connection hygiene as Weir's own xDS: a sidecar too must not reuse a connection the model
    server just closed, and retries a reset only when the user says requests are idempotent."""
    data = _policy(**{"spec.service.idleTimeout": "4500ms", "spec.service.retries": {"attempts": 3, "onReset": True}})
    vs, dr = render_policy(validate_policy_data(data), 0, GATEWAY).documents()
    assert {str(r["retries"]) for r in vs["spec"]["http"]} == {str({"attempts": 3, "retryOn": "connect-failure,reset-before-request,reset"})}
    assert dr["spec"]["trafficPolicy"]["connectionPool"] == {"http": {"idleTimeout": "4.5s"}}
    off = render_policy(validate_policy_data(_policy(**{"spec.service.retries": {"attempts": 0}})), 0, GATEWAY)
    assert {str(r["retries"]) for r in off.virtual_service["spec"]["http"]} == {"{'attempts': 0}"}  # Istio's default off
    assert [closed_schema_errors(d) for d in (vs, dr, off.virtual_service)] == [[], [], []]


def test_header_names_are_lowercased_for_istio():
    data = _policy(**{"spec.strategy.match": [{"header": {"name": "X-Canary", "exact": "yes"}}],
                      "spec.strategy.stickiness": {"header": "X-User"}})
    vs, dr = render_policy(validate_policy_data(data), 0, GATEWAY).documents()
    assert vs["spec"]["http"][0]["match"][0]["headers"] == {"x-canary": {"exact": "yes"}}
    assert dr["spec"]["trafficPolicy"]["loadBalancer"] == {"consistentHash": {"httpHeaderName": "x-user"}}


@pytest.mark.parametrize("seconds,text", [(5, "5s"), (0.5, "0.5s"), (1.25, "1.25s"), (0.001, "0.001s"), (3600, "3600s")])
def test_durations_use_the_protobuf_form_istio_parses(seconds, text):
    assert format_duration(seconds) == text


def test_render_takes_service_routing_directly():
    routing = routing_at_step(load_policy(EXAMPLES / "minimal.yaml"), 1)
    assert routing.split == {"v1": 50, "v2": 50}
    objects = render(routing, GATEWAY)
    assert [r["weight"] for r in objects.virtual_service["spec"]["http"][-1]["route"]] == [50, 50]


# --------------------------------------------------------------------------- bad input


def _errors(policy_data: dict, step=0, options: IstioOptions = GATEWAY) -> list[str]:
    with pytest.raises(MeshError) as exc:
        render_policy(validate_policy_data(policy_data), step, options)
    return [str(p) for p in exc.value.problems]


def test_versions_that_cannot_name_subsets_are_errors_at_the_policy_field():
    subset = ("cannot name an Istio subset (a DNS-1123 label: lowercase a-z, 0-9 and '-', starting and ending "
              "with a letter or digit); rename the version to map it to a subset")
    data = _policy(**{"spec.stable.version": "2024.05", "spec.canary.version": "V2"})
    assert _errors(data) == [
        f"RolloutPolicy sentiment: spec.stable.version: version '2024.05' {subset}",
        f"RolloutPolicy sentiment: spec.canary.version: version 'V2' {subset}",
    ]


def test_the_wildcard_host_needs_a_gateway():
    assert _errors(_policy(), options=IstioOptions()) == [
        "RolloutPolicy sentiment: spec.service.domains[1]: Istio rejects the wildcard host '*' for VirtualServices "
        "bound to the mesh: list the service's host names, or bind it to a gateway (--gateway NAMESPACE/NAME)"
    ]


def test_hosts_istio_cannot_take_and_pseudo_headers():
    data = _policy(**{"spec.service.domains": ["models.internal:8080", "api.*"],
                      "spec.strategy.match": [{"header": {"name": ":authority", "exact": "a"}}]})
    host = "is not an Istio host: a DNS name, optionally starting with '*.' (no ports, no trailing wildcard)"
    assert _errors(data) == [
        f"RolloutPolicy sentiment: spec.service.domains[0]: 'models.internal:8080' {host}",
        f"RolloutPolicy sentiment: spec.service.domains[1]: 'api.*' {host}",
        "RolloutPolicy sentiment: spec.strategy.match[0].header.name: pseudo-header ':authority' cannot be matched "
        "through Istio's headers",
    ]


def test_bad_options_are_named_by_their_flags():
    assert _errors(_policy(), options=IstioOptions(namespace="Models", version_label="bad key!", gateways=("gw",))) == [
        "Istio options: --namespace: 'Models' is not a Kubernetes namespace name (a-z, 0-9, '-')",
        "Istio options: --version-label: 'bad key!' is not a Kubernetes label key",
    ]


def test_steps_that_do_not_exist():
    assert _errors(_policy(), step=7) == [
        "RolloutPolicy sentiment: spec.strategy.canary.steps: no step 7: this policy has steps 0 to 4 and 'shadow'"
    ]
    assert _errors(_data("minimal.yaml"), step="shadow") == [
        "RolloutPolicy echo: spec.strategy.shadow: this policy has no shadow phase to render"
    ]


# --------------------------------------------------------------------------- the command


def test_cli_renders_both_objects_as_yaml(capsys):
    assert cli.main(["istio", "render", "-f", str(EXAMPLES / "minimal.yaml"), "--gateway", "istio-system/gw",
                     "--namespace", "models", "--step", "1"]) == 0
    vs, dr = yaml.safe_load_all(capsys.readouterr().out)
    assert (vs["kind"], dr["kind"]) == ("VirtualService", "DestinationRule")
    assert [r["weight"] for r in vs["spec"]["http"][-1]["route"]] == [50, 50]


def test_cli_renders_one_object_as_json(capsys):
    assert cli.main(["istio", "render", "-f", str(EXAMPLES / "minimal.yaml"), "--gateway", "gw",
                     "--only", "destinationrule", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "DestinationRule"


def test_cli_errors_exit_1_with_the_field_and_print_nothing(capsys, tmp_path):
    assert cli.main(["istio", "render", "-f", str(EXAMPLES / "shadow-ab-sticky.yaml"), "--gateway", "gw"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[0].startswith(
        "error: RolloutPolicy chat-llm: spec.stable.version: version '2024.05' cannot name an Istio subset"
    )
    assert "Traceback" not in err
    assert cli.main(["istio", "render", "-f", str(EXAMPLES / "minimal.yaml"), "--step", "two"]) == 1
    assert capsys.readouterr().err == "error: --step: expected a step index (0, 1, ...) or 'shadow' (got 'two')\n"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_policy(**{"spec.strategy.canary.steps": [{"weight": 120}]})))
    assert cli.main(["istio", "render", "-f", str(bad)]) == 1
    assert "spec.strategy.canary.steps[0].weight: must be between 0 and 100 (got 120)" in capsys.readouterr().err
    assert cli.main(["istio", "render", "-f", str(tmp_path / "missing.yaml")]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'missing.yaml'}: cannot read:")
