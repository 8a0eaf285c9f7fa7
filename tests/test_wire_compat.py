"""Our small protobuf-upb wire messages are byte-compatible with Envoy's full types.

Both directions: bytes written by envoy-data-plane's complete generated types
(betterproto2) parse with ours and keep every field we use, and bytes we write
(including responses assembled by hand from cached resource bytes) parse with
theirs. Unknown fields (node metadata, locality) survive our round trip.
"""

from __future__ import annotations

from envoy_data_plane.envoy.config.core.v3 import Locality, Node
from envoy_data_plane.envoy.config.route.v3 import RouteConfiguration, VirtualHost
from envoy_data_plane.envoy.service.discovery.v3 import (
    DeltaDiscoveryRequest,
    DeltaDiscoveryResponse,
    DiscoveryRequest,
    DiscoveryResponse,
)
from envoy_data_plane.google.rpc import Status

from xds.snapshot import ROUTE, CachedResource, View, len_field
from xds.wire import discovery_pb2 as wire


def test_discovery_request_from_envoy_types():
    full = DiscoveryRequest(
        version_info="7",
        node=Node(id="envoy-1", cluster="gw", user_agent_name="envoy", locality=Locality(region="r1")),
        resource_names=["a", "b"],
        type_url=ROUTE,
        response_nonce="42",
        error_detail=Status(code=13, message="Sum of weights must be > 0"),
    )
    ours = wire.DiscoveryRequest.FromString(bytes(full))
    assert ours.version_info == "7"
    assert (ours.node.id, ours.node.cluster, ours.node.user_agent_name) == ("envoy-1", "gw", "envoy")
    assert list(ours.resource_names) == ["a", "b"]
    assert ours.type_url == ROUTE and ours.response_nonce == "42"
    assert ours.HasField("error_detail") and ours.error_detail.code == 13
    assert ours.error_detail.message == "Sum of weights must be > 0"
    # Fields we do not declare (locality) survive our round trip.
    back = DiscoveryRequest.parse(ours.SerializeToString())
    assert back.node.locality.region == "r1"
    assert back == full


def test_ack_has_no_error_detail():
    ours = wire.DiscoveryRequest.FromString(bytes(DiscoveryRequest(type_url=ROUTE, response_nonce="1")))
    assert not ours.HasField("error_detail")


def test_delta_request_from_envoy_types():
    full = DeltaDiscoveryRequest(
        node=Node(id="n", cluster="c"),
        type_url=ROUTE,
        resource_names_subscribe=["r1"],
        resource_names_unsubscribe=["r0"],
        initial_resource_versions={"r1": "v9"},
        response_nonce="3",
        error_detail=Status(code=3, message="bad"),
    )
    ours = wire.DeltaDiscoveryRequest.FromString(bytes(full))
    assert ours.node.id == "n" and ours.type_url == ROUTE
    assert list(ours.resource_names_subscribe) == ["r1"] and list(ours.resource_names_unsubscribe) == ["r0"]
    assert dict(ours.initial_resource_versions) == {"r1": "v9"}
    assert ours.response_nonce == "3" and ours.error_detail.message == "bad"
    assert DeltaDiscoveryRequest.parse(ours.SerializeToString()) == full


def _route(name: str) -> tuple[RouteConfiguration, CachedResource]:
    msg = RouteConfiguration(name=name, virtual_hosts=[VirtualHost(name="vh", domains=["*"])])
    return msg, CachedResource.build(ROUTE, name, bytes(msg))


def test_hand_assembled_sotw_response_parses_with_envoy_types():
    (m1, r1), (m2, r2) = _route("r1"), _route("r2")
    view = View(ROUTE, "v5", {"r1": r1, "r2": r2})
    payload = view.sotw_body + len_field(5, b"17")
    full = DiscoveryResponse.parse(payload)
    assert (full.version_info, full.type_url, full.nonce) == ("v5", ROUTE, "17")
    assert [a.type_url for a in full.resources] == [ROUTE, ROUTE]
    assert [RouteConfiguration.parse(a.value) for a in full.resources] == [m1, m2]
    # And our own decoder agrees.
    ours = wire.DiscoveryResponse.FromString(payload)
    assert ours.nonce == "17" and len(ours.resources) == 2


def test_hand_assembled_delta_response_parses_with_envoy_types():
    m1, r1 = _route("r1")
    payload = b"".join(
        [len_field(1, b"v5"), len_field(2, r1.delta_bytes), len_field(4, ROUTE.encode()), len_field(5, b"9"), len_field(6, b"gone")]
    )
    full = DeltaDiscoveryResponse.parse(payload)
    assert full.system_version_info == "v5" and full.nonce == "9" and full.type_url == ROUTE
    assert full.removed_resources == ["gone"]
    (res,) = full.resources
    assert res.name == "r1" and res.version == r1.version
    assert RouteConfiguration.parse(res.resource.value) == m1


def test_our_messages_serialise_like_envoys():
    ours = wire.DiscoveryResponse(version_info="1", type_url=ROUTE, nonce="2")
    ours.resources.add(type_url=ROUTE, value=b"\x0a\x01x")
    full = DiscoveryResponse.parse(ours.SerializeToString())
    assert full.resources[0].value == b"\x0a\x01x"
    assert wire.DiscoveryResponse.FromString(bytes(full)) == ours
