"""Every validation rule of the policy format, each with a failing input: exact path, message and line."""

from __future__ import annotations

import pytest

from policies import PolicyError, PolicyValidationError, parse_policy, validate_policy_data

# A complete, valid policy. Each case below edits one or more lines of it.
BASE = """\
apiVersion: weir.dev/v1alpha1
kind: RolloutPolicy
metadata:
  name: sentiment
  labels: {team: nlp}
spec:
  service:
    name: sentiment
    domains: ["sentiment.models.internal", "*"]
    port: 10000
    pathPrefix: /v2/models/sentiment
    timeout: 5s
  stable:
    version: v1
    endpoints: ["127.0.0.1:8081", "127.0.0.1:8082"]
  canary:
    version: v2
    endpoints: ["127.0.0.1:8091"]
  loadBalancing:
    policy: latency-aware
    outlierDetection:
      consecutive5xx: 5
      baseEjectionTime: 30s
      maxEjectionPercent: 50
  strategy:
    shadow:
      percent: 100
      minRequests: 1000
      maxDuration: 10m
    canary:
      steps:
        - weight: 5
          minRequests: 500
          maxDuration: 10m
        - weight: 25
        - weight: 50
        - pause: {}
        - weight: 100
    match:
      - header: {name: x-canary, exact: "true"}
    stickiness:
      header: x-user-id
  analysis:
    judge: sequential
    alpha: 0.01
    source:
      type: access-log
    slos:
      - metric: error-rate
        maxIncrease: 0.005
      - metric: latency
        quantile: 0.99
        maxIncrease: 10%
  onFailure: rollback
  onInconclusive: pause
  deadline: 2h
  webhooks:
    - on: confirm-promotion
      url: http://127.0.0.1:9999/hooks/weir
      timeout: 10s
"""


def edit(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, f"ambiguous edit: {old!r}"
    return text.replace(old, new)


def line_of(text: str, needle: str) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(hits) == 1, f"{needle!r} found on lines {hits}"
    return hits[0]


def errors_of(text: str, source: str | None = None) -> list[PolicyError]:
    with pytest.raises(PolicyValidationError) as info:
        parse_policy(text, source=source)
    return info.value.errors


def test_base_is_valid() -> None:
    # Every case below edits this text; each of its sections must have been read as written.
    policy = parse_policy(BASE)
    spec = policy.spec
    assert policy.metadata.name == "sentiment"
    assert (spec.stable.version, spec.canary.version, spec.service.port) == ("v1", "v2", 10000)
    assert [s.weight for s in spec.strategy.canary.steps] == [5, 25, 50, None, 100]
    assert spec.strategy.canary.steps[3].is_pause
    assert [s.metric for s in spec.analysis.slos] == ["error-rate", "latency"]
    assert spec.deadline.total_seconds() == 7200 and spec.analysis.alpha == 0.01
    assert validate_policy_data(policy.model_dump(mode="json", by_alias=True, exclude_none=True)) == policy  # and reads back


# (old text, new text, expected path, message fragment, line needle (default: first line of `new`))
CASES = [
    # apiVersion / kind / metadata
    ("apiVersion: weir.dev/v1alpha1", "apiVersion: weir.dev/v1", "apiVersion", 'must be weir.dev/v1alpha1 (got "weir.dev/v1")', None),
    ("kind: RolloutPolicy", "kind: Rollout", "kind", 'must be RolloutPolicy (got "Rollout")', None),
    ("  name: sentiment\n  labels", "  name: Sentiment\n  labels", "metadata.name", 'a-z, 0-9 and \'-\'', "name: Sentiment"),
    ("  name: sentiment\n  labels", "  name: " + "a" * 64 + "\n  labels", "metadata.name", "1-63 characters", "a" * 64),
    ("  name: sentiment\n  labels", "  name: -sentiment\n  labels", "metadata.name", "starting and ending with a letter or digit", "-sentiment"),
    ("labels: {team: nlp}", "labels: {team: 7}", "metadata.labels.team", 'expected a string (got 7); quote it', None),
    # unknown fields
    ("  strategy:\n", "  stratgy:\n", "spec.stratgy", "unknown field; did you mean `strategy`?", "stratgy:"),
    ("    pathPrefix:", "    path_prefix:", "spec.service.path_prefix", "did you mean `pathPrefix`? (files use camelCase)", None),
    ("    timeout: 5s", "    timeout: 5s\n    retry: 3", "spec.service.retry", "unknown field; did you mean `retries`?", "retry"),
    ("    timeout: 5s", "    timeout: 5s\n    retries: 3", "spec.service.retries", "expected a mapping with onReset, attempts (got 3)", "retries"),
    # service
    ("port: 10000", "port: 70000", "spec.service.port", "must be between 1 and 65535 (got 70000)", None),
    ("port: 10000", 'port: "10000"', "spec.service.port", 'expected a whole number (got "10000"); remove the quotes', None),
    ("timeout: 5s", "timeout: 5", "spec.service.timeout", "add a unit, e.g. 5s (got the bare number 5)", None),
    ("timeout: 5s", "timeout: 5 seconds", "spec.service.timeout", 'expected a duration such as 500ms, 30s, 10m, 2h or 1h30m (got "5 seconds")', None),
    ("timeout: 5s", "timeout: 0s", "spec.service.timeout", "must be longer than 0s (got 0s)", None),
    ("pathPrefix: /v2/models/sentiment", "pathPrefix: v2/models", "spec.service.pathPrefix", "must be a path starting with /", None),
    ('domains: ["sentiment.models.internal", "*"]', "domains: []", "spec.service.domains", "needs at least one domain", None),
    ('domains: ["sentiment.models.internal", "*"]', 'domains: ["a.internal", "A.internal"]', "spec.service.domains[1]", "listed twice", None),
    ('domains: ["sentiment.models.internal", "*"]', 'domains: ["a.*.internal"]', "spec.service.domains[0]", "wildcard", None),
    ('domains: ["sentiment.models.internal", "*"]', 'domains: "*"', "spec.service.domains", 'expected a list (got "*"); write a list: ["*"]', None),
    # stable / canary
    ("version: v2", "version: v1  # same as stable", "spec.canary.version", "must differ from spec.stable.version (both are 'v1')", None),
    ("version: v2", "version: 2.0", "spec.canary.version", 'expected a string (got 2.0); quote it if you meant the text: "2.0"', None),
    ('endpoints: ["127.0.0.1:8091"]', 'endpoints: ["127.0.0.1"]', "spec.canary.endpoints[0]", "the port is missing", None),
    ('endpoints: ["127.0.0.1:8091"]', 'endpoints: ["127.0.0.1:99999"]', "spec.canary.endpoints[0]", "port must be between 1 and 65535", None),
    ('endpoints: ["127.0.0.1:8091"]', 'endpoints: ["300.0.0.1:8091"]', "spec.canary.endpoints[0]", "is not an IPv4 address", None),
    ('endpoints: ["127.0.0.1:8091"]', 'endpoints: ["127.0.0.1:8091@0"]', "spec.canary.endpoints[0]", "weight after @ must be between 1 and", None),
    ('endpoints: ["127.0.0.1:8091"]', 'endpoints: ["127.0.0.1:8091@x"]', "spec.canary.endpoints[0]", "weight after @ must be a whole number", None),
    ('endpoints: ["127.0.0.1:8091"]', 'endpoints: ["::1:8091"]', "spec.canary.endpoints[0]", "put IPv6 hosts in brackets", None),
    ('endpoints: ["127.0.0.1:8091"]', 'endpoints: ["bad_host:80"]', "spec.canary.endpoints[0]", "is not a valid host name", None),
    ('endpoints: ["127.0.0.1:8091"]', 'endpoints: [8091]', "spec.canary.endpoints[0]", 'expected "host:port" or "host:port@weight"', None),
    ('endpoints: ["127.0.0.1:8091"]', 'endpoints: []', "spec.canary.endpoints", "needs at least one endpoint", None),
    ('endpoints: ["127.0.0.1:8091"]', 'endpoints: ["127.0.0.1:8091", "127.0.0.1:8091@2"]', "spec.canary.endpoints[1]", "127.0.0.1:8091 is listed twice (first at endpoints[0])", None),
    ('endpoints: ["127.0.0.1:8091"]', 'endpoints: ["127.0.0.1:8082"]', "spec.canary.endpoints[0]", "127.0.0.1:8082 is also spec.stable.endpoints[1]", None),
    # load balancing
    ("policy: latency-aware", "policy: latency_aware", "spec.loadBalancing.policy", 'must be one of round-robin, least-request, latency-aware (got "latency_aware"); did you mean latency-aware?', None),
    ("consecutive5xx: 5", "consecutive5xx: 0", "spec.loadBalancing.outlierDetection.consecutive5xx", "must be at least 1 (got 0)", None),
    ("maxEjectionPercent: 50", "maxEjectionPercent: 101", "spec.loadBalancing.outlierDetection.maxEjectionPercent", "must be between 0 and 100 (got 101)", None),
    ("      baseEjectionTime: 30s\n", "", "spec.loadBalancing.outlierDetection.baseEjectionTime", "required field is missing", "outlierDetection:"),
    # shadow
    ("percent: 100", "percent: 0", "spec.strategy.shadow.percent", "must be greater than 0 and at most 100", None),
    ("percent: 100", "percent: 150", "spec.strategy.shadow.percent", "must be greater than 0 and at most 100 (got 150)", None),
    ("minRequests: 1000", "minRequests: 0", "spec.strategy.shadow.minRequests", "must be at least 1 (got 0)", None),
    ("      maxDuration: 10m\n    canary:", "      maxDuration: 10 m\n    canary:", "spec.strategy.shadow.maxDuration", "expected a duration", "10 m"),
    # steps
    ("        - weight: 50\n", "        - weight: 120\n", "spec.strategy.canary.steps[2].weight", "must be between 0 and 100 (got 120)", "weight: 120"),
    ("        - weight: 50\n", "        - weight: 12.5\n", "spec.strategy.canary.steps[2].weight", "expected a whole number (got 12.5)", "weight: 12.5"),
    ("        - weight: 50\n", "        - weight: 20\n", "spec.strategy.canary.steps[2].weight", "weights must be non-decreasing: 20 is below 25 at steps[1]", "weight: 20"),
    ("        - pause: {}\n", "        - pause: {}\n          weight: 60\n", "spec.strategy.canary.steps[3]", "exactly one of `weight: N`", "pause: {}"),
    ("        - pause: {}\n", "        - {}\n", "spec.strategy.canary.steps[3]", "found neither", "- {}"),
    ("        - pause: {}\n", "        - pause: {}\n          minRequests: 10\n", "spec.strategy.canary.steps[3]", "minRequests and maxDuration apply only to weight steps", "pause: {}"),
    ("        - pause: {}\n", "        - pause: {until: promote}\n", "spec.strategy.canary.steps[3].pause.until", "unknown field", "pause: {until"),
    ("        - pause: {}\n", "        - 60\n", "spec.strategy.canary.steps[3]", "expected a mapping with weight, pause, minRequests, maxDuration (got 60)", "- 60"),
    ("        - weight: 5\n          minRequests: 500\n          maxDuration: 10m\n        - weight: 25\n        - weight: 50\n        - pause: {}\n        - weight: 100\n",
     "        []\n", "spec.strategy.canary.steps", "needs at least one step", "steps:"),
    ("          maxDuration: 10m\n        - weight: 25", "          maxDuration: 10min\n        - weight: 25", "spec.strategy.canary.steps[0].maxDuration", "expected a duration", "10min"),
    # match / stickiness
    ('exact: "true"', "exact: true", "spec.strategy.match[0].header.exact", 'expected a string (got true); quote it if you meant the text: "true"', None),
    ("name: x-canary", "name: x canary", "spec.strategy.match[0].header.name", "must be an HTTP header name", None),
    ("header: x-user-id", "header: {name: x-user-id}", "spec.strategy.stickiness.header", "expected a string (got a mapping)", None),
    # analysis
    ("judge: sequential", "judge: bayesian", "spec.analysis.judge", "must be one of sequential, mann-whitney, threshold", None),
    ("alpha: 0.01", "alpha: 5", "spec.analysis.alpha", "write 5% if you meant percent", None),
    ("alpha: 0.01", "alpha: 0", "spec.analysis.alpha", "must be greater than 0 and less than 1", None),
    ("type: access-log", "type: statsd", "spec.analysis.source.type", "must be one of access-log, envoy-stats, prometheus", None),
    ("type: access-log", "type: prometheus", "spec.analysis.source.prometheus", "required when type is prometheus", "source:"),
    ("type: access-log", "type: access-log\n      prometheus: {url: http://p:9090}", "spec.analysis.source.prometheus", "only used with type: prometheus (type is access-log)", "prometheus:"),
    ("type: access-log", "type: prometheus\n      prometheus: {url: p:9090}", "spec.analysis.source.prometheus.url", "expected an http:// or https:// URL", "prometheus:"),
    ("maxIncrease: 0.005", "maxIncrease: 5", "spec.analysis.slos[0].maxIncrease", "so 5 would mean 500%; write 5% if you meant percent", None),
    ("maxIncrease: 0.005", "maxIncrease: 150%", "spec.analysis.slos[0].maxIncrease", "must be below 100% for an error rate", None),
    ("maxIncrease: 0.005", "maxIncrease: 100%", "spec.analysis.slos[0].maxIncrease", "an increase of 100 percentage points can never fail", None),
    # a bare 1 was read as 100 percentage points: an error-rate SLO that could never fail
    ("maxIncrease: 0.005", "maxIncrease: 1  # one point", "spec.analysis.slos[0].maxIncrease",
     "the bare number 1 would mean 100 points more errors than stable and this SLO could never fail. Write 1% for 1 point(s)", "# one point"),
    ("maxIncrease: 0.005", "maxIncrease: 0.5", "spec.analysis.slos[0].maxIncrease", "Write 0.5% for 0.5 point(s), or 50% if you really mean 50 points", None),
    ("maxIncrease: 0.005", 'maxIncrease: "0.005"', "spec.analysis.slos[0].maxIncrease", "write the fraction without quotes (0.005) or the percent with a % sign (0.5%)", None),
    ("maxIncrease: 0.005", "maxIncrease: lots", "spec.analysis.slos[0].maxIncrease", "expected a percentage such as 10% or a fraction such as 0.1", None),
    ("maxIncrease: 0.005", "maxIncrease: 0.005\n        quantile: 0.5", "spec.analysis.slos[0].quantile", "unknown field for metric error-rate; allowed here: metric, maxIncrease", "quantile: 0.5"),
    ("quantile: 0.99", "quantile: 1", "spec.analysis.slos[1].quantile", "must be greater than 0 and less than 1 (got 1)", None),
    ("quantile: 0.99", "quantile: 0", "spec.analysis.slos[1].quantile", "must be greater than 0 and less than 1", None),
    ("        quantile: 0.99\n", "", "spec.analysis.slos[1].quantile", "required field is missing", "metric: latency"),
    ("metric: latency", "metric: latencies", "spec.analysis.slos[1].metric", 'must be one of error-rate, latency, ttfb, tpot, custom (got "latencies"); did you mean latency?', None),
    ("      - metric: latency\n", "      - quantile: 0.5\n", "spec.analysis.slos[1].metric", "required field is missing (one of error-rate, latency, ttfb, tpot, custom)", "quantile: 0.5"),
    ("    slos:\n      - metric: error-rate\n        maxIncrease: 0.005\n      - metric: latency\n        quantile: 0.99\n        maxIncrease: 10%\n",
     "    slos: []\n", "spec.analysis.slos", "needs at least one SLO", "slos: []"),
    ("      - metric: latency\n        quantile: 0.99\n        maxIncrease: 10%\n",
     "      - metric: error-rate  # again\n        maxIncrease: 1%\n", "spec.analysis.slos[1]", "duplicates slos[0]", "# again"),
    # custom SLOs
    ("      - metric: latency\n        quantile: 0.99\n        maxIncrease: 10%\n",
     "      - metric: custom\n        query: sum(rate(x[1m]))\n        max: 0.1\n",
     "spec.analysis.slos[1].metric", "custom metrics need the prometheus source (spec.analysis.source.type is access-log)", "metric: custom"),
    ("      - metric: latency\n        quantile: 0.99\n        maxIncrease: 10%\n",
     "      - metric: custom\n        max: 0.1\n", "spec.analysis.slos[1].query", "required field is missing", "metric: custom"),
    ("      - metric: latency\n        quantile: 0.99\n        maxIncrease: 10%\n",
     "      - metric: custom\n        query: up\n", "spec.analysis.slos[1].max", "required field is missing", "metric: custom"),
    ("      - metric: latency\n        quantile: 0.99\n        maxIncrease: 10%\n",
     "      - metric: custom\n        query: up\n        maxIncrease: 10%\n        max: 1\n", "spec.analysis.slos[1].maxIncrease", "unknown field for metric custom; allowed here: metric, query, max", "maxIncrease: 10%"),
    ("      - metric: latency\n        quantile: 0.99\n        maxIncrease: 10%\n",
     '      - metric: custom\n        query: x{v="{{ver}}"}\n        max: 1\n', "spec.analysis.slos[1].query", "unknown placeholder {{ver}}", "query:"),
    # top-level spec fields
    ("onFailure: rollback", "onFailure: retry", "spec.onFailure", "must be one of rollback, pause", None),
    ("onInconclusive: pause", "onInconclusive: promote", "spec.onInconclusive", "must be one of pause, rollback", None),
    ("deadline: 2h", "deadline: 2 hours", "spec.deadline", "expected a duration", None),
    ("deadline: 2h", "deadline: 30m2h", "spec.deadline", "give each unit once, largest first", None),
    ("- on: confirm-promotion", "- on: yes", "spec.webhooks[0].on", 'must be one of pre-rollout, confirm-promotion, post-rollout, rollback (got "yes")', None),
    ("url: http://127.0.0.1:9999/hooks/weir", "url: 127.0.0.1:9999/hooks", "spec.webhooks[0].url", "expected an http:// or https:// URL", None),
    ("      timeout: 10s\n", "", "spec.webhooks[0].timeout", "required field is missing", "- on:"),
    # reading
    ("  service:\n    name: sentiment", "  service:\n    name: sentiment\n    name: other", "spec.service.name", "duplicate key (first on line 8)", "name: other"),
]


@pytest.mark.parametrize(("old", "new", "path", "fragment", "needle"), CASES, ids=[f"{i}-{c[2]}" for i, c in enumerate(CASES)])
def test_rule_reports_path_message_and_line(old: str, new: str, path: str, fragment: str, needle: str | None) -> None:
    text = edit(old, new)
    errors = errors_of(text)
    line = line_of(text, needle or new.strip().splitlines()[0])
    matching = [e for e in errors if e.path == path]
    assert matching, f"no error at {path}; got:\n" + "\n".join(map(str, errors))
    assert any(fragment in e.message and e.line == line for e in matching), (
        f"expected {fragment!r} on line {line}; got:\n" + "\n".join(map(str, errors))
    )


def test_error_string_matches_the_documented_form() -> None:
    text = edit("        - weight: 50\n", "        - weight: 120\n")
    [error] = errors_of(text)
    assert str(error) == f"spec.strategy.canary.steps[2].weight: must be between 0 and 100 (got 120), line {line_of(text, 'weight: 120')}"
    assert error == PolicyError("spec.strategy.canary.steps[2].weight", "must be between 0 and 100 (got 120)", 36)


def test_three_mistakes_give_three_errors_in_file_order() -> None:
    text = edit("labels: {team: nlp}", "labls: {team: nlp}")
    text = edit("        - weight: 50\n", "        - weight: 120\n", text)
    text = edit("judge: sequential", "judge: sequental", text)
    with pytest.raises(PolicyValidationError) as info:
        parse_policy(text, source="three.yaml")
    errors = info.value.errors
    assert [e.path for e in errors] == [
        "metadata.labls",
        "spec.strategy.canary.steps[2].weight",
        "spec.analysis.judge",
    ]
    assert [e.line for e in errors] == [5, 36, 44]
    assert "did you mean `labels`?" in errors[0].message
    assert "did you mean sequential?" in errors[2].message
    assert info.value.source == "three.yaml"
    assert str(info.value) == "\n".join(str(e) for e in errors)


def test_cross_field_errors_are_reported_alongside_field_errors() -> None:
    text = edit("version: v2", "version: v1")  # cross-field
    text = edit("port: 10000", "port: 0", text)  # field-level, elsewhere in spec
    text = edit("        - weight: 50\n", "        - weight: 20\n", text)  # cross-field
    paths = [e.path for e in errors_of(text)]
    assert paths == ["spec.service.port", "spec.canary.version", "spec.strategy.canary.steps[2].weight"]


def test_typo_for_a_required_section_reports_the_typo_and_the_missing_section() -> None:
    text = edit("  strategy:\n", "  stratgy:\n")
    errors = {e.path: e for e in errors_of(text)}
    assert errors["spec.stratgy"].line == line_of(text, "stratgy:")
    assert "did you mean `strategy`?" in errors["spec.stratgy"].message
    assert errors["spec.strategy"].message.startswith("required field is missing")
    assert errors["spec.strategy"].line == line_of(text, "spec:")  # nearest existing ancestor


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("", "the file is empty", None),
        ("# nothing but a comment\n", "the file is empty", None),
        ("- just\n- a list\n", "expected a RolloutPolicy mapping with apiVersion, kind, metadata and spec (got a list)", 1),
        ("apiVersion: weir.dev/v1alpha1\nkind: [RolloutPolicy\n", "not valid YAML", 3),
        ("apiVersion: weir.dev/v1alpha1\n---\napiVersion: weir.dev/v1alpha1\n", "put one policy per file", 2),
        ("a: &a [*a]\n", "nested too deeply", None),
    ],
)
def test_unreadable_documents(text: str, message: str, line: int | None) -> None:
    [error] = errors_of(text)
    assert error.path == ""
    assert message in error.message
    assert error.line == line


def test_json_errors_carry_lines_too() -> None:
    text = '{\n\t"apiVersion": "weir.dev/v1alpha1",\n\t"kind": "RolloutPolicy",\n\t"metadata": {"name": "x", "labls": {}}\n}\n'
    errors = {e.path: e for e in errors_of(text, source="p.json")}
    assert errors["metadata.labls"].line == 4
    assert errors["spec"].line is None  # missing at the root: no better line than none


def test_json_syntax_error_has_line() -> None:
    [error] = errors_of('{\n  "apiVersion": "weir.dev/v1alpha1",\n  "kind": "RolloutPolicy",\n}\n', source="p.json")
    assert error.message.startswith("not valid JSON")
    assert error.line == 4


def test_validate_policy_data_reports_paths_without_lines() -> None:
    import yaml

    data = yaml.safe_load(edit("- on: confirm-promotion", "- 'on': confirm-promotion"))
    data["spec"]["canary"]["version"] = "v1"
    data["spec"]["service"]["pathPrefix"] = "nope"
    with pytest.raises(PolicyValidationError) as info:
        validate_policy_data(data)
    assert {(e.path, e.line) for e in info.value.errors} == {
        ("spec.service.pathPrefix", None),
        ("spec.canary.version", None),
    }
