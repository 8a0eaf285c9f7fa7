"""The desired-routing model: what Envoy should do, before it is Envoy config.

The rollout engine builds this model from typed policy models (no second
validation of a dict); ``weir xds serve --config routing.yaml`` reads it from
a file. Either way, ``translate`` turns it into Listener/RouteConfiguration/
Cluster/ClusterLoadAssignment resources.

One model, one voice: the fields use the very types of the RolloutPolicy
format (:mod:`policies.fields`: names, versions, endpoints, durations, header
names, path prefixes, outlier detection), a routing file is read by the same
document reader (YAML 1.2, duplicate keys refused, line numbers) and its
errors are worded by the same translator. So whatever a policy accepts the
routing layer accepts, and a routing file's error reads like a policy's::

    services[0].backends[1].endpoints[0]: "10.0.0.1:99999": port must be between 1 and 65535 ..., line 12

Everything Envoy would NACK (or, worse, accept and misroute) is rejected here,
every problem at once: split weights that do not sum to 100, references to
unknown versions, duplicate versions, endpoints or domains, and, across
services, duplicate names, colliding cluster names and two services claiming
the same domain and path prefix on one port.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, ValidationInfo, model_validator

from policies.document import Document, read_document
from policies.endpoints import Endpoint, parse_endpoint
from policies.errors import Loc, PolicyError, PolicyValidationError, format_path
from policies.fields import (
    SKIP_CROSS_FIELD_RULES,
    ChoiceCount,
    Domain,
    AddressEndpointField,
    HeaderName,
    IpAddress,
    Model,
    Name,
    PathPrefix,
    Percent,
    Port,
    PositiveDuration,
    VersionName,
    Weight,
)
from policies.loader import validate_document
from policies.model import DEFAULT_IDLE_TIMEOUT, DEFAULT_TIMEOUT, HealthCheck, OutlierDetection, Retries

__all__ = [
    "Backend",
    "DesiredRouting",
    "Endpoint",
    "HeaderRoute",
    "Mirror",
    "HealthCheck",
    "OutlierDetection",
    "Retries",
    "RoutingError",
    "ServiceRouting",
    "cross_service_problems",
    "load_routing",
    "parse_routing",
    "retry_conditions",
]

Problem = tuple[Loc, str]

#: Retries that are safe for any request: it never reached the server (a refused connection, or a
#: reset before Envoy sent it: the keep-alive race with a server that closed an idle connection).
SAFE_RETRY_ON = "connect-failure,reset-before-request"


def retry_conditions(retries: Retries) -> str:
    """Envoy's ``retry_on`` (Istio's ``retryOn``) for a policy's retries: what never reached the server,
    always; a reset after the request was sent only when the user says that is safe (``onReset``)."""
    return SAFE_RETRY_ON + (",reset" if retries.on_reset else "")


class RoutingError(PolicyValidationError):
    """Invalid desired routing; ``errors`` holds every problem found (path, message, line)."""


# --------------------------------------------------------------------------- models


class Backend(Model):
    """One version of a service and the endpoints that serve it."""

    version: VersionName = Field(description="version label, e.g. v1")
    endpoints: list[AddressEndpointField] = Field(min_length=1, description='ip:port[@weight], e.g. ["10.0.0.7:8081@2"]')
    health_check: HealthCheck | None = Field(None, description="optional Envoy active health check of its endpoints")


class HeaderRoute(Model):
    """Requests whose ``header`` equals ``exact`` always go to ``version`` (e.g. testers)."""

    header: HeaderName
    exact: str
    version: VersionName


class Mirror(Model):
    """Shadow ``percent`` of live requests to ``version``; clients never see its responses."""

    version: VersionName
    percent: Percent


def _bias(value: float) -> float:
    if not 0.0 <= value <= 10.0:
        raise ValueError(f"must be between 0 and 10 (got {value:g})")
    return value


class ServiceRouting(Model):
    """How one service's traffic is split, mirrored and balanced across its versions."""

    name: Name = Field(description="service name; clusters are <name>-<version>")
    port: Port = Field(description="Envoy listener port")
    domains: list[Domain] = Field(default_factory=lambda: ["*"], min_length=1, description="Host header values")
    path_prefix: PathPrefix = "/"
    timeout: PositiveDuration = Field(DEFAULT_TIMEOUT, json_schema_extra={"default": "15s"})
    backends: list[Backend] = Field(min_length=1)
    split: dict[VersionName, Weight] = Field(description="percent of live traffic per version; sums to 100")
    header_routes: list[HeaderRoute] = Field(default_factory=list)
    sticky_header: HeaderName | None = None
    mirror: Mirror | None = None
    lb_policy: Literal["round-robin", "least-request"] = "least-request"
    least_request_choice_count: ChoiceCount | None = None
    #: how much in-flight requests weigh against endpoint weights in least-request (Envoy's default 1.0);
    #: latency-aware services set 0.5, so the measured weights are not undone by momentary queues
    least_request_active_bias: Annotated[float, AfterValidator(_bias)] | None = None
    outlier_detection: OutlierDetection | None = None
    protocol: Literal["http", "http2", "grpc"] = Field("http", description="http (HTTP/1.1) | http2 | grpc (h2c)")
    idle_timeout: PositiveDuration = Field(DEFAULT_IDLE_TIMEOUT, json_schema_extra={"default": "3s"})
    retries: Retries = Field(default_factory=Retries)

    def cluster_name(self, version: str) -> str:
        """Envoy cluster (and EDS resource) name of one version of this service."""
        return f"{self.name}-{version}"

    def versions(self) -> list[str]:
        return [b.version for b in self.backends]

    def backend(self, version: str) -> Backend | None:
        return next((b for b in self.backends if b.version == version), None)

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> "ServiceRouting":
        if _rules_checked(info):
            return self
        _raise_problems(service_problems(self.model_dump(mode="json", by_alias=True, exclude_none=True)))
        return self


class DesiredRouting(Model):
    """Everything Weir wants the Envoy fleet to do, across services and ports."""

    listen_address: IpAddress = "0.0.0.0"
    services: list[ServiceRouting] = Field(default_factory=list)

    @model_validator(mode="after")
    def _rules(self, info: ValidationInfo) -> "DesiredRouting":
        if _rules_checked(info):
            return self
        _raise_problems(cross_service_problems(self.services))
        return self


def _rules_checked(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get(SKIP_CROSS_FIELD_RULES))


def _raise_problems(problems: list[Problem]) -> None:
    if problems:
        raise ValueError("; ".join(f"{format_path(loc)}: {message}" if loc else message for loc, message in problems))


# --------------------------------------------------------------------------- rules
#
# They read the raw, file-shaped mapping (camelCase keys) so they can speak even
# when other fields are broken: a file with three mistakes yields three errors.


def _get(data: Any, key: str) -> Any:
    return data.get(key) if isinstance(data, dict) else None


def _items(data: Any) -> list[tuple[int, Any]]:
    return list(enumerate(data)) if isinstance(data, list) else []


def _unknown_version(version: str, known: list[str]) -> str:
    close = difflib.get_close_matches(version, known, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown version {version!r}: the backends are {', '.join(repr(k) for k in dict.fromkeys(known))}{hint}"


def service_problems(service: Any) -> list[Problem]:
    """Rules within one service mapping; locations relative to the service."""
    out: list[Problem] = []
    versions: list[str] = []
    seen: dict[str, int] = {}
    for i, backend in _items(_get(service, "backends")):
        version = _get(backend, "version")
        if not isinstance(version, str):
            continue
        if version in seen:
            out.append((("backends", i, "version"), f"duplicate version {version!r} (also backends[{seen[version]}])"))
        seen.setdefault(version, i)
        versions.append(version)
        addresses: dict[str, int] = {}
        for j, text in _items(_get(backend, "endpoints")):
            try:
                address = parse_endpoint(text, allow_names=False).address
            except ValueError:
                continue  # the endpoint's own error says why
            if address in addresses:
                out.append((("backends", i, "endpoints", j),
                            f"{address} is listed twice (first at endpoints[{addresses[address]}]); give it a weight with @N instead"))
            addresses.setdefault(address, j)
    complete = bool(versions) and len(versions) == len(_items(_get(service, "backends")))  # guesses about broken backends would mislead
    split = _get(service, "split")
    if isinstance(split, dict) and split:
        if complete:
            out += [(("split", v), _unknown_version(v, versions)) for v in split if isinstance(v, str) and v not in versions]
        weights = [w for w in split.values() if isinstance(w, int) and not isinstance(w, bool)]
        if len(weights) == len(split) and all(0 <= w <= 100 for w in weights) and sum(weights) != 100:
            out.append((("split",), f"weights must sum to 100 (got {sum(weights)})"))
    elif isinstance(split, dict):
        out.append((("split",), "must name at least one version (weights sum to 100)"))
    if complete:
        for i, route in _items(_get(service, "headerRoutes")):
            version = _get(route, "version")
            if isinstance(version, str) and version not in versions:
                out.append((("headerRoutes", i, "version"), _unknown_version(version, versions)))
        mirror_version = _get(_get(service, "mirror"), "version")
        if isinstance(mirror_version, str) and mirror_version not in versions:
            out.append((("mirror", "version"), _unknown_version(mirror_version, versions)))
    routes: dict[tuple[str, str], int] = {}
    for i, route in _items(_get(service, "headerRoutes")):
        header, exact = _get(route, "header"), _get(route, "exact")
        if isinstance(header, str) and isinstance(exact, str):
            key = (header.lower(), exact)
            if key in routes:
                out.append((("headerRoutes", i), f"duplicate header route {header}: {exact!r} (also headerRoutes[{routes[key]}]); Envoy would only ever use the first"))
            routes.setdefault(key, i)
    if _get(service, "leastRequestChoiceCount") is not None and _get(service, "lbPolicy") == "round-robin":
        out.append((("leastRequestChoiceCount",), "only applies to lbPolicy 'least-request'; remove it or change lbPolicy"))
    domains: dict[str, int] = {}
    for i, domain in _items(_get(service, "domains")):
        if not isinstance(domain, str):
            continue
        if domain.lower() in domains:
            out.append((("domains", i), f"{domain!r} is listed twice (first at domains[{domains[domain.lower()]}]); Envoy rejects duplicate domains"))
        domains.setdefault(domain.lower(), i)
    return out


def _service_key_facts(service: Any) -> tuple[Any, Any, str, list[tuple[int, str]], list[tuple[int, str]]]:
    name = _get(service, "name")
    port = _get(service, "port")
    prefix = _get(service, "pathPrefix")
    if not isinstance(prefix, str):
        prefix = "/"
    domains = [(i, d) for i, d in _items(_get(service, "domains"))] if "domains" in (service or {}) else [(0, "*")]
    versions = [(i, _get(b, "version")) for i, b in _items(_get(service, "backends"))]
    return name, port, prefix, domains, versions


def cross_service_problems(services: Any) -> list[Problem]:
    """Rules that span services: unique names, unique cluster names, no shared route.

    Takes the services as models or as raw mappings; locations start at
    ``services[i]`` so the caller can map them to its own document (the engine
    maps them to a policy's ``spec.service``).
    """
    items = [s.model_dump(mode="json", by_alias=True, exclude_none=True) if isinstance(s, Model) else s for s in services]
    out: list[Problem] = []
    names: dict[str, int] = {}
    clusters: dict[str, str] = {}
    claims: dict[tuple[int, str, str], str] = {}
    for i, service in enumerate(items):
        if not isinstance(service, dict):
            continue
        name, port, prefix, domains, versions = _service_key_facts(service)
        if isinstance(name, str):
            if name in names:
                out.append((("services", i, "name"), f"duplicate service name {name!r} (also services[{names[name]}])"))
            names.setdefault(name, i)
            for j, version in versions:
                if not isinstance(version, str):
                    continue
                cluster = f"{name}-{version}"
                if cluster in clusters and clusters[cluster] != name:
                    out.append((("services", i, "backends", j, "version"),
                                f"cluster name {cluster!r} is also a cluster of service {clusters[cluster]!r}; rename a version or a service"))
                clusters.setdefault(cluster, name)
        if not isinstance(port, int) or isinstance(port, bool):
            continue
        for k, domain in domains:
            if not isinstance(domain, str):
                continue
            claim = (port, domain.lower(), prefix)
            owner = claims.get(claim)
            if owner is not None and owner != name:
                out.append((("services", i, "domains", k),
                            f"domain {domain!r} with path prefix {prefix!r} on port {port} is already claimed by service {owner!r}"))
            claims.setdefault(claim, name if isinstance(name, str) else f"services[{i}]")
    return out


def routing_problems(doc: Any) -> list[Problem]:
    """Every rule of a routing-file mapping: per service, then across services."""
    out: list[Problem] = []
    services = _get(doc, "services")
    for i, service in _items(services):
        out += [(("services", i, *loc), message) for loc, message in service_problems(service)]
    if isinstance(services, list):
        out += cross_service_problems(services)
    return out


# --------------------------------------------------------------------------- entry points

_WHAT = "a routing mapping with listenAddress and services"


def parse_routing(data: Any, *, source: str | None = None) -> DesiredRouting:
    """Validate plain (file-shaped, camelCase) data; raise :class:`RoutingError` with ALL problems."""
    return validate_document(Document(data, format="data"), DesiredRouting, routing_problems,
                             source=source, what=_WHAT, error_type=RoutingError)


def parse_routing_text(text: str, *, source: str | None = None) -> DesiredRouting:
    """Parse YAML or JSON routing text; errors carry line numbers."""
    try:
        doc = read_document(text, source=source, what=_WHAT, what_plural="one routing per file")
    except PolicyValidationError as err:  # a syntax error: same reader, same words, our type
        raise RoutingError(err.errors, source=source) from None
    return validate_document(doc, DesiredRouting, routing_problems, source=source, what=_WHAT, error_type=RoutingError)


def load_routing(path: str | Path) -> DesiredRouting:
    """Read a YAML or JSON routing file; syntax errors and field errors name the line."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise RoutingError([PolicyError("", f"cannot read the file: {exc.strerror or exc}")], source=source) from None
    except UnicodeDecodeError as exc:
        raise RoutingError([PolicyError("", f"not UTF-8 text (undecodable byte at offset {exc.start})")], source=source) from None
    return parse_routing_text(text, source=source)
