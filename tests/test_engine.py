"""The rollout engine with a scripted judge: phases, actions, gates, persistence."""

from __future__ import annotations

import copy

import pytest
import yaml

from analysis.analyzer import ScriptedAnalyzer
from control_plane.rollouts.engine import Engine
from control_plane.rollouts.model import InvalidAction, Phase, RolloutConflict
from control_plane.store import SQLiteStore
from control_plane.rollouts.webhooks import HookResult
from policies import RolloutPolicy
from xds.cache import SnapshotCache
from xds.snapshot import ROUTE
from xds.status import StatusRegistry

BASE = yaml.safe_load(open("policies/examples/minimal.yaml"))


def policy(name="echo", service="echo", steps=(10, 50, 100), **spec_changes) -> RolloutPolicy:
    data = copy.deepcopy(BASE)
    data["metadata"]["name"] = name
    data["spec"]["service"]["name"] = service
    data["spec"]["strategy"]["canary"]["steps"] = [
        {"pause": {}} if s == "pause" else {"weight": s, "minRequests": 10} for s in steps
    ]
    for key, value in spec_changes.items():
        data["spec"][key] = value
    return RolloutPolicy.model_validate(data)


class FakeHooks:
    """Records webhook calls; answers from a dict url -> ok."""

    def __init__(self, answers: dict[str, bool] | None = None):
        self.answers = answers or {}
        self.calls: list[tuple[str, dict]] = []

    async def call(self, url, payload, timeout_s):
        self.calls.append((url, payload))
        ok = self.answers.get(url, True)
        return HookResult(ok, "HTTP 200" if ok else "HTTP 503: not ready", 1)


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self):
        return self.now


@pytest.fixture
async def make_engine(tmp_path):
    engines = []

    async def make(script=("pass",), hooks=None, db="weir.db"):
        store = SQLiteStore(tmp_path / db)
        clock = Clock()
        engine = Engine(store, SnapshotCache(), StatusRegistry(), ScriptedAnalyzer(script), hooks or FakeHooks(),
                        listen_address="127.0.0.1", clock=clock, gate_retry_s=5)
        engine.test_clock = clock
        await engine.start()
        await engine.stop()  # drive ticks by hand
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.store.close()


async def ticks(engine, n=1):
    for _ in range(n):
        await engine.tick()


async def test_passing_rollout_walks_every_step_and_succeeds(make_engine):
    engine = await make_engine(("pass",))
    await engine.submit(policy())
    seen = []
    for _ in range(12):
        await engine.tick()
        r = await engine.get("echo")
        seen.append((r.phase, r.weight))
        if r.phase is Phase.SUCCEEDED:
            break
    assert r.phase is Phase.SUCCEEDED and r.weight == 100
    assert (Phase.PROGRESSING, 10) in seen and (Phase.PROGRESSING, 50) in seen
    # Routing follows: the default group's route sends everything to the canary.
    snap = engine.cache.snapshot("*")
    assert snap is not None and "weir_route_10000" in snap.resources[ROUTE]
    kinds = [e.kind for e in await engine.events("echo")]
    assert kinds[0] == "created" and kinds.count("step") == 2 and kinds[-1] == "phase"
    # Analysis only ever ran after convergence, with the step's minRequests.
    assert all(c.since is not None and c.min_requests == 10 for c in engine.analyzer.calls)


async def test_failure_rolls_back_and_retry_starts_again(make_engine):
    engine = await make_engine(("pass", "fail"))
    await engine.submit(policy())
    for _ in range(10):
        await engine.tick()
    r = await engine.get("echo")
    assert r.phase is Phase.ROLLED_BACK and r.weight == 0
    events = await engine.events("echo")
    failed = [e for e in events if e.phase_to == Phase.ROLLING_BACK.value]
    assert failed and failed[0].verdict["outcome"] == "fail"
    assert "rolling back (onFailure: rollback)" in failed[0].reason
    r = await engine.act("echo", "retry")
    assert r.phase is Phase.PENDING and r.step == -1


async def test_inconclusive_holds_after_max_duration_and_never_promotes(make_engine):
    engine = await make_engine(("inconclusive",))
    p = policy()
    data = p.model_dump(mode="json", by_alias=True, exclude_none=True)
    data["spec"]["strategy"]["canary"]["steps"][0]["maxDuration"] = "60s"
    await engine.submit(RolloutPolicy.model_validate(data))
    await ticks(engine, 5)
    r = await engine.get("echo")
    assert r.phase is Phase.PROGRESSING and r.weight == 10
    engine.test_clock.now += 61
    await ticks(engine, 2)
    r = await engine.get("echo")
    assert r.phase is Phase.HOLDING and r.weight == 10
    assert "holding (onInconclusive: pause)" in r.message


async def test_pause_step_waits_for_promote_and_gate_refusal_holds(make_engine):
    hooks = FakeHooks({"http://127.0.0.1:1/gate": False})
    engine = await make_engine(("pass",), hooks=hooks)
    webhooks = [{"on": "confirm-promotion", "url": "http://127.0.0.1:1/gate", "timeout": "1s"}]
    await engine.submit(policy(steps=(10, "pause", 100), webhooks=webhooks))
    await ticks(engine, 6)
    r = await engine.get("echo")
    assert r.phase is Phase.PAUSED and r.gate == "pause-step"
    await engine.act("echo", "promote")
    await ticks(engine, 2)
    r = await engine.get("echo")
    # The gate said no: hold, never promote.
    assert r.phase is Phase.HOLDING and r.weight == 10 and "confirm-promotion refused" in r.message
    # It asks again after gate_retry_s; once it says yes, the rollout succeeds.
    hooks.answers["http://127.0.0.1:1/gate"] = True
    await ticks(engine, 1)
    assert (await engine.get("echo")).phase is Phase.HOLDING
    engine.test_clock.now += 6
    await ticks(engine, 1)
    r = await engine.get("echo")
    assert r.phase is Phase.SUCCEEDED and r.weight == 100
    assert [u for u, _ in hooks.calls].count("http://127.0.0.1:1/gate") == 2


async def test_actions_are_idempotent_and_invalid_ones_conflict(make_engine):
    engine = await make_engine(("inconclusive",))
    await engine.submit(policy())
    await ticks(engine, 2)
    r1 = await engine.act("echo", "pause")
    r2 = await engine.act("echo", "pause")
    assert r1.phase is r2.phase is Phase.PAUSED and r1.generation == r2.generation
    r = await engine.act("echo", "set-weight", weight=30)
    assert r.weight == 30 and r.weight_override == 30 and r.phase is Phase.PAUSED
    with pytest.raises(ValueError):
        await engine.act("echo", "set-weight", weight=130)
    await engine.act("echo", "abort")
    await ticks(engine, 2)
    assert (await engine.get("echo")).phase is Phase.ROLLED_BACK
    with pytest.raises(InvalidAction):
        await engine.act("echo", "resume")
    with pytest.raises(InvalidAction):
        await engine.act("echo", "set-weight", weight=5)


async def test_one_active_rollout_per_service(make_engine):
    engine = await make_engine(("inconclusive",))
    await engine.submit(policy("echo-a", "echo"))
    with pytest.raises(RolloutConflict):
        await engine.submit(policy("echo-b", "echo"))
    with pytest.raises(RolloutConflict):
        await engine.submit(policy("echo-a", "echo"))
    await engine.act("echo-a", "abort")
    await ticks(engine, 2)
    again = await engine.submit(policy("echo-a", "echo"))
    assert again.revision == 2 and again.phase is Phase.PENDING


async def test_restart_resumes_same_step_without_reapplying(make_engine, tmp_path):
    engine = await make_engine(("pass", "inconclusive"))
    await engine.submit(policy())
    await ticks(engine, 6)
    before = await engine.get("echo")
    assert before.phase is Phase.PROGRESSING and before.weight == 50
    steps_before = [e for e in await engine.events("echo") if e.kind == "step"]
    await engine.store.close()
    # A new engine over the same database.
    engine2 = await make_engine(("inconclusive",))
    after = await engine2.get("echo")
    assert (after.phase, after.step, after.weight) == (before.phase, before.step, before.weight)
    events = await engine2.events("echo")
    assert [e.kind for e in events][-1] == "resumed"
    assert [e for e in events if e.kind == "step"] == steps_before
    await ticks(engine2, 3)
    assert (await engine2.get("echo")).weight == 50


async def test_analysis_waits_until_every_proxy_acked_the_step(make_engine):
    """A proxy that has not ACKed the step's routing holds the analysis (samples would be mixed)."""
    from tests.test_streams import SotwClient
    from xds.snapshot import CLUSTER, ENDPOINT, LISTENER
    from xds.streams import SotwStream

    engine = await make_engine(("pass",))
    proxy = SotwClient(SotwStream(engine.cache, engine.registry))
    for type_url in (CLUSTER, LISTENER):
        for resp in proxy.request(type_url):
            proxy.ack(resp)
    await engine.submit(policy())
    await ticks(engine, 3)
    rollout = await engine.get("echo")
    assert rollout.phase is Phase.PROGRESSING and rollout.converged_at is None
    assert engine.analyzer.calls == []
    # The proxy fetches and ACKs everything of the step: now samples count.
    names = {ENDPOINT: ["echo-v1", "echo-v2"], ROUTE: ["weir_route_10000"]}
    pending = proxy.drain() + proxy.request(ENDPOINT, names[ENDPOINT]) + proxy.request(ROUTE, names[ROUTE])
    while pending:
        resp = pending.pop(0)
        pending += proxy.ack(resp, names.get(resp.type_url, []))
    assert engine.registry.proxies()[0].converged_version is not None
    await ticks(engine, 2)
    rollout = await engine.get("echo")
    assert engine.analyzer.calls and rollout.weight == 50  # step 1 judged, step 2 routed...
    assert rollout.converged_at is None  # ...and its analysis waits for this proxy again
