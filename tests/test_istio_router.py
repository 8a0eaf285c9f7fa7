"""The Istio router against a recorded-interaction fake of the Kubernetes API (real HTTP on 127.0.0.1).

A fake, because no Kubernetes API server can run on the test machines: the
fixtures in tests/fixtures/istio/ record what a server answers to server-side
apply and GET, and the fake checks every request the router sends.
"""

from __future__ import annotations

import pytest
from kubernetes_asyncio import client

from control_plane.mesh.adapter import routing_at_step
from control_plane.mesh.errors import MeshError
from control_plane.mesh.istio.render import IstioOptions
from control_plane.mesh.istio.router import IstioRouter, RouteStatus, ServiceState, TrafficRouter
from policies import load_policy, validate_policy_data
from tests.istio_fake_api import RecordedApi, load_interactions

VS = "VirtualService models/sentiment"


def _policy(**service):
    data = load_policy("policies/examples/sentiment.yaml").model_dump(mode="json", by_alias=True, exclude_none=True)
    data["spec"]["service"].update({"domains": ["sentiment.models.svc.cluster.local"], **service})
    return validate_policy_data(data)


def _state(step, revision, policy=None) -> dict[str, ServiceState]:
    routing = routing_at_step(policy or _policy(), step)
    return {"sentiment": ServiceState("sentiment", "model-gateway", revision, routing)}


def _router(api: RecordedApi, **kwargs) -> IstioRouter:
    config = client.Configuration(host=api.url)
    return IstioRouter(client.ApiClient(config), IstioOptions(namespace="models"), **kwargs)


async def test_apply_converges_when_istiod_has_observed_the_generation_and_the_proxies_synced():
    with RecordedApi(load_interactions("router-converges.json")) as api:
        router = _router(api)
        protocol: TrafficRouter = router  # the traffic-router seam (checked by type checkers)
        assert protocol.name == "istio"
        try:
            assert await router.status("sentiment", 1) == RouteStatus(
                "waiting", "revision 1 of sentiment has not been applied yet", (VS,)
            )
            await router.apply(_state(0, 1))
            assert await router.status("sentiment", 1) == RouteStatus(
                "waiting",
                f"{VS} has no status.observedGeneration yet: waiting for istiod (Istio's status must be enabled, "
                "PILOT_ENABLE_STATUS=true)",
                (VS,),
            )
            assert await router.status("sentiment", 1) == RouteStatus(
                "waiting", f"{VS} generation 1 is not on every proxy yet: 1/2 proxies up to date.", (f"{VS} proxies",)
            )
            assert await router.status("sentiment", 1) == RouteStatus(
                "converged", f"istiod has observed generation 1 of {VS} and every proxy has it"
            )
            await router.apply(_state(0, 2))  # a new revision, the same VirtualService: nothing is written
            await router.apply(_state(1, 3))  # step 1: 75/25
            assert await router.status("sentiment", 3) == RouteStatus(
                "waiting", f"istiod has observed generation 1 of {VS}, not yet 2", (VS,)
            )
            assert await router.status("sentiment", 3) == RouteStatus("converged", f"istiod has observed generation 2 of {VS}")
        finally:
            await router.close()
        api.assert_done()
    patches = [r for r in api.received if r["method"] == "PATCH"]
    assert [p["body"]["spec"]["http"][-1]["route"][1]["weight"] for p in patches] == [5, 25]


async def test_api_errors_are_failed_with_the_api_text_and_the_next_apply_retries():
    forbidden = ('403 Forbidden: virtualservices.networking.istio.io "sentiment" is forbidden: User '
                 '"system:serviceaccount:weir-system:weir" cannot patch resource "virtualservices" in API group '
                 '"networking.istio.io" in the namespace "models"')
    with RecordedApi(load_interactions("router-api-errors.json")) as api:
        router = _router(api)
        try:
            await router.apply(_state(0, 1))
            assert await router.status("sentiment", 1) == RouteStatus(
                "failed", f"applying {VS} failed: {forbidden}", (VS,), forbidden
            )
            await router.apply(_state(0, 1))  # same content, but the last write failed: written again
            gone = '404 Not Found: virtualservices.networking.istio.io "sentiment" not found'
            assert await router.status("sentiment", 1) == RouteStatus("failed", f"reading {VS} failed: {gone}", (VS,), gone)
        finally:
            await router.close()
        api.assert_done()


async def test_without_istio_status_the_apply_alone_can_count():
    with RecordedApi(load_interactions("router-no-istio-status.json")) as api:
        router = _router(api, require_status=False)
        try:
            await router.apply(_state(0, 1))
            status = await router.status("sentiment", 1)
        finally:
            await router.close()
        api.assert_done()
    assert status == RouteStatus("converged", f"{VS} applied (generation 1); Istio reports no status, not waiting for it")


async def test_routing_istio_cannot_express_raises_and_writes_nothing():
    with RecordedApi([]) as api:
        router = _router(api)
        bad = _policy(domains=["*"])  # the wildcard host, bound to the mesh
        desired = {**_state(0, 1), "other": ServiceState("other", "*", 1, routing_at_step(bad, 0))}
        try:
            with pytest.raises(MeshError) as exc:
                await router.apply(desired)
        finally:
            await router.close()
        api.assert_done()
    assert [str(p) for p in exc.value.problems] == [
        "ServiceRouting sentiment: domains[0]: Istio rejects the wildcard host '*' for VirtualServices bound to the "
        "mesh: list the service's host names, or bind it to a gateway (--gateway NAMESPACE/NAME)"
    ]
    assert api.received == []
