"""Typed models of the RolloutPolicy format (contract: shared/contract/rollout-policy.yaml).

Files use the contract's camelCase names (``pathPrefix``); Python code uses
snake_case attributes (``path_prefix``). Every model forbids unknown fields so a
typo (``stratgy``) is an error instead of a silently ignored setting, and is
strict about scalar types so YAML surprises (``exact: true`` parsed as a bool,
``version: 1.0`` as a float) are reported instead of coerced.

Value conventions, decided once here:

* Durations (``timeout``, ``maxDuration``, ``baseEjectionTime``, ``deadline``,
  webhook ``timeout``) are :class:`datetime.timedelta`; files write ``30s``,
  ``10m``, ``2h``, ``500ms`` or ``1h30m`` (see ``policies.units``). They are
  serialised back in canonical form.
* Fractions (``maxIncrease``, ``alpha``) are floats: ``10%`` and ``0.1`` both
  mean 0.1. A bare number above 1 is rejected (write ``10%``).

  - ``error-rate`` ``maxIncrease`` is an **absolute** increase in percentage
    points, expressed as a fraction: ``0.005`` (= ``0.5%``) lets the canary's
    error rate exceed stable's by at most 0.5 points (1.0% -> 1.5% passes,
    1.0% -> 1.6% fails). ``10%`` therefore means ten points, not "10% more".
    A bare number is accepted only up to ``0.1`` (``maxIncrease: 1`` is refused:
    as a fraction it would be 100 points, an SLO that can never fail; write
    ``1%``), and the margin must stay below 100%.
  - ``latency`` ``maxIncrease`` is **relative** to stable at the same quantile:
    ``10%`` (= ``0.1``) lets canary p99 be at most 1.1 x stable p99. Above 100%
    must be written as a percent (``150%``).
* Fields whose name says percent or weight (``weight``, ``shadow.percent``,
  ``maxEjectionPercent``) are plain numbers in percent units, 0-100.
* ``analysis.alpha`` (the false-rollback budget for the whole rollout) defaults
  to 0.05 (:data:`DEFAULT_ALPHA`): the contract gives no default and 5% is the
  conventional level for a test that only ever *holds or rolls back*.
* Everything the contract does not mark optional is required.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated, Any, Literal, Union
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .endpoints import ENDPOINT_PATTERN, Endpoint, parse_endpoint
from .errors import describe
from .units import (
    DURATION_PATTERN,
    FRACTION_PATTERN,
    format_duration,
    format_fraction,
    parse_duration,
    parse_fraction,
)

API_VERSION = "weir.dev/v1alpha1"
KIND = "RolloutPolicy"
DEFAULT_ALPHA = 0.05
DEFAULT_TIMEOUT = timedelta(seconds=15)

SKIP_CROSS_FIELD_RULES = "weir.policies.cross_field_rules_checked"
"""Validation-context flag: the loader already ran the cross-field rules (with paths and lines)."""


# ---------------------------------------------------------------------------
# Scalar building blocks: one validator and one JSON Schema each.
# ---------------------------------------------------------------------------


def _bounds_text(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None and not lo_open and not hi_open:
        return f"must be between {lo} and {hi}"
    parts = []
    if lo is not None:
        parts.append(f"greater than {lo}" if lo_open else f"at least {lo}")
    if hi is not None:
        parts.append(f"less than {hi}" if hi_open else f"at most {hi}")
    return "must be " + " and ".join(parts)


def _number(
    kind: type,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> Any:
    """An int/float with inclusive or exclusive bounds and a message like ``must be between 0 and 100 (got 120)``."""

    def check(value: float) -> float:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite number (got {describe(value)})")
        too_low = lo is not None and (value < lo or (lo_open and value == lo))
        too_high = hi is not None and (value > hi or (hi_open and value == hi))
        if too_low or too_high:
            # Show 150 rather than 150.0 when the author wrote 150 into a number field.
            shown = int(value) if isinstance(value, float) and value.is_integer() else value
            raise ValueError(f"{_bounds_text(lo, hi, lo_open, hi_open)} (got {describe(shown)})")
        return value

    schema: dict[str, Any] = {"type": "integer" if kind is int else "number"}
    if lo is not None:
        schema["exclusiveMinimum" if lo_open else "minimum"] = lo
    if hi is not None:
        schema["exclusiveMaximum" if hi_open else "maximum"] = hi
    return Annotated[kind, AfterValidator(check), WithJsonSchema(schema)]


def _text(pattern: str, explain: str, *, max_length: int | None = None) -> Any:
    """A string matching ``pattern``; ``explain`` tells the author what is allowed."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.match(value) or (max_length is not None and len(value) > max_length):
            raise ValueError(f"must be {explain} (got {describe(value)})")
        return value

    schema: dict[str, Any] = {"type": "string", "pattern": pattern}
    if max_length is not None:
        schema["maxLength"] = max_length
    return Annotated[str, AfterValidator(check), WithJsonSchema(schema)]


def _positive_duration(value: timedelta) -> timedelta:
    if value <= timedelta(0):
        raise ValueError(f"must be longer than 0s (got {format_duration(value)})")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host (got {describe(value)})")
    return value


ERROR_RATE_BARE_MAX = 0.1
"""Largest error-rate ``maxIncrease`` accepted as a bare fraction (10 percentage points); above, write a percent."""


def _parse_error_rate_increase(value: object) -> float:
    """An error-rate margin in percentage points, read one way only.

    ``0.005`` and ``0.5%`` are half a point. A bare number above 0.1 is
    refused because it is almost always a mistyped percent (``1`` meaning 1%,
    ``0.5`` meaning 0.5%): read as a fraction, ``1`` would be 100 points and the
    SLO could never fail. Larger margins must be written as a percent.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and ERROR_RATE_BARE_MAX < value <= 1:
        pts = (Decimal(repr(value)) * 100).normalize()
        never = " and this SLO could never fail" if value >= 1 else ""
        raise ValueError(
            f"an error-rate maxIncrease is in percentage points; the bare number {describe(value)} would mean {pts:f} "
            f"points more errors than stable{never}. Write {describe(value)}% for {describe(value)} point(s), or "
            f"{pts:f}% if you really mean {pts:f} points (bare numbers are accepted up to {ERROR_RATE_BARE_MAX:g})"
        )
    return parse_fraction(value)


def _below_hundred_points(value: float) -> float:
    if value >= 1:
        raise ValueError(
            f"must be below 100% for an error rate: an increase of {value * 100:.4g} percentage points can never fail "
            f"(got {value * 100:.4g}%)"
        )
    return value


def _format_error_rate_increase(value: float) -> float | str:
    """Written back the way it reads back: a bare fraction up to 0.1, a percent above."""
    if value <= ERROR_RATE_BARE_MAX:
        return value
    return f"{(Decimal(repr(value)) * 100).normalize():f}%"


def _probability(value: float) -> float:
    if not 0 < value < 1:
        raise ValueError(f"must be greater than 0 and less than 1, e.g. 0.05 or 5% (got {value:.4g})")
    return value


_PLACEHOLDER = re.compile(r"\{\{\s*([^}]*?)\s*\}\}")


def _query(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a PromQL query, e.g. sum(rate(failures_total{version=\"{{version}}\"}[1m]))")
    unknown = sorted({m for m in _PLACEHOLDER.findall(value) if m != "version"})
    if unknown:
        raise ValueError(
            f"unknown placeholder {{{{{unknown[0]}}}}}; the only placeholder is {{{{version}}}}, "
            "replaced by the stable or canary version when the query runs"
        )
    return value


def _domain(value: str) -> str:
    if not value or any(c.isspace() for c in value) or "/" in value:
        raise ValueError(f"expected a host name such as api.example.com, *.example.com or * (got {describe(value)})")
    stars = value.count("*")
    if stars > 1 or (stars == 1 and value != "*" and not (value.startswith("*") or value.endswith("*"))):
        raise ValueError(
            f"a wildcard * may only be the whole domain or its first or last character (got {describe(value)})"
        )
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": "string", "pattern": DURATION_PATTERN, "minLength": 2, "examples": ["500ms", "30s", "10m", "1h30m"]}
    ),
]
"""A duration written ``500ms``/``30s``/``10m``/``2h``/``1h30m``; a timedelta in Python."""

PositiveDuration = Annotated[Duration, AfterValidator(_positive_duration)]

Fraction = Annotated[
    float,
    BeforeValidator(parse_fraction),
    PlainSerializer(format_fraction, when_used="json"),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "pattern": FRACTION_PATTERN},
            ],
            "examples": ["10%", 0.005],
        }
    ),
]
"""A fraction written ``10%`` or ``0.1``; a float in Python; written back as a number, or a percent above 1."""

EndpointField = Annotated[
    Endpoint,
    BeforeValidator(parse_endpoint),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": ENDPOINT_PATTERN, "examples": ["127.0.0.1:8081", "10.0.0.7:8081@3"]}),
]

Name = _text(
    r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
    "1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit (e.g. sentiment-v2)",
    max_length=63,
)
VersionName = _text(
    r"^[A-Za-z0-9][A-Za-z0-9._+-]*$",
    "1-63 characters of letters, digits and . _ + -, starting with a letter or digit (e.g. v2 or 2024.06.1)",
    max_length=63,
)
HeaderName = _text(r"^:?[A-Za-z0-9!#$%&'*+.^_`|~-]+$", "an HTTP header name such as x-canary")
PathPrefix = _text(r"^/[^\s?#]*$", "a path starting with / without spaces, ? or # (e.g. /v2/models/sentiment)")
NonEmpty = _text(r"^\S", "a non-empty string")
HttpUrlText = Annotated[str, AfterValidator(_http_url), WithJsonSchema({"type": "string", "pattern": "^https?://"})]
Domain = Annotated[str, AfterValidator(_domain), WithJsonSchema({"type": "string", "minLength": 1})]
Port = _number(int, 1, 65535)
Percent = _number(float, 0, 100, lo_open=True)
Weight = _number(int, 0, 100)
EjectionPercent = _number(int, 0, 100)
Quantile = _number(float, 0, 1, lo_open=True, hi_open=True)
FiniteNumber = _number(float)
MinRequests = _number(int, 1)


class _Model(BaseModel):
    """Shared config: camelCase aliases, unknown fields rejected, no type coercion, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        extra="forbid",
        strict=True,
        frozen=True,
        field_title_generator=lambda name, info: info.alias or name,
    )


# ---------------------------------------------------------------------------
# metadata
# ---------------------------------------------------------------------------


class Metadata(_Model):
    """Identity of the policy."""

    name: Name = Field(description="[a-z0-9-], max 63; unique per service")
    labels: dict[str, str] = Field(default_factory=dict, description="optional free-form labels")


# ---------------------------------------------------------------------------
# spec.service / stable / canary / loadBalancing
# ---------------------------------------------------------------------------


class Service(_Model):
    """How clients reach the model through Envoy."""

    name: Name = Field(description="used in cluster names: <name>-stable, <name>-canary")
    domains: list[Domain] = Field(min_length=1, description='Host header values routed to this model, e.g. ["models.internal", "*"]')
    port: Port = Field(description="Envoy listener port Weir programs")
    path_prefix: PathPrefix = Field("/", description='route path prefix; default "/"')
    timeout: PositiveDuration = Field(
        DEFAULT_TIMEOUT, description="per-request timeout; default 15s", json_schema_extra={"default": "15s"}
    )


class VersionSpec(_Model):
    """One version of the model (stable or canary) and the servers that run it."""

    version: VersionName = Field(description="version label, e.g. v1; stable and canary must differ")
    endpoints: list[EndpointField] = Field(
        min_length=1, description='host:port, optionally host:port@weight, e.g. ["127.0.0.1:8081"]'
    )


class OutlierDetection(_Model):
    """Envoy outlier detection for both versions' clusters."""

    consecutive_5xx: MinRequests = Field(alias="consecutive5xx", description="5xx responses in a row that eject a host")
    base_ejection_time: PositiveDuration = Field(description="how long a host stays ejected the first time")
    max_ejection_percent: EjectionPercent = Field(description="most of a cluster that may be ejected, 0-100")


class LoadBalancing(_Model):
    policy: Literal["round-robin", "least-request", "latency-aware"] = Field(
        "least-request", description="round-robin | least-request | latency-aware (default least-request)"
    )
    outlier_detection: OutlierDetection | None = Field(None, description="optional Envoy outlier detection")


# ---------------------------------------------------------------------------
# spec.strategy
# ---------------------------------------------------------------------------


class Shadow(_Model):
    """Optional phase before any live canary traffic: a share of requests is mirrored, responses discarded."""

    percent: Percent = Field(description="share of live requests mirrored to the canary, in percent (0-100]")
    min_requests: MinRequests = Field(description="analysis needs at least this many shadow samples")
    max_duration: PositiveDuration = Field(description="no verdict by then -> onInconclusive")


class PauseGate(_Model):
    """`pause: {}`: a manual gate; the rollout waits here until someone runs `promote`."""


class Step(_Model):
    """One canary step: exactly one of `weight` (percent of live traffic to the canary) or `pause: {}`."""

    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["weight"]}, {"required": ["pause"]}]})

    weight: Weight | None = Field(None, description="% of live traffic to the canary, 0-100")
    pause: PauseGate | None = Field(None, description="manual gate: waits for `promote`")
    min_requests: MinRequests | None = Field(None, description="optional: canary samples before a pass can count")
    max_duration: PositiveDuration | None = Field(None, description="optional: no verdict by then -> onInconclusive")

    @property
    def is_pause(self) -> bool:
        return self.pause is not None

    @model_validator(mode="before")
    @classmethod
    def _bare_pause_is_a_gate(cls, data: Any) -> Any:
        # `- pause:` (YAML null) is what people type for a gate; treat it as `pause: {}`.
        if isinstance(data, dict) and "pause" in data and data["pause"] is None:
            return {**data, "pause": {}}
        return data

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> "Step":
        if (self.weight is None) == (self.pause is None):
            found = "both" if self.pause is not None else "neither"
            raise ValueError(
                "a step needs exactly one of `weight: N` (0-100, % of live traffic to the canary) "
                f"or `pause: {{}}` (a manual gate that waits for `promote`); found {found}"
            )
        if self.pause is not None and (self.min_requests is not None or self.max_duration is not None):
            raise ValueError(
                "minRequests and maxDuration apply only to weight steps; "
                "a `pause: {}` step waits for `promote` instead - remove them or use a weight step"
            )
        return self


class CanaryStrategy(_Model):
    steps: list[Step] = Field(
        min_length=1, description="at least one step; each holds until analysis passes (or a gate is lifted)"
    )


class HeaderMatch(_Model):
    name: HeaderName = Field(description="request header name, e.g. x-canary")
    exact: str = Field(description='exact header value; quote YAML booleans: "true"')


class MatchRule(_Model):
    """Requests matching this rule always go to the canary (A/B testing)."""

    header: HeaderMatch = Field(description="{name, exact}: a request header and its exact value")


class Stickiness(_Model):
    """Requests with the same value of this header go to the same version while traffic is split."""

    header: HeaderName = Field(description="request header whose value keys the stickiness, e.g. x-user-id")


class Strategy(_Model):
    shadow: Shadow | None = Field(None, description="optional phase before any live canary traffic")
    canary: CanaryStrategy = Field(description="the live-traffic steps")
    match: list[MatchRule] = Field(default_factory=list, description="optional A/B: these requests always go to canary")
    stickiness: Stickiness | None = Field(None, description="optional: same key -> same version while split")


# ---------------------------------------------------------------------------
# spec.analysis
# ---------------------------------------------------------------------------


class PrometheusSource(_Model):
    url: HttpUrlText = Field(description="Prometheus base URL, e.g. http://127.0.0.1:9090")


class Source(_Model):
    type: Literal["access-log", "envoy-stats", "prometheus"] = Field(
        "access-log", description="access-log (default) | envoy-stats | prometheus"
    )
    prometheus: PrometheusSource | None = Field(None, description="required when type is prometheus")


ErrorRateIncrease = Annotated[
    float,
    BeforeValidator(_parse_error_rate_increase),
    AfterValidator(_below_hundred_points),
    PlainSerializer(_format_error_rate_increase, when_used="json"),
    WithJsonSchema(
        {
            "oneOf": [
                {"type": "number", "minimum": 0, "maximum": ERROR_RATE_BARE_MAX},
                {"type": "string", "pattern": FRACTION_PATTERN},
            ],
            "examples": ["0.5%", 0.005],
        }
    ),
]
"""An error-rate margin in percentage points: ``0.5%`` or ``0.005``; bare numbers only up to 0.1, below 100% in all."""


class ErrorRateSLO(_Model):
    """5xx responses and resets / requests. `maxIncrease` is absolute: 0.005 (= 0.5%) allows 0.5 percentage points more than stable."""

    metric: Literal["error-rate"]
    max_increase: ErrorRateIncrease = Field(
        description="absolute increase over stable in percentage points: 0.5% or 0.005 = half a point; a bare number at most 0.1"
    )


class LatencySLO(_Model):
    """Latency at a quantile. `maxIncrease` is relative to stable: 10% (= 0.1) allows canary up to 1.1 x stable."""

    metric: Literal["latency"]
    quantile: Quantile = Field(description="e.g. 0.99; between 0 and 1")
    max_increase: Fraction = Field(description="relative to stable: 10% or 0.1 = at most 1.1 x stable")


class CustomSLO(_Model):
    """An absolute bound on a Prometheus query, evaluated per version (prometheus source only)."""

    metric: Literal["custom"]
    query: Annotated[str, AfterValidator(_query)] = Field(
        description="PromQL; {{version}} is replaced by the version being measured"
    )
    max: FiniteNumber = Field(description="the query result must stay at or below this value")


SLO = Annotated[Union[ErrorRateSLO, LatencySLO, CustomSLO], Field(discriminator="metric")]
SLO_METRICS = ("error-rate", "latency", "custom")


class Analysis(_Model):
    judge: Literal["sequential", "mann-whitney", "threshold"] = Field(
        "sequential", description="sequential (default) | mann-whitney | threshold"
    )
    alpha: Annotated[Fraction, AfterValidator(_probability)] = Field(
        DEFAULT_ALPHA, description="false-rollback budget for the whole rollout; default 0.05"
    )
    source: Source = Field(default_factory=Source, description="where metrics come from; default access-log")
    slos: list[SLO] = Field(min_length=1, description="at least one SLO the canary must keep")


# ---------------------------------------------------------------------------
# spec.webhooks, spec, root
# ---------------------------------------------------------------------------


class Webhook(_Model):
    on: Literal["pre-rollout", "confirm-promotion", "post-rollout", "rollback"] = Field(
        description="pre-rollout | confirm-promotion | post-rollout | rollback"
    )
    url: HttpUrlText = Field(description="http(s) URL Weir POSTs the event to")
    timeout: PositiveDuration = Field(description="how long Weir waits for the hook, e.g. 10s")


class Spec(_Model):
    proxy_group: NonEmpty | None = Field(
        None, description="optional: the Envoy node cluster that serves this model; default every connected proxy"
    )
    service: Service = Field(description="how clients reach the model through Envoy")
    stable: VersionSpec = Field(description="the version serving today: version and endpoints")
    canary: VersionSpec = Field(description="the new version being rolled out: version and endpoints")
    load_balancing: LoadBalancing = Field(default_factory=LoadBalancing, description="optional")
    strategy: Strategy = Field(description="canary steps, optional shadow phase, match rules and stickiness")
    analysis: Analysis = Field(description="judge, metric source and the SLOs the canary must keep")
    on_failure: Literal["rollback", "pause"] = Field("rollback", description="rollback | pause (default rollback)")
    on_inconclusive: Literal["pause", "rollback"] = Field("pause", description="pause | rollback (default pause)")
    deadline: PositiveDuration | None = Field(None, description="optional: whole rollout; past it -> onInconclusive")
    webhooks: list[Webhook] = Field(default_factory=list, description="optional")


class RolloutPolicy(_Model):
    """A complete, validated rollout policy.

    Build one with :func:`policies.parse_policy` / :func:`policies.load_policy`
    (which report every error with its path and line) or
    :func:`policies.validate_policy_data` for already-parsed data (REST bodies).
    ``RolloutPolicy.model_validate`` also enforces every rule, but reports
    cross-field problems as one message on the root.
    """

    api_version: Literal["weir.dev/v1alpha1"] = Field(description="must be weir.dev/v1alpha1")
    kind: Literal["RolloutPolicy"] = Field(description="must be RolloutPolicy")
    metadata: Metadata = Field(description="name (and optional labels)")
    spec: Spec = Field(description="service, stable, canary, strategy, analysis, ...")

    @property
    def name(self) -> str:
        return self.metadata.name

    @model_validator(mode="after")
    def _cross_field_rules(self, info: ValidationInfo) -> "RolloutPolicy":
        if isinstance(info.context, dict) and info.context.get(SKIP_CROSS_FIELD_RULES):
            return self
        from .rules import cross_field_errors  # rules work on file-shaped data; imported late to keep layers apart
        from .errors import format_path

        problems = cross_field_errors(self.model_dump(mode="json", by_alias=True, exclude_none=True))
        if problems:
            raise ValueError("; ".join(f"{format_path(loc)}: {msg}" for loc, msg in problems))
        return self


__all__ = [
    "API_VERSION",
    "KIND",
    "DEFAULT_ALPHA",
    "DEFAULT_TIMEOUT",
    "Duration",
    "Fraction",
    "Endpoint",
    "RolloutPolicy",
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
    "SLO_METRICS",
    "ErrorRateSLO",
    "LatencySLO",
    "CustomSLO",
    "Webhook",
]
