"""Typed models of the RolloutPolicy format (every field: policies/examples/sentiment.yaml).

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

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationInfo, WithJsonSchema, model_validator

from .fields import (
    Domain,
    Duration,
    EjectionPercent,
    EndpointField,
    FiniteNumber,
    Fraction,
    HeaderName,
    HttpUrlText,
    MinRequests,
    Model as _Model,
    Name,
    NonEmpty,
    PathPrefix,
    Percent,
    Port,
    SKIP_CROSS_FIELD_RULES,
    PositiveDuration,
    Quantile,
    VersionName,
    Weight,
)
from .endpoints import Endpoint
from .errors import describe
from .units import FRACTION_PATTERN, parse_fraction

API_VERSION = "weir.dev/v1alpha1"
KIND = "RolloutPolicy"
DEFAULT_ALPHA = 0.05
DEFAULT_TIMEOUT = timedelta(seconds=15)



# ---------------------------------------------------------------------------
# Validators of single SLO fields (the shared scalar types live in policies.fields).
# ---------------------------------------------------------------------------


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


DEFAULT_IDLE_TIMEOUT = timedelta(seconds=3)
"""Upstream connections idle this long are closed by Envoy: below the 5 s keep-alive of uvicorn-based
model servers (MLServer, vLLM, many others), so Envoy never reuses a connection the server just closed."""


class Retries(_Model):
    """When Envoy retries a request on another connection, once."""

    on_reset: bool = Field(
        False,
        description="also retry when the upstream reset after the request was sent (safe only for idempotent "
        "traffic; default false). Requests that never reached the server (connect failure, a reset before "
        "the request was sent, e.g. a keep-alive connection the server just closed) are always retried once",
    )
    attempts: Annotated[int, AfterValidator(lambda v: _between_int(v, 0, 5, "attempts"))] = Field(
        1, description="retries per request, 0-5 (default 1; 0 turns retries off)"
    )


def _between_int(value: int, lo: int, hi: int, what: str) -> int:
    if not lo <= value <= hi:
        raise ValueError(f"must be between {lo} and {hi} (got {value})")
    return value


class Service(_Model):
    """How clients reach the model through Envoy."""

    name: Name = Field(description="used in cluster names: <name>-<version>, e.g. sentiment-v2")
    domains: list[Domain] = Field(min_length=1, description='Host header values routed to this model, e.g. ["models.internal", "*"]')
    port: Port = Field(description="Envoy listener port Weir programs")
    path_prefix: PathPrefix = Field("/", description='route path prefix; default "/"')
    timeout: PositiveDuration = Field(
        DEFAULT_TIMEOUT, description="per-request timeout; default 15s", json_schema_extra={"default": "15s"}
    )
    protocol: Literal["http", "http2", "grpc"] = Field(
        "http",
        description="what Envoy speaks to the model servers: http (HTTP/1.1, default), http2 or grpc (both "
        "HTTP/2 without TLS, h2c); grpc also judges the gRPC status of every call",
    )
    idle_timeout: PositiveDuration = Field(
        DEFAULT_IDLE_TIMEOUT,
        description="close upstream connections idle this long; keep it below the servers' keep-alive "
        "(uvicorn: 5s); default 3s",
        json_schema_extra={"default": "3s"},
    )
    retries: Retries = Field(default_factory=Retries, description="optional: when Envoy retries a request")


class HealthCheck(_Model):
    """Envoy's active health check of every endpoint of one version: an endpoint failing it gets no traffic."""

    path: PathPrefix | None = Field(
        None, description="HTTP GET path, e.g. /v2/models/sentiment/ready (model-aware: not just the server's)"
    )
    grpc_service: str | None = Field(
        None, description="gRPC health checking (grpc.health.v1) of this service name; '' for the whole server"
    )
    expected_status: Annotated[int, AfterValidator(lambda v: _between_int(v, 100, 599, "expectedStatus"))] = Field(
        200, description="the HTTP status that means ready (default 200)"
    )
    interval: PositiveDuration = Field(timedelta(seconds=5), description="time between checks; default 5s",
                                       json_schema_extra={"default": "5s"})
    timeout: PositiveDuration = Field(timedelta(seconds=1), description="how long a check may take; default 1s",
                                      json_schema_extra={"default": "1s"})
    unhealthy_threshold: MinRequests = Field(2, description="failed checks in a row that take an endpoint out; default 2")
    healthy_threshold: MinRequests = Field(1, description="passed checks in a row that bring it back; default 1")

    @model_validator(mode="after")
    def _one_kind(self) -> "HealthCheck":
        if (self.path is None) == (self.grpc_service is None):
            raise ValueError(
                "a health check needs exactly one of `path` (an HTTP GET, e.g. /v2/models/NAME/ready) "
                "or `grpcService` (grpc.health.v1)"
            )
        if self.timeout >= self.interval:
            raise ValueError("timeout must be shorter than interval")
        return self


class VersionSpec(_Model):
    """One version of the model (stable or canary) and the servers that run it."""

    version: VersionName = Field(description="version label, e.g. v1; stable and canary must differ")
    endpoints: list[EndpointField] = Field(
        min_length=1,
        description='host:port, optionally host:port@weight; the host is an IP address or a DNS name that Weir '
        'resolves (e.g. a headless Kubernetes Service), e.g. ["127.0.0.1:8081", "sentiment-v2.models:8080"]',
    )
    health_check: HealthCheck | None = Field(None, description="optional: Envoy active health checks of its endpoints")


class OutlierDetection(_Model):
    """Envoy outlier detection for both versions' clusters."""

    consecutive_5xx: MinRequests = Field(alias="consecutive5xx", description="5xx responses in a row that eject a host")
    base_ejection_time: PositiveDuration = Field(description="how long a host stays ejected the first time")
    max_ejection_percent: EjectionPercent = Field(description="most of a cluster that may be ejected, 0-100")


def _positive_rate(value: float) -> float:
    if not 0 < value <= 100:
        raise ValueError(f"must be greater than 0 and at most 100 (got {value:g})")
    return value


class LatencyAware(_Model):
    """Tuning of `policy: latency-aware`: Weir weighs each replica of a version by its measured load."""

    signal: Literal["access-log", "queue-depth"] = Field(
        "access-log",
        description="access-log (default): each replica's latency from Envoy's access log (peak EWMA, errors "
        "count as slow); queue-depth: also its own waiting-requests gauge, scraped from its Prometheus endpoint",
    )
    queue_metric: NonEmpty = Field(
        "vllm:num_requests_waiting",
        description="queue-depth: the gauge to read, e.g. vllm:num_requests_waiting or nv_inference_pending_request_count",
    )
    metrics_port: Port | None = Field(None, description="queue-depth: the metrics port; default the serving port")
    metrics_path: PathPrefix = Field("/metrics", description="queue-depth: the metrics path; default /metrics")
    min_share: Fraction = Field(0.05, description="floor weight, as a share of a fair weight (default 5%): a slow "
                                "or recovered replica still gets some requests, so it is measured again")
    max_updates_per_second: Annotated[float, AfterValidator(_positive_rate)] = Field(
        1.0, description="at most this many endpoint-weight pushes per version and second (default 1)"
    )


class LoadBalancing(_Model):
    policy: Literal["round-robin", "least-request", "latency-aware"] = Field(
        "least-request", description="round-robin | least-request | latency-aware (default least-request)"
    )
    outlier_detection: OutlierDetection | None = Field(None, description="optional Envoy outlier detection")
    latency_aware: LatencyAware | None = Field(None, description="optional tuning of policy latency-aware")

    @model_validator(mode="after")
    def _tuning_needs_the_policy(self) -> "LoadBalancing":
        if self.latency_aware is not None and self.policy != "latency-aware":
            raise ValueError(f"latencyAware applies only to policy: latency-aware (policy is {self.policy}); "
                             "remove it or set policy: latency-aware")
        return self


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


def _exactly_one_bound(slo: Any, what: str) -> None:
    if (slo.max_increase is None) == (slo.max is None):
        found = "both" if slo.max is not None else "neither"
        raise ValueError(
            f"a {slo.metric} SLO needs exactly one of `maxIncrease` (relative to stable: the canary may be at most "
            f"this much worse) or `max` (an absolute bound the canary must keep: {what}); found {found}"
        )


class ErrorRateSLO(_Model):
    """5xx responses and resets / requests. `maxIncrease` is absolute: 0.005 (= 0.5%) allows 0.5 percentage points more than stable;
    `max` bounds the canary's own error rate (5% = at most one request in twenty fails), so a version that is
    broken on both arms still fails."""

    metric: Literal["error-rate"]
    max_increase: ErrorRateIncrease | None = Field(
        None,
        description="absolute increase over stable in percentage points: 0.5% or 0.005 = half a point; a bare number at most 0.1",
    )
    max: Annotated[Fraction, AfterValidator(_below_hundred_points)] | None = Field(
        None, description="absolute: the canary's error rate must stay at or below this, e.g. 5%"
    )

    @model_validator(mode="after")
    def _one_bound(self) -> "ErrorRateSLO":
        _exactly_one_bound(self, "e.g. max: 5%")
        return self


LATENCY_METRICS = ("latency", "ttfb", "tpot")
"""latency: total request time; ttfb: time to the first byte of the response body (a streamed completion's
first token); tpot: time per output token (responses that name their tokens in an x-output-tokens header)."""


class LatencySLO(_Model):
    """A per-request time at a quantile: `latency` (total), `ttfb` (to the first body byte: for a streamed
    completion, its first token) or `tpot` (per output token). `maxIncrease` is relative to stable: 10% (= 0.1)
    allows canary up to 1.1 x stable; `max` is an absolute bound (e.g. 800ms) the canary's quantile must keep."""

    metric: Literal["latency", "ttfb", "tpot"]
    quantile: Quantile = Field(description="e.g. 0.99; between 0 and 1")
    max_increase: Fraction | None = Field(None, description="relative to stable: 10% or 0.1 = at most 1.1 x stable")
    max: PositiveDuration | None = Field(None, description="absolute: the canary's quantile must stay at or below this, e.g. 800ms")

    @model_validator(mode="after")
    def _one_bound(self) -> "LatencySLO":
        _exactly_one_bound(self, "e.g. max: 800ms")
        return self


class CustomSLO(_Model):
    """An absolute bound on a Prometheus query, evaluated per version (prometheus source only)."""

    metric: Literal["custom"]
    query: Annotated[str, AfterValidator(_query)] = Field(
        description="PromQL; {{version}} is replaced by the version being measured"
    )
    max: FiniteNumber = Field(description="the query result must stay at or below this value")


SLO = Annotated[Union[ErrorRateSLO, LatencySLO, CustomSLO], Field(discriminator="metric")]
SLO_METRICS = ("error-rate", "latency", "ttfb", "tpot", "custom")


GRPC_CODES = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4, "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8, "FAILED_PRECONDITION": 9, "ABORTED": 10,
    "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12, "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}
#: The codes gRPC's HTTP mapping turns into 4xx: the client's fault, like HTTP 4xx (not errors).
DEFAULT_GRPC_CLIENT_ERRORS = (
    "CANCELLED", "INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNAUTHENTICATED",
)


def _grpc_code(value: str) -> str:
    if value not in GRPC_CODES or value == "OK":
        from difflib import get_close_matches

        close = get_close_matches(str(value).upper(), list(GRPC_CODES), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ValueError(f"must be a gRPC status code name other than OK, such as NOT_FOUND (got {value!r}){hint}")
    return value


GrpcCode = Annotated[str, AfterValidator(_grpc_code)]


class Analysis(_Model):
    judge: Literal["sequential", "mann-whitney", "threshold"] = Field(
        "sequential", description="sequential (default) | mann-whitney | threshold"
    )
    alpha: Annotated[Fraction, AfterValidator(_probability)] = Field(
        DEFAULT_ALPHA, description="false-rollback budget for the whole rollout; default 0.05"
    )
    source: Source = Field(default_factory=Source, description="where metrics come from; default access-log")
    slos: list[SLO] = Field(min_length=1, description="at least one SLO the canary must keep")
    grpc_client_errors: list[GrpcCode] = Field(
        default_factory=lambda: list(DEFAULT_GRPC_CLIENT_ERRORS),
        description="gRPC status codes that are the client's fault and do not count as errors (protocol grpc); "
        "default the codes gRPC maps to HTTP 4xx: " + ", ".join(DEFAULT_GRPC_CLIENT_ERRORS),
    )


# ---------------------------------------------------------------------------
# spec.webhooks, spec, root
# ---------------------------------------------------------------------------


MAX_WEBHOOK_TIMEOUT = timedelta(minutes=5)
"""Longest wait for one webhook attempt. Weir tries a hook up to 3 times, so a hook
that never answers holds its rollout (only its own) for about 3 x timeout."""


def _webhook_timeout(value: timedelta) -> timedelta:
    if value > MAX_WEBHOOK_TIMEOUT:
        from .units import format_duration

        raise ValueError(
            f"must be at most {format_duration(MAX_WEBHOOK_TIMEOUT)} (got {format_duration(value)}): Weir tries a hook "
            "up to 3 times and the rollout waits meanwhile; a slow approval belongs in a pause step (promote when ready)"
        )
    return value


class Webhook(_Model):
    on: Literal["pre-rollout", "confirm-promotion", "post-rollout", "rollback"] = Field(
        description="pre-rollout | confirm-promotion | post-rollout | rollback"
    )
    url: HttpUrlText = Field(description="http(s) URL Weir POSTs the event to")
    timeout: Annotated[PositiveDuration, AfterValidator(_webhook_timeout)] = Field(
        description="how long Weir waits for one attempt of the hook, e.g. 10s; at most 5m"
    )


class Spec(_Model):
    proxy_group: NonEmpty | None = Field(
        None, description="optional: the Envoy node cluster that serves this model; default every connected proxy"
    )
    service: Service = Field(description="how clients reach the model through Envoy")
    stable: VersionSpec | None = Field(
        None,
        description="the version serving today: version and endpoints; optional once a version of the service "
        "is live (Weir then uses the live version); when given it must be the live version",
    )
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
