"""The demo model server's knobs: one typed, immutable record, validated on every change.

Tests and benches change knobs while the server runs (`POST /admin/knobs`), so
every change goes through `Knobs.changed()`, which rejects unknown names and
values of the wrong type or range before anything takes effect: a typo in a
bench must fail loudly, not silently run the baseline.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

# gRPC status codes by name (grpc.StatusCode values), so knobs accept "INTERNAL" or 13.
GRPC_CODES: dict[str, int] = {
    "OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
    "INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}


@dataclasses.dataclass(frozen=True, slots=True)
class Knobs:
    """Everything a test or bench can turn. Times are milliseconds unless the name says `_s`.

    Delays: an inference call waits `latency_ms` (the median; lognormal with
    `latency_sigma` when it is > 0, fixed otherwise). A chat/completion waits
    `ttfc_ms` (same rule with `ttfc_sigma`) before its first token and
    `token_ms` between tokens; `tokens` is the completion length when the
    request sets no `max_tokens`.

    Errors: `error_rate` of HTTP inference requests answer `error_status`;
    `grpc_error_rate` of gRPC ModelInfer calls end with `grpc_error_code`. An
    injected error is answered when the first byte of a success would have been.

    Regression: every inference request after the first `regression_after`
    (counted from when this knob was last set; -1 = never) has its latency,
    time to first chunk and per-token delay multiplied by the factors and
    `regression_error_rate` added to its error rate (HTTP and gRPC, capped at 1).

    Readiness: the model is loaded `ready_after_s` seconds after the server
    starts (or after this knob is set). `server_ready_without_model` makes the
    server-level readiness (`/v2/health/ready`, ServerReady) say ready while the
    model is not, as MLServer does, so model-aware health checks can be tested.

    Serving: `keep_alive_s` is uvicorn's `timeout_keep_alive` (its default, 5 s,
    closes idle keep-alive connections; a change applies to connections opened
    afterwards). `max_concurrency` > 0 bounds requests being served; the rest
    queue and show in the queue-depth gauges. `defer_headers` holds a streamed
    response's headers until its first token (default: headers at once, as
    vLLM does, so a proxy's time-to-first-upstream-byte is NOT time to first token).
    """

    model_name: str = "demo"
    model_version: str = "v1"
    seed: int = 0
    latency_ms: float = 0.0
    latency_sigma: float = 0.0
    ttfc_ms: float = 0.0
    ttfc_sigma: float = 0.0
    token_ms: float = 0.0
    tokens: int = 16
    error_rate: float = 0.0
    error_status: int = 500
    grpc_error_rate: float = 0.0
    grpc_error_code: int = 13
    regression_after: int = -1
    regression_latency_factor: float = 1.0
    regression_ttfc_factor: float = 1.0
    regression_token_factor: float = 1.0
    regression_error_rate: float = 0.0
    ready_after_s: float = 0.0
    server_ready_without_model: bool = False
    keep_alive_s: float = 5.0
    max_concurrency: int = 0
    defer_headers: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = _TYPES[f.name]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
            elif not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise ValueError(f"knob {f.name}: expected {kind.__name__}, got {value!r}")
        self._check_ranges()

    def _check_ranges(self) -> None:
        problems = []
        for name in ("error_rate", "grpc_error_rate", "regression_error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be within [0, 1]")
        for name in ("latency_ms", "latency_sigma", "ttfc_ms", "ttfc_sigma", "token_ms", "ready_after_s",
                     "regression_latency_factor", "regression_ttfc_factor", "regression_token_factor"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be a finite number >= 0")
        if not (math.isfinite(self.keep_alive_s) and self.keep_alive_s > 0):
            problems.append("keep_alive_s must be > 0")
        if not 400 <= self.error_status <= 599:
            problems.append("error_status must be an HTTP error code (400-599)")
        if not 1 <= self.grpc_error_code <= 16:
            problems.append("grpc_error_code must be a non-OK gRPC status code (1-16)")
        if self.regression_after < -1:
            problems.append("regression_after must be -1 (never) or >= 0")
        if not 1 <= self.tokens <= 4096:
            problems.append("tokens must be within [1, 4096]")
        if self.max_concurrency < 0:
            problems.append("max_concurrency must be >= 0 (0 = unbounded)")
        if not self.model_name or "/" in self.model_name:
            problems.append("model_name must be non-empty and contain no '/'")
        if problems:
            raise ValueError("; ".join(problems))

    def changed(self, changes: Mapping[str, Any]) -> Knobs:
        """A copy with `changes` applied; ValueError names every unknown knob or bad value."""
        unknown = sorted(set(changes) - set(_TYPES))
        if unknown:
            raise ValueError(f"unknown knobs: {', '.join(unknown)} (known: {', '.join(_TYPES)})")
        values = dict(changes)
        if isinstance(values.get("grpc_error_code"), str):
            values["grpc_error_code"] = grpc_code(values["grpc_error_code"])
        return dataclasses.replace(self, **values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def grpc_code(value: str | int) -> int:
    """A gRPC status code from its number or name ("UNAVAILABLE", "14")."""
    if isinstance(value, int):
        return value
    text = value.strip().upper()
    if text.isdigit():
        return int(text)
    if text.removeprefix("STATUSCODE.") in GRPC_CODES:
        return GRPC_CODES[text.removeprefix("STATUSCODE.")]
    raise ValueError(f"unknown gRPC status code {value!r}")


_TYPES: dict[str, type] = {
    f.name: {"str": str, "int": int, "float": float, "bool": bool}[f.type] for f in dataclasses.fields(Knobs)
}
