"""The cross-field rules (policies/rules.py) on file-shaped mappings: exact locations and messages.

Each rule is driven directly with the smallest mapping that shows one
behaviour, including the edges the examples never reach: 0% and 100% steps in
the non-decreasing check, a 100% step that is not last, latency SLOs that
differ only in quantile or bound, custom queries that differ only in spaces.
"""

from __future__ import annotations

import pytest

from policies.rules import RULES, cross_field_errors

NON_DECREASING = "; a rollout only adds canary traffic - to send less, roll back"


def steps(*weights):
    return {"spec": {"strategy": {"canary": {"steps": [w if isinstance(w, dict) else {"weight": w} for w in weights]}}}}


def slos(*items, source=None):
    analysis = {"slos": list(items)}
    if source is not None:
        analysis["source"] = source
    return {"spec": {"analysis": analysis}}


def loc_step(i):
    return ("spec", "strategy", "canary", "steps", i, "weight")


# ------------------------------------------------------------------------------------------- steps


@pytest.mark.parametrize("weights", [(0, 0, 100, 100), (0, 100), (5, 5, 5), (100,), (0,), (1, 99, 100)])
def test_non_decreasing_weights_pass(weights):
    assert cross_field_errors(steps(*weights)) == []


def test_a_step_below_an_earlier_one_names_both():
    assert cross_field_errors(steps(100, 0)) == [
        (loc_step(1), "weights must be non-decreasing: 0 is below 100 at steps[0]" + NON_DECREASING)]
    assert cross_field_errors(steps(0, 100, 50)) == [
        (loc_step(2), "weights must be non-decreasing: 50 is below 100 at steps[1]" + NON_DECREASING)]
    assert cross_field_errors(steps(100, 99)) == [
        (loc_step(1), "weights must be non-decreasing: 99 is below 100 at steps[0]" + NON_DECREASING)]


def test_the_highest_weight_so_far_is_the_reference():
    # 5 and 7 are both below 10 (the highest so far), not 7 below 5.
    assert cross_field_errors(steps(10, 5, 7)) == [
        (loc_step(1), "weights must be non-decreasing: 5 is below 10 at steps[0]" + NON_DECREASING),
        (loc_step(2), "weights must be non-decreasing: 7 is below 10 at steps[0]" + NON_DECREASING),
    ]
    # An equal weight becomes the reference: the message names the latest step with that weight.
    assert cross_field_errors(steps(10, 20, 20, 15)) == [
        (loc_step(3), "weights must be non-decreasing: 15 is below 20 at steps[2]" + NON_DECREASING)]


def test_pauses_and_malformed_steps_are_skipped():
    assert cross_field_errors(steps(10, {"pause": {}}, 5)) == [
        (loc_step(2), "weights must be non-decreasing: 5 is below 10 at steps[0]" + NON_DECREASING)]
    # A step with both pause and weight is the step's own error; it is not a reference either.
    assert cross_field_errors(steps(50, {"pause": {}, "weight": 90}, 60)) == []
    # Out-of-range, non-integer and boolean weights are the field's errors: never compared.
    assert cross_field_errors(steps(50, 150, 40)) == [
        (loc_step(2), "weights must be non-decreasing: 40 is below 50 at steps[0]" + NON_DECREASING)]
    assert cross_field_errors(steps(50, 101, 60)) == []
    assert cross_field_errors(steps(50, -1)) == []
    assert cross_field_errors(steps(50, True, 0.5, "10", None)) == []
    assert cross_field_errors(steps(True, 0)) == []  # True is not weight 1
    assert cross_field_errors({"spec": {"strategy": {"canary": {"steps": "10,20"}}}}) == []
    assert cross_field_errors({"spec": {"strategy": {"canary": {"steps": [7, {"weight": 5}]}}}}) == []


# ------------------------------------------------------------------------------------------- versions, endpoints, domains


def test_stable_and_canary_versions_must_differ():
    doc = {"spec": {"stable": {"version": "v1"}, "canary": {"version": "v1"}}}
    assert cross_field_errors(doc) == [(("spec", "canary", "version"),
                                        "must differ from spec.stable.version (both are 'v1'); "
                                        "the canary is the new version being rolled out")]
    assert cross_field_errors({"spec": {"stable": {"version": "v1"}, "canary": {"version": "v2"}}}) == []
    assert cross_field_errors({"spec": {"stable": {"version": 1}, "canary": {"version": 1}}}) == []  # a field error
    assert cross_field_errors({"spec": {"canary": {"version": "v1"}}}) == []


def test_endpoints_listed_twice_or_on_both_sides():
    doc = {"spec": {"stable": {"endpoints": ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80@2", "10.0.0.1:80"]},
                    "canary": {"endpoints": ["10.0.0.9:80", "10.0.0.2:80@5", "10.0.0.9:80", "bad"]}}}
    twice = "is listed twice (first at endpoints[{}]); give it a weight with @N instead"
    assert cross_field_errors(doc) == [
        (("spec", "stable", "endpoints", 2), "10.0.0.1:80 " + twice.format(0)),
        (("spec", "stable", "endpoints", 3), "10.0.0.1:80 " + twice.format(0)),
        (("spec", "canary", "endpoints", 1), "10.0.0.2:80 is also spec.stable.endpoints[1]; "
                                             "stable and canary must run on different servers or the comparison means nothing"),
        (("spec", "canary", "endpoints", 2), "10.0.0.9:80 " + twice.format(0)),
    ]
    # The canary's own list is checked apart from stable's: one address once on each side is one problem.
    doc = {"spec": {"stable": {"endpoints": ["a.x:1"]}, "canary": {"endpoints": ["a.x:1", "a.x:1"]}}}
    assert [loc for loc, _ in cross_field_errors(doc)] == [("spec", "canary", "endpoints", 0), ("spec", "canary", "endpoints", 1)]
    assert "listed twice (first at endpoints[0])" in cross_field_errors(doc)[1][1]
    assert cross_field_errors({"spec": {"stable": {"endpoints": "10.0.0.1:80"}}}) == []


def test_domains_are_compared_without_case():
    doc = {"spec": {"service": {"domains": ["A.example", 7, "b.example", "a.EXAMPLE", "a.example"]}}}
    assert cross_field_errors(doc) == [
        (("spec", "service", "domains", 3), "'a.EXAMPLE' is listed twice (first at domains[0]); Envoy rejects duplicate domains"),
        (("spec", "service", "domains", 4), "'a.example' is listed twice (first at domains[0]); Envoy rejects duplicate domains"),
    ]


# ------------------------------------------------------------------------------------------- source


def test_prometheus_settings_go_with_the_prometheus_source():
    loc = ("spec", "analysis", "source", "prometheus")
    required = "required when type is prometheus: add `prometheus: {url: http://prometheus:9090}`"
    assert cross_field_errors({"spec": {"analysis": {"source": {"type": "prometheus"}}}}) == [(loc, required)]
    assert cross_field_errors({"spec": {"analysis": {"source": {"type": "prometheus", "prometheus": None}}}}) == [(loc, required)]
    assert cross_field_errors({"spec": {"analysis": {"source": {"type": "prometheus", "prometheus": {"url": "u"}}}}}) == []
    unused = "only used with type: prometheus (type is {}); remove it or set type: prometheus"
    assert cross_field_errors({"spec": {"analysis": {"source": {"prometheus": {}}}}}) == [(loc, unused.format("access-log"))]
    assert cross_field_errors({"spec": {"analysis": {"source": {"type": "envoy-stats", "prometheus": None}}}}) == [
        (loc, unused.format("envoy-stats"))]
    assert cross_field_errors({"spec": {"analysis": {"source": {"type": 5, "prometheus": {}}}}}) == []
    assert cross_field_errors({"spec": {"analysis": {"source": "prometheus"}}}) == []


# ------------------------------------------------------------------------------------------- SLOs


def slo_loc(i, *rest):
    return ("spec", "analysis", "slos", i, *rest)


def test_metrics_that_need_a_particular_source():
    custom = "custom metrics need the prometheus source (spec.analysis.source.type is {}); " \
             "set source.type: prometheus or use error-rate / latency"
    assert cross_field_errors(slos({"metric": "custom", "query": "up", "max": 1})) == [
        (slo_loc(0, "metric"), custom.format("access-log"))]
    assert cross_field_errors(slos({"metric": "custom", "query": "up", "max": 1}, source={"type": "envoy-stats"})) == [
        (slo_loc(0, "metric"), custom.format("envoy-stats"))]
    assert cross_field_errors(slos({"metric": "custom", "query": "up", "max": 1},
                                   source={"type": "prometheus", "prometheus": {"url": "u"}})) == []
    timing = "{} is measured only by the access-log source (spec.analysis.source.type is {}): " \
             "only Envoy's per-request log sees when the first body byte arrived"
    prom = {"type": "prometheus", "prometheus": {"url": "u"}}
    assert cross_field_errors(slos({"metric": "latency", "quantile": 0.5, "maxIncrease": 0.1},
                                   {"metric": "ttfb", "quantile": 0.5, "maxIncrease": 0.1},
                                   {"metric": "tpot", "quantile": 0.5, "maxIncrease": 0.1}, source=prom)) == [
        (slo_loc(1, "metric"), timing.format("ttfb", "prometheus")),
        (slo_loc(2, "metric"), timing.format("tpot", "prometheus")),
    ]
    assert cross_field_errors(slos({"metric": "ttfb", "quantile": 0.5, "maxIncrease": 0.1}, source={"type": "envoy-stats"})) == [
        (slo_loc(0, "metric"), timing.format("ttfb", "envoy-stats"))]
    assert cross_field_errors(slos({"metric": "ttfb", "quantile": 0.5, "maxIncrease": 0.1})) == []
    # A source type that is not text is the field's error.
    assert cross_field_errors(slos({"metric": "custom", "query": "up", "max": 1}, {"metric": "ttfb", "quantile": 0.5},
                                   source={"type": 3})) == []


def test_duplicate_slos():
    same = "duplicates slos[{}] (same metric and quantile); keep one"
    err = "duplicates slos[{}] (same metric); keep one"
    # Error rate: one per bound.
    assert cross_field_errors(slos({"metric": "error-rate", "maxIncrease": 0.01}, {"metric": "error-rate", "maxIncrease": 0.02},
                                   {"metric": "error-rate", "max": 0.05}, {"metric": "error-rate", "max": 0.1})) == [
        (slo_loc(1), err.format(0)), (slo_loc(3), err.format(2))]
    # Latency: per quantile (0.5 == 0.50 == 1/2) and bound; ttfb is another metric.
    assert cross_field_errors(slos(
        {"metric": "latency", "quantile": 0.99, "maxIncrease": 0.1},
        {"metric": "latency", "quantile": 0.5, "maxIncrease": 0.1},
        {"metric": "latency", "quantile": 0.99, "maxIncrease": 0.2},
        {"metric": "latency", "quantile": 0.99, "max": 300},
        {"metric": "ttfb", "quantile": 0.99, "maxIncrease": 0.1},
        {"metric": "latency", "quantile": 0.50, "maxIncrease": 0.3},
        {"metric": "latency", "quantile": 0.99, "maxIncrease": 0.1},
    )) == [(slo_loc(2), same.format(0)), (slo_loc(5), same.format(1)), (slo_loc(6), same.format(0))]
    # Custom: the same query, spaces aside.
    assert cross_field_errors(slos({"metric": "custom", "query": "sum(x)", "max": 1},
                                   {"metric": "custom", "query": "  sum(x)\n", "max": 2},
                                   {"metric": "custom", "query": "sum(y)", "max": 1},
                                   source={"type": "prometheus", "prometheus": {"url": "u"}})) == [
        (slo_loc(1), same.format(0))]
    # What cannot be keyed is left to the field errors.
    assert cross_field_errors(slos({"metric": "latency", "maxIncrease": 0.1}, {"metric": "latency", "maxIncrease": 0.1},
                                   {"metric": "latency", "quantile": "p99"}, {"metric": "latency", "quantile": "p99"},
                                   {"metric": "custom", "query": 5}, {"metric": "custom", "query": 5},
                                   {"metric": "bogus"}, {"metric": "bogus"}, "text", "text",
                                   source={"type": "prometheus", "prometheus": {}})) == []


def test_every_rule_runs_in_order_and_malformed_documents_are_quiet():
    doc = {"spec": {"service": {"domains": ["a", "a"]},
                    "stable": {"version": "v1", "endpoints": ["h:1"]},
                    "canary": {"version": "v1", "endpoints": ["h:1"]},
                    "strategy": {"canary": {"steps": [{"weight": 50}, {"weight": 10}]}},
                    "analysis": {"source": {"type": "prometheus"},
                                 "slos": [{"metric": "ttfb", "quantile": 0.5}, {"metric": "ttfb", "quantile": 0.5}]}}}
    locs = [loc for loc, _ in cross_field_errors(doc)]
    assert locs == [
        ("spec", "service", "domains", 1),
        ("spec", "canary", "endpoints", 0),
        ("spec", "canary", "version"),
        loc_step(1),
        ("spec", "analysis", "source", "prometheus"),
        slo_loc(0, "metric"), slo_loc(1, "metric"), slo_loc(1),
    ]
    assert len(RULES) == 6
    for junk in (None, [], "spec", {"spec": None}, {"spec": []}, {"spec": {"analysis": {"slos": {}}}}):
        assert cross_field_errors(junk) == []


def test_a_malformed_entry_does_not_stop_the_checks_after_it():
    doc = {"spec": {"stable": {"endpoints": ["bad", "10.0.0.1:80", "10.0.0.1:80"]}}}
    assert cross_field_errors(doc) == [(("spec", "stable", "endpoints", 2),
                                        "10.0.0.1:80 is listed twice (first at endpoints[1]); give it a weight with @N instead")]
    doc = slos({"metric": "latency"}, {"metric": "error-rate", "maxIncrease": 0.01}, {"metric": "error-rate", "maxIncrease": 0.02})
    assert cross_field_errors(doc) == [(slo_loc(2), "duplicates slos[1] (same metric); keep one")]


def test_tpot_slos_are_keyed_by_quantile_too():
    doc = slos({"metric": "tpot", "quantile": 0.5, "maxIncrease": 0.1}, {"metric": "tpot", "quantile": 0.9, "maxIncrease": 0.1},
               {"metric": "tpot", "quantile": 0.5, "max": 30})
    assert cross_field_errors(doc) == []
    doc = slos({"metric": "tpot", "quantile": 0.5, "maxIncrease": 0.1}, {"metric": "tpot", "quantile": 0.5, "maxIncrease": 0.2})
    assert cross_field_errors(doc) == [(slo_loc(1), "duplicates slos[0] (same metric and quantile); keep one")]


def test_domains_fold_case_the_way_envoy_compares_them():
    # "STRASSE" upper-cases the same as "straße", but the two are different host names: no duplicate.
    assert cross_field_errors({"spec": {"service": {"domains": ["straße.example", "STRASSE.example"]}}}) == []
