"""A restart continues the same statistical test: the step's judge state is stored with the step.

Defect: a restart threw away each step's judge state, so the same step's test
started again and spent alpha again (the judges had state()/load_state();
nothing called them). Here the real engine and SourceAnalyzer run over a
metric source the test feeds; the control plane is restarted mid-step; the
step's test must go on from the stored state on new samples only.
"""

from __future__ import annotations

import copy

import numpy as np
import yaml

from analysis.samples import ArmSamples
from analysis.source_analyzer import SourceAnalyzer
from analysis.sources import Coverage
from control_plane.rollouts.model import Phase
from control_plane.store import SQLiteStore
from policies import RolloutPolicy
from tests.proxy_double import engine_with_proxies, sync_all
from tests.test_engine import Clock

BASE = yaml.safe_load(open("policies/examples/minimal.yaml"))


class FedSource:
    """A metric source over requests the test adds: (start, version, error, latency_ms)."""

    name = "access-log"

    def __init__(self, clock):
        self.clock = clock
        self.requests: list[tuple[float, str, bool, float]] = []
        self.asked: list[float] = []

    def add(self, version: str, n: int, rng, error_rate: float = 0.0, at: float | None = None) -> None:
        t = self.clock() if at is None else at
        for _ in range(n):
            self.requests.append((t, version, bool(rng.random() < error_rate), float(rng.lognormal(np.log(100), 0.3))))

    async def arm_samples(self, service, version, since, *, shadow=False, until=None) -> ArmSamples:
        self.asked.append(since)
        mine = [r for r in self.requests if r[1] == version and r[0] >= since]
        return ArmSamples(len(mine), sum(r[2] for r in mine), [r[3] for r in mine if not r[2]])

    async def coverage(self, service, since, *, until=None, shadow=False) -> Coverage:
        return Coverage(self.name, since, until)

    async def is_online(self) -> bool:
        return True


def policy() -> RolloutPolicy:
    data = copy.deepcopy(BASE)
    data["spec"]["strategy"]["canary"]["steps"] = [{"weight": 10, "minRequests": 100000}, {"weight": 100}]
    data["spec"]["analysis"]["slos"] = [{"metric": "error-rate", "maxIncrease": "1%"}]
    return RolloutPolicy.model_validate(data)


async def _engine(db, clock, source):
    engine, _, _, proxies = engine_with_proxies(SQLiteStore(db), SourceAnalyzer(access_log=source), clock=clock)
    await engine.start(run=False)
    sync_all(proxies)
    return engine


async def test_a_restart_continues_the_steps_test_without_counting_a_sample_twice(tmp_path):
    rng = np.random.default_rng(7)
    clock = Clock()
    source = FedSource(clock)
    engine = await _engine(tmp_path / "weir.db", clock, source)
    await engine.submit(policy())
    for _ in range(3):
        await engine.tick()
    rollout = await engine.get("echo")
    assert rollout.phase is Phase.PROGRESSING and rollout.converged_at is not None
    for _ in range(4):  # four looks, 1,000 requests each, canary at its 10% share
        clock.now += 1
        source.add("v1", 900, rng)
        source.add("v2", 100, rng)
        await engine.tick()
    looks_before = engine.latest_verdicts["echo"]["evidence"]["looks"]
    assert looks_before >= 4
    stored = await engine.store.judge_state("echo", 1, 0)
    assert stored is not None and stored["looks"] == looks_before
    before = engine.latest_verdicts["echo"]["evidence"]["counts"]
    assert before["canary"]["requests"] == 400 and before["stable"]["requests"] == 3600
    await engine.store.close()

    # The control plane restarts. The samples before it are gone from the source (an in-memory access log).
    clock.now += 5
    source_after = FedSource(clock)
    engine2 = await _engine(tmp_path / "weir.db", clock, source_after)
    for _ in range(2):
        await engine2.tick()
    resumed = await engine2.get("echo")
    assert resumed.converged_at is not None and resumed.segment == rollout.segment + 1
    clock.now += 1
    source_after.add("v1", 900, rng)
    source_after.add("v2", 100, rng)
    await engine2.tick()
    after = engine2.latest_verdicts["echo"]["evidence"]
    # The same test goes on: its looks continue and its counts are the stored ones plus the new segment's.
    assert after["looks"] > looks_before  # continued, not started again from zero
    assert after["counts"]["canary"]["requests"] == 500 and after["counts"]["stable"]["requests"] == 4500
    # Samples are asked for from the new segment's convergence only: nothing before the restart again.
    assert min(source_after.asked) >= resumed.converged_at
    await engine2.store.close()
