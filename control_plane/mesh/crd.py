"""The RolloutPolicy CustomResourceDefinition, generated from the policy's JSON Schema.

Why generated: the JSON Schema is generated from the models that validate
policies, so the CRD, the schema and ``weir validate`` can never disagree
about a field. ``weir crd`` prints it; ``manifests/crd-rolloutpolicy.yaml`` is
its output, kept in sync by a test.

Kubernetes wants a *structural* OpenAPI v3 schema, which is not JSON Schema
2020-12. The conversion:

* ``$ref`` is inlined (a CRD schema cannot refer to definitions);
* ``anyOf: [X, {type: null}]`` becomes X with ``nullable: true``;
* ``const`` becomes a one-value ``enum``; a numeric ``exclusiveMinimum`` becomes
  ``minimum`` plus ``exclusiveMinimum: true`` (OpenAPI 3.0's boolean form);
* a union of objects (the SLO kinds) becomes one object holding every
  branch's fields, the branches kept as ``oneOf`` value checks on ``metric``
  and the required fields (structural schemas allow no types inside ``oneOf``);
* a value that is a number *or* a string (``maxIncrease: 0.005`` or ``10%``)
  cannot be typed structurally: it is ``x-kubernetes-preserve-unknown-fields``
  and checked by ``weir validate`` / the engine on apply;
* ``additionalProperties: false`` is dropped: Kubernetes prunes unknown fields
  of structural schemas (and rejects them under ``fieldValidation=Strict``);
* ``default``, ``title``, ``examples`` and the discriminator are dropped:
  defaults are Weir's to apply (the API server filling them in would change the
  stored policy and its hash);
* ``metadata`` keeps only the restriction on ``name`` (the only one allowed).
"""

from __future__ import annotations

import copy
from typing import Any

from policies import json_schema
from policies.model import API_VERSION, KIND

__all__ = ["crd", "openapi_schema", "structural_problems", "GROUP", "VERSION", "PLURAL"]

GROUP, VERSION = API_VERSION.split("/")
PLURAL = "rolloutpolicies"

_DROPPED = {"title", "examples", "default", "discriminator", "$schema", "$id", "$defs"}
_JUNCTORS = ("oneOf", "anyOf", "allOf", "not")


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) for RolloutPolicy."""
    schema = openapi_schema(json_schema())
    problems = structural_problems(schema)
    if problems:  # a model change produced something Kubernetes would refuse
        raise ValueError("RolloutPolicy CRD schema is not structural: " + "; ".join(problems))
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}", "labels": {"app.kubernetes.io/managed-by": "weir"}},
        "spec": {
            "group": GROUP,
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL, "singular": KIND.lower()},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "additionalPrinterColumns": [
                        {"name": "Service", "type": "string", "jsonPath": ".spec.service.name"},
                        {"name": "Stable", "type": "string", "jsonPath": ".spec.stable.version"},
                        {"name": "Canary", "type": "string", "jsonPath": ".spec.canary.version"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def openapi_schema(source: dict[str, Any]) -> dict[str, Any]:
    """A structural OpenAPI v3 schema (a CRD's ``openAPIV3Schema``) from the policy JSON Schema."""
    defs = source.get("$defs", {})
    root = _convert(source, defs)
    props = root["properties"]
    props["apiVersion"] = {"type": "string", "description": props["apiVersion"].get("description", "")}
    props["kind"] = {"type": "string", "description": props["kind"].get("description", "")}
    name = props["metadata"].get("properties", {}).get("name")
    props["metadata"] = {"type": "object", **({"properties": {"name": name}} if name else {})}
    root["required"] = ["spec"]
    return root


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a ``$ref``; the referring node's own keys (a description) win."""
    if "$ref" not in node:
        return node
    target = defs[node["$ref"].rsplit("/", 1)[-1]]
    merged = {**_resolve(target, defs), **{k: v for k, v in node.items() if k != "$ref"}}
    return merged


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    if not isinstance(node, dict):
        return node
    node = _resolve(node, defs)
    for key in ("anyOf", "oneOf"):
        if key not in node:
            continue
        branches = [_resolve(b, defs) for b in node[key]]
        non_null = [b for b in branches if b.get("type") != "null"]
        if len(non_null) == 1 and len(branches) == 2 and "type" not in non_null[0]:
            # an optional untyped value (X | None where X is itself a union, e.g. number-or-percent)
            inner = {**non_null[0], **{k: v for k, v in node.items() if k not in (key, "default")}}
            return {**_convert(inner, defs), "nullable": True}
        if all("type" in b for b in branches):
            return _union(node, key, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "additionalProperties" and value is False):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _convert(value, defs)
        elif key in _JUNCTORS:
            out[key] = [_value_checks(b, defs) for b in value] if key != "not" else _value_checks(value, defs)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _union(node: dict[str, Any], key: str, defs: dict[str, Any]) -> dict[str, Any]:
    """``anyOf``/``oneOf`` of typed branches: nullable X, one merged object, or an untyped value."""
    extra = {k: v for k, v in node.items() if k not in (key, *_DROPPED)}
    branches = [_resolve(b, defs) for b in node[key]]
    typed = [b for b in branches if b.get("type") != "null"]
    nullable = len(typed) < len(branches)
    if len(typed) == 1:
        out = {**_convert(typed[0], defs), **_convert(extra, defs)}
        return {**out, "nullable": True} if nullable else out
    if all(b.get("type") == "object" for b in typed):
        merged: dict[str, Any] = {"type": "object", "properties": {}}
        for branch in typed:
            for name, sub in branch.get("properties", {}).items():
                converted = _convert(sub, defs)
                if name in merged["properties"] and merged["properties"][name].get("type") != converted.get("type"):
                    converted = {"x-kubernetes-preserve-unknown-fields": True}
                if "enum" in converted and "enum" in merged["properties"].get(name, {}):
                    converted["enum"] = merged["properties"][name]["enum"] + converted["enum"]
                merged["properties"][name] = converted
        merged["oneOf"] = [_object_branch_checks(b) for b in typed]
        common = set.intersection(*(set(b.get("required", [])) for b in typed))
        if common:
            merged["required"] = sorted(common)
        return {**merged, **_convert(extra, defs), **({"nullable": True} if nullable else {})}
    # number-or-string and the like: no structural type exists for it
    description = extra.get("description")
    out = {"x-kubernetes-preserve-unknown-fields": True}
    if description:
        out["description"] = description
    return out


def _object_branch_checks(branch: dict[str, Any]) -> dict[str, Any]:
    """One union branch as value checks only: its discriminating enums and its required fields."""
    checks: dict[str, Any] = {}
    enums = {
        name: {"enum": [sub["const"]] if "const" in sub else sub["enum"]}
        for name, sub in branch.get("properties", {}).items()
        if "const" in sub or "enum" in sub
    }
    if enums:
        checks["properties"] = enums
    if branch.get("required"):
        checks["required"] = list(branch["required"])
    return checks


def _value_checks(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A junctor branch stripped to what structural schemas allow there (no type, description, default)."""
    node = _resolve(node, defs)
    return {k: v for k, v in node.items() if k in ("required", "enum", "pattern", "minimum", "maximum", "minItems", "maxItems")}


def structural_problems(schema: dict[str, Any], path: str = "") -> list[str]:
    """Where ``schema`` breaks Kubernetes's structural-schema rules (empty when it is structural).

    Checked: every node has a type unless it preserves unknown fields or is
    int-or-string; no ``$ref``; no ``type``, ``description``, ``default``,
    ``nullable`` or ``additionalProperties`` inside a junctor; ``properties``
    and ``additionalProperties`` are not both set.
    """
    problems = []
    where = path or "<root>"
    if "$ref" in schema:
        problems.append(f"{where}: $ref")
    if "type" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get(
        "x-kubernetes-int-or-string"
    ):
        problems.append(f"{where}: no type")
    if "properties" in schema and "additionalProperties" in schema:
        problems.append(f"{where}: properties and additionalProperties together")
    for junctor in _JUNCTORS:
        branches = schema.get(junctor)
        if branches is None:
            continue
        for i, branch in enumerate(branches if isinstance(branches, list) else [branches]):
            problems += _junctor_problems(branch, f"{where}.{junctor}[{i}]")
    for name, sub in schema.get("properties", {}).items():
        problems += structural_problems(sub, f"{path}.{name}" if path else name)
    if isinstance(schema.get("items"), dict):
        problems += structural_problems(schema["items"], f"{where}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        problems += structural_problems(schema["additionalProperties"], f"{where}{{}}")
    return problems


def _junctor_problems(branch: dict[str, Any], where: str) -> list[str]:
    problems = [f"{where}: {key} inside a junctor" for key in ("type", "description", "default", "nullable", "additionalProperties") if key in branch]
    for name, sub in branch.get("properties", {}).items():
        problems += _junctor_problems(sub, f"{where}.{name}")
    if isinstance(branch.get("items"), dict):
        problems += _junctor_problems(branch["items"], f"{where}[]")
    return problems
