"""The declarative RolloutPolicy format: typed models, YAML/JSON loading, validation, JSON Schema.

Pure: no I/O beyond reading the one file :func:`load_policy` is given.

>>> policy = load_policy("policies/examples/sentiment.yaml")   # doctest: +SKIP
>>> policy.spec.strategy.canary.steps[0].weight                 # doctest: +SKIP
5

Conventions (details in :mod:`policies.model` and :mod:`policies.units`):
durations are ``datetime.timedelta``; percentages are float fractions
(``10%`` == ``0.1``); ``analysis.alpha`` defaults to 0.05.
"""

from .canonical import canonical_data, canonical_json, policy_hash
from .commands import cmd_schema, cmd_validate
from .endpoints import Endpoint, parse_endpoint
from .errors import PolicyError, PolicyValidationError
from .loader import load_policy, parse_policy, validate_policy_data
from .model import (
    API_VERSION,
    DEFAULT_ALPHA,
    DEFAULT_TIMEOUT,
    KIND,
    SLO,
    Analysis,
    CanaryStrategy,
    CustomSLO,
    ErrorRateSLO,
    HeaderMatch,
    LatencySLO,
    LoadBalancing,
    MatchRule,
    Metadata,
    OutlierDetection,
    PauseGate,
    PrometheusSource,
    RolloutPolicy,
    Service,
    Shadow,
    Source,
    Spec,
    Step,
    Stickiness,
    Strategy,
    VersionSpec,
    Webhook,
)
from .schema import json_schema
from .units import format_duration, parse_duration, parse_fraction

__all__ = [
    # loading and validation
    "RolloutPolicy",
    "PolicyError",
    "PolicyValidationError",
    "parse_policy",
    "load_policy",
    "validate_policy_data",
    # identity and schema
    "policy_hash",
    "canonical_json",
    "canonical_data",
    "json_schema",
    # commands
    "cmd_validate",
    "cmd_schema",
    # values
    "parse_duration",
    "format_duration",
    "parse_fraction",
    "parse_endpoint",
    "Endpoint",
    # constants
    "API_VERSION",
    "KIND",
    "DEFAULT_ALPHA",
    "DEFAULT_TIMEOUT",
    # model parts
    "Metadata",
    "Spec",
    "Service",
    "VersionSpec",
    "LoadBalancing",
    "OutlierDetection",
    "Strategy",
    "Shadow",
    "CanaryStrategy",
    "Step",
    "PauseGate",
    "MatchRule",
    "HeaderMatch",
    "Stickiness",
    "Analysis",
    "Source",
    "PrometheusSource",
    "SLO",
    "ErrorRateSLO",
    "LatencySLO",
    "CustomSLO",
    "Webhook",
]
