"""Typed response documents of the REST API, for ``/openapi.json`` (and the clients generated from it).

Why documentation models and not ``response_model``: the handlers return the
engine's own JSON forms (``Rollout.to_json`` and friends); validating them
again on the way out would cost time on every answer and turn a new field into
a 500. These models say what clients may rely on; ``extra="allow"`` keeps them
honest about fields added later. ``tests/test_openapi.py`` checks that every
route has one and that real answers match them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from policies import RolloutPolicy

__all__ = [
    "ApplyResult", "EndpointsResult", "EventItem", "EventList", "Health", "Proxies", "ReleaseItem",
    "ReleaseList", "RolloutDetail", "RolloutList", "RolloutSummary", "Series", "policy_request_body",
]

Phase = Literal["Pending", "Shadowing", "Progressing", "Paused", "Holding", "Succeeded", "RollingBack",
                "RolledBack", "Failed"]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Health(_Open):
    status: str = Field(description="ok (liveness) or ready (readiness)")


class VerdictDoc(_Open):
    outcome: Literal["pass", "fail", "inconclusive"]
    reason: str
    evidence: dict[str, Any] = Field(description="the judge's evidence: per-SLO entries (slos[]), counts, source")
    samples_needed: int | None = Field(None, description="about how many more canary samples a decision needs")


class RolloutSummary(_Open):
    name: str
    service: str
    group: str = Field(description='the proxy group serving it ("*" = every proxy)')
    policy: dict[str, Any] = Field(description="the policy as applied (JSON form), webhook URLs redacted")
    policy_hash: str
    stable_version: str
    canary_version: str
    revision: int
    phase: Phase
    step: int = Field(description="0-based index of the current step; -1 before the first step or while shadowing "
                                  "(the CLI and weir_rollout_step show it 1-based)")
    n_steps: int | None
    weight: int = Field(description="percent of live traffic to the canary")
    mirror: float
    weight_override: int | None
    step_started_at: float | None
    converged_at: float | None
    created_at: float
    updated_at: float
    deadline_at: float | None
    message: str
    verdict: VerdictDoc | None = Field(description="the verdict the last decision acted on")
    gate: str | None
    generation: int
    analysis_run: int
    segment: int
    canary_endpoints: list[str] | None
    active: bool


class StepDoc(_Open):
    index: int
    kind: Literal["shadow", "weight", "pause"]
    weight: int
    mirror: float
    min_requests: int
    max_duration_s: float | None


class RoutingDoc(_Open):
    state: Literal["converged", "waiting", "failed"]
    detail: str
    waiting_on: list[str]
    error: str | None


class ReleaseItem(_Open):
    service: str
    group: str
    version: str
    endpoints: list[str]
    settings: dict[str, Any]
    rollout: str | None
    revision: int
    updated_at: float
    generation: int


class RolloutDetail(RolloutSummary):
    shadow: StepDoc | None
    steps: list[StepDoc]
    latest_verdict: VerdictDoc | None = Field(description="the latest analysis (every pass), acted on or not")
    routing: RoutingDoc | None
    release: ReleaseItem | None


class AppliedDoc(_Open):
    action: Literal["create", "replace", "update", "restart", "unchanged", "already-live"]
    message: str
    changes: list[str]


class ApplyResult(_Open):
    """The rollout as ``GET`` shows it plus ``applied``; only ``applied`` and ``release`` when no rollout has that name."""

    applied: AppliedDoc


class RolloutList(_Open):
    items: list[RolloutSummary]


class EventItem(_Open):
    rollout: str
    revision: int
    kind: str = Field(description="created | step | verdict | action | phase | gate | resumed | converged | ...")
    phase_from: str | None
    phase_to: str
    step: int
    weight: int
    reason: str
    policy_hash: str
    verdict: VerdictDoc | None
    at: float
    seq: int = Field(description="global, increasing: the id of the event in /v1/events/stream")


class EventList(_Open):
    items: list[EventItem]


class ReleaseList(_Open):
    items: list[ReleaseItem]


class EndpointsResult(_Open):
    service: str
    version: str
    endpoints: list[str]
    rollout: str | None
    message: str


class ProxyDoc(_Open):
    node_id: str
    node_cluster: str
    group: str
    protocol: Literal["sotw", "delta"]
    peer: str
    connected_at: float
    disconnected_at: float | None
    converged_version: str | None
    acked: dict[str, dict[str, str]] = Field(description="per resource type: resource name -> ACKed version")
    nacks: list[dict[str, Any]]


class Proxies(_Open):
    connected: list[ProxyDoc]
    disconnected: list[ProxyDoc]


class EndpointBalance(_Open):
    endpoint: str
    weight: int | None = Field(description="the load-balancing weight Envoy has now (null: not computed yet)")
    estimate_ms: float | None = Field(description="the latency estimate behind the weight (null: too few samples)")
    samples: int
    errors: int
    queue: float | None = Field(description="the scraped queue depth (signal queue-depth only)")


class Balancing(_Open):
    """``GET /v1/services/{service}/balancing``: latency-aware weights per version and endpoint."""

    service: str
    versions: dict[str, list[EndpointBalance]]


class VersionSeries(_Open):
    version: str
    role: Literal["stable", "canary"]
    requests: list[int] = Field(description="requests that started in each bin")
    errors: list[int]
    latency_ms: dict[str, list[float | None]] = Field(description="p50, p90, p99 of each bin (null: no sample)")
    ttfb_ms: dict[str, list[float | None]] | None = Field(description="the same for time to first byte, when measured")


class Series(_Open):
    """``GET /v1/rollouts/{name}/series``: what the dashboard and ``weir report`` plot."""

    rollout: str
    source: str | None = Field(description="the metric source the series come from (null: none available)")
    bin_s: float
    t: list[float] = Field(description="start of each bin, epoch seconds")
    versions: list[VersionSeries]
    weights: list[dict[str, Any]] = Field(description="[{at, weight, step, phase}] from the events: weight over time")
    slos: list[dict[str, Any]] = Field(description="[{slo, at[], statistic[], threshold, ...}] per SLO over time")
    verdict: VerdictDoc | None


def policy_request_body() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the RolloutPolicy schema for ``requestBody``, the definitions it refers to for ``components.schemas``)."""
    schema = RolloutPolicy.model_json_schema(by_alias=True, mode="validation",
                                             ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return schema, defs


def install_policy_schema(app) -> None:
    """Make ``/openapi.json`` describe the POST body as a RolloutPolicy (not ``type: object``).

    The route reads its body itself (YAML or JSON, every error at once), so FastAPI
    cannot infer the schema; this adds the policy's definitions to the document's
    ``components.schemas`` once, when it is first built.
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = build()
        schema, defs = policy_request_body()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs)
        components["RolloutPolicy"] = schema
        app.openapi_schema = document
        return document

    app.openapi = openapi


def ok(model: type[BaseModel], description: str = "OK", code: int = 200) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entry of a JSON success answer typed by ``model``."""
    return {code: {"model": model, "description": description}}


def text(media_type: str, description: str, code: int = 200) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entry of a non-JSON success answer (metrics, an event stream)."""
    return {code: {"description": description, "content": {media_type: {"schema": {"type": "string"}}}}}
