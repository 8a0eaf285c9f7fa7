"""Rules that relate several fields of a policy (stable vs canary, step order, SLO vs source).

Why they work on the raw, file-shaped data instead of the typed model: a typed
model only exists once *every* field is valid, so rules written against it
would stay silent whenever anything else in the file is wrong. Working on the
plain mapping, each rule checks what it can and skips what is malformed (the
field-level validation reports that), so one run reports every problem.

Each rule yields ``(location, message)`` pairs; locations use the file's
camelCase keys so they map straight to line numbers.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from .endpoints import parse_endpoint
from .errors import Loc

Problem = tuple[Loc, str]


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _items(data: Any) -> list[tuple[int, Any]]:
    return list(enumerate(data)) if isinstance(data, list) else []


def _versions_differ(doc: Any) -> Iterator[Problem]:
    stable = _get(doc, "spec", "stable", "version")
    canary = _get(doc, "spec", "canary", "version")
    if isinstance(stable, str) and stable == canary:
        yield (
            ("spec", "canary", "version"),
            f"must differ from spec.stable.version (both are {stable!r}); "
            "the canary is the new version being rolled out",
        )


def _addresses(endpoints: Any) -> list[tuple[int, str | None]]:
    out: list[tuple[int, str | None]] = []
    for i, text in _items(endpoints):
        try:
            out.append((i, parse_endpoint(text).address))
        except ValueError:
            out.append((i, None))
    return out


def _endpoints_distinct(doc: Any) -> Iterator[Problem]:
    stable_seen: dict[str, int] = {}
    for role in ("stable", "canary"):
        seen: dict[str, int] = {}
        for i, address in _addresses(_get(doc, "spec", role, "endpoints")):
            if address is None:
                continue
            loc = ("spec", role, "endpoints", i)
            if address in seen:
                yield loc, f"{address} is listed twice (first at endpoints[{seen[address]}]); give it a weight with @N instead"
            elif role == "canary" and address in stable_seen:
                yield (
                    loc,
                    f"{address} is also spec.stable.endpoints[{stable_seen[address]}]; "
                    "stable and canary must run on different servers or the comparison means nothing",
                )
            seen.setdefault(address, i)
        if role == "stable":
            stable_seen = seen


def _domains_distinct(doc: Any) -> Iterator[Problem]:
    seen: dict[str, int] = {}
    for i, domain in _items(_get(doc, "spec", "service", "domains")):
        if not isinstance(domain, str):
            continue
        key = domain.lower()
        if key in seen:
            yield ("spec", "service", "domains", i), f"{domain!r} is listed twice (first at domains[{seen[key]}]); Envoy rejects duplicate domains"
        seen.setdefault(key, i)


def _weights_non_decreasing(doc: Any) -> Iterator[Problem]:
    highest: tuple[int, int] | None = None  # (weight, step index)
    for i, step in _items(_get(doc, "spec", "strategy", "canary", "steps")):
        weight = _get(step, "weight")
        if isinstance(step, dict) and "pause" in step:
            continue  # a step with both is reported by the step itself
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            continue
        if highest is not None and weight < highest[0]:
            yield (
                ("spec", "strategy", "canary", "steps", i, "weight"),
                f"weights must be non-decreasing: {weight} is below {highest[0]} at steps[{highest[1]}]; "
                "a rollout only adds canary traffic - to send less, roll back",
            )
        else:
            highest = (weight, i)


def _source_settings(doc: Any) -> Iterator[Problem]:
    source = _get(doc, "spec", "analysis", "source")
    if not isinstance(source, dict):
        return
    kind = source.get("type", "access-log")
    if kind == "prometheus" and source.get("prometheus") is None:
        yield (
            ("spec", "analysis", "source", "prometheus"),
            "required when type is prometheus: add `prometheus: {url: http://prometheus:9090}`",
        )
    elif isinstance(kind, str) and kind != "prometheus" and "prometheus" in source:
        yield (
            ("spec", "analysis", "source", "prometheus"),
            f"only used with type: prometheus (type is {kind}); remove it or set type: prometheus",
        )


def _slo_rules(doc: Any) -> Iterator[Problem]:
    source_type = _get(doc, "spec", "analysis", "source", "type") or "access-log"
    seen: dict[tuple[Any, ...], int] = {}
    for i, slo in _items(_get(doc, "spec", "analysis", "slos")):
        metric = _get(slo, "metric")
        loc = ("spec", "analysis", "slos", i)
        if metric == "custom" and isinstance(source_type, str) and source_type != "prometheus":
            yield (
                loc + ("metric",),
                f"custom metrics need the prometheus source (spec.analysis.source.type is {source_type}); "
                "set source.type: prometheus or use error-rate / latency",
            )
        if metric in ("ttfb", "tpot") and isinstance(source_type, str) and source_type != "access-log":
            yield (
                loc + ("metric",),
                f"{metric} is measured only by the access-log source (spec.analysis.source.type is {source_type}): "
                "only Envoy's per-request log sees when the first body byte arrived",
            )
        bound = "max" if _get(slo, "max") is not None else "maxIncrease"
        if metric == "error-rate":
            key: tuple[Any, ...] = (metric, bound)
        elif metric in ("latency", "ttfb", "tpot") and isinstance(_get(slo, "quantile"), (int, float)):
            key = (metric, float(_get(slo, "quantile")), bound)
        elif metric == "custom" and isinstance(_get(slo, "query"), str):
            key = (metric, _get(slo, "query").strip())
        else:
            continue
        if key in seen:
            yield loc, f"duplicates slos[{seen[key]}] (same metric{' and quantile' if metric != 'error-rate' else ''}); keep one"
        seen.setdefault(key, i)


RULES: list[Callable[[Any], Iterator[Problem]]] = [
    _domains_distinct,
    _endpoints_distinct,
    _versions_differ,
    _weights_non_decreasing,
    _source_settings,
    _slo_rules,
]


def cross_field_errors(doc: Any) -> list[Problem]:
    """Every cross-field problem in a file-shaped policy mapping (camelCase keys)."""
    return [problem for rule in RULES for problem in rule(doc)]


__all__ = ["cross_field_errors", "RULES", "Problem"]
