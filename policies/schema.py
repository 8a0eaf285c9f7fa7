"""JSON Schema of the RolloutPolicy file format, for editors (YAML language server) and CI linting.

The schema describes files as written (camelCase names, durations and
percentages as strings), generated from the same models that validate them so
the two never drift. It is looser than the loader in a few places that JSON
Schema cannot express (cross-field rules such as "stable and canary versions
differ"); ``weir validate`` remains the authority.
"""

from __future__ import annotations

from typing import Any

from .model import API_VERSION, RolloutPolicy

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID = f"https://{API_VERSION.split('/')[0]}/schemas/rollout-policy-{API_VERSION.split('/')[1]}.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a RolloutPolicy file."""
    schema = RolloutPolicy.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID,
        **schema,
        "title": "Weir RolloutPolicy",
        "description": "A declarative canary rollout of a model server behind Envoy (apiVersion "
        f"{API_VERSION}). Validate with `weir validate FILE` for cross-field rules and line numbers.",
    }


__all__ = ["json_schema", "SCHEMA_DIALECT", "SCHEMA_ID"]
