"""The desired-routing model: what it accepts, and how precisely it says no.

Bad input must produce every problem at once, each with a path in the user's
own words (``services[0].pathPrefix``), because a control plane that reveals one
mistake per attempt wastes a rollout window per typo. The routing file speaks
the policy format's types, units and wording (one model of each concept).
"""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import yaml
from pydantic import ValidationError

from policies import RolloutPolicy
from policies.errors import PolicyError
from xds.routing import (
    Backend,
    DesiredRouting,
    Endpoint,
    RoutingError,
    ServiceRouting,
    load_routing,
    parse_routing,
)

FIXTURES = Path(__file__).parent / "fixtures"


def service(**overrides: Any) -> dict[str, Any]:
    """A valid service as a plain dict (YAML-shaped); tests break one thing at a time."""
    base: dict[str, Any] = {
        "name": "svc",
        "port": 10000,
        "backends": [
            {"version": "v1", "endpoints": ["10.0.0.1:8080"]},
            {"version": "v2", "endpoints": ["10.0.0.2:8080"]},
        ],
        "split": {"v1": 90, "v2": 10},
    }
    base.update(overrides)
    return base


def errors_of(data: Any) -> list[str]:
    with pytest.raises(RoutingError) as info:
        parse_routing(data)
    return [str(e) for e in info.value.errors]


# --------------------------------------------------------------------------- accepted input


def test_fixture_loads_with_camel_case_and_compact_endpoints() -> None:
    routing = load_routing(FIXTURES / "routing-basic.yaml")
    (svc,) = routing.services
    assert routing.listen_address == "0.0.0.0"
    assert (svc.name, svc.port, svc.path_prefix, svc.timeout) == ("iris", 10000, "/v2/models/iris", timedelta(seconds=15))
    assert svc.split == {"v1": 90, "v2": 10}
    assert svc.backends[0].endpoints == [
        Endpoint(host="127.0.0.1", port=8001),
        Endpoint(host="127.0.0.1", port=8002, weight=3),
    ]
    assert svc.backends[1].endpoints == [Endpoint(host="127.0.0.1", port=8003)]
    assert svc.cluster_name("v2") == "iris-v2"
    assert svc.lb_policy == "least-request"  # the default: model servers have uneven latency


def test_python_callers_use_field_names() -> None:
    """The rollout engine builds the model in code, not from YAML."""
    svc = ServiceRouting(
        name="m", port=10000, backends=[Backend(version="v1", endpoints=[Endpoint(host="10.0.0.1", port=80)])],
        split={"v1": 100}, timeout=timedelta(seconds=3), path_prefix="/x",
    )
    assert DesiredRouting(services=[svc]).services[0].timeout == timedelta(seconds=3)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("1m30s", 90.0), ("1.5s", 1.5)],
)
def test_durations_are_written_as_in_policies(text: Any, seconds: float) -> None:
    assert parse_routing({"services": [service(timeout=text)]}).services[0].timeout.total_seconds() == seconds


def test_version_names_accepted_by_policies_are_accepted_here() -> None:
    """The defect: `v2_rc1` passed `weir validate`, then the routing layer refused it."""
    data = service(backends=[{"version": "v2_rc1", "endpoints": ["10.0.0.1:80"]},
                             {"version": "V1.0+b", "endpoints": ["10.0.0.2:80"]}],
                   split={"v2_rc1": 10, "V1.0+b": 90})
    assert parse_routing({"services": [data]}).services[0].versions() == ["v2_rc1", "V1.0+b"]


def test_services_may_share_a_port_with_different_prefixes_or_domains() -> None:
    routing = parse_routing({"services": [
        service(name="a", pathPrefix="/a", backends=[{"version": "v1", "endpoints": ["10.0.0.1:1"]}], split={"v1": 100}),
        service(name="b", pathPrefix="/b", backends=[{"version": "v1", "endpoints": ["10.0.0.1:2"]}], split={"v1": 100}),
        service(name="c", domains=["c.example.com"], backends=[{"version": "v1", "endpoints": ["10.0.0.1:3"]}], split={"v1": 100}),
    ]})
    assert [s.name for s in routing.services] == ["a", "b", "c"]


# --------------------------------------------------------------------------- one error at a time

BAD_SERVICES = [
    # (overrides of a valid service, expected error path, expected message fragment)
    ({"split": {"v1": 80, "v2": 10}}, "services[0].split", "weights must sum to 100 (got 90)"),
    ({"split": {"v1": 90, "v3": 10}}, "services[0].split.v3", "unknown version 'v3': the backends are 'v1', 'v2'"),
    ({"split": {"v1": 90, "v22": 10}}, "services[0].split.v22", "did you mean 'v2'?"),
    ({"split": {"v1": 150, "v2": -50}}, "services[0].split.v1", "must be between 0 and 100 (got 150)"),
    ({"split": {}}, "services[0].split", "must name at least one version"),
    ({"port": 70000}, "services[0].port", "must be between 1 and 65535 (got 70000)"),
    ({"port": 0}, "services[0].port", "must be between 1 and 65535 (got 0)"),
    ({"port": "http"}, "services[0].port", 'expected a whole number (got "http")'),
    ({"port": True}, "services[0].port", "expected a whole number (got true)"),
    ({"path_prefix": "/b"}, "services[0].path_prefix", "did you mean `pathPrefix`? (files use camelCase)"),
    ({"name": "My_Svc"}, "services[0].name", "1-63 characters of a-z, 0-9 and '-'"),
    ({"backends": []}, "services[0].backends", "needs at least one backend"),
    ({"backends": [{"version": "v1", "endpoints": []}, {"version": "v2", "endpoints": ["10.0.0.2:1"]}]},
     "services[0].backends[0].endpoints", "needs at least one endpoint"),
    ({"backends": [{"version": "v1", "endpoints": ["10.0.0.1:1"]}, {"version": "v1", "endpoints": ["10.0.0.2:1"]}],
      "split": {"v1": 100}}, "services[0].backends[1].version", "duplicate version 'v1' (also backends[0])"),
    ({"backends": [{"version": "-v1", "endpoints": ["10.0.0.1:1"]}], "split": {"-v1": 100}},
     "services[0].backends[0].version", "starting with a letter or digit"),
    ({"backends": [{"version": 1.0, "endpoints": ["10.0.0.1:1"]}], "split": {"v1": 100}},
     "services[0].backends[0].version", 'expected a string (got 1.0); quote it if you meant the text: "1.0"'),
    ({"backends": [{"version": "v1", "endpoints": ["10.0.0.1:1", "10.0.0.1:1"]}], "split": {"v1": 100}},
     "services[0].backends[0].endpoints[1]", "10.0.0.1:1 is listed twice (first at endpoints[0])"),
    ({"backends": [{"version": "v1", "endpoints": ["10.0.0.1:1@0"]}], "split": {"v1": 100}},
     "services[0].backends[0].endpoints[0]", "weight after @ must be between 1 and 1000000 (got 0)"),
    ({"backends": [{"version": "v1", "endpoints": ["10.0.0.1:99999"]}], "split": {"v1": 100}},
     "services[0].backends[0].endpoints[0]", "port must be between 1 and 65535"),
    ({"backends": [{"version": "v1", "endpoints": ["localhost:80"]}], "split": {"v1": 100}},
     "services[0].backends[0].endpoints[0]", "is a host name; give the model server's IP address"),
    ({"backends": [{"version": "v1", "endpoints": "10.0.0.1:80"}], "split": {"v1": 100}},
     "services[0].backends[0].endpoints", 'expected a list (got "10.0.0.1:80"); write a list'),
    ({"mirror": {"version": "v3", "percent": 5}}, "services[0].mirror.version", "unknown version 'v3'"),
    ({"mirror": {"version": "v2", "percent": 101}}, "services[0].mirror.percent", "at most 100 (got 101)"),
    ({"headerRoutes": [{"header": "x-v", "exact": "2", "version": "v9"}]},
     "services[0].headerRoutes[0].version", "unknown version 'v9'"),
    ({"headerRoutes": [{"header": "x v", "exact": "2", "version": "v2"}]},
     "services[0].headerRoutes[0].header", "must be an HTTP header name"),
    ({"headerRoutes": [{"header": "x-v", "exact": "2", "version": "v2"}, {"header": "X-V", "exact": "2", "version": "v1"}]},
     "services[0].headerRoutes[1]", "duplicate header route"),
    ({"stickyHeader": "x user"}, "services[0].stickyHeader", "must be an HTTP header name"),
    ({"lbPolicy": "random"}, "services[0].lbPolicy", 'must be one of round-robin, least-request (got "random")'),
    ({"lbPolicy": "round-robin", "leastRequestChoiceCount": 4},
     "services[0].leastRequestChoiceCount", "only applies to lbPolicy 'least-request'"),
    ({"leastRequestChoiceCount": 1}, "services[0].leastRequestChoiceCount", "must be between 2 and 100 (got 1)"),
    ({"timeout": "soon"}, "services[0].timeout", "expected a duration such as 500ms, 30s"),
    ({"timeout": 15}, "services[0].timeout", "expected a duration"),
    ({"timeout": "0s"}, "services[0].timeout", "must be longer than 0s"),
    ({"pathPrefix": "models"}, "services[0].pathPrefix", "a path starting with /"),
    ({"domains": []}, "services[0].domains", "needs at least one domain"),
    ({"domains": ["a.com", "A.com"]}, "services[0].domains[1]", "'A.com' is listed twice (first at domains[0])"),
    ({"outlierDetection": {"consecutive5xx": 0, "baseEjectionTime": "1s", "maxEjectionPercent": 5}},
     "services[0].outlierDetection.consecutive5xx", "must be at least 1 (got 0)"),
    ({"outlierDetection": {"consecutive5xx": 1, "baseEjectionTime": "0s", "maxEjectionPercent": 5}},
     "services[0].outlierDetection.baseEjectionTime", "must be longer than 0s"),
    ({"outlierDetection": {"consecutive5xx": 1, "baseEjectionTime": "1s", "maxEjectionPercent": 150}},
     "services[0].outlierDetection.maxEjectionPercent", "must be between 0 and 100"),
    ({"pathPrefx": "/"}, "services[0].pathPrefx", "unknown field; did you mean `pathPrefix`?"),
    ({"outlierDetection": {"bogus": 1}}, "services[0].outlierDetection.bogus", "allowed here: consecutive5xx, baseEjectionTime"),
]


@pytest.mark.parametrize(("overrides", "path", "fragment"), BAD_SERVICES)
def test_bad_service_field(overrides: dict[str, Any], path: str, fragment: str) -> None:
    errors = errors_of({"services": [service(**overrides)]})
    matching = [e for e in errors if e.startswith(f"{path}: ")]
    assert matching, f"no error at {path}; got {errors}"
    assert any(fragment in e for e in matching), errors


def test_missing_required_fields_are_named() -> None:
    errors = errors_of({"services": [{"name": "svc"}]})
    for field in ("port", "backends", "split"):
        assert any(e.startswith(f"services[0].{field}: required field is missing") for e in errors), errors


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([1], "expected a routing mapping with listenAddress and services (got a list)"),
        ({"services": None}, "services: expected a list (got nothing (null))"),
        ({"services": ["svc"]}, "services[0]: expected a mapping with name, port"),
        ({"listenAddress": "any"}, 'listenAddress: must be an IP address such as 0.0.0.0 or 127.0.0.1 (got "any")'),
        ({"servces": []}, "servces: unknown field; did you mean `services`?"),
    ],
)
def test_bad_top_level(data: Any, expected: str) -> None:
    errors = errors_of(data)
    assert any(e.startswith(expected) for e in errors), errors


# --------------------------------------------------------------------------- the policy format and the routing file agree

_POLICY_FIELDS = {
    # routing-file field -> (policy location, value) that must be judged the same way
    "version": ("spec.canary.version", "v2_rc1"),
}


@settings(max_examples=80, deadline=None)
@given(
    version=st.text(alphabet="abcAB019._+-", min_size=1, max_size=12),
    endpoint=st.sampled_from(["10.0.0.1:80", "10.0.0.1:0", "10.0.0.1:080", "[::1]:80", "a.b:80", "10.0.0.1:80@7", "1.2.3:80"]),
    prefix=st.sampled_from(["/", "/v2/models/x", "v2", "/a b", "/ok?x"]),
    header=st.sampled_from(["x-canary", "x canary", ":authority", ""]),
)
def test_policy_and_routing_file_accept_and_refuse_the_same_values(version, endpoint, prefix, header) -> None:
    """One model of each concept: a value is valid in a routing file exactly when it is valid in a policy."""
    base = yaml.safe_load(open("policies/examples/minimal.yaml"))
    pol = copy.deepcopy(base)
    pol["spec"]["canary"]["version"] = version
    pol["spec"]["canary"]["endpoints"] = [endpoint]
    pol["spec"]["service"]["pathPrefix"] = prefix
    pol["spec"]["strategy"]["stickiness"] = {"header": header}
    try:
        RolloutPolicy.model_validate(pol)
        policy_ok = True
    except ValidationError:
        policy_ok = False
    stable = pol["spec"]["stable"]
    routing = {"services": [service(
        pathPrefix=prefix, stickyHeader=header,
        backends=[{"version": stable["version"], "endpoints": stable["endpoints"]}, {"version": version, "endpoints": [endpoint]}],
        split={stable["version"]: 90, version: 10},
    )]}
    try:
        parse_routing(routing)
        routing_ok = True
    except RoutingError:
        routing_ok = False
    if version == stable["version"]:
        assert not routing_ok and not policy_ok  # duplicate version / stable == canary
    elif endpoint == "a.b:80":
        assert not routing_ok  # a DNS name: policies take it (Weir resolves it), EDS takes addresses only
    else:
        assert policy_ok == routing_ok, (version, endpoint, prefix, header)


# --------------------------------------------------------------------------- across services


def one_version(name: str, version: str, **extra: Any) -> dict[str, Any]:
    return service(name=name, backends=[{"version": version, "endpoints": ["10.0.0.1:80"]}], split={version: 100}, **extra)


def test_cluster_names_collide_across_services() -> None:
    """'a-b' + 'c' and 'a' + 'b-c' are both cluster 'a-b-c'."""
    errors = errors_of({"services": [one_version("a-b", "c", port=1), one_version("a", "b-c", port=2)]})
    assert errors == ["services[1].backends[0].version: cluster name 'a-b-c' is also a cluster of service 'a-b'; rename a version or a service"]


def test_duplicate_service_names() -> None:
    errors = errors_of({"services": [one_version("a", "v1", port=1), one_version("a", "v2", port=2)]})
    assert "services[1].name: duplicate service name 'a' (also services[0])" in errors


def test_same_port_domain_and_prefix_claimed_twice() -> None:
    errors = errors_of({"services": [
        one_version("a", "v1", domains=["*", "x.com"]),
        one_version("b", "v1", domains=["X.com"]),
    ]})
    assert errors == [
        "services[1].domains[0]: domain 'X.com' with path prefix '/' on port 10000 is already claimed by service 'a'"
    ]


def test_same_domain_and_prefix_on_different_ports_is_fine() -> None:
    routing = parse_routing({"services": [one_version("a", "v1", port=1), one_version("b", "v1", port=2)]})
    assert [(s.name, s.port, s.domains) for s in routing.services] == [("a", 1, ["*"]), ("b", 2, ["*"])]


def test_direct_construction_enforces_cross_service_rules() -> None:
    svc = ServiceRouting.model_validate(one_version("a", "v1"))
    with pytest.raises(ValidationError, match="duplicate service name"):
        DesiredRouting(services=[svc, svc])


# --------------------------------------------------------------------------- everything at once


def test_all_errors_come_at_once() -> None:
    broken = {
        "listenAddress": "everywhere",
        "services": [
            service(port=70000, split={"v1": 80, "v2": 10}, lbPolicy="fastest"),
            service(name="other", backends=[
                {"version": "v1", "endpoints": []},
                {"version": "v2", "endpoints": ["10.0.0.9:1"]},
            ], split={"v1": 50, "v3": 50}),  # unknown 'v3' is found although the backends are broken
            one_version("svc-v", "1", port=1),  # cluster 'svc-v-1' ok ...
            one_version("svc", "v-1", port=2),  # ... and collides with this one
        ],
    }
    errors = errors_of(broken)
    assert errors == [
        'listenAddress: must be an IP address such as 0.0.0.0 or 127.0.0.1 (got "everywhere")',
        "services[0].port: must be between 1 and 65535 (got 70000)",
        'services[0].lbPolicy: must be one of round-robin, least-request (got "fastest"); did you mean least-request?',
        "services[0].split: weights must sum to 100 (got 90)",
        'services[1].backends[0].endpoints: needs at least one endpoint, e.g. ["127.0.0.1:8081"] (got an empty list [])',
        "services[1].split.v3: unknown version 'v3': the backends are 'v1', 'v2'",
        "services[3].name: duplicate service name 'svc' (also services[0])",  # seen although services[0] is broken
        "services[3].backends[0].version: cluster name 'svc-v-1' is also a cluster of service 'svc-v'; rename a version or a service",
    ]


def test_routing_error_lists_every_error_one_per_line() -> None:
    with pytest.raises(RoutingError) as info:
        parse_routing({"services": [service(port=0, split={"v1": 1})]})
    lines = str(info.value).splitlines()
    assert lines == [str(e) for e in info.value.errors]
    assert lines == [
        "services[0].port: must be between 1 and 65535 (got 0)",
        "services[0].split: weights must sum to 100 (got 1)",  # v2 left out of the split: weight 0
    ]
    assert isinstance(info.value, ValueError)
    assert str(PolicyError("a.b", "bad", 3)) == "a.b: bad, line 3"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=100), min_size=1, max_size=4))
def test_split_must_sum_to_exactly_100(weights: list[int]) -> None:
    backends = [{"version": f"v{i}", "endpoints": [f"10.0.0.{i + 1}:80"]} for i in range(len(weights))]
    data = {"services": [service(backends=backends, split={f"v{i}": w for i, w in enumerate(weights)})]}
    if sum(weights) == 100:
        assert parse_routing(data).services[0].split == {f"v{i}": w for i, w in enumerate(weights)}
    else:
        assert errors_of(data) == [f"services[0].split: weights must sum to 100 (got {sum(weights)})"]


def test_parse_does_not_mutate_its_input() -> None:
    data = {"services": [service(port=0)]}
    before = copy.deepcopy(data)
    errors_of(data)
    assert data == before


# --------------------------------------------------------------------------- files


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text("services:\n  - name: svc\n    port: [10000\n")
    with pytest.raises(RoutingError) as info:
        load_routing(path)
    (error,) = info.value.errors
    assert error.line == 4 and "YAML" in error.message


def test_yaml_duplicate_keys_are_errors(tmp_path: Path) -> None:
    """PyYAML would silently keep the second 'split'; a typo must never pass silently."""
    path = tmp_path / "routing.yaml"
    path.write_text("services:\n  - name: svc\n    split: {v1: 100}\n    split: {v1: 50}\n")
    with pytest.raises(RoutingError) as info:
        load_routing(path)
    duplicate = [e for e in info.value.errors if "split" in e.message and "twice" in e.message or "duplicate" in e.message]
    assert duplicate and duplicate[0].line == 4, [str(e) for e in info.value.errors]


def test_errors_from_a_file_carry_lines(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text((FIXTURES / "routing-basic.yaml").read_text().replace("- 127.0.0.1:8003", "- 127.0.0.1:99999"))
    with pytest.raises(RoutingError) as info:
        load_routing(path)
    (error,) = info.value.errors
    assert error.path == "services[0].backends[1].endpoints[0]"
    assert error.line == 19 and "port must be between 1 and 65535" in error.message


def test_json_file_and_its_syntax_errors(tmp_path: Path) -> None:
    good = tmp_path / "routing.json"
    good.write_text(json.dumps({"services": [service()]}))
    assert load_routing(good).services[0].name == "svc"
    bad = tmp_path / "bad.json"
    bad.write_text('{"services": [\n  {"name": }\n]}')
    with pytest.raises(RoutingError, match="JSON"):
        load_routing(bad)


def test_validation_errors_from_a_file_use_field_paths(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text((FIXTURES / "routing-basic.yaml").read_text().replace("v2: 10", "v2: 5"))
    with pytest.raises(RoutingError, match=r"services\[0\]\.split: weights must sum to 100 \(got 95\)"):
        load_routing(path)


@pytest.mark.parametrize(("content", "fragment"), [("", "file is empty"), (None, "cannot read the file")])
def test_empty_or_missing_file(tmp_path: Path, content: str | None, fragment: str) -> None:
    path = tmp_path / "routing.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RoutingError, match=fragment):
        load_routing(path)
