"""`weir istio import`: VirtualService + DestinationRule -> a RolloutPolicy skeleton.

The property: for any valid policy, render(policy at step 0) -> import -> the same
routing (hosts, versions, endpoints as given, weights, header rules, mirror,
stickiness, outlier detection), and rendering the imported policy gives the
very same objects. Every unexpressible feature is an error naming the object
and the field, and nothing is printed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_plane import cli
from control_plane.mesh.adapter import routing_at_step
from control_plane.mesh.errors import MeshError
from control_plane.mesh.istio.importer import ImportOptions, import_objects
from control_plane.mesh.istio.render import IstioOptions, render_policy
from policies import load_policy, validate_policy_data
from tests.istio_validation import closed_schema_errors

EXAMPLES = Path("policies/examples")
GATEWAY = IstioOptions(namespace="models", gateways=("istio-system/ingressgateway",))
SENTIMENT_ENDPOINTS = {"v1": ["127.0.0.1:8081", "127.0.0.1:8082"], "v2": ["127.0.0.1:8091"]}


def _rendered(step=1) -> tuple[dict, dict]:
    vs, dr = render_policy(load_policy(EXAMPLES / "sentiment.yaml"), step, GATEWAY).documents()
    return copy.deepcopy(vs), copy.deepcopy(dr)


def _import(vs, dr, **options):
    options.setdefault("endpoints", SENTIMENT_ENDPOINTS)
    return import_objects([vs, dr], ImportOptions(**options))


def _errors(vs, dr, **options) -> list[str]:
    with pytest.raises(MeshError) as exc:
        _import(vs, dr, **options)
    return [str(p) for p in exc.value.problems]


# --------------------------------------------------------------------------- the property


_names = st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True)
_hosts = st.from_regex(r"(\*\.)?[a-z][a-z0-9]{0,6}(\.[a-z][a-z0-9]{0,6}){0,2}", fullmatch=True)
_headers = st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,10}", fullmatch=True)
_ipv4 = st.tuples(st.integers(1, 223), *[st.integers(1, 254)] * 3).map(lambda t: ".".join(map(str, t)))  # unicast
_endpoint = st.builds(
    lambda ip, port, weight: f"{ip}:{port}" + (f"@{weight}" if weight else ""),
    _ipv4, st.integers(1, 65535), st.one_of(st.none(), st.integers(1, 50)),
)
_durations = st.one_of(st.integers(1, 3600).map(lambda s: f"{s}s"), st.integers(1, 99_999).map(lambda ms: f"{ms}ms"))
_steps = st.lists(st.one_of(st.integers(0, 100), st.none()), min_size=1, max_size=5).map(
    # weights never decrease (a policy rule); None is a pause gate
    lambda ws: [{"pause": {}} if w is None else {"weight": w} for w in _non_decreasing(ws)]
)


def _non_decreasing(weights: list[int | None]) -> list[int | None]:
    out, top = [], 0
    for w in weights:
        top = top if w is None else max(top, w)
        out.append(None if w is None else top)
    return out


@st.composite
def policies(draw):
    """Valid policies over everything an Istio VirtualService and DestinationRule can carry."""
    stable, canary = draw(st.lists(_names, min_size=2, max_size=2, unique=True))
    domains = draw(st.lists(_hosts, min_size=1, max_size=3, unique_by=str.lower))
    if draw(st.booleans()):
        domains.append("*")
    headers = draw(st.lists(_headers, max_size=2, unique_by=str.lower))
    # stable and canary on different servers (a policy rule)
    endpoints = draw(st.lists(_endpoint, min_size=2, max_size=6, unique_by=lambda e: e.split("@")[0]))
    split = draw(st.integers(1, len(endpoints) - 1))
    spec = {
        "service": {
            "name": draw(_names),
            "domains": domains,
            "port": draw(st.integers(1, 65535)),
            "pathPrefix": draw(st.sampled_from(["/", "/v2/models/m", "/predict"])),
            "timeout": draw(_durations),
        },
        "stable": {"version": stable, "endpoints": endpoints[:split]},
        "canary": {"version": canary, "endpoints": endpoints[split:]},
        "loadBalancing": {"policy": draw(st.sampled_from(["round-robin", "least-request", "latency-aware"]))},
        "strategy": {
            "canary": {"steps": draw(_steps)},
            "match": [{"header": {"name": h, "exact": draw(st.text("abc123", min_size=1, max_size=4))}} for h in headers],
        },
        "analysis": {"slos": [{"metric": "error-rate", "maxIncrease": "1%"}]},
    }
    if draw(st.booleans()):
        spec["loadBalancing"]["outlierDetection"] = {
            "consecutive5xx": draw(st.integers(1, 20)),
            "baseEjectionTime": draw(_durations),
            "maxEjectionPercent": draw(st.integers(0, 100)),
        }
    if draw(st.booleans()):
        spec["service"]["idleTimeout"] = draw(_durations)
    if draw(st.booleans()):
        spec["service"]["retries"] = {"attempts": draw(st.integers(0, 5)), "onReset": draw(st.booleans())}
    if draw(st.booleans()):
        spec["strategy"]["stickiness"] = {"header": draw(_headers)}
    if draw(st.booleans()):
        spec["strategy"]["shadow"] = {"percent": draw(st.sampled_from([0.5, 1, 12.5, 50, 100])), "minRequests": 10, "maxDuration": "5m"}
    return validate_policy_data({"apiVersion": "weir.dev/v1alpha1", "kind": "RolloutPolicy", "metadata": {"name": draw(_names)}, "spec": spec})


def _comparable(routing) -> dict:
    """What Istio can carry of a ServiceRouting (Istio: header names lowercase; stickiness replaces the LB policy;
    a DestinationRule has no active-request bias, so the latency-aware tuning of least-request does not survive;
    with 0 retry attempts, onReset means nothing)."""
    data = routing.model_dump()
    data["least_request_active_bias"] = None
    if data["retries"]["attempts"] == 0:  # no retries: whether resets would be retried says nothing
        data["retries"]["on_reset"] = False
    data["header_routes"] = [{**r, "header": r["header"].lower()} for r in data["header_routes"]]
    if data["sticky_header"]:
        data["sticky_header"] = data["sticky_header"].lower()
        data["lb_policy"] = None
    return data


def _endpoints_of(policy) -> dict[str, list[str]]:
    return {v.version: [str(e) for e in v.endpoints] for v in (policy.spec.stable, policy.spec.canary)}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies(), st.sampled_from([0, "shadow"]))
def test_render_then_import_gives_an_equivalent_policy(policy, step):
    if step == "shadow" and policy.spec.strategy.shadow is None:
        step = 0
    options = IstioOptions(namespace="ns", gateways=("ns/gw",) if "*" in policy.spec.service.domains else ())
    objects = render_policy(policy, step, options)
    assert [closed_schema_errors(d) for d in objects.documents()] == [[], []]
    result = import_objects(
        objects.documents(), ImportOptions(endpoints=_endpoints_of(policy), port=policy.spec.service.port)
    )
    imported = result.policy
    assert imported.spec.service.name == policy.spec.service.name
    assert imported.spec.service.domains == policy.spec.service.domains
    assert (imported.spec.stable.version, imported.spec.canary.version) == (policy.spec.stable.version, policy.spec.canary.version)
    assert _endpoints_of(imported) == _endpoints_of(policy)
    assert _comparable(routing_at_step(imported, step)) == _comparable(routing_at_step(policy, step))
    assert render_policy(imported, step, options) == objects


def test_the_skeleton_of_a_step_starts_at_its_weight_and_ramps_to_100():
    result = _import(*_rendered(step=1))  # 25% to v2
    assert [s.weight for s in result.policy.spec.strategy.canary.steps] == [25, 50, 100]
    assert result.data["spec"]["strategy"]["match"] == [{"header": {"name": "x-canary", "exact": "true"}}]
    assert result.data["spec"]["strategy"]["stickiness"] == {"header": "x-user-id"}
    assert result.data["spec"]["service"] == {
        "name": "sentiment", "domains": ["sentiment.models.internal", "*"], "port": 10000,
        "pathPrefix": "/v2/models/sentiment", "timeout": "5s",
        "retries": {"attempts": 1, "onReset": False}, "idleTimeout": "3s",  # what the objects say, made explicit
    }
    assert any("spec.gateways" in n for n in result.notes) and any("spec.analysis" in n for n in result.notes)


def test_a_foreign_pair_with_short_hosts_retries_and_mtls():
    """What a platform team typically has: short host names, retries, ISTIO_MUTUAL, extra pod labels."""
    vs = {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "shop", "resourceVersion": "81", "generation": 4},
        "spec": {"hosts": ["reviews"], "http": [{
            "route": [{"destination": {"host": "reviews", "subset": "stable"}, "weight": 80},
                      {"destination": {"host": "reviews", "subset": "next"}, "weight": 20}],
            "retries": {"attempts": 3, "perTryTimeout": "2s"}, "timeout": "10s",
        }]},
        "status": {"observedGeneration": "4"},
    }
    dr = {
        "apiVersion": "networking.istio.io/v1beta1", "kind": "DestinationRule",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"host": "reviews.shop.svc.cluster.local", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"},
                                                                     "connectionPool": {"tcp": {"maxConnections": 100}}},
                 "subsets": [{"name": "stable", "labels": {"app": "reviews", "version": "v1"}},
                             {"name": "next", "labels": {"app": "reviews", "version": "v2"}}]},
    }
    result = import_objects([vs, dr], ImportOptions(endpoints={"v1": ["10.0.0.1:9080"], "v2": ["10.0.0.2:9080"]}, port=80))
    spec = result.policy.spec
    assert (spec.stable.version, spec.canary.version, spec.strategy.canary.steps[0].weight) == ("v1", "v2", 20)
    assert spec.service.name == "reviews" and spec.service.domains == ["reviews"] and spec.service.port == 80
    assert "DestinationRule reviews: subset 'stable' becomes version 'v1'; Weir names subsets after versions" in result.notes
    assert spec.service.retries.attempts == 3 and not spec.service.retries.on_reset
    assert ("VirtualService reviews: spec.http[0].retries.perTryTimeout not carried: a policy sets attempts and "
            "whether resets are retried") in result.notes
    assert any(n.startswith("VirtualService reviews: spec.http[0].retries.retryOn: none set") for n in result.notes)
    assert any("ISTIO_MUTUAL" in n for n in result.notes)
    assert ("DestinationRule reviews: spec.trafficPolicy.connectionPool.tcp not carried: a policy sets the idle "
            "timeout of the connection pool and nothing else") in result.notes
    assert spec.service.idle_timeout.total_seconds() == 3  # none in the DestinationRule: Weir's default
    assert any(n.startswith("spec.service.idleTimeout: the DestinationRule sets none") for n in result.notes)


def test_retry_conditions_a_policy_cannot_have_are_noted_and_the_safe_ones_carried():
    vs, dr = _rendered(step=0)
    default = vs["spec"]["http"][-1]
    default["retries"] = {"attempts": 9, "retryOn": "5xx,reset,connect-failure"}
    dr["spec"]["trafficPolicy"]["connectionPool"] = {"http": {"idleTimeout": "2s", "maxRetries": 3}}
    result = _import(vs, dr)
    service = result.policy.spec.service
    assert (service.retries.attempts, service.retries.on_reset, service.idle_timeout.total_seconds()) == (5, True, 2)
    assert "VirtualService sentiment: spec.http[1].retries.attempts: 9 is more than a policy allows; 5 carried" in result.notes
    assert ("VirtualService sentiment: spec.http[1].retries.retryOn: 5xx not carried: a policy retries only requests "
            "that never reached the server (and resets with onReset)") in result.notes
    assert any("spec.http[0].retries differs from spec.http[1].retries" in n for n in result.notes)
    assert any("connectionPool.http.maxRetries not carried" in n for n in result.notes)
    default["retries"] = {"attempts": "many"}
    with pytest.raises(MeshError) as exc:
        _import(vs, dr)
    assert "spec.http[1].retries.attempts: expected a whole number, at least 0 (got 'many')" in str(exc.value)


def test_canary_can_be_named_and_a_mirror_becomes_the_shadow_phase():
    vs, dr = _rendered(step="shadow")
    result = _import(vs, dr)
    assert result.policy.spec.strategy.shadow.percent == 100
    assert [s.weight for s in result.policy.spec.strategy.canary.steps] == [10, 25, 50, 100]
    vs, dr = _rendered(step=0)
    vs["spec"]["http"] = vs["spec"]["http"][1:]  # drop the header route (it targets v2)
    swapped = _import(vs, dr, canary="v1")
    assert (swapped.policy.spec.stable.version, swapped.policy.spec.canary.version) == ("v2", "v1")
    assert swapped.policy.spec.strategy.canary.steps[0].weight == 95


# --------------------------------------------------------------------------- bad input: VirtualService


def test_regex_and_exact_uri_matches():
    vs, dr = _rendered()
    vs["spec"]["http"][0]["match"][0]["uri"] = {"regex": "/v2/models/.*"}
    vs["spec"]["http"][1]["match"][0]["uri"] = {"exact": "/v2/models/sentiment"}
    assert _errors(vs, dr) == [
        "VirtualService sentiment: spec.http[0].match[0].uri.regex: regex matches cannot be expressed; use prefix",
        "VirtualService sentiment: spec.http[1].match[0].uri.exact: exact matches cannot be expressed; use prefix",
    ]


def test_regex_header_matches_and_several_headers_in_one_match():
    vs, dr = _rendered()
    vs["spec"]["http"][0]["match"][0]["headers"] = {"x-canary": {"regex": "t.*"}}
    assert _errors(vs, dr) == [
        "VirtualService sentiment: spec.http[0].match[0].headers.x-canary.regex: regex header matches cannot be "
        "expressed; use exact"
    ]
    vs, dr = _rendered()
    vs["spec"]["http"][0]["match"][0]["headers"]["x-team"] = {"exact": "nlp"}
    assert _errors(vs, dr) == [
        "VirtualService sentiment: spec.http[0].match[0].headers: a match on several headers at once cannot be "
        "expressed; a RolloutPolicy match rule is one header"
    ]


def test_several_hosts_with_different_routes():
    vs, dr = _rendered()
    vs["spec"]["http"][0]["match"][0]["authority"] = {"exact": "sentiment.models.internal"}
    vs["spec"]["http"][1]["route"][1]["destination"]["host"] = "sentiment-next.models.svc.cluster.local"
    assert _errors(vs, dr) == [
        "VirtualService sentiment: spec.http[0].match[0].authority: matching on the host cannot be expressed: a "
        "RolloutPolicy routes every host in spec.hosts alike; use one VirtualService per host",
        "VirtualService sentiment: spec.http[1].route[1].destination.host: routes to "
        "'sentiment-next.models.svc.cluster.local', but the DestinationRule is for "
        "'sentiment.models.svc.cluster.local': a RolloutPolicy routes one service (several hosts with different "
        "routes cannot be expressed)",
    ]


def test_fault_injection_redirects_and_tcp_routes():
    vs, dr = _rendered()
    vs["spec"]["http"][1]["fault"] = {"abort": {"httpStatus": 503, "percentage": {"value": 1}}}
    vs["spec"]["http"][0]["redirect"] = {"uri": "/v3"}
    vs["spec"]["tcp"] = [{"route": [{"destination": {"host": "x"}}]}]
    assert _errors(vs, dr) == [
        "VirtualService sentiment: spec.tcp: TCP routes cannot be expressed: a RolloutPolicy routes HTTP",
        "VirtualService sentiment: spec.http[0].redirect: redirects cannot be expressed in a RolloutPolicy",
        "VirtualService sentiment: spec.http[1].fault: fault injection cannot be expressed in a RolloutPolicy",
    ]


def test_route_shapes_a_policy_cannot_have():
    vs, dr = _rendered()
    vs["spec"]["http"][0]["route"][0]["destination"]["subset"] = "v1"  # header route to stable
    vs["spec"]["http"][1]["route"][1]["destination"]["subset"] = "v3"
    assert _errors(vs, dr) == [
        "VirtualService sentiment: spec.http[1].route[1].destination.subset: subset 'v3' is not in the "
        "DestinationRule (subsets: v1, v2)",
    ]
    vs, dr = _rendered()
    vs["spec"]["http"][0]["route"][0]["destination"]["subset"] = "v1"
    assert _errors(vs, dr) == [
        "VirtualService sentiment: spec.http[0].match[0].headers.x-canary: this header route sends requests to 'v1'; "
        "a RolloutPolicy's match rules send them to the canary ('v2')"
    ]
    vs, dr = _rendered()
    vs["spec"]["http"].reverse()
    assert _errors(vs, dr) == [
        "VirtualService sentiment: spec.http[0]: only the last route may be the weighted default route: a route "
        "without a header match before it leaves later routes unreachable",
        "VirtualService sentiment: spec.http[1].match: the last route must be the default route, without a header match",
    ]
    vs, dr = _rendered()
    vs["spec"]["http"][0]["timeout"] = "30s"
    vs["spec"]["http"][1]["match"][0]["uri"]["prefix"] = "/v1"
    del vs["spec"]["http"][1]["route"][0]["destination"]["subset"]
    assert _errors(vs, dr) == [
        "VirtualService sentiment: spec.http[1].route[0].destination.subset: a destination without a subset cannot "
        "be expressed: a RolloutPolicy routes to versions",
        "VirtualService sentiment: spec.http[1].match[0].uri.prefix: path prefix '/v1' differs from "
        "spec.http[0].match[0].uri.prefix's '/v2/models/sentiment': a RolloutPolicy routes one path prefix",
        "VirtualService sentiment: spec.http[1].timeout: timeout differs from spec.http[0].timeout: a RolloutPolicy "
        "has one timeout for all routes",
    ]


def test_mirroring_during_live_traffic_or_to_stable():
    vs, dr = _rendered(step=1)
    vs["spec"]["http"][1]["mirror"] = {"host": "sentiment.models.svc.cluster.local", "subset": "v1"}
    assert _errors(vs, dr) == [
        "VirtualService sentiment: spec.http[1].mirror.subset: mirrors to 'v1'; a RolloutPolicy mirrors to the canary ('v2')",
        "VirtualService sentiment: spec.http[1].mirror.subset: mirroring while the canary takes 25% of live traffic "
        "cannot be expressed: a RolloutPolicy mirrors only before its first step",
    ]


# --------------------------------------------------------------------------- bad input: DestinationRule


def test_a_destination_rule_without_version_labels():
    vs, dr = _rendered()
    dr["spec"]["subsets"][0]["labels"] = {"app": "sentiment", "track": "stable"}
    del dr["spec"]["subsets"][1]["labels"]
    why = ("no 'version' label: Weir knows a version by its pods' 'version' label "
           "(use --version-label KEY if the cluster uses another key)")
    assert _errors(vs, dr) == [
        f"DestinationRule sentiment: spec.subsets[0].labels: {why}",
        f"DestinationRule sentiment: spec.subsets[1].labels: {why}",
    ]
    dr["spec"]["subsets"][0]["labels"] = {"track": "v1"}
    dr["spec"]["subsets"][1]["labels"] = {"track": "v2"}
    assert _import(vs, dr, version_label="track").policy.spec.canary.version == "v2"


def test_subsets_a_policy_cannot_have():
    vs, dr = _rendered()
    dr["spec"]["subsets"].append({"name": "v3", "labels": {"version": "v3"}})
    dr["spec"]["subsets"][1]["trafficPolicy"] = {"loadBalancer": {"simple": "RANDOM"}}
    assert _errors(vs, dr) == [
        "DestinationRule sentiment: spec.subsets: a RolloutPolicy rolls out between two versions: expected 2 "
        "subsets, stable then canary (got 3)",
        "DestinationRule sentiment: spec.subsets[1].trafficPolicy: per-subset traffic policies cannot be expressed",
    ]


def test_traffic_policies_a_policy_cannot_have():
    vs, dr = _rendered()
    dr["spec"]["trafficPolicy"]["loadBalancer"] = {"consistentHash": {"useSourceIp": True}}
    dr["spec"]["trafficPolicy"]["tls"] = {"mode": "SIMPLE", "sni": "x"}
    dr["spec"]["trafficPolicy"]["outlierDetection"]["consecutiveGatewayErrors"] = 3
    assert _errors(vs, dr) == [
        "DestinationRule sentiment: spec.trafficPolicy.loadBalancer.consistentHash.useSourceIp: only "
        "consistentHash.httpHeaderName can be expressed (a RolloutPolicy's stickiness is by header)",
        "DestinationRule sentiment: spec.trafficPolicy.outlierDetection.consecutiveGatewayErrors: "
        "'consecutiveGatewayErrors' cannot be expressed in a RolloutPolicy",
        "DestinationRule sentiment: spec.trafficPolicy.tls: TLS settings cannot be expressed: Weir leaves TLS to "
        "Istio's automatic mutual TLS",
    ]
    dr["spec"]["trafficPolicy"] = {"loadBalancer": {"simple": "RANDOM"}}
    assert _errors(vs, dr) == [
        "DestinationRule sentiment: spec.trafficPolicy.loadBalancer.simple: 'RANDOM' cannot be expressed: a "
        "RolloutPolicy balances ROUND_ROBIN or LEAST_REQUEST"
    ]


def test_endpoints_must_be_given_per_version():
    vs, dr = _rendered()
    assert _errors(vs, dr, endpoints={"v1": ["10.0.0.1:8080"], "v9": ["10.0.0.9:8080"]}) == [
        "DestinationRule sentiment: spec.subsets[1]: no endpoints for version 'v2': Istio finds pods by label, a "
        "RolloutPolicy lists IP:PORT endpoints; pass --endpoints v2=IP:PORT[,IP:PORT]",
        "--endpoints: v9: no subset has version 'v9' (versions: v1, v2)",
    ]
    assert _errors(vs, dr, endpoints={"v1": ["10.0.0.1"], "v2": ["10.0.0.2:8080"]})[0].startswith(
        "RolloutPolicy sentiment (imported): spec.stable.endpoints[0]: "
    )


def test_the_documents_must_be_one_virtual_service_and_one_destination_rule():
    vs, dr = _rendered()
    with pytest.raises(MeshError) as exc:
        import_objects([vs, vs, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}])
    assert [str(p) for p in exc.value.problems] == [
        "Service s: kind: expected VirtualService or DestinationRule (got 'Service')",
        "VirtualService: expected exactly one VirtualService (found VirtualService sentiment, VirtualService sentiment)",
        "DestinationRule: expected exactly one DestinationRule (found none)",
    ]
    dr["apiVersion"] = "networking.istio.io/v2"
    with pytest.raises(MeshError, match=r"DestinationRule sentiment: apiVersion: expected networking.istio.io/v1"):
        import_objects([vs, dr])


# --------------------------------------------------------------------------- the command


def test_cli_import_prints_a_valid_skeleton(capsys, tmp_path):
    vs, dr = _rendered()
    (tmp_path / "vs.yaml").write_text(yaml.safe_dump(vs))
    (tmp_path / "dr.yaml").write_text(yaml.safe_dump(dr))
    argv = ["istio", "import", "-f", str(tmp_path / "vs.yaml"), "-f", str(tmp_path / "dr.yaml"),
            "--endpoints", "v1=127.0.0.1:8081,127.0.0.1:8082", "--endpoints", "v2=127.0.0.1:8091"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("# RolloutPolicy skeleton imported from ")
    (tmp_path / "policy.yaml").write_text(out)
    assert cli.main(["validate", str(tmp_path / "policy.yaml")]) == 0
    assert load_policy(tmp_path / "policy.yaml").spec.strategy.canary.steps[0].weight == 25


def test_cli_import_errors_exit_1_and_print_nothing(capsys, tmp_path):
    vs, dr = _rendered()
    vs["spec"]["http"][0]["match"][0]["uri"] = {"regex": "/v2/.*"}
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump_all([vs, dr]))
    assert cli.main(["istio", "import", "-f", str(path), "--endpoints", "v1=10.0.0.1:80", "--endpoints", "v2=10.0.0.2:80"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("error: VirtualService sentiment: spec.http[0].match[0].uri.regex: regex matches cannot be "
                   "expressed; use prefix\n")
    assert cli.main(["istio", "import", "-f", str(path), "--endpoints", "v1"]) == 1
    assert capsys.readouterr().err == (
        "error: --endpoints 'v1': expected VERSION=IP:PORT[,IP:PORT...], e.g. v1=10.0.1.11:8080\n"
    )
    (tmp_path / "broken.yaml").write_text("kind: [VirtualService\n")
    assert cli.main(["istio", "import", "-f", str(tmp_path / "broken.yaml")]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'broken.yaml'}:2: invalid YAML:")
