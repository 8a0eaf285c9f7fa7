"""Field types shared by every document Weir reads: policies and routing files.

Why a module of its own: a rollout policy and the desired-routing file of
``weir xds serve`` name the same things (service names, versions, endpoints,
durations, header names, path prefixes). Reading them with one set of types
means one set of rules and one wording of every error, so whatever a policy
accepts the routing layer accepts too, and the reverse.

Each type is an ``Annotated`` pydantic type with exactly one validator and one
JSON Schema; :class:`Model` is the shared model configuration (camelCase
aliases, unknown fields rejected, no type coercion, immutable).
"""

from __future__ import annotations

import ipaddress
import math
import re
from datetime import timedelta
from typing import Any, Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema
from pydantic.alias_generators import to_camel

from .endpoints import ENDPOINT_PATTERN, Endpoint, parse_endpoint
from .errors import describe
from .units import DURATION_PATTERN, FRACTION_PATTERN, format_duration, format_fraction, parse_duration, parse_fraction

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
    """A string matching all of ``pattern``; ``explain`` tells the author what is allowed.

    ``fullmatch``, not ``match``: in Python ``$`` also matches before a final
    newline, so ``"echo\n"`` would pass ``^[a-z]+$`` with ``match`` and then
    name an Envoy resource with a newline in it.
    """
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value) or (max_length is not None and len(value) > max_length):
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
    # urlsplit silently drops tabs and newlines; the URL Weir would call must be the one written.
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"a URL must not contain spaces or control characters (got {describe(value)})")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host (got {describe(value)})")
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

AddressEndpointField = Annotated[
    Endpoint,
    BeforeValidator(lambda v: parse_endpoint(v, allow_names=False)),
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": ENDPOINT_PATTERN, "examples": ["127.0.0.1:8081", "10.0.0.7:8081@3"]}),
]
"""An endpoint whose host is an IP address (what Envoy receives over EDS)."""

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
NonEmpty = _text(r"^\S(.*\S)?$", "a non-empty string on one line, without leading or trailing spaces")
HttpUrlText = Annotated[str, AfterValidator(_http_url), WithJsonSchema({"type": "string", "pattern": "^https?://"})]
Domain = Annotated[str, AfterValidator(_domain), WithJsonSchema({"type": "string", "minLength": 1})]
Port = _number(int, 1, 65535)
Percent = _number(float, 0, 100, lo_open=True)
Weight = _number(int, 0, 100)
EjectionPercent = _number(int, 0, 100)
Quantile = _number(float, 0, 1, lo_open=True, hi_open=True)
FiniteNumber = _number(float)
MinRequests = _number(int, 1)


class Model(BaseModel):
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


SKIP_CROSS_FIELD_RULES = "weir.policies.cross_field_rules_checked"
"""Validation-context flag: the loader already ran the cross-field rules (with paths and lines)."""


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"must be an IP address such as 0.0.0.0 or 127.0.0.1 (got {describe(value)})") from None
    return value


IpAddress = Annotated[str, AfterValidator(_ip_address), WithJsonSchema({"type": "string", "examples": ["0.0.0.0"]})]
"""An IPv4 or IPv6 literal (Envoy binds listeners to addresses, never to names)."""

ChoiceCount = _number(int, 2, 100)
"""Envoy's least-request ``choice_count``: hosts sampled per pick (at least 2)."""
