"""Durations, percentages and endpoints, plus property tests over generated valid policies."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import (
    Endpoint,
    canonical_json,
    format_duration,
    parse_duration,
    parse_endpoint,
    parse_fraction,
    parse_policy,
    policy_hash,
    validate_policy_data,
)

# ---------------------------------------------------------------------------
# durations
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("500ms", timedelta(milliseconds=500)),
        ("1h30m", timedelta(minutes=90)),
        ("1h30m15s250ms", timedelta(hours=1, minutes=30, seconds=15, milliseconds=250)),
        ("1.5h", timedelta(minutes=90)),
        ("0.5s", timedelta(milliseconds=500)),
        ("1.5ms", timedelta(microseconds=1500)),
        ("0s", timedelta(0)),
        (" 45s ", timedelta(seconds=45)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (30, "add a unit, e.g. 30s"),
        ("30", "expected a duration"),
        ("", "expected a duration"),
        ("10 m", "expected a duration"),
        ("1d", "expected a duration"),
        ("-5s", "expected a duration"),
        ("30m1h", "largest first"),
        ("1m1m", "largest first"),
        (True, "expected a duration"),
        (None, "expected a duration"),
        ("0.0000001s", "whole number of microseconds"),
    ],
)
def test_parse_duration_rejects(value: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(hours=2), "2h"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(microseconds=1500), "1.5ms"),
        (timedelta(hours=26, seconds=1), "26h1s"),
    ],
)
def test_format_duration(value: timedelta, text: str) -> None:
    assert format_duration(value) == text


@given(st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3650)))
def test_duration_round_trips(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


# ---------------------------------------------------------------------------
# percentages
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("10%", 0.1), ("0.5%", 0.005), ("100%", 1.0), ("150%", 1.5), ("0%", 0.0), (0.1, 0.1), (0.005, 0.005), (1, 1.0), (0, 0.0)],
)
def test_parse_fraction(value: Any, expected: float) -> None:
    assert parse_fraction(value) == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (10, "write 10% if you meant percent"),
        (1.5, "write 1.5% if you meant percent"),
        (-0.1, "must not be negative"),
        ("0.1", r"without quotes \(0.1\) or the percent with a % sign \(10%\)"),
        ("ten%", "expected a percentage"),
        ("-5%", "expected a percentage"),
        (True, "expected a percentage"),
        (float("nan"), "finite"),
    ],
)
def test_parse_fraction_rejects(value: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_fraction(value)


def test_percent_and_fraction_spellings_agree_exactly() -> None:
    for percent in ("0.1%", "0.5%", "1%", "5%", "10%", "12.5%", "33%", "99.9%"):
        fraction = float(percent[:-1]) / 100
        assert parse_fraction(percent) == parse_fraction(float(f"{fraction:.10g}"))


# ---------------------------------------------------------------------------
# endpoints
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "port", "weight"),
    [
        ("127.0.0.1:8081", "127.0.0.1", 8081, 1),
        ("127.0.0.1:8081@3", "127.0.0.1", 8081, 3),
        ("[::1]:80@2", "::1", 80, 2),
    ],
)
def test_parse_endpoint(text: str, host: str, port: int, weight: int) -> None:
    endpoint = parse_endpoint(text)
    assert endpoint == Endpoint(host=host, port=port, weight=weight)
    assert parse_endpoint(str(endpoint)) == endpoint


@pytest.mark.parametrize("text", ["model-0.models.svc:9000", "localhost:1"])
def test_host_names_are_policy_endpoints_but_never_eds_addresses(text: str) -> None:
    """A policy may name a DNS name (Weir resolves it); what Envoy gets over EDS must be an address."""
    endpoint = parse_endpoint(text)
    assert endpoint.is_name and str(endpoint) == text
    with pytest.raises(ValueError, match="give the model server's IP address"):
        parse_endpoint(text, allow_names=False)
    assert not parse_endpoint("10.0.0.1:80").is_name


# ---------------------------------------------------------------------------
# generated policies
# ---------------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)
durations = st.timedeltas(min_value=timedelta(milliseconds=1), max_value=timedelta(days=2)).map(
    lambda d: timedelta(milliseconds=d // timedelta(milliseconds=1))
)


@st.composite
def duration_texts(draw: st.DrawFn) -> str:
    value = draw(durations)
    return draw(st.sampled_from([format_duration(value), f"{value // timedelta(milliseconds=1)}ms"]))


@st.composite
def fractions(draw: st.DrawFn, high: int = 100) -> Any:
    tenths = draw(st.integers(0, high * 10))  # percent in tenths
    if tenths > 1000:  # above 100% only the percent spelling is accepted
        return f"{tenths / 10:g}%"
    return draw(st.sampled_from([f"{tenths / 10:g}%", tenths / 1000]))


@st.composite
def policies_data(draw: st.DrawFn) -> dict[str, Any]:
    n_stable, n_canary = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ports = draw(st.lists(st.integers(1, 65535), min_size=n_stable + n_canary, max_size=n_stable + n_canary, unique=True))

    def endpoint(port: int) -> str:
        weight = draw(st.sampled_from([None, 1, 2, 7]))
        return f"127.0.0.1:{port}" + ("" if weight is None else f"@{weight}")

    versions = draw(st.lists(st.from_regex(r"v[0-9]{1,3}", fullmatch=True), min_size=2, max_size=2, unique=True))
    weights = sorted(draw(st.lists(st.integers(0, 100), min_size=1, max_size=5)))
    steps: list[dict[str, Any]] = []
    for w in weights:
        step: dict[str, Any] = {"weight": w}
        if draw(st.booleans()):
            step["minRequests"] = draw(st.integers(1, 10_000))
        if draw(st.booleans()):
            step["maxDuration"] = draw(duration_texts())
        steps.append(step)
        if draw(st.integers(0, 4)) == 0:
            steps.append({"pause": {}})
    quantiles = draw(st.lists(st.sampled_from([0.5, 0.9, 0.95, 0.99, 0.999]), max_size=3, unique=True))
    slos: list[dict[str, Any]] = [{"metric": "error-rate", "maxIncrease": draw(fractions(high=5))}]
    slos += [{"metric": "latency", "quantile": q, "maxIncrease": draw(fractions(high=300))} for q in quantiles]
    analysis: dict[str, Any] = {"slos": slos}
    if draw(st.booleans()):
        analysis["judge"] = draw(st.sampled_from(["sequential", "mann-whitney", "threshold"]))
    if draw(st.booleans()):
        analysis["alpha"] = draw(st.sampled_from([0.01, 0.05, "1%", "10%"]))
    if draw(st.booleans()):
        analysis["source"] = {"type": "prometheus", "prometheus": {"url": "http://127.0.0.1:9090"}}
        analysis["slos"].append({"metric": "custom", "query": 'sum(x{version="{{version}}"})', "max": draw(st.floats(-1e6, 1e6))})
    spec: dict[str, Any] = {
        "service": {"name": draw(names), "domains": ["*"], "port": draw(st.integers(1, 65535))},
        "stable": {"version": versions[0], "endpoints": [endpoint(p) for p in ports[:n_stable]]},
        "canary": {"version": versions[1], "endpoints": [endpoint(p) for p in ports[n_stable:]]},
        "strategy": {"canary": {"steps": steps}},
        "analysis": analysis,
    }
    if draw(st.booleans()):
        spec["service"]["timeout"] = draw(duration_texts())
    if draw(st.booleans()):
        spec["strategy"]["shadow"] = {
            "percent": draw(st.integers(1, 100)),
            "minRequests": draw(st.integers(1, 5000)),
            "maxDuration": draw(duration_texts()),
        }
    if draw(st.booleans()):
        spec["loadBalancing"] = {"policy": draw(st.sampled_from(["round-robin", "least-request", "latency-aware"]))}
    if draw(st.booleans()):
        spec["deadline"] = draw(duration_texts())
    if draw(st.booleans()):
        timeout = draw(st.sampled_from(["500ms", "10s", "1m30s", "5m"]))  # webhook timeouts are at most 5m
        spec["webhooks"] = [{"on": "rollback", "url": "http://127.0.0.1:9999/h", "timeout": timeout}]
    return {"apiVersion": "weir.dev/v1alpha1", "kind": "RolloutPolicy", "metadata": {"name": draw(names)}, "spec": spec}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policies_data())
def test_generated_policies_round_trip_and_keep_their_hash(data: dict[str, Any]) -> None:
    policy = validate_policy_data(data)
    digest = policy_hash(policy)
    canonical = canonical_json(policy)
    again = parse_policy(canonical, source="generated.json")
    assert again == policy and policy_hash(again) == digest
    assert canonical_json(again) == canonical
    as_yaml = parse_policy(yaml.safe_dump(json.loads(canonical), sort_keys=False))
    assert policy_hash(as_yaml) == digest
    original_yaml = parse_policy(yaml.safe_dump(data, sort_keys=True))
    assert policy_hash(original_yaml) == digest


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_fraction_canonical_form_round_trips(value: float) -> None:
    from policies.units import format_fraction

    assert parse_fraction(format_fraction(value)) == value


# ---------------------------------------------------------------------------
# the exact words and the edges (mutation testing found these unchecked)
# ---------------------------------------------------------------------------

HINT = "expected a duration such as 500ms, 30s, 10m, 2h or 1h30m"


def test_a_timedelta_is_taken_as_it_is() -> None:
    # The API and the typed model pass timedeltas through the same reader.
    for value in (timedelta(0), timedelta(microseconds=1), timedelta(hours=3, milliseconds=7), timedelta(days=400)):
        assert parse_duration(value) is value
    with pytest.raises(ValueError) as info:
        parse_duration(timedelta(microseconds=-1))
    assert str(info.value) == "must not be negative"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, f'{HINT} (got true)'),
        (None, f"{HINT} (got nothing (null))"),
        ([1], f"{HINT} (got a list)"),
        (30, f"{HINT}; add a unit, e.g. 30s (got the bare number 30)"),
        (1.5, f"{HINT}; add a unit, e.g. 1.5s (got the bare number 1.5)"),
        ("30m1h", f'{HINT}: give each unit once, largest first, e.g. 1h30m (got "30m1h")'),
        ("1s1s", f'{HINT}: give each unit once, largest first, e.g. 1h30m (got "1s1s")'),
        ("10 m", f'{HINT} (got "10 m")'),
        ("", f'{HINT} (got an empty string "")'),
        ("1h30", f'{HINT} (got "1h30")'),
        ("0.0000001s", 'must be a whole number of microseconds (got "0.0000001s")'),
        ("999999999999h", 'is too long to represent (got "999999999999h")'),
    ],
)
def test_duration_errors_say_exactly_what_was_found(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == message


def test_units_in_order_and_every_unit_first() -> None:
    # Each unit may come first (ranks start below h); each counts with its own factor.
    assert [parse_duration(t) for t in ("1h", "1m", "1s", "1ms", "1h1ms", "1m1s")] == [
        timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1), timedelta(milliseconds=1),
        timedelta(hours=1, milliseconds=1), timedelta(seconds=61)]


def test_format_duration_refuses_negative_durations() -> None:
    with pytest.raises(ValueError) as info:
        format_duration(timedelta(seconds=-1))
    assert str(info.value) == "durations in policies are never negative"
    assert format_duration(timedelta(microseconds=1)) == "0.001ms"
    assert format_duration(timedelta(days=1, minutes=1, milliseconds=20)) == "24h1m20ms"


def test_format_fraction_writes_one_as_a_number_and_more_as_percent() -> None:
    from policies.units import format_fraction

    # Up to 1 the fraction itself (1.0 is 100%, still a valid bare fraction); above 1 a percent string.
    assert format_fraction(1.0) == 1.0 and isinstance(format_fraction(1.0), float)
    assert format_fraction(0.0) == 0.0 and format_fraction(0.25) == 0.25
    assert format_fraction(1.5) == "150%"
    assert format_fraction(1.000001) == "100.0001%"
    assert format_fraction(12.0) == "1200%"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "expected a percentage such as 10% or a fraction such as 0.1 (got true)"),
        (None, "expected a percentage such as 10% or a fraction such as 0.1 (got nothing (null))"),
        ({}, "expected a percentage such as 10% or a fraction such as 0.1 (got an empty mapping {})"),
        (float("nan"), "must be a finite number (got nan)"),
        (float("inf"), "must be a finite number (got inf)"),
        (-0.5, "must not be negative (got -0.5)"),
        (5, "a bare number is a fraction (0.1 means 10%), so 5 would mean 500%; write 5% if you meant percent"),
        (1.25, "a bare number is a fraction (0.1 means 10%), so 1.25 would mean 125%; write 1.25% if you meant percent"),
        ("0.005", 'expected a percentage such as 10% or a fraction such as 0.1 (got "0.005"); '
                  "write the fraction without quotes (0.005) or the percent with a % sign (0.5%)"),
        ("lots", 'expected a percentage such as 10% or a fraction such as 0.1 (got "lots")'),
        ("10 %", 'expected a percentage such as 10% or a fraction such as 0.1 (got "10 %")'),
    ],
)
def test_fraction_errors_say_exactly_what_was_found(value: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_fraction(value)
    assert str(info.value) == message


def test_fraction_edges() -> None:
    assert parse_fraction(1) == 1.0 and parse_fraction(0) == 0.0  # both ends of a bare fraction
    assert parse_fraction(" 250% ") == 2.5  # a percent string may pass 100%
    assert parse_fraction("0.5%") == 0.005
