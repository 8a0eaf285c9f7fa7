"""``ServiceRouting`` -> an Istio VirtualService and DestinationRule (networking.istio.io/v1).

What maps to what:

* ``domains`` -> ``VirtualService.spec.hosts``; ``path_prefix`` -> every
  route's ``match[].uri.prefix``; ``timeout`` -> every route's ``timeout``.
* ``backends`` -> ``DestinationRule.spec.subsets``, one per version, named after
  the version and selecting pods by the version label (``version`` unless
  configured): Istio finds the endpoints itself, so backend endpoints are not
  rendered.
* ``header_routes`` -> one HTTP route each, before the default route (Istio
  takes the first match), to that version's subset.
* ``split`` -> the default route's weighted destinations, every backend listed
  in backend order (weight 0 included, so both versions are always visible).
* ``mirror`` -> ``mirror`` + ``mirrorPercentage`` on the default route.
* ``lb_policy`` -> ``trafficPolicy.loadBalancer.simple``; ``sticky_header``
  -> ``loadBalancer.consistentHash.httpHeaderName`` instead (Istio allows one or
  the other). Note the difference: Weir's xDS routes pick the *version* from
  the header hash, so a user stays on one version while the split holds; Istio
  picks the version at random per request and keeps a user on one *pod* within
  the version it picked.
* ``outlier_detection`` -> ``trafficPolicy.outlierDetection``.

Header names are lowercased (Istio requires lowercase header keys; HTTP header
names are case-insensitive, so nothing changes for clients).

* ``retries`` -> every route's ``retries``: ``attempts`` and the same
  conditions Envoy gets from Weir's own xDS (``retryOn``
  connect-failure,reset-before-request, plus reset with ``onReset``);
  ``attempts: 0`` turns Istio's default retries off.
* ``idle_timeout`` -> ``trafficPolicy.connectionPool.http.idleTimeout`` (the
  sidecar closes upstream connections idle this long: below the model
  servers' keep-alive, so it never reuses one the server just closed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from policies import RolloutPolicy
from xds.routing import ServiceRouting, retry_conditions

from ..adapter import Step, routing_at_step
from ..errors import MeshError, MeshProblem, raise_if
from .defaults import DEFAULT_VERSION_LABEL

__all__ = [
    "API_VERSION",
    "DEFAULT_VERSION_LABEL",
    "IstioObjects",
    "IstioOptions",
    "LB_SIMPLE",
    "MANAGED_BY",
    "format_duration",
    "render",
    "render_policy",
]

API_VERSION = "networking.istio.io/v1"

#: ``lb_policy`` -> ``loadBalancer.simple``.
LB_SIMPLE = {"round-robin": "ROUND_ROBIN", "least-request": "LEAST_REQUEST"}

#: Label put on every object Weir renders, so ``kubectl get vs -l`` finds them.
MANAGED_BY = {"app.kubernetes.io/managed-by": "weir"}

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HOST_LABEL = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class IstioOptions:
    """Where the objects go and what the cluster calls things; every field has a default.

    ``host`` is the destination service (default
    ``<service>.<namespace>.svc.cluster.local``: a fully qualified name, so the
    DestinationRule applies wherever the VirtualService is read).
    ``gateways`` binds the VirtualService to Istio gateways instead of the mesh
    (the sidecars); Istio rejects the wildcard host ``*`` for the mesh.
    """

    namespace: str = "default"
    host: str | None = None
    gateways: tuple[str, ...] = ()
    version_label: str = DEFAULT_VERSION_LABEL

    def destination_host(self, service: str) -> str:
        return self.host or f"{service}.{self.namespace}.svc.cluster.local"

    @property
    def binds_mesh(self) -> bool:
        return not self.gateways or "mesh" in self.gateways


@dataclass(frozen=True)
class IstioObjects:
    """The VirtualService and DestinationRule of one service, as plain Kubernetes objects."""

    virtual_service: dict[str, Any]
    destination_rule: dict[str, Any] = field(default_factory=dict)

    def documents(self) -> list[dict[str, Any]]:
        return [self.virtual_service, self.destination_rule]


def format_duration(seconds: float) -> str:
    """Seconds as a protobuf Duration string (``5s``, ``0.5s``), the form Istio parses."""
    text = f"{round(seconds, 3):.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


# --------------------------------------------------------------------------- checks


def _option_problems(options: IstioOptions) -> list[MeshProblem]:
    """Settings given on the command line (or to the router), reported by their flag names."""
    obj = "Istio options"
    problems = []
    if not _DNS_LABEL.fullmatch(options.namespace) or len(options.namespace) > 63:
        problems.append(MeshProblem(obj, "--namespace", f"{options.namespace!r} is not a Kubernetes namespace name (a-z, 0-9, '-')"))
    prefix, _, name = options.version_label.rpartition("/")
    if not _LABEL_NAME.fullmatch(name) or len(name) > 63 or (prefix and not _is_host(prefix)):
        problems.append(MeshProblem(obj, "--version-label", f"{options.version_label!r} is not a Kubernetes label key"))
    if options.host is not None and not _is_host(options.host):
        problems.append(MeshProblem(obj, "--host", f"{options.host!r} is not a host name"))
    return problems


def _is_host(text: str, *, wildcard: bool = False) -> bool:
    """Istio's host rule: dot-separated DNS labels, optionally ``*.`` first (when ``wildcard``)."""
    if wildcard and text.startswith("*."):
        text = text[2:]
    labels = text.split(".")
    return 0 < len(text) <= 255 and all(len(p) <= 63 and _HOST_LABEL.fullmatch(p) for p in labels)


def _name_problems(
    obj: str,
    versions: list[tuple[str, str]],
    domains: list[tuple[str, str]],
    headers: list[tuple[str, str]],
    options: IstioOptions,
) -> list[MeshProblem]:
    """Names Istio would reject, each reported at the field that holds it."""
    problems = []
    for path, version in versions:
        if not _DNS_LABEL.fullmatch(version) or len(version) > 63:
            problems.append(MeshProblem(
                obj, path,
                f"version {version!r} cannot name an Istio subset (a DNS-1123 label: lowercase a-z, 0-9 and '-', "
                "starting and ending with a letter or digit); rename the version to map it to a subset",
            ))
    for path, domain in domains:
        if domain == "*":
            if options.binds_mesh:
                problems.append(MeshProblem(
                    obj, path,
                    "Istio rejects the wildcard host '*' for VirtualServices bound to the mesh: "
                    "list the service's host names, or bind it to a gateway (--gateway NAMESPACE/NAME)",
                ))
        elif not _is_host(domain, wildcard=True):
            problems.append(MeshProblem(
                obj, path,
                f"{domain!r} is not an Istio host: a DNS name, optionally starting with '*.' "
                "(no ports, no trailing wildcard)",
            ))
    for path, header in headers:
        if header.startswith(":"):
            problems.append(MeshProblem(obj, path, f"pseudo-header {header!r} cannot be matched through Istio's headers"))
    return problems


def _routing_problems(routing: ServiceRouting, options: IstioOptions) -> list[MeshProblem]:
    obj = f"ServiceRouting {routing.name}"
    problems = _option_problems(options)
    problems += _name_problems(
        obj,
        [(f"backends[{i}].version", b.version) for i, b in enumerate(routing.backends)],
        [(f"domains[{i}]", d) for i, d in enumerate(routing.domains)],
        [(f"headerRoutes[{i}].header", r.header) for i, r in enumerate(routing.header_routes)]
        + ([("stickyHeader", routing.sticky_header)] if routing.sticky_header else []),
        options,
    )
    if routing.least_request_choice_count is not None:
        problems.append(MeshProblem(
            obj, "leastRequestChoiceCount", "Istio's DestinationRule has no choice count (it always uses 2); remove it"
        ))
    return problems


def _policy_problems(policy: RolloutPolicy, options: IstioOptions) -> list[MeshProblem]:
    """The same checks as :func:`_routing_problems`, at the policy fields the author wrote."""
    spec = policy.spec
    obj = f"RolloutPolicy {policy.name}"
    headers = [(f"spec.strategy.match[{i}].header.name", m.header.name) for i, m in enumerate(spec.strategy.match)]
    if spec.strategy.stickiness is not None:
        headers.append(("spec.strategy.stickiness.header", spec.strategy.stickiness.header))
    return _option_problems(options) + _name_problems(
        obj,
        [("spec.stable.version", spec.stable.version), ("spec.canary.version", spec.canary.version)],
        [(f"spec.service.domains[{i}]", d) for i, d in enumerate(spec.service.domains)],
        headers,
        options,
    )


# --------------------------------------------------------------------------- rendering


def render(routing: ServiceRouting, options: IstioOptions = IstioOptions()) -> IstioObjects:
    """The VirtualService and DestinationRule expressing ``routing``; MeshError if Istio cannot."""
    raise_if(_routing_problems(routing, options))
    host = options.destination_host(routing.name)
    metadata = {"name": routing.name, "namespace": options.namespace, "labels": dict(MANAGED_BY)}

    def destination(version: str) -> dict[str, Any]:
        return {"host": host, "subset": version}

    def common() -> dict[str, Any]:
        out: dict[str, Any] = {"timeout": format_duration(routing.timeout.total_seconds())}
        out["retries"] = {"attempts": routing.retries.attempts}
        if routing.retries.attempts > 0:
            out["retries"]["retryOn"] = retry_conditions(routing.retries)
        return out

    def uri() -> dict[str, Any]:  # a fresh dict per route: shared ones print as YAML anchors
        return {"uri": {"prefix": routing.path_prefix}}

    http: list[dict[str, Any]] = [
        {
            "name": f"{routing.name}-header-{i}",
            "match": [{**uri(), "headers": {rule.header.lower(): {"exact": rule.exact}}}],
            "route": [{"destination": destination(rule.version)}],
            **common(),
        }
        for i, rule in enumerate(routing.header_routes)
    ]
    default: dict[str, Any] = {
        "name": f"{routing.name}-default",
        "match": [uri()],
        "route": [
            {"destination": destination(b.version), "weight": int(routing.split.get(b.version, 0))}
            for b in routing.backends
        ],
        **common(),
    }
    if routing.mirror is not None and routing.mirror.percent > 0:
        default["mirror"] = destination(routing.mirror.version)
        default["mirrorPercentage"] = {"value": float(routing.mirror.percent)}
    http.append(default)
    vs_spec: dict[str, Any] = {"hosts": list(routing.domains)}
    if options.gateways:
        vs_spec["gateways"] = list(options.gateways)
    vs_spec["http"] = http
    virtual_service = {"apiVersion": API_VERSION, "kind": "VirtualService", "metadata": metadata, "spec": vs_spec}

    if routing.sticky_header:
        load_balancer: dict[str, Any] = {"consistentHash": {"httpHeaderName": routing.sticky_header.lower()}}
    else:
        load_balancer = {"simple": LB_SIMPLE[routing.lb_policy]}
    traffic_policy: dict[str, Any] = {
        "loadBalancer": load_balancer,
        "connectionPool": {"http": {"idleTimeout": format_duration(routing.idle_timeout.total_seconds())}},
    }
    od = routing.outlier_detection
    if od is not None:
        traffic_policy["outlierDetection"] = {
            "consecutive5xxErrors": od.consecutive_5xx,
            "baseEjectionTime": format_duration(od.base_ejection_time.total_seconds()),
            "maxEjectionPercent": od.max_ejection_percent,
        }
    destination_rule = {
        "apiVersion": API_VERSION,
        "kind": "DestinationRule",
        "metadata": {**metadata, "labels": dict(MANAGED_BY)},  # its own labels dict: callers may edit one object
        "spec": {
            "host": host,
            "trafficPolicy": traffic_policy,
            "subsets": [{"name": b.version, "labels": {options.version_label: b.version}} for b in routing.backends],
        },
    }
    return IstioObjects(virtual_service, destination_rule)


def render_policy(policy: RolloutPolicy, step: Step = 0, options: IstioOptions = IstioOptions()) -> IstioObjects:
    """A policy's objects at ``step``; problems are reported at the policy's own fields."""
    raise_if(_policy_problems(policy, options))
    routing = routing_at_step(policy, step)
    try:
        return render(routing, options)
    except MeshError as err:  # a rule with no policy field of its own; say where it came from
        raise MeshError(MeshProblem(f"RolloutPolicy {policy.name}", p.path, p.message) for p in err.problems) from None
