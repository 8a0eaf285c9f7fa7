"""The canonical JSON form of a policy and its hash.

Why: every rollout event stores the hash of the policy that drove it, so "which
policy made this decision?" has one answer. The hash is over meaning, not
formatting: key order, YAML vs JSON, comments, ``10%`` vs ``0.1``, ``90s`` vs
``1m30s`` and spelling out a default all give the same hash. Unset optional
fields are left out (not written as null), so adding a new optional field to
the format later does not change the hash of existing policies.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .model import RolloutPolicy


def canonical_data(policy: RolloutPolicy) -> dict[str, Any]:
    """The policy as file-shaped JSON data with defaults filled in and unset optionals omitted."""
    return policy.model_dump(mode="json", by_alias=True, exclude_none=True)


def canonical_json(policy: RolloutPolicy) -> str:
    """Compact JSON with sorted keys; parsing it back gives an equal policy."""
    return json.dumps(
        canonical_data(policy), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def policy_hash(policy: RolloutPolicy) -> str:
    """Hex sha256 of :func:`canonical_json` (64 characters)."""
    return hashlib.sha256(canonical_json(policy).encode("utf-8")).hexdigest()


__all__ = ["canonical_data", "canonical_json", "policy_hash"]
