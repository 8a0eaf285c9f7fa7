"""The policies package: examples, defaults, typed API, JSON/YAML, hashing, JSON Schema, commands."""

from __future__ import annotations

import io
import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

import policies
from policies import (
    CustomSLO,
    ErrorRateSLO,
    LatencySLO,
    PolicyValidationError,
    RolloutPolicy,
    canonical_json,
    cmd_schema,
    cmd_validate,
    json_schema,
    load_policy,
    parse_policy,
    policy_hash,
)
from policies.document import read_document

EXAMPLES = Path(__file__).resolve().parent.parent / "policies" / "examples"
EXAMPLE_FILES = sorted(p for p in EXAMPLES.iterdir() if p.suffix in (".yaml", ".yml", ".json"))


# ---------------------------------------------------------------------------
# examples
# ---------------------------------------------------------------------------


def test_required_examples_exist() -> None:
    names = {p.name for p in EXAMPLE_FILES}
    assert {
        "sentiment.yaml",
        "minimal.yaml",
        "shadow-ab-sticky.yaml",
        "prometheus-custom.yaml",
        "mann-whitney.yaml",
        "threshold.yaml",
    } <= names


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_every_example_is_valid(path: Path) -> None:
    policy = load_policy(path)
    assert isinstance(policy, RolloutPolicy)
    assert re.fullmatch(r"[0-9a-f]{64}", policy_hash(policy))


def test_examples_cover_the_features_they_are_named_for() -> None:
    shadow = load_policy(EXAMPLES / "shadow-ab-sticky.yaml").spec.strategy
    assert shadow.shadow is not None and shadow.match and shadow.stickiness is not None
    prom = load_policy(EXAMPLES / "prometheus-custom.yaml").spec.analysis
    assert prom.source.type == "prometheus" and prom.source.prometheus is not None
    assert any(isinstance(s, CustomSLO) for s in prom.slos)
    assert load_policy(EXAMPLES / "mann-whitney.yaml").spec.analysis.judge == "mann-whitney"
    assert load_policy(EXAMPLES / "threshold.yaml").spec.analysis.judge == "threshold"


def test_sentiment_example_is_the_contract_example_typed() -> None:
    p = load_policy(EXAMPLES / "sentiment.yaml")
    assert p.api_version == "weir.dev/v1alpha1" and p.kind == "RolloutPolicy"
    assert p.metadata.name == p.name == "sentiment" and p.metadata.labels == {"team": "nlp"}
    s = p.spec
    assert s.proxy_group == "model-gateway"
    assert s.service.name == "sentiment"
    assert s.service.domains == ["sentiment.models.internal", "*"]
    assert s.service.port == 10000
    assert s.service.path_prefix == "/v2/models/sentiment"
    assert s.service.timeout == timedelta(seconds=5)
    assert s.stable.version == "v1" and s.canary.version == "v2"
    assert [(e.host, e.port, e.weight) for e in s.stable.endpoints] == [("127.0.0.1", 8081, 1), ("127.0.0.1", 8082, 1)]
    assert s.load_balancing.policy == "latency-aware"
    od = s.load_balancing.outlier_detection
    assert od is not None and (od.consecutive_5xx, od.base_ejection_time, od.max_ejection_percent) == (5, timedelta(seconds=30), 50)
    assert s.strategy.shadow is not None
    assert (s.strategy.shadow.percent, s.strategy.shadow.min_requests, s.strategy.shadow.max_duration) == (100, 1000, timedelta(minutes=10))
    steps = s.strategy.canary.steps
    assert [st.weight for st in steps] == [5, 25, 50, None, 100]
    assert [st.is_pause for st in steps] == [False, False, False, True, False]
    assert (steps[0].min_requests, steps[0].max_duration) == (500, timedelta(minutes=10))
    assert s.strategy.match[0].header.name == "x-canary" and s.strategy.match[0].header.exact == "true"
    assert s.strategy.stickiness is not None and s.strategy.stickiness.header == "x-user-id"
    a = s.analysis
    assert (a.judge, a.alpha, a.source.type) == ("sequential", 0.01, "access-log")
    er, p99, p50 = a.slos
    assert isinstance(er, ErrorRateSLO) and er.max_increase == 0.005
    assert isinstance(p99, LatencySLO) and (p99.quantile, p99.max_increase) == (0.99, 0.1)
    assert isinstance(p50, LatencySLO) and (p50.quantile, p50.max_increase) == (0.5, 0.05)
    assert (s.on_failure, s.on_inconclusive, s.deadline) == ("rollback", "pause", timedelta(hours=2))
    [hook] = s.webhooks
    assert (hook.on, hook.url, hook.timeout) == ("confirm-promotion", "http://127.0.0.1:9999/hooks/weir", timedelta(seconds=10))


def test_defaults_are_applied() -> None:
    s = load_policy(EXAMPLES / "minimal.yaml").spec
    assert s.proxy_group is None
    assert s.service.path_prefix == "/"
    assert s.service.timeout == timedelta(seconds=15)
    assert s.load_balancing.policy == "least-request"
    assert s.load_balancing.outlier_detection is None
    assert s.strategy.shadow is None and s.strategy.match == [] and s.strategy.stickiness is None
    assert s.analysis.judge == "sequential"
    assert s.analysis.alpha == policies.DEFAULT_ALPHA == 0.05
    assert s.analysis.source.type == "access-log" and s.analysis.source.prometheus is None
    assert s.on_failure == "rollback"
    assert s.on_inconclusive == "pause"
    assert s.deadline is None and s.webhooks == []
    assert load_policy(EXAMPLES / "minimal.yaml").metadata.labels == {}
    step = s.strategy.canary.steps[0]
    assert step.min_requests is None and step.max_duration is None


def test_pause_written_without_value_is_a_gate() -> None:
    text = (EXAMPLES / "minimal.yaml").read_text().replace("        - weight: 50\n", "        - pause:\n")
    steps = parse_policy(text).spec.strategy.canary.steps
    assert steps[1].is_pause and steps[1].weight is None


def test_endpoint_weights_and_ipv6() -> None:
    p = load_policy(EXAMPLES / "shadow-ab-sticky.yaml")
    assert [(e.host, e.port, e.weight) for e in p.spec.stable.endpoints] == [("10.0.1.10", 8000, 2), ("10.0.1.11", 8000, 1)]
    assert [str(e) for e in p.spec.stable.endpoints] == ["10.0.1.10:8000@2", "10.0.1.11:8000"]
    t = load_policy(EXAMPLES / "threshold.yaml")
    assert t.spec.stable.endpoints[0].host == "::1" and t.spec.stable.endpoints[0].address == "[::1]:8081"


def test_yaml_12_scalars_keep_on_and_versions_as_text() -> None:
    p = load_policy(EXAMPLES / "shadow-ab-sticky.yaml")
    assert p.spec.stable.version == "2024.05"  # quoted in the file
    text = (EXAMPLES / "minimal.yaml").read_text().replace("  name: echo\n", "  name: echo\n  labels: {on: yes, d: 2024-06-01}\n", 1)
    assert parse_policy(text).metadata.labels == {"on": "yes", "d": "2024-06-01"}


def test_models_are_immutable() -> None:
    p = load_policy(EXAMPLES / "minimal.yaml")
    with pytest.raises(ValidationError):
        p.spec.service.port = 1  # type: ignore[misc]


def test_model_validate_enforces_cross_field_rules_too() -> None:
    data = read_document((EXAMPLES / "minimal.yaml").read_text()).data
    data["spec"]["canary"]["version"] = "v1"
    with pytest.raises(ValidationError, match=r"spec\.canary\.version: must differ"):
        RolloutPolicy.model_validate(data)


# ---------------------------------------------------------------------------
# JSON and YAML, canonical form, hashing
# ---------------------------------------------------------------------------


def test_json_and_yaml_load_to_the_same_policy() -> None:
    from_yaml = load_policy(EXAMPLES / "minimal.yaml")
    from_json = load_policy(EXAMPLES / "minimal.json")
    assert from_yaml == from_json  # 1% in YAML, 0.01 in JSON
    assert policy_hash(from_yaml) == policy_hash(from_json)


def _reorder(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [_reorder(v) for v in value]
    return value


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_hash_is_stable_across_key_order_and_format(path: Path) -> None:
    policy = load_policy(path)
    data = _reorder(json.loads(canonical_json(policy)))
    as_json = json.dumps(data, indent=3)
    as_yaml = yaml.safe_dump(data, default_flow_style=False, sort_keys=False)
    as_flow_yaml = yaml.safe_dump(data, default_flow_style=True, sort_keys=False)
    for text in (as_json, as_yaml, as_flow_yaml):
        again = parse_policy(text)
        assert again == policy
        assert policy_hash(again) == policy_hash(policy)


def test_hash_ignores_spelling_and_explicit_defaults_but_not_meaning() -> None:
    base = (EXAMPLES / "sentiment.yaml").read_text()
    same = base
    for old, new in [
        ("maxIncrease: 10%", "maxIncrease: 0.1"),
        ("deadline: 2h", "deadline: 120m"),
        ("baseEjectionTime: 30s", "baseEjectionTime: 30000ms"),
        ("  onFailure: rollback              # rollback | pause (default rollback)\n", ""),  # the default
        ("# Field names and meanings", "# (a comment changed) Field names and meanings"),
    ]:
        assert old in same
        same = same.replace(old, new)
    assert policy_hash(parse_policy(same)) == policy_hash(parse_policy(base))
    different = base.replace("maxIncrease: 10%", "maxIncrease: 11%")
    assert policy_hash(parse_policy(different)) != policy_hash(parse_policy(base))


def test_canonical_json_writes_file_notation() -> None:
    data = json.loads(canonical_json(load_policy(EXAMPLES / "sentiment.yaml")))
    assert data["spec"]["service"]["timeout"] == "5s"
    assert data["spec"]["deadline"] == "2h"
    assert data["spec"]["stable"]["endpoints"] == ["127.0.0.1:8081", "127.0.0.1:8082"]
    assert data["spec"]["strategy"]["canary"]["steps"][3] == {"pause": {}}
    assert data["spec"]["loadBalancing"]["outlierDetection"]["consecutive5xx"] == 5
    assert data["spec"]["analysis"]["slos"][1] == {"metric": "latency", "quantile": 0.99, "maxIncrease": 0.1}
    assert "proxyGroup" in data["spec"] and "null" not in canonical_json(load_policy(EXAMPLES / "minimal.yaml"))


def test_error_rate_margin_reads_one_way_and_writes_back_the_same_way() -> None:
    base = (EXAMPLES / "sentiment.yaml").read_text()
    assert "maxIncrease: 0.005" in base
    for spelling, value, written in [("0.005", 0.005, 0.005), ("0.5%", 0.005, 0.005), ("0.1", 0.1, 0.1), ("10%", 0.1, 0.1),
                                     ("20%", 0.2, "20%"), ("99.5%", 0.995, "99.5%")]:
        policy = parse_policy(base.replace("maxIncrease: 0.005", f"maxIncrease: {spelling}"))
        er = policy.spec.analysis.slos[0]
        assert er.max_increase == pytest.approx(value)
        data = json.loads(canonical_json(policy))
        assert data["spec"]["analysis"]["slos"][0]["maxIncrease"] == written
        # what is written loads again to the same value
        again = parse_policy(base.replace("maxIncrease: 0.005", f"maxIncrease: {json.dumps(written)}"))
        assert again.spec.analysis.slos[0].max_increase == pytest.approx(value)
    for refused in ("1", "0.5", "0.25", "100%", "150%"):
        with pytest.raises(PolicyValidationError):
            parse_policy(base.replace("maxIncrease: 0.005", f"maxIncrease: {refused}"))


# ---------------------------------------------------------------------------
# JSON Schema
# ---------------------------------------------------------------------------

_ANNOTATIONS = {"title", "description", "default", "examples", "discriminator", "$schema", "$id", "$defs"}
_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _type_ok(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def schema_errors(schema: dict[str, Any], value: Any, root: dict[str, Any], where: str = "") -> list[str]:
    """A deliberately small JSON Schema (2020-12 subset) checker: enough to hold the exported schema honest."""
    unknown = set(schema) - _ANNOTATIONS - {
        "$ref", "type", "properties", "required", "additionalProperties", "items", "enum", "const",
        "anyOf", "oneOf", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "minItems", "minLength", "maxLength", "pattern",
    }  # fmt: skip
    assert not unknown, f"schema uses keywords this checker does not know: {unknown}"
    out: list[str] = []
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        out += schema_errors(root["$defs"][ref.split("/")[-1]], value, root, where)
    if "type" in schema and not _type_ok(value, schema["type"]):
        return out + [f"{where}: not {schema['type']}"]
    if "const" in schema and value != schema["const"]:
        out.append(f"{where}: != {schema['const']}")
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{where}: not in {schema['enum']}")
    for key, test in (
        ("minimum", lambda v, b: v >= b),
        ("maximum", lambda v, b: v <= b),
        ("exclusiveMinimum", lambda v, b: v > b),
        ("exclusiveMaximum", lambda v, b: v < b),
    ):
        if key in schema and _type_ok(value, "number") and not test(value, schema[key]):
            out.append(f"{where}: {key} {schema[key]}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{where}: does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 1 << 30):
            out.append(f"{where}: length")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{where}: too few items")
        if "items" in schema:
            for i, item in enumerate(value):
                out += schema_errors(schema["items"], item, root, f"{where}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        out += [f"{where}.{k}: required" for k in schema.get("required", []) if k not in value]
        if schema.get("additionalProperties") is False:
            out += [f"{where}.{k}: not allowed" for k in value if k not in props]
        for k, v in value.items():
            if k in props:
                out += schema_errors(props[k], v, root, f"{where}.{k}")
    if "anyOf" in schema and all(schema_errors(s, value, root, where) for s in schema["anyOf"]):
        out.append(f"{where}: matches none of anyOf")
    if "oneOf" in schema and sum(not schema_errors(s, value, root, where) for s in schema["oneOf"]) != 1:
        out.append(f"{where}: does not match exactly one of oneOf")
    return out


def test_json_schema_is_json_and_well_formed() -> None:
    schema = json_schema()
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert set(schema["required"]) == {"apiVersion", "kind", "metadata", "spec"}
    text = json.dumps(schema)
    for ref in re.findall(r'"\$ref": "#/\$defs/([^"]+)"', text):
        assert ref in schema["$defs"]
    spec = schema["$defs"]["Spec"]["properties"]
    assert {"proxyGroup", "loadBalancing", "onFailure", "onInconclusive"} <= set(spec)  # camelCase names
    assert schema["$defs"]["Service"]["properties"]["timeout"]["default"] == "15s"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.name)
def test_json_schema_accepts_every_example(path: Path) -> None:
    schema = json_schema()
    data = read_document(path.read_text(), source=str(path)).data
    assert schema_errors(schema, data, schema) == []


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(kind="Rollout"), ".kind"),
        (lambda d: d["spec"].update(stratgy={}), ".spec.stratgy: not allowed"),
        (lambda d: d["spec"].pop("strategy"), ".spec.strategy: required"),
        (lambda d: d["spec"]["strategy"]["canary"]["steps"].append({"weight": 120}), "steps[3].weight"),
        (lambda d: d["spec"]["strategy"]["canary"]["steps"].append({"weight": 10, "pause": {}}), "oneOf"),
        (lambda d: d["spec"]["service"].update(timeout="5 seconds"), ".spec.service.timeout"),
        (lambda d: d["spec"]["analysis"]["slos"].append({"metric": "latency", "maxIncrease": "5%"}), "oneOf"),
    ],
)
def test_json_schema_rejects_structural_mistakes(mutate: Any, expected: str) -> None:
    schema = json_schema()
    data = read_document((EXAMPLES / "minimal.yaml").read_text()).data
    mutate(data)
    problems = schema_errors(schema, data, schema)
    assert any(expected in p for p in problems), problems


# ---------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------


def test_cmd_validate_ok(tmp_path: Path) -> None:
    out = io.StringIO()
    assert cmd_validate([str(EXAMPLES / "minimal.yaml"), str(EXAMPLES / "minimal.json")], out=out) == 0
    assert out.getvalue().splitlines() == [f"{EXAMPLES / 'minimal.yaml'}: ok", f"{EXAMPLES / 'minimal.json'}: ok"]


def test_cmd_validate_prints_every_error_with_file_path_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        (EXAMPLES / "minimal.yaml").read_text().replace("port: 10000", "port: 0").replace("weight: 50", "weight: 5")
    )
    out = io.StringIO()
    assert cmd_validate([str(bad), str(EXAMPLES / "minimal.yaml")], out=out) == 1
    assert out.getvalue().splitlines() == [
        f"{bad}: spec.service.port: must be between 1 and 65535 (got 0), line 12",
        f"{bad}: spec.strategy.canary.steps[1].weight: weights must be non-decreasing: 5 is below 10 at steps[0]; "
        "a rollout only adds canary traffic - to send less, roll back, line 23",
        f"{EXAMPLES / 'minimal.yaml'}: ok",
    ]


def test_cmd_validate_missing_unreadable_and_empty(tmp_path: Path) -> None:
    out = io.StringIO()
    missing = tmp_path / "nope.yaml"
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert cmd_validate([str(missing), str(binary)], out=out) == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == f"{missing}: no such file"
    assert lines[1].startswith(f"{binary}: not UTF-8 text")
    out = io.StringIO()
    assert cmd_validate([], out=out) == 1 and "no policy files given" in out.getvalue()
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    out = io.StringIO()
    assert cmd_validate([str(empty_dir)], out=out) == 1 and "no .yaml, .yml or .json files" in out.getvalue()


def test_cmd_validate_accepts_a_directory() -> None:
    out = io.StringIO()
    assert cmd_validate([str(EXAMPLES)], out=out) == 0
    assert len(out.getvalue().splitlines()) == len(EXAMPLE_FILES)


def test_load_policy_keeps_os_errors_apart_from_content_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_policy(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(PolicyValidationError) as info:
        load_policy(bad)
    assert info.value.source == str(bad)
    assert {e.path for e in info.value.errors} == {"apiVersion", "kind", "metadata", "spec"}


def test_cmd_schema_prints_the_schema() -> None:
    out = io.StringIO()
    assert cmd_schema(out=out) == 0
    assert json.loads(out.getvalue()) == json_schema()
    assert out.getvalue().startswith("{\n  ")


def test_public_api_is_exported() -> None:
    for name in (
        "RolloutPolicy", "PolicyError", "PolicyValidationError", "parse_policy", "load_policy",
        "policy_hash", "json_schema", "cmd_validate", "cmd_schema", "validate_policy_data",
    ):  # fmt: skip
        assert name in policies.__all__ and hasattr(policies, name)


def test_commands_default_to_the_current_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_validate([str(EXAMPLES / "minimal.yaml")]) == 0
    assert cmd_schema() == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{EXAMPLES / 'minimal.yaml'}: ok\n{{")


def test_yaml_flow_mapping_that_is_not_json_still_loads() -> None:
    text = json.dumps(json.loads(canonical_json(load_policy(EXAMPLES / "minimal.yaml"))))
    flow = text.replace('"', "").replace("*", '"*"')  # {apiVersion: weir.dev/v1alpha1, ...}: YAML, not JSON
    assert parse_policy(flow) == load_policy(EXAMPLES / "minimal.yaml")
