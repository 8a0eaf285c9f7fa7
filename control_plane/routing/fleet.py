"""The fleet router: the leader's traffic router when several replicas serve xDS.

Every replica serves Envoy from the same desired routing, so a proxy may
connect to any of them. The leader's engine hands its desired routing to
this router, which

* checks it exactly as the xDS router would (every group's snapshot is
  translated and checked; invalid routing raises and nothing is written),
* publishes it to etcd as one document under the leader's fence
  (``<prefix>/routing``), which every replica watches and serves
  (:mod:`control_plane.ha.replication`),
* answers ``status`` from the convergence reports every replica writes for
  its own proxies (``<prefix>/convergence/<replica>``, on the replica's
  lease): a service has converged when every proxy of its group, on every
  live replica, runs the revision.

Revisions: the engine numbers each service's routing from 1 in every process,
so a new leader would reuse numbers the old one published. What goes to etcd
is a *fleet revision* instead: the etcd revision of the publish that first
carried that routing (0 in the document means "this document's own
revision"). Etcd revisions only grow, so a replica's report can never be
mistaken for another leader's routing.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Mapping

from policies.model import LatencyAware
from xds.cache import DEFAULT_GROUP
from xds.routing import ServiceRouting

from ..etcd.client import EtcdClient
from ..store.etcd import EtcdStore
from .protocol import CONVERGED, FAILED, WAITING, RouteStatus, ServiceState
from .xds_router import XdsRouter

log = logging.getLogger("weir.fleet")

__all__ = ["FleetRouter", "decode_desired", "encode_desired"]

_NAMED = 5


def encode_desired(desired: Mapping[str, ServiceState], fleet_revisions: Mapping[str, int]) -> bytes:
    """The routing document: each service's group, fleet revision (0 = this publish) and routing."""
    doc = {
        name: {"group": s.group, "revision": fleet_revisions.get(name, 0), "routing": s.routing.model_dump(mode="json"),
               "balancing": None if s.balancing is None else s.balancing.model_dump(mode="json", by_alias=True)}
        for name, s in sorted(desired.items())
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def decode_desired(value: bytes, mod_revision: int) -> dict[str, ServiceState]:
    """The document back as ServiceStates whose revision is the fleet revision."""
    out = {}
    for name, item in json.loads(value).items():
        balancing = item.get("balancing")
        out[name] = ServiceState(name, item["group"], item["revision"] or mod_revision,
                                 ServiceRouting.model_validate(item["routing"]),
                                 None if balancing is None else LatencyAware.model_validate(balancing))
    return out


class FleetRouter:
    """Publishes desired routing to every replica and waits on all their proxies (module docstring)."""

    name = "fleet"

    def __init__(self, client: EtcdClient, store: EtcdStore, local: XdsRouter):
        self.client = client
        self.store = store
        self.local = local  # checks routing exactly as every replica will serve it
        self.key = store.key("routing")
        self.reports_prefix = store.key("convergence", "")
        self._fleet: dict[str, tuple[int, int]] = {}  # service -> (engine revision, fleet revision)

    async def apply(self, desired: Mapping[str, ServiceState]) -> None:
        self.local.snapshots(desired)  # raises on invalid routing; nothing is published
        kept = {name: self._fleet[name][1] for name, s in desired.items()
                if name in self._fleet and self._fleet[name][0] == s.revision}
        revision = await self.store.put(self.key, encode_desired(desired, kept))
        self._fleet = {name: (s.revision, kept.get(name, revision)) for name, s in desired.items()}

    def fleet_revision(self, service: str, revision: int) -> int | None:
        current = self._fleet.get(service)
        return current[1] if current is not None and current[0] == revision else None

    async def reports(self) -> list[dict[str, Any]]:
        resp = await self.client.prefix(self.reports_prefix)
        return [json.loads(kv.value) for kv in resp.kvs]

    async def status(self, service: str, revision: int) -> RouteStatus:
        fleet = self.fleet_revision(service, revision)
        if fleet is None:
            return RouteStatus(WAITING, f"routing revision {revision} of {service} is not published yet")
        return aggregate(service, revision, fleet, await self.reports())

    async def close(self) -> None:
        return None


def aggregate(service: str, revision: int, fleet: int, reports: list[dict[str, Any]]) -> RouteStatus:
    """One service's fleet-wide status from every replica's report of its own proxies."""
    if not reports:
        return RouteStatus(WAITING, f"no replica has reported its proxies yet: waiting to serve {service}")
    lagging, waiting, details = [], [], []
    total = behind = 0
    group = None
    for report in sorted(reports, key=lambda r: r["replica"]):
        item = report.get("services", {}).get(service)
        if item is None or item["revision"] != fleet:
            lagging.append(report["replica"])
            continue
        group = item.get("group", group)
        if item["state"] == FAILED:
            return RouteStatus(FAILED, f"{item['detail']} (on replica {report['replica']})",
                               tuple(item.get("waiting_on", ())), item.get("error"))
        total += item["proxies"]
        if item["proxies"] and item["state"] == WAITING:
            waiting += item.get("waiting_on", [])
            behind += item.get("waiting", len(item.get("waiting_on", ())))
            details.append(f"{report['replica']}: {item['detail']}")
    where = "any group" if group in (None, DEFAULT_GROUP) else f"group {group!r}"
    if lagging:
        return RouteStatus(WAITING, f"waiting for replica{'s' if len(lagging) > 1 else ''} {', '.join(lagging)} "
                                    f"to serve {service} routing revision {revision}", tuple(lagging))
    if total == 0:
        return RouteStatus(WAITING, f"no proxy of {where} is connected to any replica: waiting for one to serve {service}")
    if waiting or details:
        names = tuple(waiting)
        behind = max(behind, len(names))
        shown = ", ".join(names[:_NAMED]) + (f" and {behind - _NAMED} more" if behind > _NAMED else "")
        return RouteStatus(WAITING, f"waiting for {behind} of {total} prox{'y' if total == 1 else 'ies'} of "
                                    f"{where} to ACK {service} routing revision {revision} ({shown})", names)
    return RouteStatus(CONVERGED, f"all {total} prox{'y' if total == 1 else 'ies'} of {where} on {len(reports)} "
                                  f"replica{'s' if len(reports) > 1 else ''} run {service} routing revision {revision}")
