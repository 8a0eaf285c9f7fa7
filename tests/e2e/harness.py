"""End-to-end test helpers; the processes themselves live in devtools.devstack."""

from __future__ import annotations

from devtools.devstack import Backend, EnvoyProcess, envoy_binary, free_port

__all__ = ["Backend", "EnvoyProcess", "binomial_interval", "envoy_binary", "free_port"]


def binomial_interval(n: int, p: float, confidence: float = 0.999) -> tuple[int, int]:
    """Central interval of a Binomial(n, p) count holding `confidence` of its mass."""
    from scipy.stats import binom

    tail = (1 - confidence) / 2
    return int(binom.ppf(tail, n, p)), int(binom.ppf(1 - tail, n, p))
