"""The fleet router's pure parts: the routing document round trip and fleet-wide convergence from replica reports."""

from __future__ import annotations

from control_plane.routing.fleet import aggregate, decode_desired, encode_desired
from control_plane.routing.protocol import CONVERGED, FAILED, WAITING, ServiceState
from tests.test_engine import policy
from control_plane.rollouts.desired import release_settings, routing_of_release
from control_plane.rollouts.model import Release


def state(service="echo", revision=3, group="*") -> ServiceState:
    p = policy(service=service)
    release = Release(service=service, group=group, version="v1", endpoints=["127.0.0.1:8081"],
                      settings=release_settings(p))
    return ServiceState(service, group, revision, routing_of_release(release))


def report(replica, proxies=1, state=CONVERGED, revision=100, service="echo", waiting_on=(), **extra):
    item = {"revision": revision, "group": "*", "state": state, "detail": f"{state} on {replica}",
            "waiting_on": list(waiting_on), "waiting": len(waiting_on), "error": None, "proxies": proxies, **extra}
    return {"replica": replica, "services": {service: item}}


def test_the_document_carries_fleet_revisions_and_round_trips():
    desired = {"echo": state("echo", 3), "chat": state("chat", 7)}
    doc = encode_desired(desired, {"chat": 41})
    back = decode_desired(doc, mod_revision=55)
    assert back["chat"].revision == 41  # kept from an earlier publish
    assert back["echo"].revision == 55  # new in this publish: the document's own etcd revision
    assert back["echo"].routing == desired["echo"].routing and back["echo"].group == "*"


def test_latency_aware_tuning_reaches_every_replica_and_its_balancer():
    """Every replica balances its own proxies: the tuning travels in the routing document, and a follower's
    xDS router, given only that document, names the service and its endpoints to its balancer."""
    import dataclasses

    from control_plane.routing.xds_router import XdsRouter
    from policies.model import LatencyAware
    from xds.cache import SnapshotCache
    from xds.status import StatusRegistry

    tuning = LatencyAware(signal="queue-depth", min_share=0.1)
    desired = {"echo": dataclasses.replace(state("echo", 3), balancing=tuning), "chat": state("chat", 7)}
    back = decode_desired(encode_desired(desired, {}), mod_revision=9)
    assert back["echo"].balancing == tuning and back["chat"].balancing is None
    del back["chat"]  # (both claim the same domain: one service per router here)

    follower = XdsRouter(SnapshotCache(), StatusRegistry())
    assert follower.balanced_services() == []

    import asyncio

    asyncio.run(follower.apply(back))
    [balanced] = follower.balanced_services()
    assert balanced.service == "echo" and balanced.settings == tuning
    assert balanced.versions == {"v1": ("127.0.0.1:8081",)}


def test_converged_only_when_every_replica_with_proxies_runs_the_revision():
    reports = [report("a", proxies=2), report("b", proxies=3), report("c", proxies=0, state=WAITING)]
    status = aggregate("echo", 3, 100, reports)
    assert status.state == CONVERGED and "all 5 proxies" in status.detail and "3 replicas" in status.detail


def test_a_replica_still_on_an_older_publish_holds_the_service():
    status = aggregate("echo", 3, 100, [report("a"), report("b", revision=90)])
    assert status.state == WAITING and status.waiting_on == ("b",) and "replica b" in status.detail


def test_waiting_proxies_are_counted_across_replicas():
    reports = [report("a", proxies=4, state=WAITING, waiting_on=("gw-1", "gw-2")),
               report("b", proxies=2, state=WAITING, waiting_on=("gw-9",))]
    status = aggregate("echo", 3, 100, reports)
    assert status.state == WAITING and set(status.waiting_on) == {"gw-1", "gw-2", "gw-9"}
    assert "waiting for 3 of 6 proxies" in status.detail


def test_a_nack_anywhere_fails_with_the_replica_named():
    reports = [report("a"), report("b", state=FAILED, waiting_on=("gw-2",), error="bad cluster")]
    status = aggregate("echo", 3, 100, reports)
    assert status.state == FAILED and "on replica b" in status.detail and status.error == "bad cluster"


def test_no_proxy_anywhere_or_no_report_is_never_converged():
    assert aggregate("echo", 3, 100, []).state == WAITING
    status = aggregate("echo", 3, 100, [report("a", proxies=0), report("b", proxies=0)])
    assert status.state == WAITING and status.detail.startswith("no proxy of any group is connected")
