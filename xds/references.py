"""Names one Envoy resource refers to, read from envoy-data-plane messages.

Used only for the snapshot consistency check, once per resource when a
snapshot is built; nothing here runs per proxy.
"""

from __future__ import annotations

from typing import Iterator

# Importing these modules registers the Any type URLs we unpack.
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm_v3

HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
_EDS = 3  # envoy.config.cluster.v3.Cluster.DiscoveryType.EDS


def route_cluster_names(route_config) -> set[str]:
    """Every cluster a RouteConfiguration routes or mirrors to."""
    names: set[str] = set()
    for vhost in route_config.virtual_hosts or ():
        for route in vhost.routes or ():
            action = getattr(route, "route", None)
            if action is None:
                continue
            if action.cluster:
                names.add(action.cluster)
            weighted = action.weighted_clusters
            if weighted is not None:
                names.update(c.name for c in weighted.clusters or () if c.name)
            names.update(m.cluster for m in action.request_mirror_policies or () if m.cluster)
    return names


def cluster_eds_names(cluster) -> set[str]:
    """The ClusterLoadAssignment name an EDS cluster waits for (empty otherwise)."""
    if int(cluster.type or 0) != _EDS:
        return set()
    eds = cluster.eds_cluster_config
    return {(eds.service_name if eds is not None and eds.service_name else cluster.name)}


def _connection_managers(listener) -> Iterator[object]:
    chains = list(listener.filter_chains or ())
    if listener.default_filter_chain is not None:
        chains.append(listener.default_filter_chain)
    for chain in chains:
        for flt in chain.filters or ():
            typed = flt.typed_config
            if typed is not None and typed.type_url == HCM_TYPE:
                yield hcm_v3.HttpConnectionManager.parse(typed.value)
    api = listener.api_listener
    if api is not None and api.api_listener is not None and api.api_listener.type_url == HCM_TYPE:
        yield hcm_v3.HttpConnectionManager.parse(api.api_listener.value)


def listener_route_names(listener) -> set[str]:
    """RouteConfiguration names a listener's HTTP connection managers fetch over RDS."""
    names: set[str] = set()
    for hcm in _connection_managers(listener):
        if hcm.rds is not None and hcm.rds.route_config_name:
            names.add(hcm.rds.route_config_name)
    return names
