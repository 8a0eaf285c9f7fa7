"""Weir beside a service mesh: Istio objects, Kubernetes custom resources.

Istio is a second traffic router beside the xDS server: the same desired
routing (:class:`xds.routing.ServiceRouting`) is expressed as a VirtualService
and a DestinationRule instead of Envoy resources.

* :mod:`.adapter` - a policy at a step -> its ``ServiceRouting`` (one function,
  the only place that knows how the rollout engine builds routing);
* :mod:`.istio.render` - ``ServiceRouting`` -> VirtualService + DestinationRule;
* :mod:`.istio.importer` - VirtualService + DestinationRule -> a policy skeleton;
* :mod:`.istio.router` - a traffic router that server-side applies
  VirtualServices and waits until Istio reports them observed;
* :mod:`.crd` - the RolloutPolicy CustomResourceDefinition, from the JSON Schema;
* :mod:`.commands` - ``weir istio render|import`` and ``weir crd``.
"""
