"""Shared test policy: a missing system service skips loudly, except under CI=true where it fails."""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip (or, under CI=true, fail) when a real component the test needs is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required for CI: {reason}", pytrace=False)
    pytest.skip(f"SKIPPED, NOT TESTED: {reason}")
