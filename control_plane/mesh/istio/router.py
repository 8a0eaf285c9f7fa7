"""A traffic router that drives Istio: VirtualServices applied to Kubernetes instead of xDS served.

Beside the xDS router (Weir serves Envoy itself), this one writes each
service's VirtualService into the cluster with server-side apply (field
manager ``weir``) through ``kubernetes_asyncio``, and reports convergence
from what Istio writes back:

* the VirtualService's ``status.observedGeneration`` must reach the
  ``metadata.generation`` the apply returned (istiod writes status when its
  status feature is on: ``PILOT_ENABLE_STATUS``); with ``require_status=False``
  a cluster without Istio status counts as converged once the apply succeeded;
* where Istio reports proxy sync (a ``Reconciled`` condition, from its config
  distribution tracking), that condition must be ``True``.

Only VirtualServices are written (the weights, header routes and mirror of a
step); the DestinationRule changes only with the policy, is applied by the
operator from ``weir istio render``, and Weir's RBAC does not allow writing it.
A service that leaves the desired set keeps its last VirtualService: deleting
it would spread traffic over every version's pods. After a restart each
VirtualService is applied once more (an apply of unchanged content changes
nothing in the cluster, not even the generation), then only when it changes.

``ServiceState.group`` (a proxy group, i.e. an Envoy node cluster) has no
meaning for Istio and is ignored: every object goes to the router's namespace.

Tested against a recorded-interaction fake of the Kubernetes API
(``tests/istio_fake_api.py``): no API server can run on the test machines.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping


from ...routing.protocol import RouteStatus, ServiceState, TrafficRouter
from ..errors import MeshError
from .render import IstioOptions, render

__all__ = ["IstioRouter", "RouteStatus", "ServiceState", "TrafficRouter", "FIELD_MANAGER"]

log = logging.getLogger(__name__)

FIELD_MANAGER = "weir"
GROUP, VERSION, PLURAL = "networking.istio.io", "v1", "virtualservices"
APPLY_PATCH = "application/apply-patch+yaml"


# The router protocol (the traffic-router seam) is control_plane.routing.protocol.


@dataclass
class _Applied:
    revision: int
    content: str  # canonical JSON of the object last applied
    generation: int | None  # metadata.generation the apply returned
    error: str | None = None  # the apply's API error, if it failed


class IstioRouter:
    """Server-side applies VirtualServices; converged when Istio has observed (and synced) them."""

    name = "istio"

    def __init__(self, api_client: Any, options: IstioOptions = IstioOptions(), *, require_status: bool = True):
        from kubernetes_asyncio import client  # the optional "istio" extra

        self._api_client = api_client
        self._api = client.CustomObjectsApi(api_client)
        self.options = options
        self.require_status = require_status
        self._applied: dict[str, _Applied] = {}
        self._lock = asyncio.Lock()

    @classmethod
    async def connect(cls, options: IstioOptions = IstioOptions(), **kwargs: Any) -> "IstioRouter":
        """A router with the pod's service account (in a cluster) or the local kubeconfig."""
        from kubernetes_asyncio import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            await config.load_kube_config()
        return cls(client.ApiClient(), options, **kwargs)

    def _name(self, service: str) -> str:
        return f"VirtualService {self.options.namespace}/{service}"

    async def apply(self, desired: Mapping[str, ServiceState]) -> None:
        """Write the VirtualService of every service whose rendered content changed.

        Every service is rendered first: if any cannot be expressed in Istio,
        MeshError is raised and nothing is written. API errors are kept per
        service and reported by :meth:`status` as ``failed``.
        """
        rendered = {}
        problems = []
        for service, state in sorted(desired.items()):
            try:
                rendered[service] = render(state.routing, self.options).virtual_service
            except MeshError as err:
                problems += err.problems
        if problems:
            raise MeshError(problems)
        async with self._lock:
            for service, body in rendered.items():
                state = desired[service]
                content = json.dumps(body, sort_keys=True)
                last = self._applied.get(service)
                if last is not None and last.content == content and last.error is None:
                    last.revision = state.revision
                    continue
                await self._apply_one(service, state.revision, body, content)

    async def _apply_one(self, service: str, revision: int, body: dict[str, Any], content: str) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            result = await self._server_side_apply(service, body)
        except ApiException as exc:
            text = _api_error(exc)
            log.warning("server-side apply of %s failed: %s", self._name(service), text)
            self._applied[service] = _Applied(revision, content, None, text)
            return
        generation = (result.get("metadata") or {}).get("generation")
        self._applied[service] = _Applied(revision, content, int(generation) if generation is not None else None)

    async def _server_side_apply(self, service: str, body: dict[str, Any]) -> dict[str, Any]:
        """PATCH with ``application/apply-patch+yaml``; the stored object back, for its generation.

        The response is read here rather than by the generated client: it
        deserializes only a 200 for this call, and the API server answers an
        apply that creates the object with 201 Created.
        """
        from kubernetes_asyncio.client.exceptions import ApiException
        from kubernetes_asyncio.client.rest import RESTResponse

        response = await self._api.patch_namespaced_custom_object(
            GROUP, VERSION, self.options.namespace, PLURAL, service, body,
            field_manager=FIELD_MANAGER, force="true", field_validation="Strict", _content_type=APPLY_PATCH,
            _preload_content=False,
        )
        try:
            raw = await response.read()
        finally:
            response.release()
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=RESTResponse(response, raw.decode("utf-8", "replace")))
        return json.loads(raw) if raw else {}

    async def status(self, service: str, revision: int) -> RouteStatus:
        """Converged once Istio observed the applied generation (and, where it says so, the proxies synced)."""
        from kubernetes_asyncio.client.exceptions import ApiException

        name = self._name(service)
        applied = self._applied.get(service)
        if applied is None or applied.revision < revision:
            return RouteStatus("waiting", f"revision {revision} of {service} has not been applied yet", (name,))
        if applied.error is not None:
            return RouteStatus("failed", f"applying {name} failed: {applied.error}", (name,), applied.error)
        try:
            obj = await self._api.get_namespaced_custom_object(GROUP, VERSION, self.options.namespace, PLURAL, service)
        except ApiException as exc:
            text = _api_error(exc)
            return RouteStatus("failed", f"reading {name} failed: {text}", (name,), text)
        return self._judge(name, obj, applied.generation)

    def _judge(self, name: str, obj: Mapping[str, Any], applied_generation: int | None) -> RouteStatus:
        # Later changes by other field managers bump the generation too; observing ours is what counts.
        want = applied_generation if applied_generation is not None else _int((obj.get("metadata") or {}).get("generation"))
        status = obj.get("status") or {}
        observed = _int(status.get("observedGeneration"))
        if observed is None:
            if not self.require_status:
                return RouteStatus("converged", f"{name} applied (generation {want}); Istio reports no status, not waiting for it")
            return RouteStatus(
                "waiting",
                f"{name} has no status.observedGeneration yet: waiting for istiod (Istio's status must be enabled, "
                "PILOT_ENABLE_STATUS=true)",
                (name,),
            )
        if want is not None and observed < want:
            return RouteStatus("waiting", f"istiod has observed generation {observed} of {name}, not yet {want}", (name,))
        reconciled = next(
            (c for c in status.get("conditions") or [] if isinstance(c, Mapping) and c.get("type") == "Reconciled"), None
        )
        if reconciled is not None and str(reconciled.get("status")) != "True":
            said = reconciled.get("message") or reconciled.get("reason") or "not reconciled"
            return RouteStatus("waiting", f"{name} generation {want} is not on every proxy yet: {said}", (f"{name} proxies",))
        synced = " and every proxy has it" if reconciled is not None else ""
        return RouteStatus("converged", f"istiod has observed generation {want} of {name}{synced}")

    async def close(self) -> None:
        await self._api_client.close()


def _int(value: Any) -> int | None:
    """An int64 from the API: a number, or a string (protobuf JSON's int64 form, which Istio's status may use)."""
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None


def _api_error(exc: Any) -> str:
    """The API server's own message (a metav1.Status body) when there is one, else the HTTP reason."""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return f"{exc.status} {exc.reason}: {message}" if message else f"{exc.status} {exc.reason}"
