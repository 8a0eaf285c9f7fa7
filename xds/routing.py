"""The desired-routing model: what Envoy should do, before it is Envoy config.

The rollout engine fills this model from a rollout's current step; ``weir xds
serve --config routing.yaml`` fills it from a file. Either way, ``translate``
turns it into Listener/RouteConfiguration/Cluster/ClusterLoadAssignment
resources. Everything Envoy would NACK (or, worse, accept and misroute) is
rejected here instead, with a path that points at the offending field, and
*every* problem is reported at once so a user fixes a file in one pass.

Error paths use the names the user wrote (``services[0].pathPrefix`` when the
file said ``pathPrefix``) and list-index syntax (``services[0].port``, never
pydantic's ``services.0.port``).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

__all__ = [
    "Backend",
    "DesiredRouting",
    "Endpoint",
    "FieldError",
    "HeaderRoute",
    "Mirror",
    "OutlierDetection",
    "RoutingError",
    "ServiceRouting",
    "load_routing",
    "parse_duration",
    "parse_routing",
]

# --------------------------------------------------------------------------- errors


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem in the input: where it is and what is wrong with it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path or '<root>'}: {self.message}"


class RoutingError(ValueError):
    """Invalid desired routing; ``errors`` holds every problem found, not just the first."""

    def __init__(self, errors: list[FieldError]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


#: Error type of our own checks. A check may report several problems at once by
#: putting ``(sub_path, message)`` pairs in the error context under ``errors``.
_WEIR_ERROR = "weir"


def _fail(message: str, *, errors: list[tuple[str, str]] | None = None) -> PydanticCustomError:
    """A pydantic error carrying our own wording (and optionally several sub-errors)."""
    ctx: dict[str, Any] = {"message": message}
    if errors:
        ctx["errors"] = errors
    return PydanticCustomError(_WEIR_ERROR, "{message}", ctx)


def _fail_many(errors: list[tuple[str, str]]) -> PydanticCustomError:
    """One pydantic error standing for several ``(sub_path, message)`` problems."""
    summary = "; ".join(f"{p}: {m}" if p else m for p, m in errors)
    return _fail(summary, errors=errors)


# --------------------------------------------------------------------------- small validators

_SERVICE_NAME = re.compile(r"^[a-z0-9-]+$")
_VERSION_NAME = re.compile(r"^[a-z0-9.-]+$")
# RFC 7230 token characters; a leading ':' allows pseudo-headers such as ':authority'.
_HEADER_NAME = re.compile(r"^:?[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PLAIN_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_UINT32_MAX = 2**32 - 1
_MAX_DURATION_S = 315_576_000_000  # google.protobuf.Duration's limit


def _between(low: float, high: float) -> AfterValidator:
    """Range check whose message says both the allowed range and what was found."""

    def check(value: float) -> float:
        if not low <= value <= high:
            raise _fail(f"must be between {_num(low)} and {_num(high)} (got {_num(value)})")
        return value

    return AfterValidator(check)


def _at_least(low: float) -> AfterValidator:
    def check(value: float) -> float:
        if value < low:
            raise _fail(f"must be at least {_num(low)} (got {_num(value)})")
        return value

    return AfterValidator(check)


def _matching(pattern: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise _fail(f"must be {what} (got {value!r})")
        return value

    return AfterValidator(check)


def _num(value: float) -> str:
    """Render 100.0 as 100 and 12.5 as 12.5 in messages."""
    return str(int(value)) if float(value).is_integer() else str(value)


def _ip_literal(value: str) -> str:
    """Envoy binds listeners and connects EDS endpoints to IP literals only: it
    never resolves a DNS name found in a socket address (it NACKs the resource)."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise _fail(
            f"must be an IP address (got {value!r}); Envoy does not resolve DNS names "
            "here, so resolve the name first"
        ) from None
    return value


def parse_duration(value: Any) -> float:
    """Seconds from ``15`` / ``1.5`` / ``"15s"`` / ``"500ms"`` / ``"2m"`` / ``"1h"`` / ``"1m30s"``."""
    expected = f"expected a duration like 15s, 500ms or 2m (got {value!r})"
    if isinstance(value, bool):
        raise _fail(expected)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and _PLAIN_NUMBER.fullmatch(value.strip()):
        seconds = float(value)
    elif isinstance(value, str) and _is_duration_text(value.strip()):
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(value))
    else:
        raise _fail(expected)
    if not 0 <= seconds <= _MAX_DURATION_S:  # also rejects NaN and infinities
        raise _fail(f"must be between 0 and {_MAX_DURATION_S}s (got {value!r})")
    return seconds


def _is_duration_text(text: str) -> bool:
    return bool(text) and "".join(m.group(0) for m in _DURATION_PART.finditer(text)) == text


def _reject_bool(value: Any) -> Any:
    """Pydantic would read ``port: true`` as 1; in a config file that is always a mistake."""
    if isinstance(value, bool):
        raise _fail(f"expected a number (got {value!r})")
    return value


Int = Annotated[int, BeforeValidator(_reject_bool)]
Number = Annotated[float, BeforeValidator(_reject_bool)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
Port = Annotated[Int, _between(1, 65535)]
ServiceName = Annotated[str, _matching(_SERVICE_NAME, "lowercase letters, digits and '-'")]
VersionName = Annotated[str, _matching(_VERSION_NAME, "lowercase letters, digits, '.' and '-'")]
HeaderName = Annotated[str, _matching(_HEADER_NAME, "a valid HTTP header name")]


class _Model(BaseModel):
    """Shared config: unknown fields are errors (a typo must never pass silently),
    and both the snake_case names and the camelCase aliases are accepted."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True)


# --------------------------------------------------------------------------- endpoints and backends


class Endpoint(_Model):
    """One upstream address of a backend; ``weight`` is its EDS load-balancing weight."""

    host: Annotated[str, AfterValidator(_ip_literal)]
    port: Port
    weight: Annotated[Int, _between(1, _UINT32_MAX)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, data: Any) -> Any:
        """Accept the compact ``"host:port[@weight]"`` form wherever an endpoint goes."""
        return _split_endpoint_text(data) if isinstance(data, str) else data

    @classmethod
    def parse(cls, text: str) -> "Endpoint":
        """``"10.0.0.1:8080"`` or ``"10.0.0.1:8080@3"`` (IPv6: ``"[::1]:8080"``)."""
        try:
            return cls.model_validate(text)
        except ValidationError as exc:
            problems = "; ".join(str(e) if e.path else e.message for e in _convert(exc))
            raise ValueError(f"invalid endpoint {text!r}: {problems}") from None

    def address(self) -> str:
        """``host:port`` (brackets around IPv6), for messages and duplicate checks."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _split_endpoint_text(text: str) -> dict[str, Any]:
    """Syntax only: ranges and IP checks are left to the fields, so messages match."""
    expected = "expected 'host:port' or 'host:port@weight'"
    body, at, weight_text = text.strip().partition("@")
    host, colon, port_text = body.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise _fail(f"{expected}, with brackets around an IPv6 host (got {text!r})")
    if not colon or not host:
        raise _fail(f"{expected} (got {text!r})")
    if not port_text.isdigit():
        raise _fail(f"{expected}: port {port_text!r} is not a number (got {text!r})")
    data: dict[str, Any] = {"host": host, "port": int(port_text)}
    if at:
        if not weight_text.isdigit():
            raise _fail(f"{expected}: weight {weight_text!r} is not a whole number (got {text!r})")
        data["weight"] = int(weight_text)
    return data


class Backend(_Model):
    """One version of a service and the endpoints that serve it."""

    version: VersionName
    endpoints: list[Endpoint]

    @field_validator("endpoints")
    @classmethod
    def _endpoints(cls, endpoints: list[Endpoint]) -> list[Endpoint]:
        if not endpoints:
            raise _fail("must not be empty")
        seen: dict[str, int] = {}
        problems = []
        for i, endpoint in enumerate(endpoints):
            address = endpoint.address()
            if address in seen:
                problems.append((f"[{i}]", f"duplicate endpoint {address} (also [{seen[address]}])"))
            seen.setdefault(address, i)
        total = sum(e.weight or 1 for e in endpoints)
        if total > _UINT32_MAX:
            problems.append(("", f"weights must sum to at most {_UINT32_MAX}, Envoy's limit per locality (got {total})"))
        return _raise_any(problems, endpoints)


class HeaderRoute(_Model):
    """Requests whose ``header`` equals ``exact`` always go to ``version`` (e.g. testers)."""

    header: HeaderName
    exact: str
    version: VersionName


class Mirror(_Model):
    """Shadow ``percent`` of live requests to ``version``; clients never see its responses."""

    version: VersionName
    percent: Annotated[Number, _between(0, 100)]


class OutlierDetection(_Model):
    """Eject an endpoint after consecutive 5xx, so one sick replica does not fail a canary."""

    consecutive_5xx: Annotated[Int, _at_least(1)] = Field(
        5, validation_alias=AliasChoices("consecutive_5xx", "consecutive5xx")
    )
    base_ejection_time_s: Duration = Field(
        30.0, validation_alias=AliasChoices("base_ejection_time_s", "baseEjectionTime")
    )
    max_ejection_percent: Annotated[Int, _between(0, 100)] = Field(
        10, validation_alias=AliasChoices("max_ejection_percent", "maxEjectionPercent")
    )

    @field_validator("base_ejection_time_s")
    @classmethod
    def _positive(cls, seconds: float) -> float:
        if seconds <= 0:
            raise _fail(f"must be greater than 0 (got {_num(seconds)})")
        return seconds


# --------------------------------------------------------------------------- services


class ServiceRouting(_Model):
    """How one service's traffic is split, mirrored and balanced across its versions.

    Field order matters: the cross-field checks (split, header routes, mirror) read
    the already-validated ``name`` and ``backends``; if those are themselves
    invalid, only their own errors are reported.
    """

    name: ServiceName
    port: Port
    domains: list[str] = ["*"]
    path_prefix: str = Field("/", validation_alias=AliasChoices("path_prefix", "pathPrefix"))
    timeout_s: Duration = Field(15.0, validation_alias=AliasChoices("timeout_s", "timeout"))
    backends: list[Backend]
    split: dict[str, Int]
    header_routes: list[HeaderRoute] = Field(
        [], validation_alias=AliasChoices("header_routes", "headerRoutes")
    )
    sticky_header: HeaderName | None = Field(
        None, validation_alias=AliasChoices("sticky_header", "stickyHeader")
    )
    mirror: Mirror | None = None
    lb_policy: Literal["round-robin", "least-request"] = Field(
        "least-request", validation_alias=AliasChoices("lb_policy", "lbPolicy")
    )
    least_request_choice_count: Int | None = Field(
        None,
        validation_alias=AliasChoices("least_request_choice_count", "leastRequestChoiceCount"),
    )
    outlier_detection: OutlierDetection | None = Field(
        None, validation_alias=AliasChoices("outlier_detection", "outlierDetection")
    )

    def cluster_name(self, version: str) -> str:
        """Envoy cluster (and EDS resource) name of one version of this service."""
        return f"{self.name}-{version}"

    def versions(self) -> list[str]:
        return [b.version for b in self.backends]

    @field_validator("domains")
    @classmethod
    def _domains(cls, domains: list[str]) -> list[str]:
        """Envoy NACKs a RouteConfiguration that lists one domain twice."""
        if not domains:
            raise _fail("must not be empty (use ['*'] to match every host)")
        problems, seen = [], set()
        for i, domain in enumerate(domains):
            if not domain or any(c.isspace() for c in domain):
                problems.append((f"[{i}]", f"must be a host name without spaces (got {domain!r})"))
            elif domain.lower() in seen:
                problems.append((f"[{i}]", f"duplicate domain {domain!r}"))
            seen.add(domain.lower())
        if problems:
            raise _fail_many(problems)
        return domains

    @field_validator("path_prefix")
    @classmethod
    def _path_prefix(cls, prefix: str) -> str:
        if not prefix.startswith("/"):
            raise _fail(f"must start with '/' (got {prefix!r})")
        return prefix

    @field_validator("backends")
    @classmethod
    def _backends(cls, backends: list[Backend], info: ValidationInfo) -> list[Backend]:
        if not backends:
            raise _fail("must not be empty")
        return _raise_any(_duplicate_version_problems([b.version for b in backends], info.data.get("name")), backends)

    @field_validator("split")
    @classmethod
    def _split(cls, split: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        """Weights are percentages of live traffic: each 0..100, together exactly 100."""
        if not split:
            raise _fail("must name at least one version (weights must sum to 100)")
        problems = _split_reference_problems(split, _versions(info))
        for version, weight in split.items():
            if not 0 <= weight <= 100:
                problems.append((f".{version}", f"must be between 0 and 100 (got {weight})"))
        total = sum(split.values())
        if total != 100:
            problems.append(("", f"weights must sum to 100 (got {total})"))
        return _raise_any(problems, split)

    @field_validator("header_routes")
    @classmethod
    def _header_routes(cls, routes: list[HeaderRoute], info: ValidationInfo) -> list[HeaderRoute]:
        problems = _header_route_reference_problems([r.version for r in routes], _versions(info))
        seen: dict[tuple[str, str], int] = {}
        for i, route in enumerate(routes):
            key = (route.header.lower(), route.exact)
            if key in seen:
                problems.append((f"[{i}]", f"duplicate header route {route.header}={route.exact!r} (also [{seen[key]}])"))
            seen.setdefault(key, i)
        return _raise_any(problems, routes)

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, mirror: Mirror | None, info: ValidationInfo) -> Mirror | None:
        version = mirror.version if mirror is not None else None
        return _raise_any(_mirror_reference_problems(version, _versions(info)), mirror)

    @field_validator("least_request_choice_count")
    @classmethod
    def _choice_count(cls, count: int | None, info: ValidationInfo) -> int | None:
        """Envoy needs at least 2 choices; with round-robin the setting would be ignored."""
        if count is None:
            return None
        if count < 2:
            raise _fail(f"must be at least 2 (got {count})")
        if info.data.get("lb_policy", "least-request") != "least-request":
            raise _fail(f"only applies to lbPolicy 'least-request' (lbPolicy is {info.data['lb_policy']!r})")
        return count


def _versions(info: ValidationInfo) -> list[str] | None:
    """Versions of the backends, or None when the backends themselves were invalid."""
    backends = info.data.get("backends")
    return None if backends is None else [b.version for b in backends]


_T = typing.TypeVar("_T")


def _raise_any(problems: list[tuple[str, str]], value: _T) -> _T:
    if problems:
        raise _fail_many(problems)
    return value


# The checks below take plain values, so ``parse_routing`` can also run them on the
# raw input of a service whose backends failed to validate (see _salvage_service).


def _unknown_version(version: str, versions: list[str]) -> str:
    return f"unknown version {version!r} (backends: {', '.join(dict.fromkeys(versions))})"


def _duplicate_version_problems(versions: list[str], service: str | None) -> list[tuple[str, str]]:
    problems, seen = [], set()
    for i, version in enumerate(versions):
        if version in seen:
            cluster = f"{service}-{version}" if service else version
            problems.append((f"[{i}].version", f"duplicate cluster name {cluster!r}"))
        seen.add(version)
    return problems


def _split_reference_problems(split: Mapping[str, Any], versions: list[str] | None) -> list[tuple[str, str]]:
    if versions is None:
        return []
    return [(f".{v}", _unknown_version(v, versions)) for v in split if v not in versions]


def _header_route_reference_problems(route_versions: list[str], versions: list[str] | None) -> list[tuple[str, str]]:
    if versions is None:
        return []
    return [(f"[{i}].version", _unknown_version(v, versions)) for i, v in enumerate(route_versions) if v not in versions]


def _mirror_reference_problems(version: str | None, versions: list[str] | None) -> list[tuple[str, str]]:
    if version is None or versions is None or version in versions:
        return []
    return [(".version", _unknown_version(version, versions))]


# --------------------------------------------------------------------------- the whole routing


class DesiredRouting(_Model):
    """Everything Weir wants the Envoy fleet to do, across services and ports."""

    listen_address: Annotated[str, AfterValidator(_ip_literal)] = Field(
        "0.0.0.0", validation_alias=AliasChoices("listen_address", "listenAddress")
    )
    services: list[ServiceRouting] = []

    @field_validator("services")
    @classmethod
    def _services(cls, services: list[ServiceRouting]) -> list[ServiceRouting]:
        problems = _cross_service_problems(list(enumerate(services)))
        if problems:
            raise _fail_many(problems)
        return services


def _cross_service_problems(services: list[tuple[int, ServiceRouting]]) -> list[tuple[str, str]]:
    """Rules that span services: unique names, unique cluster names, no shared route.

    Takes ``(index, service)`` pairs so it can also run on the services that did
    validate when others did not (``parse_routing`` reports everything at once).
    """
    problems: list[tuple[str, str]] = []
    names: dict[str, int] = {}
    clusters: dict[str, str] = {}
    claims: dict[tuple[int, str, str], str] = {}
    for i, service in services:
        if service.name in names:
            problems.append((f"[{i}].name", f"duplicate service name {service.name!r} (also services[{names[service.name]}])"))
        names.setdefault(service.name, i)
        for j, backend in enumerate(service.backends):
            cluster = service.cluster_name(backend.version)
            where = f"services[{i}].backends[{j}]"
            if cluster in clusters:
                problems.append((f"[{i}].backends[{j}].version", f"duplicate cluster name {cluster!r} (also {clusters[cluster]})"))
            clusters.setdefault(cluster, where)
        for k, domain in enumerate(service.domains):
            claim = (service.port, domain.lower(), service.path_prefix)
            if claim in claims:
                problems.append((
                    f"[{i}].domains[{k}]",
                    f"domain {domain!r} with path prefix {service.path_prefix!r} on port "
                    f"{service.port} is already claimed by service {claims[claim]!r}",
                ))
            claims.setdefault(claim, service.name)
    return problems


# --------------------------------------------------------------------------- pydantic errors -> FieldError


def _convert(exc: ValidationError) -> list[FieldError]:
    """Pydantic's errors in our path style and wording."""
    out: list[FieldError] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == _WEIR_ERROR and ctx.get("errors"):
            base = _format_loc(loc)
            out.extend(FieldError(base + sub, message) for sub, message in ctx["errors"])
        else:
            out.append(FieldError(_format_loc(loc), _message(err, loc)))
    return out


def _format_loc(loc: tuple[str | int, ...]) -> str:
    """``('services', 0, 'split', 'v1')`` -> ``services[0].split.v1``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            continue
        else:
            path += f".{part}" if path else str(part)
    return path


def _message(err: Mapping[str, Any], loc: tuple[str | int, ...]) -> str:
    kind, found = err["type"], err.get("input")
    if kind == _WEIR_ERROR:
        return str(err["ctx"]["message"])
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return _unknown_field_message(loc)
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping (got {_describe(found)})"
    if kind == "string_type":
        hint = "; quote it in YAML" if isinstance(found, (int, float, bool)) else ""
        return f"expected a string (got {_describe(found)}{hint})"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number (got {_describe(found)})"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number (got {_describe(found)})"
    if kind == "list_type":
        return f"expected a list (got {_describe(found)})"
    if kind == "literal_error":
        return f"expected {err['ctx']['expected']} (got {_describe(found)})"
    msg = str(err["msg"])
    if msg.startswith("Input should be "):
        msg = "expected " + msg[len("Input should be "):]
    return f"{msg} (got {_describe(found)})"


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _unknown_field_message(loc: tuple[str | int, ...]) -> str:
    """Name the unknown field and suggest the closest known one: typos are the usual cause."""
    model = _model_at(loc[:-1])
    if model is None:
        return "unknown field"
    if _find_field(model, str(loc[-1])) is not None:
        return "this field is given twice, in snake_case and in camelCase; keep one"
    known = _field_names(model)
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f" (known fields: {', '.join(known)})"
    return f"unknown field{hint}"


def _field_names(model: type[BaseModel]) -> list[str]:
    """The names a user may write: the camelCase alias where one exists, else the field name."""
    names = []
    for name, field in model.model_fields.items():
        choices = getattr(field.validation_alias, "choices", None)
        names.append(str(choices[-1]) if choices else name)
    return names


def _model_at(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    """Walk the model classes along an error location (field names, aliases, indexes)."""
    current: Any = DesiredRouting
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            current = _item_type(current)
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = _find_field(current, str(part))
        if field is None:
            return None
        current = field.annotation
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _find_field(model: type[BaseModel], key: str) -> Any:
    for name, field in model.model_fields.items():
        choices = getattr(field.validation_alias, "choices", ())
        if key == name or key in choices:
            return field
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip ``Optional[...]`` / ``X | None`` / ``Annotated`` down to the interesting type."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    return annotation


def _item_type(annotation: Any) -> Any:
    args = typing.get_args(annotation)
    return args[-1] if args else None


# --------------------------------------------------------------------------- entry points


def parse_routing(data: Any) -> DesiredRouting:
    """Validate a plain dict (from YAML, JSON or code); raise ``RoutingError`` with ALL problems.

    Pydantic skips a model's cross-field checks when one of its fields is broken,
    and the cross-service checks when any service is broken. So when validation
    fails we also run the cross-service checks on the services that *did*
    validate, so the user sees e.g. a bad port and a duplicate name together.
    """
    if not isinstance(data, Mapping):
        raise RoutingError([FieldError("", f"expected a mapping with 'services' (got {_describe(data)})")])
    try:
        return DesiredRouting.model_validate(data)
    except ValidationError as exc:
        errors = _convert(exc)
    # When every service validated, pydantic already ran these; _dedupe drops the repeat.
    errors.extend(_salvaged_cross_service_errors(data))
    raise RoutingError(_ordered(_dedupe(errors)))


def _salvaged_cross_service_errors(data: Mapping[str, Any]) -> list[FieldError]:
    raw = data.get("services")
    if not isinstance(raw, list):
        return []
    valid: list[tuple[int, ServiceRouting]] = []
    salvaged: list[FieldError] = []
    for i, item in enumerate(raw):
        try:
            valid.append((i, ServiceRouting.model_validate(item)))
        except ValidationError as exc:
            if isinstance(item, Mapping) and _backends_failed(exc):
                salvaged.extend(FieldError(f"services[{i}]{sub}", msg) for sub, msg in _salvage_service(item))
    cross = [FieldError(f"services{sub}", msg) for sub, msg in _cross_service_problems(valid)]
    return salvaged + cross


def _backends_failed(exc: ValidationError) -> bool:
    return any(err["loc"][:1] == ("backends",) for err in exc.errors(include_url=False))


def _salvage_service(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Version-reference checks on the raw input of a service whose backends are broken.

    Pydantic skips every check that needs the backends when one endpoint is bad;
    a typo in a split key would then only surface on the next attempt. Only
    well-typed raw values take part; everything else already has its own error.
    """
    backends = raw.get("backends")
    if not isinstance(backends, list):
        return []
    versions = [b["version"] for b in backends if isinstance(b, Mapping) and isinstance(b.get("version"), str)]
    if len(versions) != len(backends) or not versions:
        return []  # a version is missing or mistyped: its own error says so, guesses would mislead
    name = raw.get("name") if isinstance(raw.get("name"), str) else None
    problems = [(".backends" + sub, msg) for sub, msg in _duplicate_version_problems(versions, name)]
    split = raw.get("split")
    if isinstance(split, Mapping) and all(isinstance(k, str) for k in split):
        problems += [(".split" + sub, msg) for sub, msg in _split_reference_problems(split, versions)]
    key, routes = _raw_field(raw, "header_routes", "headerRoutes")
    if isinstance(routes, list):
        route_versions = [r.get("version") if isinstance(r, Mapping) else None for r in routes]
        refs = [(i, v) for i, v in enumerate(route_versions) if isinstance(v, str) and v not in versions]
        problems += [(f".{key}[{i}].version", _unknown_version(v, versions)) for i, v in refs]
    mirror = raw.get("mirror")
    if isinstance(mirror, Mapping) and isinstance(mirror.get("version"), str):
        problems += [(".mirror" + sub, msg) for sub, msg in _mirror_reference_problems(mirror["version"], versions)]
    return problems


def _raw_field(raw: Mapping[str, Any], *names: str) -> tuple[str, Any]:
    for name in names:
        if name in raw:
            return name, raw[name]
    return names[0], None


def _ordered(errors: list[FieldError]) -> list[FieldError]:
    """Group errors by service (top-level first), keeping each group's own order."""
    def key(error: FieldError) -> int:
        match = re.match(r"services\[(\d+)\]", error.path)
        return int(match.group(1)) if match else -1

    return sorted(errors, key=key)


def _dedupe(errors: list[FieldError]) -> list[FieldError]:
    return list(dict.fromkeys(errors))


def load_routing(path: str | Path) -> DesiredRouting:
    """Read a YAML or JSON routing file; syntax errors name the line, other errors the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RoutingError([FieldError(str(path), f"cannot read file: {exc}")]) from None
    data = _load_json(path, text) if path.suffix.lower() == ".json" else _load_yaml(path, text)
    if data is None:
        raise RoutingError([FieldError(str(path), "file is empty (expected a mapping with 'services')")])
    return parse_routing(data)


def _load_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RoutingError([FieldError(f"{path}:{exc.lineno}:{exc.colno}", f"invalid JSON: {exc.msg}")]) from None


def _load_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise RoutingError([FieldError(where, f"invalid YAML: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise RoutingError([FieldError(str(path), f"invalid YAML: {exc}")]) from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys: PyYAML silently keeps the last one,
    so a second ``split:`` would quietly replace the first."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
