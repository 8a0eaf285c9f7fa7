"""An existing VirtualService + DestinationRule -> a RolloutPolicy skeleton.

The inverse of :mod:`.render`, for platforms that already route with Istio:
subsets become the stable and canary versions (by their version label), the
VirtualService's hosts become the service's domains, its weights the first
step, its header routes the A/B match rules, its mirror the shadow phase, the
DestinationRule's load balancer, consistent hash and outlier detection the
policy's load balancing and stickiness.

Anything that would change how requests are routed and that a RolloutPolicy
cannot say (regex or exact URI matches, matches on the host, fault injection,
redirects, a third subset, per-subset traffic policies, ...) is an error that
names the object and the field, and nothing is produced: a skeleton that
silently routes differently from the objects it came from would be worse than
none. Settings Weir renders from its own defaults (retries, the connection
pool) and what a policy has that Istio objects do not (the analysis, the steps
after the first, endpoints) are filled in and listed in ``notes``.

Retries and the connection pool's idle timeout map to ``spec.service.retries``
and ``spec.service.idleTimeout``. A policy retries only what is safe to retry
(requests that never reached the server, and resets when ``onReset``), so
other retry conditions, per-try timeouts and other pool limits are not carried:
each one is a note, not an error, since they do not change where requests go.

Endpoints: Istio finds pods by label, a policy lists ``IP:PORT`` endpoints
(Weir's xDS server needs them for EDS), so they come from the caller
(``--endpoints v1=10.0.1.11:8080,10.0.1.12:8080``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from policies import PolicyValidationError, RolloutPolicy, parse_duration, validate_policy_data
from policies.model import API_VERSION as POLICY_API_VERSION

from ..errors import MeshError, MeshProblem
from .defaults import DEFAULT_PORT, DEFAULT_VERSION_LABEL

__all__ = ["ImportOptions", "ImportResult", "import_objects", "DEFAULT_PORT", "SKELETON_RAMP"]

#: Istio API versions whose VirtualService/DestinationRule share the v1 schema.
ISTIO_API_VERSIONS = ("networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3")

#: Steps after the imported weight: the skeleton ramps through these to 100%.
SKELETON_RAMP = (10, 25, 50, 100)

_SKELETON_SLOS = [
    {"metric": "error-rate", "maxIncrease": "0.5%"},
    {"metric": "latency", "quantile": 0.99, "maxIncrease": "10%"},
]
_SKELETON_SHADOW = {"minRequests": 1000, "maxDuration": "10m"}

# Istio's defaults for outlier-detection fields left out (a policy needs all three).
_ISTIO_OUTLIER_DEFAULTS = {"consecutive5xxErrors": 5, "baseEjectionTime": "30s", "maxEjectionPercent": 10}

_LB_FROM_SIMPLE = {"ROUND_ROBIN": "round-robin", "LEAST_REQUEST": "least-request", "LEAST_CONN": "least-request"}

# Keys Kubernetes or Istio fill in on stored objects; they say nothing about routing.
_SERVER_METADATA = {
    "uid", "resourceVersion", "generation", "creationTimestamp", "managedFields", "selfLink",
    "deletionTimestamp", "deletionGracePeriodSeconds", "ownerReferences", "finalizers",
}

_WHY_NOT = {
    "fault": "fault injection cannot be expressed in a RolloutPolicy",
    "redirect": "redirects cannot be expressed in a RolloutPolicy",
    "directResponse": "direct responses cannot be expressed in a RolloutPolicy",
    "rewrite": "rewrites cannot be expressed in a RolloutPolicy",
    "delegate": "delegated routes cannot be expressed in a RolloutPolicy",
    "corsPolicy": "CORS policies cannot be expressed in a RolloutPolicy",
    "headers": "header manipulation cannot be expressed in a RolloutPolicy",
    "mirrors": "several mirrors cannot be expressed: a RolloutPolicy mirrors to the canary only (use mirror)",
    "mirrorPercent": "the deprecated mirrorPercent cannot be expressed; use mirrorPercentage",
    "authority": "matching on the host cannot be expressed: a RolloutPolicy routes every host in spec.hosts alike; "
                 "use one VirtualService per host",
    "method": "matching on the method cannot be expressed; a RolloutPolicy matches one request header",
    "queryParams": "matching on query parameters cannot be expressed; a RolloutPolicy matches one request header",
    "withoutHeaders": "negative header matches cannot be expressed; a RolloutPolicy matches one request header",
    "sourceLabels": "matching on the client's labels cannot be expressed",
    "sourceNamespace": "matching on the client's namespace cannot be expressed",
    "gateways": "per-route gateways cannot be expressed; bind the whole VirtualService (spec.gateways)",
    "port": "matching on the port cannot be expressed",
    "scheme": "matching on the scheme cannot be expressed",
    "tcp": "TCP routes cannot be expressed: a RolloutPolicy routes HTTP",
    "tls": "TLS routes cannot be expressed: a RolloutPolicy routes HTTP",
    "workloadSelector": "workload selectors cannot be expressed",
    "portLevelSettings": "per-port traffic policies cannot be expressed",
    "localityLbSetting": "locality load balancing cannot be expressed",
    "warmupDurationSecs": "slow-start warm-up cannot be expressed",
    "warmup": "slow-start warm-up cannot be expressed",
    "proxyProtocol": "the PROXY protocol cannot be expressed",
    "tunnel": "tunnels cannot be expressed",
}


@dataclass(frozen=True)
class ImportOptions:
    """What the Istio objects cannot say: endpoints per version, the Envoy port, which subset is the canary."""

    endpoints: Mapping[str, Sequence[str]] = field(default_factory=dict)  # version -> ["IP:PORT[@W]", ...]
    port: int = DEFAULT_PORT
    canary: str | None = None  # default: the DestinationRule's second subset
    version_label: str = DEFAULT_VERSION_LABEL
    name: str | None = None  # metadata.name; default the VirtualService's name


@dataclass(frozen=True)
class ImportResult:
    policy: RolloutPolicy
    data: dict[str, Any]  # file-shaped (camelCase), in the order a person reads it
    notes: list[str]  # what was assumed or left out, for the person reviewing the skeleton


class _Collector:
    """Problems and notes found while reading the objects, in the order found."""

    def __init__(self) -> None:
        self.problems: list[MeshProblem] = []
        self.notes: list[str] = []

    def error(self, obj: str, path: str, message: str) -> None:
        self.problems.append(MeshProblem(obj, path, message))

    def unexpressible(self, obj: str, path: str, key: str) -> None:
        self.error(obj, path, _WHY_NOT.get(key, f"{key!r} cannot be expressed in a RolloutPolicy"))


def _describe(doc: Mapping[str, Any], index: int) -> str:
    kind = doc.get("kind") or "object"
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), Mapping) else None
    return f"{kind} {name}" if name else f"{kind} (document {index + 1})"


def _pick(docs: Sequence[Any]) -> tuple[tuple[str, dict], tuple[str, dict]]:
    """The one VirtualService and the one DestinationRule among ``docs``."""
    found: dict[str, list[tuple[str, dict]]] = {"VirtualService": [], "DestinationRule": []}
    problems = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, Mapping):
            problems.append(MeshProblem(f"document {i + 1}", "", "expected a Kubernetes object (a mapping)"))
            continue
        label = _describe(doc, i)
        kind = doc.get("kind")
        if kind not in found:
            problems.append(MeshProblem(label, "kind", f"expected VirtualService or DestinationRule (got {kind!r})"))
            continue
        if doc.get("apiVersion") not in ISTIO_API_VERSIONS:
            problems.append(MeshProblem(label, "apiVersion", f"expected networking.istio.io/v1 (got {doc.get('apiVersion')!r})"))
            continue
        if not isinstance(doc.get("spec"), Mapping):
            problems.append(MeshProblem(label, "spec", "missing: expected a mapping"))
            continue
        found[kind].append((label, dict(doc)))
    for kind, items in found.items():
        if len(items) != 1:
            names = ", ".join(label for label, _ in items) or "none"
            problems.append(MeshProblem(kind, "", f"expected exactly one {kind} (found {names})"))
    if problems:
        raise MeshError(problems)
    return found["VirtualService"][0], found["DestinationRule"][0]


def _fqdn(host: str, namespace: str) -> str:
    """Istio's short-name rule: ``reviews`` means ``reviews.<namespace of the object>.svc.cluster.local``."""
    return host if "." in host or host == "*" else f"{host}.{namespace}.svc.cluster.local"


def _namespace(doc: Mapping[str, Any]) -> str:
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    return str(meta.get("namespace") or "default")


def _seconds(c: _Collector, obj: str, path: str, value: Any) -> float | None:
    try:
        return parse_duration(value).total_seconds()
    except ValueError as exc:
        c.error(obj, path, f"not a duration: {exc}")
        return None


def _check_metadata(c: _Collector, obj: str, doc: Mapping[str, Any]) -> None:
    for key in doc:
        if key not in ("apiVersion", "kind", "metadata", "spec", "status"):
            c.error(obj, key, f"unknown top-level field {key!r}")
    meta = doc.get("metadata")
    if meta is not None and not isinstance(meta, Mapping):
        c.error(obj, "metadata", "expected a mapping")


# --------------------------------------------------------------------------- DestinationRule


@dataclass
class _Rule:
    host: str = ""
    subsets: dict[str, str] = field(default_factory=dict)  # subset name -> version (label value)
    subset_order: list[str] = field(default_factory=list)
    load_balancing: dict[str, Any] = field(default_factory=dict)
    stickiness: str | None = None
    idle_timeout_s: float | None = None


def _read_rule(c: _Collector, obj: str, doc: Mapping[str, Any], options: ImportOptions) -> _Rule:
    _check_metadata(c, obj, doc)
    spec = doc["spec"]
    rule = _Rule()
    for key in spec:
        if key in ("host", "subsets", "trafficPolicy"):
            continue
        if key == "exportTo":
            c.notes.append(f"{obj}: spec.exportTo is not carried (visibility is Istio's concern)")
        else:
            c.unexpressible(obj, f"spec.{key}", key)
    host = spec.get("host")
    if not isinstance(host, str) or not host:
        c.error(obj, "spec.host", "missing: the service the subsets belong to")
    else:
        rule.host = _fqdn(host, _namespace(doc))
    _read_subsets(c, obj, spec.get("subsets"), options, rule)
    policy = spec.get("trafficPolicy")
    if policy is not None:
        _read_traffic_policy(c, obj, "spec.trafficPolicy", policy, rule)
    return rule


def _read_subsets(c: _Collector, obj: str, subsets: Any, options: ImportOptions, rule: _Rule) -> None:
    label = options.version_label
    if not isinstance(subsets, list) or len(subsets) != 2:
        count = len(subsets) if isinstance(subsets, list) else 0
        c.error(obj, "spec.subsets", f"a RolloutPolicy rolls out between two versions: expected 2 subsets, stable then canary (got {count})")
        if not isinstance(subsets, list):
            return
    seen_versions: dict[str, int] = {}
    for i, subset in enumerate(subsets):
        path = f"spec.subsets[{i}]"
        if not isinstance(subset, Mapping) or not isinstance(subset.get("name"), str):
            c.error(obj, f"{path}.name", "missing: every subset needs a name")
            continue
        for key in subset:
            if key not in ("name", "labels"):
                message = "per-subset traffic policies cannot be expressed" if key == "trafficPolicy" else None
                c.error(obj, f"{path}.{key}", message or f"{key!r} cannot be expressed in a RolloutPolicy")
        labels = subset.get("labels")
        if not isinstance(labels, Mapping) or label not in labels:
            c.error(obj, f"{path}.labels",
                    f"no {label!r} label: Weir knows a version by its pods' {label!r} label "
                    "(use --version-label KEY if the cluster uses another key)")
            continue
        version = str(labels[label])
        if version in seen_versions:
            c.error(obj, f"{path}.labels.{label}", f"version {version!r} is also spec.subsets[{seen_versions[version]}]'s")
            continue
        seen_versions[version] = i
        others = sorted(k for k in labels if k != label)
        if others:
            c.notes.append(f"{obj}: {path}.labels: only {label!r} is carried (also had {', '.join(others)})")
        if subset["name"] != version:
            c.notes.append(f"{obj}: subset {subset['name']!r} becomes version {version!r}; Weir names subsets after versions")
        rule.subsets[subset["name"]] = version
        rule.subset_order.append(subset["name"])


def _read_traffic_policy(c: _Collector, obj: str, path: str, policy: Any, rule: _Rule) -> None:
    if not isinstance(policy, Mapping):
        c.error(obj, path, "expected a mapping")
        return
    for key, value in policy.items():
        where = f"{path}.{key}"
        if key == "loadBalancer":
            _read_load_balancer(c, obj, where, value, rule)
        elif key == "outlierDetection":
            _read_outlier_detection(c, obj, where, value, rule)
        elif key == "connectionPool":
            _read_connection_pool(c, obj, where, value, rule)
        elif key == "tls" and isinstance(value, Mapping) and set(value) == {"mode"} and value["mode"] == "ISTIO_MUTUAL":
            c.notes.append(f"{obj}: {where} (ISTIO_MUTUAL) is not carried: Istio's automatic mutual TLS does the same")
        elif key == "tls":
            c.error(obj, where, "TLS settings cannot be expressed: Weir leaves TLS to Istio's automatic mutual TLS")
        else:
            c.unexpressible(obj, where, key)


def _read_connection_pool(c: _Collector, obj: str, path: str, pool: Any, rule: _Rule) -> None:
    """``http.idleTimeout`` becomes the policy's idle timeout; other limits are not carried (noted)."""
    if not isinstance(pool, Mapping):
        c.error(obj, path, "expected a mapping")
        return
    http = pool.get("http")
    if isinstance(http, Mapping) and "idleTimeout" in http:
        rule.idle_timeout_s = _seconds(c, obj, f"{path}.http.idleTimeout", http["idleTimeout"])
    others = [f"{path}.{k}" for k in pool if k != "http"]
    others += [f"{path}.http.{k}" for k in (http if isinstance(http, Mapping) else {}) if k != "idleTimeout"]
    if others:
        c.notes.append(f"{obj}: {', '.join(others)} not carried: a policy sets the idle timeout of the "
                       "connection pool and nothing else")


def _read_load_balancer(c: _Collector, obj: str, path: str, lb: Any, rule: _Rule) -> None:
    if not isinstance(lb, Mapping):
        c.error(obj, path, "expected a mapping")
        return
    for key, value in lb.items():
        if key == "simple":
            if value not in _LB_FROM_SIMPLE:
                c.error(obj, f"{path}.simple", f"{value!r} cannot be expressed: a RolloutPolicy balances ROUND_ROBIN or LEAST_REQUEST")
            else:
                rule.load_balancing["policy"] = _LB_FROM_SIMPLE[value]
        elif key == "consistentHash":
            if not isinstance(value, Mapping) or set(value) != {"httpHeaderName"} or not isinstance(value["httpHeaderName"], str):
                extra = sorted(set(value) - {"httpHeaderName"}) if isinstance(value, Mapping) else []
                what = f"{path}.consistentHash.{extra[0]}" if extra else f"{path}.consistentHash"
                c.error(obj, what, "only consistentHash.httpHeaderName can be expressed (a RolloutPolicy's stickiness is by header)")
            else:
                rule.stickiness = value["httpHeaderName"]
        else:
            c.unexpressible(obj, f"{path}.{key}", key)


def _read_outlier_detection(c: _Collector, obj: str, path: str, od: Any, rule: _Rule) -> None:
    if not isinstance(od, Mapping):
        c.error(obj, path, "expected a mapping")
        return
    known = {"consecutive5xxErrors", "baseEjectionTime", "maxEjectionPercent"}
    for key in od:
        if key == "interval":
            c.notes.append(f"{obj}: {path}.interval is not carried (Weir leaves Envoy's 10s)")
        elif key not in known:
            c.unexpressible(obj, f"{path}.{key}", key)
    values = {k: od.get(k, default) for k, default in _ISTIO_OUTLIER_DEFAULTS.items()}
    missing = sorted(k for k in known if k not in od)
    if missing:
        c.notes.append(f"{obj}: {path}: Istio's defaults filled in for {', '.join(missing)}")
    seconds = _seconds(c, obj, f"{path}.baseEjectionTime", values["baseEjectionTime"])
    rule.load_balancing["outlierDetection"] = {
        "consecutive5xx": values["consecutive5xxErrors"],
        "baseEjectionTime": _policy_duration(seconds) if seconds is not None else values["baseEjectionTime"],
        "maxEjectionPercent": values["maxEjectionPercent"],
    }


def _policy_duration(seconds: float) -> str:
    """Seconds in the policy's duration syntax (``5s``, ``500ms``)."""
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


# --------------------------------------------------------------------------- VirtualService


@dataclass
class _Routes:
    hosts: list[str] = field(default_factory=list)
    path_prefix: str = "/"
    timeout_s: float | None = None
    # Each route's retries as the policy's spec.service.retries (None: Istio's default), with its path.
    route_retries: list[tuple[dict[str, Any] | None, str]] = field(default_factory=list)
    weights: dict[str, int] = field(default_factory=dict)  # subset -> weight, default route
    header_routes: list[tuple[str, str, str, str]] = field(default_factory=list)  # (header, exact, subset, path)
    mirror: tuple[str, float, str] | None = None  # (subset, percent, path)


def _read_service(c: _Collector, obj: str, doc: Mapping[str, Any], rule: _Rule) -> _Routes:
    _check_metadata(c, obj, doc)
    spec = doc["spec"]
    out = _Routes()
    for key in spec:
        if key in ("hosts", "http"):
            continue
        if key == "gateways":
            c.notes.append(f"{obj}: spec.gateways ({', '.join(map(str, spec[key]))}) is not carried: "
                           "pass --gateway to `weir istio render`")
        elif key == "exportTo":
            c.notes.append(f"{obj}: spec.exportTo is not carried (visibility is Istio's concern)")
        else:
            c.unexpressible(obj, f"spec.{key}", key)
    hosts = spec.get("hosts")
    if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
        c.error(obj, "spec.hosts", "expected a non-empty list of host names")
    else:
        out.hosts = list(hosts)
    routes = spec.get("http")
    if not isinstance(routes, list) or not routes:
        c.error(obj, "spec.http", "expected at least one HTTP route")
        return out
    prefixes: list[tuple[str, str]] = []
    timeouts: list[tuple[float | None, str]] = []
    namespace = _namespace(doc)
    for i, route in enumerate(routes):
        path = f"spec.http[{i}]"
        if not isinstance(route, Mapping):
            c.error(obj, path, "expected a mapping")
            continue
        last = i == len(routes) - 1
        _read_route(c, obj, path, route, last, rule, namespace, out, prefixes, timeouts)
    if prefixes:
        first_prefix, first_path = prefixes[0]
        out.path_prefix = first_prefix
        for prefix, where in prefixes[1:]:
            if prefix != first_prefix:
                c.error(obj, where, f"path prefix {prefix!r} differs from {first_path}'s {first_prefix!r}: "
                                    "a RolloutPolicy routes one path prefix")
    if out.route_retries:
        carried, carried_where = out.route_retries[-1]  # the default route's
        for retries, where in out.route_retries[:-1]:
            if retries != carried:
                c.notes.append(f"{obj}: {where} differs from {carried_where}: a policy has one retry policy for all "
                               f"routes; the default route's is carried")
    if timeouts:
        first_timeout, first_where = timeouts[0]
        for timeout, where in timeouts[1:]:
            if timeout != first_timeout:
                c.error(obj, where, f"timeout differs from {first_where}: a RolloutPolicy has one timeout for all routes")
        out.timeout_s = first_timeout
    return out


#: Retry conditions a policy can express: what never reached the server (always), resets (``onReset``).
_SAFE_CONDITIONS = frozenset({"connect-failure", "reset-before-request"})


def _read_retries(c: _Collector, obj: str, path: str, retries: Any) -> dict[str, Any] | None:
    """A route's ``retries`` as ``spec.service.retries`` (None when the route has none: Istio's default)."""
    if retries is None:
        c.notes.append(f"{obj}: {path}: none set (Istio retries twice by default); the policy's default applies: one "
                       "retry of what never reached the server")
        return None
    if not isinstance(retries, Mapping):
        c.error(obj, path, "expected a mapping")
        return None
    attempts = retries.get("attempts", 2)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 0:
        c.error(obj, f"{path}.attempts", f"expected a whole number, at least 0 (got {attempts!r})")
        return None
    if attempts > 5:
        c.notes.append(f"{obj}: {path}.attempts: {attempts} is more than a policy allows; 5 carried")
        attempts = 5
    others = [f"{path}.{k}" for k in retries if k not in ("attempts", "retryOn")]
    if others:
        c.notes.append(f"{obj}: {', '.join(others)} not carried: a policy sets attempts and whether resets are retried")
    if attempts == 0:
        return {"attempts": 0}
    conditions = {x.strip() for x in str(retries.get("retryOn", "")).split(",") if x.strip()}
    if not conditions:
        c.notes.append(f"{obj}: {path}.retryOn: none set (Istio's default conditions); the policy retries what never "
                       "reached the server")
    unsafe = sorted(conditions - _SAFE_CONDITIONS - {"reset"})
    if unsafe:
        c.notes.append(f"{obj}: {path}.retryOn: {', '.join(unsafe)} not carried: a policy retries only requests that "
                       "never reached the server (and resets with onReset)")
    return {"attempts": attempts, "onReset": "reset" in conditions}


def _read_route(c, obj, path, route, last, rule, namespace, out, prefixes, timeouts) -> None:
    for key in route:
        if key in ("name", "match", "route", "timeout", "retries", "mirror", "mirrorPercentage"):
            continue
        c.unexpressible(obj, f"{path}.{key}", key)
    out.route_retries.append((_read_retries(c, obj, f"{path}.retries", route.get("retries")), f"{path}.retries"))
    timeout = route.get("timeout")
    timeouts.append((_seconds(c, obj, f"{path}.timeout", timeout) if timeout is not None else None, f"{path}.timeout"))
    before = len(c.problems)
    headers = _read_matches(c, obj, path, route.get("match"), prefixes)
    matches = route.get("match") if isinstance(route.get("match"), list) else []
    header_matched = bool(headers) or any(isinstance(m, Mapping) and "headers" in m for m in matches)
    destinations = _read_destinations(c, obj, path, route.get("route"), rule, namespace)
    complete = len(c.problems) == before  # no follow-on errors (weight sums) about a route already in error
    if header_matched:
        if last:
            c.error(obj, f"{path}.match", "the last route must be the default route, without a header match")
        if complete and (len(destinations) != 1 or destinations[0][1] not in (None, 100)):
            c.error(obj, f"{path}.route", "a header-matched route must send everything to one subset")
        for key in ("mirror", "mirrorPercentage"):
            if key in route:
                c.error(obj, f"{path}.{key}", "mirroring on a header-matched route cannot be expressed; mirror on the default route")
        if destinations:
            subset = destinations[0][0]
            for header, exact, where in headers:
                out.header_routes.append((header, exact, subset, where))
        return
    if not last:
        c.error(obj, path, "only the last route may be the weighted default route: a route without a header match "
                           "before it leaves later routes unreachable")
        return
    weights: dict[str, int] = {}
    for subset, weight, where in destinations:
        if subset in weights:
            c.error(obj, where, f"subset {subset!r} is listed twice")
        weights[subset] = 100 if weight is None and len(destinations) == 1 else (weight or 0)
    if complete and destinations and sum(weights.values()) != 100:
        c.error(obj, f"{path}.route", f"weights must add up to 100 (got {sum(weights.values())})")
    out.weights = weights
    mirror = route.get("mirror")
    if mirror is not None:
        out.mirror = _read_mirror(c, obj, path, mirror, route.get("mirrorPercentage"), rule, namespace)
    elif "mirrorPercentage" in route:
        c.error(obj, f"{path}.mirrorPercentage", "mirrorPercentage without mirror")


def _read_matches(c, obj, path, matches, prefixes) -> list[tuple[str, str, str]]:
    """The (header, exact, path) rules of a route's matches (OR-ed); records its URI prefixes."""
    if matches is None:
        prefixes.append(("/", f"{path}.match"))
        return []
    if not isinstance(matches, list) or not matches:
        c.error(obj, f"{path}.match", "expected a list of matches")
        return []
    headers = []
    without = []
    for j, match in enumerate(matches):
        where = f"{path}.match[{j}]"
        if not isinstance(match, Mapping):
            c.error(obj, where, "expected a mapping")
            continue
        for key in match:
            if key in ("uri", "headers", "name") or (key == "ignoreUriCase" and match[key] is False):
                continue
            c.unexpressible(obj, f"{where}.{key}", key)
        _read_uri(c, obj, where, match.get("uri"), prefixes)
        found = match.get("headers")
        if found is None:
            without.append(where)
            continue
        if not isinstance(found, Mapping) or len(found) != 1:
            c.error(obj, f"{where}.headers", "a match on several headers at once cannot be expressed; "
                                             "a RolloutPolicy match rule is one header")
            continue
        ((name, condition),) = found.items()
        if isinstance(condition, Mapping) and set(condition) == {"exact"} and isinstance(condition["exact"], str):
            headers.append((str(name), condition["exact"], f"{where}.headers.{name}"))
            continue
        kinds = sorted(set(condition) - {"exact"}) if isinstance(condition, Mapping) else []
        if kinds:
            c.error(obj, f"{where}.headers.{name}.{kinds[0]}", f"{kinds[0]} header matches cannot be expressed; use exact")
        else:
            c.error(obj, f"{where}.headers.{name}", "expected {exact: VALUE}")
    if headers and without:
        c.error(obj, without[0], "a match without a header beside header matches cannot be expressed "
                                 "(it would send every request down this route)")
    return headers


def _read_uri(c, obj, where, uri, prefixes) -> None:
    if uri is None:
        prefixes.append(("/", f"{where}.uri"))
    elif isinstance(uri, Mapping) and set(uri) == {"prefix"} and isinstance(uri["prefix"], str):
        prefixes.append((uri["prefix"], f"{where}.uri.prefix"))
    elif isinstance(uri, Mapping) and set(uri) - {"prefix"}:
        kind = sorted(set(uri) - {"prefix"})[0]
        c.error(obj, f"{where}.uri.{kind}", f"{kind} matches cannot be expressed; use prefix")
    else:
        c.error(obj, f"{where}.uri", "expected {prefix: /PATH}")


def _read_destinations(c, obj, path, routes, rule: _Rule, namespace: str) -> list[tuple[str, int | None, str]]:
    if not isinstance(routes, list) or not routes:
        c.error(obj, f"{path}.route", "expected at least one destination")
        return []
    out = []
    for k, item in enumerate(routes):
        where = f"{path}.route[{k}]"
        if not isinstance(item, Mapping) or not isinstance(item.get("destination"), Mapping):
            c.error(obj, f"{where}.destination", "missing")
            continue
        for key in item:
            if key not in ("destination", "weight"):
                c.unexpressible(obj, f"{where}.{key}", key)
        subset = _read_destination(c, obj, f"{where}.destination", item["destination"], rule, namespace)
        weight = item.get("weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100):
            c.error(obj, f"{where}.weight", f"expected a whole number 0-100 (got {weight!r})")
            weight = 0
        if subset is not None:
            out.append((subset, weight, where))
    return out


def _read_destination(c, obj, path, destination, rule: _Rule, namespace: str) -> str | None:
    for key in destination:
        if key == "port":
            c.notes.append(f"{obj}: {path}.port is not carried (Istio uses the service's only port when none is named)")
        elif key not in ("host", "subset"):
            c.unexpressible(obj, f"{path}.{key}", key)
    host = destination.get("host")
    if isinstance(host, str) and rule.host and _fqdn(host, namespace) != rule.host:
        c.error(obj, f"{path}.host", f"routes to {host!r}, but the DestinationRule is for {rule.host!r}: "
                                     "a RolloutPolicy routes one service (several hosts with different routes cannot be expressed)")
        return None
    subset = destination.get("subset")
    if not isinstance(subset, str):
        c.error(obj, f"{path}.subset", "a destination without a subset cannot be expressed: a RolloutPolicy routes to versions")
        return None
    if rule.subsets and subset not in rule.subsets:
        c.error(obj, f"{path}.subset", f"subset {subset!r} is not in the DestinationRule (subsets: {', '.join(rule.subset_order)})")
        return None
    return subset


def _read_mirror(c, obj, path, mirror, percentage, rule, namespace) -> tuple[str, float, str] | None:
    if not isinstance(mirror, Mapping):
        c.error(obj, f"{path}.mirror", "expected a mapping")
        return None
    subset = _read_destination(c, obj, f"{path}.mirror", mirror, rule, namespace)
    percent = 100.0
    if percentage is not None:
        value = percentage.get("value") if isinstance(percentage, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100:
            c.error(obj, f"{path}.mirrorPercentage.value", f"expected a percentage above 0, at most 100 (got {value!r})")
            return None
        percent = float(value)
    else:
        c.notes.append(f"{obj}: {path}: mirror without mirrorPercentage mirrors 100%")
    return (subset, percent, f"{path}.mirror.subset") if subset is not None else None


# --------------------------------------------------------------------------- the policy


def import_objects(docs: Sequence[Any], options: ImportOptions = ImportOptions()) -> ImportResult:
    """A validated RolloutPolicy skeleton from one VirtualService and one DestinationRule.

    Raises :class:`MeshError` listing everything that cannot be expressed.
    """
    (vs_name, vs), (dr_name, dr) = _pick(docs)
    c = _Collector()
    rule = _read_rule(c, dr_name, dr, options)
    routes = _read_service(c, vs_name, vs, rule)
    if c.problems:
        raise MeshError(c.problems)

    stable_subset, canary_subset = rule.subset_order
    if options.canary is not None:
        by_version = {v: s for s, v in rule.subsets.items()}
        if options.canary not in by_version:
            raise MeshError([MeshProblem(dr_name, "spec.subsets",
                                         f"--canary {options.canary!r} is none of its versions ({', '.join(by_version)})")])
        canary_subset = by_version[options.canary]
        stable_subset = next(s for s in rule.subset_order if s != canary_subset)
    stable, canary = rule.subsets[stable_subset], rule.subsets[canary_subset]

    for header, exact, subset, where in routes.header_routes:
        if subset != canary_subset:
            c.error(vs_name, where, f"this header route sends requests to {rule.subsets[subset]!r}; "
                                    f"a RolloutPolicy's match rules send them to the canary ({canary!r})")
    weight = routes.weights.get(canary_subset, 0)
    shadow = None
    if routes.mirror is not None:
        subset, percent, where = routes.mirror
        if subset != canary_subset:
            c.error(vs_name, where, f"mirrors to {rule.subsets[subset]!r}; a RolloutPolicy mirrors to the canary ({canary!r})")
        if weight:
            c.error(vs_name, where, f"mirroring while the canary takes {weight}% of live traffic cannot be expressed: "
                                    "a RolloutPolicy mirrors only before its first step")
        shadow = {"percent": percent, **_SKELETON_SHADOW}
        c.notes.append(f"shadow phase: minRequests {_SKELETON_SHADOW['minRequests']} and maxDuration "
                       f"{_SKELETON_SHADOW['maxDuration']} are skeleton defaults")
    endpoints = {}
    for i, subset in enumerate(rule.subset_order):
        version = rule.subsets[subset]
        given = options.endpoints.get(version)
        if not given:
            c.error(dr_name, f"spec.subsets[{i}]",
                    f"no endpoints for version {version!r}: Istio finds pods by label, a RolloutPolicy lists "
                    f"IP:PORT endpoints; pass --endpoints {version}=IP:PORT[,IP:PORT]")
        endpoints[version] = list(given or [])
    unknown = sorted(set(options.endpoints) - set(rule.subsets.values()))
    for version in unknown:
        c.error("--endpoints", version, f"no subset has version {version!r} (versions: {', '.join(rule.subsets.values())})")
    if c.problems:
        raise MeshError(c.problems)

    service_name = rule.host.split(".")[0]
    service: dict[str, Any] = {"name": service_name, "domains": routes.hosts, "port": options.port,
                               "pathPrefix": routes.path_prefix}
    carried_retries = routes.route_retries[-1][0] if routes.route_retries else None
    if carried_retries is not None:
        service["retries"] = carried_retries
    if rule.idle_timeout_s is not None:
        service["idleTimeout"] = _policy_duration(rule.idle_timeout_s)
    else:
        c.notes.append("spec.service.idleTimeout: the DestinationRule sets none (Istio's default is one hour); "
                       "Weir's default 3s applies (below model servers' keep-alive)")
    if routes.timeout_s is not None:
        service["timeout"] = _policy_duration(routes.timeout_s)
    else:
        c.notes.append("spec.service.timeout: the routes set none (Istio's default is no timeout); Weir's default 15s applies")
    if options.port == DEFAULT_PORT:
        c.notes.append(f"spec.service.port: {DEFAULT_PORT}, the Envoy listener port Weir programs (--port to change)")
    first = weight if shadow is None else None
    steps = ([{"weight": first}] if first is not None else []) + [
        {"weight": w} for w in SKELETON_RAMP if first is None or w > first
    ]
    c.notes.append("spec.strategy.canary.steps: the first step is the imported weight"
                   if first is not None else "spec.strategy.canary.steps: a skeleton ramp after the shadow phase")
    strategy: dict[str, Any] = {}
    if shadow is not None:
        strategy["shadow"] = shadow
    strategy["canary"] = {"steps": steps}
    if routes.header_routes:
        strategy["match"] = [{"header": {"name": h, "exact": e}} for h, e, _, _ in routes.header_routes]
    if rule.stickiness:
        strategy["stickiness"] = {"header": rule.stickiness}
    spec: dict[str, Any] = {
        "service": service,
        "stable": {"version": stable, "endpoints": endpoints[stable]},
        "canary": {"version": canary, "endpoints": endpoints[canary]},
    }
    if rule.load_balancing:
        spec["loadBalancing"] = dict(rule.load_balancing)
    spec["strategy"] = strategy
    spec["analysis"] = {"slos": [dict(s) for s in _SKELETON_SLOS]}
    c.notes.append("spec.analysis: skeleton SLOs (error rate +0.5 points, p99 latency +10%); set your own")
    name = options.name or (vs.get("metadata") or {}).get("name") or service_name
    data = {"apiVersion": POLICY_API_VERSION, "kind": "RolloutPolicy", "metadata": {"name": name}, "spec": spec}
    try:
        policy = validate_policy_data(data)
    except PolicyValidationError as err:
        raise MeshError(MeshProblem(f"RolloutPolicy {name} (imported)", e.path, e.message) for e in err.errors) from None
    return ImportResult(policy, data, c.notes)
