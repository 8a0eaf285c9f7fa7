"""The rollout engine with a scripted judge, the real xDS router and in-memory proxies.

Each rollout runs in its own task in production; these tests drive passes by
hand (``engine.tick()``) so every step is deterministic, except the tests of
the tasks themselves.
"""

from __future__ import annotations

import asyncio
import copy

import pytest
import yaml

from analysis.analyzer import ScriptedAnalyzer
from control_plane.errors import Conflict, InvalidInput
from control_plane.rollouts.engine import Engine
from control_plane.rollouts.model import InvalidAction, Phase, RolloutConflict
from control_plane.rollouts.webhooks import HookResult
from control_plane.routing.xds_router import XdsRouter
from control_plane.store import SQLiteStore
from policies import PolicyValidationError, RolloutPolicy
from tests.proxy_double import ProxyDouble
from xds.cache import SnapshotCache
from xds.routing import RoutingError
from xds.status import StatusRegistry

BASE = yaml.safe_load(open("policies/examples/minimal.yaml"))


def policy(name="echo", service="echo", steps=(10, 50, 100), canary="v2", stable="v1", **spec_changes) -> RolloutPolicy:
    data = copy.deepcopy(BASE)
    data["metadata"]["name"] = name
    data["spec"]["service"]["name"] = service
    data["spec"]["canary"]["version"] = canary
    if stable is None:
        del data["spec"]["stable"]
    else:
        data["spec"]["stable"]["version"] = stable
    data["spec"]["strategy"]["canary"]["steps"] = [
        {"pause": {}} if s == "pause" else {"weight": s, "minRequests": 10} for s in steps
    ]
    for key, value in spec_changes.items():
        data["spec"][key] = value
    return RolloutPolicy.model_validate(data)


class FakeHooks:
    """Records webhook calls; answers from a dict url -> ok; `hang` urls never answer."""

    def __init__(self, answers: dict[str, bool] | None = None, hang: set[str] | None = None):
        self.answers = answers or {}
        self.hang = hang or set()
        self.calls: list[tuple[str, dict]] = []

    async def call(self, url, payload, timeout_s):
        self.calls.append((url, payload))
        if url in self.hang:
            await asyncio.sleep(3600)
        ok = self.answers.get(url, True)
        return HookResult(ok, "HTTP 200" if ok else "HTTP 503: not ready", 1)


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


class Harness:
    """An engine over a real SQLite store and the real xDS router, with in-memory proxies that ACK."""

    def __init__(self, engine: Engine, cache: SnapshotCache, registry: StatusRegistry, clock: Clock):
        self.engine, self.cache, self.registry, self.clock = engine, cache, registry, clock
        self.proxies: list[ProxyDouble] = []

    def connect(self, node_id="gw-1", cluster="gw") -> ProxyDouble:
        proxy = ProxyDouble(self.cache, self.registry, node_id, cluster)
        self.proxies.append(proxy)
        proxy.sync()
        return proxy

    def sync(self) -> None:
        for proxy in self.proxies:
            proxy.sync()

    async def ticks(self, n=1) -> None:
        for _ in range(n):
            self.sync()
            await self.engine.tick()
            self.sync()

    async def get(self, name="echo"):
        return await self.engine.get(name)

    def route(self, port=10000):
        """The route action of the default route Envoy would run, as (cluster -> weight)."""
        from envoy_data_plane.envoy.config.route import v3 as route_v3
        from xds.snapshot import ROUTE

        snap = self.cache.snapshot("*")
        res = snap.resources[ROUTE][f"weir_route_{port}"]
        from xds.wire import discovery_pb2 as wire

        msg = route_v3.RouteConfiguration.parse(wire.Any.FromString(res.any_bytes).value)
        action = [r for vh in msg.virtual_hosts for r in vh.routes if r.name.endswith("-default")][0].route
        if action.cluster:
            return {action.cluster: 100}
        return {c.name: c.weight for c in action.weighted_clusters.clusters}


@pytest.fixture
async def make(tmp_path):
    made = []

    async def build(script=("pass",), hooks=None, db="weir.db", proxies=1, run=False) -> Harness:
        store = SQLiteStore(tmp_path / db)
        cache, registry, clock = SnapshotCache(), StatusRegistry(), Clock()
        router = XdsRouter(cache, registry, listen_address="127.0.0.1", clock=clock)
        engine = Engine(store, router, ScriptedAnalyzer(script), hooks or FakeHooks(), clock=clock, gate_retry_s=5,
                        tick_s=0.05)
        harness = Harness(engine, cache, registry, clock)
        await engine.start(run=run)
        for i in range(proxies):
            harness.connect(f"gw-{i + 1}")
        made.append(harness)
        return harness

    yield build
    for h in made:
        await h.engine.stop()
        await h.engine.store.close()


async def walk(h: Harness, name="echo", n=20, until=None):
    for _ in range(n):
        await h.ticks()
        r = await h.get(name)
        if (until is not None and r.phase is until) or (until is None and not r.active):
            return r
    return await h.get(name)


# --------------------------------------------------------------------------- the forward path


async def test_passing_rollout_walks_every_step_and_succeeds(make):
    h = await make(("pass",))
    await h.engine.submit(policy())
    seen = []
    for _ in range(15):
        await h.ticks()
        r = await h.get()
        seen.append((r.phase, r.weight))
        if r.phase is Phase.SUCCEEDED:
            break
    assert r.phase is Phase.SUCCEEDED and r.weight == 100
    assert (Phase.PROGRESSING, 10) in seen and (Phase.PROGRESSING, 50) in seen
    # The release moved with the decision, and routing follows it: all traffic to the canary.
    release = h.engine.release("echo")
    assert (release.version, release.endpoints, release.rollout) == ("v2", ["127.0.0.1:8091"], "echo")
    assert h.route() == {"echo-v2": 100}
    kinds = [e.kind for e in await h.engine.events("echo")]
    assert kinds[0] == "created" and kinds.count("step") == 2 and kinds[-1] == "phase"
    # Analysis only ever ran after convergence, with the step's minRequests.
    assert all(c.since is not None and c.min_requests == 10 for c in h.engine.analyzer.calls)


async def test_failure_rolls_back_and_retry_starts_again(make):
    h = await make(("pass", "fail"))
    await h.engine.submit(policy())
    r = await walk(h)
    assert r.phase is Phase.ROLLED_BACK and r.weight == 0
    assert h.route() == {"echo-v1": 100} and h.engine.release("echo").version == "v1"
    events = await h.engine.events("echo")
    failed = [e for e in events if e.phase_to == Phase.ROLLING_BACK.value]
    assert failed and failed[0].verdict["outcome"] == "fail"
    assert "rolling back (onFailure: rollback)" in failed[0].reason
    r = await h.engine.act("echo", "retry")
    assert r.phase is Phase.PENDING and r.step == -1 and r.analysis_run == 2


async def test_inconclusive_holds_after_max_duration_and_never_promotes(make):
    h = await make(("inconclusive",))
    data = policy().model_dump(mode="json", by_alias=True, exclude_none=True)
    data["spec"]["strategy"]["canary"]["steps"][0]["maxDuration"] = "60s"
    await h.engine.submit(RolloutPolicy.model_validate(data))
    await h.ticks(5)
    r = await h.get()
    assert r.phase is Phase.PROGRESSING and r.weight == 10
    h.clock.now += 61
    await h.ticks(2)
    r = await h.get()
    assert r.phase is Phase.HOLDING and r.weight == 10
    assert "holding (onInconclusive: pause)" in r.message


async def test_pause_step_waits_for_promote_and_gate_refusal_holds(make):
    hooks = FakeHooks({"http://127.0.0.1:1/gate": False})
    h = await make(("pass",), hooks=hooks)
    webhooks = [{"on": "confirm-promotion", "url": "http://127.0.0.1:1/gate", "timeout": "1s"}]
    await h.engine.submit(policy(steps=(10, "pause", 100), webhooks=webhooks))
    await h.ticks(6)
    r = await h.get()
    assert r.phase is Phase.PAUSED and r.gate == "pause-step"
    await h.engine.act("echo", "promote")
    await h.ticks(2)
    r = await h.get()
    # The gate said no: hold, never promote.
    assert r.phase is Phase.HOLDING and r.weight == 10 and "confirm-promotion refused" in r.message
    # It asks again after gate_retry_s; once it says yes, the rollout succeeds.
    hooks.answers["http://127.0.0.1:1/gate"] = True
    await h.ticks(1)
    assert (await h.get()).phase is Phase.HOLDING
    h.clock.now += 6
    await h.ticks(1)
    r = await h.get()
    assert r.phase is Phase.SUCCEEDED and r.weight == 100
    assert [u for u, _ in hooks.calls].count("http://127.0.0.1:1/gate") == 2


async def test_actions_are_idempotent_and_invalid_ones_conflict(make):
    h = await make(("inconclusive",))
    await h.engine.submit(policy())
    await h.ticks(2)
    r1 = await h.engine.act("echo", "pause")
    r2 = await h.engine.act("echo", "pause")
    assert r1.phase is r2.phase is Phase.PAUSED and r1.generation == r2.generation
    r = await h.engine.act("echo", "set-weight", weight=30)
    assert r.weight == 30 and r.weight_override == 30 and r.phase is Phase.PAUSED
    with pytest.raises(ValueError):
        await h.engine.act("echo", "set-weight", weight=130)
    await h.engine.act("echo", "abort")
    await h.ticks(2)
    assert (await h.get()).phase is Phase.ROLLED_BACK
    with pytest.raises(InvalidAction):
        await h.engine.act("echo", "resume")
    with pytest.raises(InvalidAction):
        await h.engine.act("echo", "set-weight", weight=5)


async def test_one_active_rollout_per_service(make):
    h = await make(("inconclusive",))
    await h.engine.submit(policy("echo-a", "echo"))
    with pytest.raises(RolloutConflict, match="already has an active rollout 'echo-a'"):
        await h.engine.submit(policy("echo-b", "echo"))
    await h.engine.act("echo-a", "abort")
    await h.ticks(2)
    again = await h.engine.submit(policy("echo-a", "echo", canary="v3"))
    assert again.revision == 2 and again.phase is Phase.PENDING and again.canary_version == "v3"


async def test_restart_resumes_same_step_without_reapplying(make):
    h = await make(("pass", "inconclusive"))
    await h.engine.submit(policy())
    await h.ticks(8)
    before = await h.get()
    assert before.phase is Phase.PROGRESSING and before.weight == 50
    steps_before = [e for e in await h.engine.events("echo") if e.kind == "step"]
    await h.engine.store.close()
    # A new engine over the same database.
    h2 = await make(("inconclusive",))
    after = await h2.get()
    assert (after.phase, after.step, after.weight) == (before.phase, before.step, before.weight)
    assert after.converged_at is None and after.segment == before.segment + 1
    events = await h2.engine.events("echo")
    assert [e.kind for e in events][-1] == "resumed"
    assert [e for e in events if e.kind == "step"] == steps_before
    await h2.ticks(3)
    assert (await h2.get()).weight == 50
    assert h2.route() == {"echo-v1": 50, "echo-v2": 50}


# --------------------------------------------------------------------------- convergence (the router seam)


async def test_analysis_waits_until_every_proxy_acked_the_step(make):
    """A proxy that has not ACKed the step's routing holds the analysis (samples would be mixed)."""
    h = await make(("pass",), proxies=2)
    slow = h.proxies[1]
    slow.paused = True
    await h.engine.submit(policy())
    await h.ticks(3)
    rollout = await h.get()
    assert rollout.phase is Phase.PROGRESSING and rollout.converged_at is None
    assert h.engine.analyzer.calls == []
    status = h.engine.route_status["echo"]
    assert status.state == "waiting" and status.waiting_on == ("gw-2",)
    assert "waiting for 1 of 2 proxies" in status.detail
    slow.paused = False
    await h.ticks(3)
    assert h.engine.analyzer.calls  # step 1 judged once both ACKed
    assert (await h.get()).weight >= 50


async def test_no_connected_proxy_is_never_converged(make, tmp_path):
    """Defect: 'every proxy ACKed' was recorded with no proxy connected, and again after a restart."""
    h = await make(("pass",), proxies=0)
    await h.engine.submit(policy())
    await h.ticks(5)
    r = await h.get()
    assert r.phase is Phase.PROGRESSING and r.converged_at is None and h.engine.analyzer.calls == []
    assert h.engine.route_status["echo"].detail.startswith("no proxy of any group is connected")
    assert "converged" not in [e.kind for e in await h.engine.events("echo")]
    await h.engine.store.close()
    h2 = await make(("pass",), proxies=0)
    await h2.ticks(3)
    assert (await h2.get()).converged_at is None
    assert h2.engine.analyzer.calls == []
    # A proxy arrives: now it converges and counts.
    h2.connect("gw-late")
    await h2.ticks(2)
    assert h2.engine.analyzer.calls and "converged" in [e.kind for e in await h2.engine.events("echo")]


async def test_named_group_without_proxies_holds_and_says_which(make):
    h = await make(("pass",), proxies=1)  # gw-1 is in node cluster "gw"
    await h.engine.submit(policy(proxyGroup="edge"))
    await h.ticks(4)
    assert (await h.get()).converged_at is None
    assert "no proxy of group 'edge' is connected" in h.engine.route_status["echo"].detail
    h.connect("edge-1", cluster="edge")
    await h.ticks(2)
    assert h.engine.analyzer.calls


async def test_a_nack_holds_the_rollout_with_envoys_words(make):
    from xds.snapshot import ROUTE

    h = await make(("pass",), proxies=1)
    await h.engine.submit(policy())
    await h.ticks(4)
    h.proxies[0].reject.add(ROUTE)
    await h.engine.act("echo", "set-weight", weight=30)
    await h.ticks(3)
    r = await h.get()
    assert r.converged_at is None and "rejected the RDS update for echo: rejected RouteConfiguration by the test" in r.message
    assert h.engine.route_status["echo"].state == "failed"


async def test_another_writer_of_the_cache_never_makes_a_rollout_wait(make):
    """Per-service convergence: a push that only changes other resources (endpoint weights) is not waited for."""
    h = await make(("inconclusive",), proxies=2)
    await h.engine.submit(policy())
    await h.ticks(4)
    r = await h.get()
    assert r.converged_at is not None
    state = h.engine._routing["echo"]
    # A proxy that stops answering, then a push that changes only an unrelated service's endpoints.
    h.proxies[1].paused = True
    other = policy("other", "other", stable="v1")
    other_data = other.model_dump(mode="json", by_alias=True, exclude_none=True)
    other_data["spec"]["service"]["port"] = 10001
    other_data["spec"]["stable"]["endpoints"] = ["127.0.0.1:9001"]
    other_data["spec"]["canary"]["endpoints"] = ["127.0.0.1:9002"]
    await h.engine.submit(RolloutPolicy.model_validate(other_data))
    await h.ticks(2)
    status = await h.engine.router.status("echo", state.revision)
    assert status.converged, status.detail


# --------------------------------------------------------------------------- releases and applying policies


async def test_reapplying_after_success_is_a_noop_and_traffic_stays_on_the_canary(make):
    """Defect: applying again after Succeeded made a new revision and sent ~90% back to the old version."""
    h = await make(("pass",))
    p = policy()
    await h.engine.submit(p)
    r = await walk(h)
    assert r.phase is Phase.SUCCEEDED
    applied = await h.engine.apply(p)
    assert applied.plan.action == "already-live" and "v2 is already live" in applied.plan.message
    after = await h.get()
    assert (after.revision, after.phase, after.generation) == (r.revision, r.phase, r.generation)
    await h.ticks(2)
    assert h.route() == {"echo-v2": 100}


async def test_the_next_release_needs_no_stable_and_refuses_a_stale_one(make):
    h = await make(("pass",))
    await h.engine.submit(policy())
    await walk(h)
    with pytest.raises(RolloutConflict) as info:
        await h.engine.apply(policy(canary="v3", stable="v1"))
    assert "serves 'v2'" in str(info.value) and info.value.details["path"] == "spec.stable.version"
    applied = await h.engine.apply(policy(canary="v3", stable=None))
    assert applied.plan.action == "replace" and applied.rollout.stable_version == "v2"
    await h.ticks(1)
    assert h.route() == {"echo-v2": 90, "echo-v3": 10}
    r = await walk(h)
    assert r.phase is Phase.SUCCEEDED and h.engine.release("echo").version == "v3"


async def test_the_first_rollout_needs_a_stable(make):
    h = await make()
    with pytest.raises(PolicyValidationError, match="spec.stable: required for the first rollout") as info:
        await h.engine.apply(policy(stable=None))
    assert isinstance(info.value, InvalidInput)
    assert await h.engine.list() == []


async def test_editing_an_active_rollout(make):
    """Defect: an active rollout could not be edited at all (409 'abort it first')."""
    h = await make(("pass", "inconclusive"))
    p = policy(steps=(10, 50, 100))
    await h.engine.submit(p)
    await h.ticks(8)
    r = await h.get()
    assert (r.step, r.weight, r.revision) == (1, 50, 1)
    # The same file again: nothing changes.
    same = await h.engine.apply(p)
    assert same.plan.action == "unchanged" and (await h.get()).generation == r.generation
    # Steps changed: a new revision in place, at the same step (its weight follows the policy).
    edited = await h.engine.apply(policy(steps=(10, 40, 80, 100)))
    assert edited.plan.action == "update" and "steps and strategy changed" in edited.plan.message
    r = await h.get()
    assert (r.revision, r.step, r.weight, r.phase) == (2, 1, 40, Phase.PROGRESSING)
    assert r.analysis_run == 1  # the analysis section did not change: the same test continues
    await h.ticks(2)
    assert h.route() == {"echo-v1": 60, "echo-v2": 40}
    # Analysis changed: a new analysis run for the current step.
    data = policy(steps=(10, 40, 80, 100)).model_dump(mode="json", by_alias=True, exclude_none=True)
    data["spec"]["analysis"]["alpha"] = 0.01
    edited = await h.engine.apply(RolloutPolicy.model_validate(data))
    assert edited.plan.action == "update" and (await h.get()).analysis_run == 2
    # The canary changed: restart from the first step, and say why.
    restarted = await h.engine.apply(policy(steps=(10, 40, 80, 100), canary="v3"))
    assert restarted.plan.action == "restart" and "canary version changed from v2 to v3" in restarted.plan.message
    r = await h.get()
    assert (r.revision, r.phase, r.canary_version, r.step) == (4, Phase.PENDING, "v3", -1)
    kinds = [e.kind for e in await h.engine.events("echo")]
    assert kinds.count("revised") == 2 and kinds.count("restarted") == 1


async def test_canary_endpoint_change_restarts_and_says_so(make):
    h = await make(("inconclusive",))
    await h.engine.submit(policy())
    await h.ticks(3)
    data = policy().model_dump(mode="json", by_alias=True, exclude_none=True)
    data["spec"]["canary"]["endpoints"] = ["127.0.0.1:8092"]
    applied = await h.engine.apply(RolloutPolicy.model_validate(data))
    assert applied.plan.action == "restart"
    assert "canary endpoints changed from [127.0.0.1:8091] to [127.0.0.1:8092]" in applied.plan.message


async def test_a_rolled_back_rollout_is_not_restarted_by_the_same_file(make):
    h = await make(("fail",))
    p = policy()
    await h.engine.submit(p)
    r = await walk(h)
    assert r.phase is Phase.ROLLED_BACK
    again = await h.engine.apply(p)
    assert again.plan.action == "unchanged" and "weir retry echo" in again.plan.message
    assert (await h.get()).phase is Phase.ROLLED_BACK


async def test_version_names_valid_in_policies_are_routable(make):
    """Defect: `v2_rc1` passed validation, then apply answered 422 from the routing-file format."""
    h = await make(("pass",))
    applied = await h.engine.apply(policy(canary="v2_rc1"))
    assert applied.rollout.canary_version == "v2_rc1"
    await h.ticks(1)
    assert h.route() == {"echo-v1": 90, "echo-v2_rc1": 10}


async def test_a_routing_conflict_is_reported_in_the_policys_terms(make):
    h = await make()
    await h.engine.submit(policy("a", "a"))
    data = policy("b", "b").model_dump(mode="json", by_alias=True, exclude_none=True)
    data["spec"]["stable"]["endpoints"] = ["127.0.0.1:9001"]
    data["spec"]["canary"]["endpoints"] = ["127.0.0.1:9002"]
    with pytest.raises(RoutingError) as info:
        await h.engine.apply(RolloutPolicy.model_validate(data))
    (error,) = info.value.errors
    assert error.path == "spec.service.domains[0]"
    assert "already claimed by service 'a'" in error.message
    assert [r.name for r in await h.engine.list()] == ["a"]


# --------------------------------------------------------------------------- one task per rollout


async def test_a_hanging_webhook_stalls_only_its_own_rollout(make):
    """Defect: the engine drove rollouts one after another, so one slow webhook stalled every other one."""
    hooks = FakeHooks(hang={"http://127.0.0.1:1/slow"})
    h = await make(("fail",), hooks=hooks, run=True)
    stuck = policy("stuck", "stuck", webhooks=[{"on": "pre-rollout", "url": "http://127.0.0.1:1/slow", "timeout": "5m"}])
    data = stuck.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["spec"]["service"]["port"] = 10001
    data["spec"]["stable"]["endpoints"] = ["127.0.0.1:9001"]
    data["spec"]["canary"]["endpoints"] = ["127.0.0.1:9002"]
    await h.engine.submit(RolloutPolicy.model_validate(data))
    await h.engine.submit(policy())
    for _ in range(200):
        h.sync()
        await asyncio.sleep(0.02)
        if (await h.get("echo")).phase is Phase.ROLLED_BACK:
            break
    assert (await h.get("echo")).phase is Phase.ROLLED_BACK  # the failing canary was rolled back meanwhile
    assert (await h.get("stuck")).phase is Phase.PENDING  # still asking its hook
    # An operator abort interrupts the hanging hook at once.
    await h.engine.act("stuck", "abort")
    for _ in range(100):
        h.sync()
        await asyncio.sleep(0.02)
        if (await h.get("stuck")).phase is Phase.ROLLED_BACK:
            break
    assert (await h.get("stuck")).phase is Phase.ROLLED_BACK


async def test_webhook_timeouts_are_bounded_by_the_policy():
    data = policy().model_dump(mode="json", by_alias=True, exclude_none=True)
    data["spec"]["webhooks"] = [{"on": "pre-rollout", "url": "http://127.0.0.1:1/x", "timeout": "10m"}]
    with pytest.raises(Exception, match="must be at most 5m"):
        RolloutPolicy.model_validate(data)


async def test_conflicts_are_one_kind_of_error():
    assert issubclass(RolloutConflict, Conflict) and issubclass(InvalidAction, Conflict)


# --------------------------------------------------------------------------- endpoints that come and go


async def test_endpoints_change_on_an_active_rollout_without_restarting_it(make):
    """Defect: a replica added by an autoscaler reached traffic only by aborting the rollout."""
    h = await make(("pass", "inconclusive"))
    await h.engine.submit(policy())
    await h.ticks(6)
    before = await h.get()
    assert (before.phase, before.step) == (Phase.PROGRESSING, 1)
    result = await h.engine.set_endpoints("echo", "v2", ["127.0.0.1:8091", "127.0.0.1:8092@2"], actor="autoscaler")
    assert result["rollout"] == "echo" and "changed from [127.0.0.1:8091] to [127.0.0.1:8091, 127.0.0.1:8092@2]" in result["message"]
    await h.engine.set_endpoints("echo", "v1", ["127.0.0.1:8081", "127.0.0.1:8083"])
    await h.ticks(2)
    after = await h.get()
    assert (after.phase, after.step, after.revision, after.analysis_run) == (Phase.PROGRESSING, 1, 1, 1)  # not restarted
    routing = h.engine._routing["echo"].routing
    assert [str(e) for e in routing.backend("v2").endpoints] == ["127.0.0.1:8091", "127.0.0.1:8092@2"]
    assert [str(e) for e in routing.backend("v1").endpoints] == ["127.0.0.1:8081", "127.0.0.1:8083"]
    assert h.engine.release("echo").endpoints == ["127.0.0.1:8081", "127.0.0.1:8083"]
    events = [e for e in await h.engine.events("echo") if e.kind == "endpoints"]
    assert len(events) == 2 and "(by autoscaler)" in events[0].reason
    # The same policy applied again is still "unchanged": the endpoints API is not a policy edit.
    assert (await h.engine.apply(policy())).plan.action == "unchanged"
    # Nothing else can change.
    with pytest.raises(PolicyValidationError) as info:
        await h.engine.set_endpoints("echo", "v2", ["127.0.0.1:99999", "10.0.0.1:80", "10.0.0.1:80"])
    assert [e.path for e in info.value.errors] == ["endpoints[0]", "endpoints[2]"]
    with pytest.raises(Exception, match="has no version 'v9' serving \\(it serves: live v1, canary v2\\)"):
        await h.engine.set_endpoints("echo", "v9", ["127.0.0.1:1"])
    with pytest.raises(Exception, match="no service named 'nope'"):
        await h.engine.set_endpoints("nope", "v1", ["127.0.0.1:1"])


async def test_live_endpoints_change_with_no_rollout_running(make):
    h = await make(("pass",))
    await h.engine.submit(policy())
    await walk(h)
    await h.engine.set_endpoints("echo", "v2", ["127.0.0.1:9999"])
    await h.ticks(1)
    assert h.engine.release("echo").endpoints == ["127.0.0.1:9999"]
    assert [str(e) for e in h.engine._routing["echo"].routing.backend("v2").endpoints] == ["127.0.0.1:9999"]
    # The store kept it: a new engine over the same database serves the new endpoints.
    await h.engine.store.close()
    h2 = await make(("pass",))
    assert h2.engine.release("echo").endpoints == ["127.0.0.1:9999"]
    assert [e.kind for e in await h2.engine.events("echo")][-1] == "endpoints"


async def test_a_name_that_does_not_resolve_holds_the_rollout(make):
    h = await make(("pass",))
    data = policy().model_dump(mode="json", by_alias=True, exclude_none=True)
    data["spec"]["canary"]["endpoints"] = ["no-such-model.invalid:8091"]
    await h.engine.submit(RolloutPolicy.model_validate(data))
    await h.ticks(5)
    r = await h.get()
    assert r.phase is Phase.PROGRESSING and r.converged_at is None and h.engine.analyzer.calls == []
    assert "no-such-model.invalid:8091 does not resolve" in h.engine.route_status["echo"].detail
    # A name that resolves (localhost) is handed to Envoy as its address.
    await h.engine.set_endpoints("echo", "v2", ["localhost:8091"])
    await h.ticks(3)
    assert [str(e) for e in h.engine._routing["echo"].routing.backend("v2").endpoints] == ["127.0.0.1:8091"]
    assert h.engine.analyzer.calls


async def test_endpoint_weights_of_the_balancer_never_make_a_rollout_wait(make):
    h = await make(("inconclusive",), proxies=2)
    await h.engine.submit(policy())
    await h.ticks(4)
    state = h.engine._routing["echo"]
    assert (await h.engine.router.status("echo", state.revision)).converged
    h.proxies[1].paused = True  # a proxy that does not ACK the weights (yet)
    await h.engine.router.set_endpoint_weights("echo", "v2", {"127.0.0.1:8091": 7})
    h.sync()
    assert h.engine.router.endpoint_weights("echo", "v2") == {"127.0.0.1:8091": 7}
    assert h.proxies[0].last  # the weights reached the proxy that answers ...
    status = await h.engine.router.status("echo", state.revision)
    assert status.converged, status.detail  # ... and the one that does not holds nothing up
