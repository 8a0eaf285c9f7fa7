"""The desired-routing model: what it accepts, and how precisely it says no.

Bad input must produce every problem at once, each with a path in the user's
own words (``services[0].pathPrefix``), because a control plane that reveals one
mistake per attempt wastes a rollout window per typo.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from xds.routing import (
    Backend,
    DesiredRouting,
    Endpoint,
    FieldError,
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
    assert (svc.name, svc.port, svc.path_prefix, svc.timeout_s) == ("iris", 10000, "/v2/models/iris", 15.0)
    assert svc.split == {"v1": 90, "v2": 10}
    assert svc.backends[0].endpoints == [
        Endpoint(host="127.0.0.1", port=8001),
        Endpoint(host="127.0.0.1", port=8002, weight=3),
    ]
    assert svc.backends[1].endpoints == [Endpoint(host="127.0.0.1", port=8003)]
    assert svc.cluster_name("v2") == "iris-v2"
    assert svc.lb_policy == "least-request"  # the default: model servers have uneven latency


def test_camel_case_and_snake_case_mean_the_same() -> None:
    camel = service(
        pathPrefix="/m", timeout="500ms", headerRoutes=[{"header": "x-v", "exact": "2", "version": "v2"}],
        stickyHeader="x-user", lbPolicy="least-request", leastRequestChoiceCount=3,
        outlierDetection={"consecutive5xx": 3, "baseEjectionTime": "1m", "maxEjectionPercent": 50},
    )
    snake = service(
        path_prefix="/m", timeout_s=0.5, header_routes=[{"header": "x-v", "exact": "2", "version": "v2"}],
        sticky_header="x-user", lb_policy="least-request", least_request_choice_count=3,
        outlier_detection={"consecutive_5xx": 3, "base_ejection_time_s": 60, "max_ejection_percent": 50},
    )
    a = parse_routing({"listenAddress": "127.0.0.1", "services": [camel]})
    b = parse_routing({"listen_address": "127.0.0.1", "services": [snake]})
    assert a == b
    assert a.services[0].outlier_detection.base_ejection_time_s == 60.0


def test_python_callers_use_field_names() -> None:
    """The rollout engine builds the model in code, not from YAML."""
    svc = ServiceRouting(
        name="m", port=10000, backends=[Backend(version="v1", endpoints=[Endpoint.parse("10.0.0.1:80")])],
        split={"v1": 100}, timeout_s=3, path_prefix="/x",
    )
    assert DesiredRouting(services=[svc]).services[0].timeout_s == 3.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0), ("1m30s", 90.0), ("1.5s", 1.5), (7, 7.0), ("0", 0.0)],
)
def test_durations(text: Any, seconds: float) -> None:
    assert parse_routing({"services": [service(timeout=text)]}).services[0].timeout_s == seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1:8080", Endpoint(host="10.0.0.1", port=8080)),
        ("10.0.0.1:8080@3", Endpoint(host="10.0.0.1", port=8080, weight=3)),
        ("[::1]:8080@2", Endpoint(host="::1", port=8080, weight=2)),
    ],
)
def test_endpoint_parse(text: str, expected: Endpoint) -> None:
    assert Endpoint.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("10.0.0.1", "expected 'host:port' or 'host:port@weight'"),
        ("10.0.0.1:http", "port 'http' is not a number"),
        ("10.0.0.1:80@x", "weight 'x' is not a whole number"),
        ("10.0.0.1:80@0", "weight: must be between 1 and"),
        ("10.0.0.1:70000", "port: must be between 1 and 65535 (got 70000)"),
        ("::1:80", "brackets around an IPv6 host"),
        ("model-v1:80", "must be an IP address"),
    ],
)
def test_endpoint_parse_rejects(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="invalid endpoint") as info:
        Endpoint.parse(text)
    assert fragment in str(info.value)


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
    ({"split": {"v1": 90, "v3": 10}}, "services[0].split.v3", "unknown version 'v3' (backends: v1, v2)"),
    ({"split": {"v1": 150, "v2": -50}}, "services[0].split.v1", "must be between 0 and 100 (got 150)"),
    ({"split": {}}, "services[0].split", "must name at least one version"),
    ({"port": 70000}, "services[0].port", "must be between 1 and 65535 (got 70000)"),
    ({"port": 0}, "services[0].port", "must be between 1 and 65535 (got 0)"),
    ({"port": "http"}, "services[0].port", "expected a whole number (got 'http')"),
    ({"port": True}, "services[0].port", "expected a number (got True)"),
    ({"pathPrefix": "/a", "path_prefix": "/b"}, "services[0].pathPrefix", "given twice, in snake_case and in camelCase"),
    ({"name": "My_Svc"}, "services[0].name", "must be lowercase letters, digits and '-'"),
    ({"backends": []}, "services[0].backends", "must not be empty"),
    ({"backends": [{"version": "v1", "endpoints": []}, {"version": "v2", "endpoints": ["10.0.0.2:1"]}]},
     "services[0].backends[0].endpoints", "must not be empty"),
    ({"backends": [{"version": "v1", "endpoints": ["10.0.0.1:1"]}, {"version": "v1", "endpoints": ["10.0.0.2:1"]}],
      "split": {"v1": 100}}, "services[0].backends[1].version", "duplicate cluster name 'svc-v1'"),
    ({"backends": [{"version": "V_1", "endpoints": ["10.0.0.1:1"]}], "split": {"V_1": 100}},
     "services[0].backends[0].version", "must be lowercase letters, digits, '.' and '-'"),
    ({"backends": [{"version": 1.0, "endpoints": ["10.0.0.1:1"]}], "split": {"v1": 100}},
     "services[0].backends[0].version", "expected a string (got 1.0; quote it in YAML)"),
    ({"backends": [{"version": "v1", "endpoints": ["10.0.0.1:1", "10.0.0.1:1"]}], "split": {"v1": 100}},
     "services[0].backends[0].endpoints[1]", "duplicate endpoint 10.0.0.1:1"),
    ({"backends": [{"version": "v1", "endpoints": [{"host": "10.0.0.1", "port": 1, "weight": 0}]}], "split": {"v1": 100}},
     "services[0].backends[0].endpoints[0].weight", "must be between 1 and 4294967295 (got 0)"),
    ({"backends": [{"version": "v1", "endpoints": ["10.0.0.1:1@4294967295", "10.0.0.2:1"]}], "split": {"v1": 100}},
     "services[0].backends[0].endpoints", "weights must sum to at most 4294967295"),
    ({"backends": [{"version": "v1", "endpoints": ["10.0.0.1:99999"]}], "split": {"v1": 100}},
     "services[0].backends[0].endpoints[0].port", "must be between 1 and 65535 (got 99999)"),
    ({"backends": [{"version": "v1", "endpoints": ["localhost:80"]}], "split": {"v1": 100}},
     "services[0].backends[0].endpoints[0].host", "must be an IP address (got 'localhost')"),
    ({"backends": [{"version": "v1", "endpoints": "10.0.0.1:80"}], "split": {"v1": 100}},
     "services[0].backends[0].endpoints", "expected a list (got '10.0.0.1:80')"),
    ({"mirror": {"version": "v3", "percent": 5}}, "services[0].mirror.version", "unknown version 'v3'"),
    ({"mirror": {"version": "v2", "percent": 101}}, "services[0].mirror.percent", "must be between 0 and 100 (got 101)"),
    ({"headerRoutes": [{"header": "x-v", "exact": "2", "version": "v9"}]},
     "services[0].headerRoutes[0].version", "unknown version 'v9'"),
    ({"headerRoutes": [{"header": "x v", "exact": "2", "version": "v2"}]},
     "services[0].headerRoutes[0].header", "must be a valid HTTP header name"),
    ({"headerRoutes": [{"header": "x-v", "exact": "2", "version": "v2"}, {"header": "X-V", "exact": "2", "version": "v1"}]},
     "services[0].headerRoutes[1]", "duplicate header route"),
    ({"stickyHeader": "x user"}, "services[0].stickyHeader", "must be a valid HTTP header name"),
    ({"lbPolicy": "random"}, "services[0].lbPolicy", "expected 'round-robin' or 'least-request' (got 'random')"),
    ({"lbPolicy": "round-robin", "leastRequestChoiceCount": 4},
     "services[0].leastRequestChoiceCount", "only applies to lbPolicy 'least-request'"),
    ({"leastRequestChoiceCount": 1}, "services[0].leastRequestChoiceCount", "must be at least 2 (got 1)"),
    ({"timeout": "soon"}, "services[0].timeout", "expected a duration like 15s, 500ms or 2m (got 'soon')"),
    ({"timeout": "-1s"}, "services[0].timeout", "expected a duration"),
    ({"pathPrefix": "models"}, "services[0].pathPrefix", "must start with '/'"),
    ({"domains": []}, "services[0].domains", "must not be empty"),
    ({"domains": ["a.com", "A.com"]}, "services[0].domains[1]", "duplicate domain 'A.com'"),
    ({"outlierDetection": {"consecutive5xx": 0}}, "services[0].outlierDetection.consecutive5xx", "must be at least 1 (got 0)"),
    ({"outlierDetection": {"baseEjectionTime": "0s"}}, "services[0].outlierDetection.baseEjectionTime", "must be greater than 0"),
    ({"outlierDetection": {"maxEjectionPercent": 150}}, "services[0].outlierDetection.maxEjectionPercent", "must be between 0 and 100"),
    ({"pathPrefx": "/"}, "services[0].pathPrefx", "unknown field; did you mean 'pathPrefix'?"),
    ({"outlierDetection": {"bogus": 1}}, "services[0].outlierDetection.bogus", "unknown field (known fields: consecutive5xx,"),
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
        assert f"services[0].{field}: required field is missing" in errors


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([], "<root>: expected a mapping with 'services' (got a list)"),
        ({"services": None}, "services: expected a list (got nothing)"),
        ({"services": ["svc"]}, "services[0]: expected a mapping (got 'svc')"),
        ({"listenAddress": "any"}, "listenAddress: must be an IP address (got 'any')"),
        ({"servces": []}, "servces: unknown field; did you mean 'services'?"),
    ],
)
def test_bad_top_level(data: Any, expected: str) -> None:
    errors = errors_of(data)
    assert any(e.startswith(expected) for e in errors), errors


# --------------------------------------------------------------------------- across services


def one_version(name: str, version: str, **extra: Any) -> dict[str, Any]:
    return service(name=name, backends=[{"version": version, "endpoints": ["10.0.0.1:80"]}], split={version: 100}, **extra)


def test_cluster_names_collide_across_services() -> None:
    """'a-b' + 'c' and 'a' + 'b-c' are both cluster 'a-b-c'."""
    errors = errors_of({"services": [one_version("a-b", "c", port=1), one_version("a", "b-c", port=2)]})
    assert errors == ["services[1].backends[0].version: duplicate cluster name 'a-b-c' (also services[0].backends[0])"]


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
    parse_routing({"services": [one_version("a", "v1", port=1), one_version("b", "v1", port=2)]})


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
        "listenAddress: must be an IP address (got 'everywhere'); Envoy does not resolve DNS names here, so resolve the name first",
        "services[0].port: must be between 1 and 65535 (got 70000)",
        "services[0].split: weights must sum to 100 (got 90)",
        "services[0].lbPolicy: expected 'round-robin' or 'least-request' (got 'fastest')",
        "services[1].backends[0].endpoints: must not be empty",
        "services[1].split.v3: unknown version 'v3' (backends: v1, v2)",
        "services[3].backends[0].version: duplicate cluster name 'svc-v-1' (also services[2].backends[0])",
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
    assert str(FieldError("a.b", "bad")) == "a.b: bad"


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
    assert error.path.startswith(f"{path}:4:")
    assert "invalid YAML" in error.message


def test_yaml_duplicate_keys_are_errors(tmp_path: Path) -> None:
    """PyYAML would silently keep the second 'split'; a typo must never pass silently."""
    path = tmp_path / "routing.yaml"
    path.write_text("services:\n  - name: svc\n    split: {v1: 100}\n    split: {v1: 50}\n")
    with pytest.raises(RoutingError) as info:
        load_routing(path)
    (error,) = info.value.errors
    assert error.path == f"{path}:4:5"
    assert "duplicate key 'split'" in error.message


def test_json_file_and_its_syntax_errors(tmp_path: Path) -> None:
    good = tmp_path / "routing.json"
    good.write_text(json.dumps({"services": [service()]}))
    assert load_routing(good).services[0].name == "svc"
    bad = tmp_path / "bad.json"
    bad.write_text('{"services": [\n  {"name": }\n]}')
    with pytest.raises(RoutingError, match=r"bad\.json:2:\d+: invalid JSON"):
        load_routing(bad)


def test_validation_errors_from_a_file_use_field_paths(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text((FIXTURES / "routing-basic.yaml").read_text().replace("v2: 10", "v2: 5"))
    with pytest.raises(RoutingError, match=r"services\[0\]\.split: weights must sum to 100 \(got 95\)"):
        load_routing(path)


@pytest.mark.parametrize(("content", "fragment"), [("", "file is empty"), (None, "cannot read file")])
def test_empty_or_missing_file(tmp_path: Path, content: str | None, fragment: str) -> None:
    path = tmp_path / "routing.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RoutingError, match=fragment):
        load_routing(path)
