"""The rollout engine: owns every rollout's state, drives it, survives restarts.

One loop ticks every active rollout: publish its routing, wait until every
proxy has ACKed it (then samples start to count), ask the analyzer, act on the
verdict, run webhook gates. Decisions come from the pure
:class:`~control_plane.rollouts.machine.RolloutMachine`; the engine's job is ordering
and I/O: it stores a decision (rollout row + events, one transaction) before
it acts on it, and on start it re-acts on whatever was stored. So ``kill -9``
at any point resumes at the same step with the same weights, loses no event
and applies no step twice.

Slow work (webhooks, analysis) runs without the engine lock; the result is
applied only if the rollout did not change meanwhile (its generation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable, Protocol

from policies import RolloutPolicy, parse_policy, policy_hash
from xds.cache import DEFAULT_GROUP, SnapshotCache
from xds.snapshot import snapshot_from_envoy
from xds.status import StatusRegistry
from xds.translate import translate

from analysis.analyzer import AnalysisRequest, Analyzer, NoEvidenceAnalyzer
from .desired import desired_by_group
from .machine import GATE_PROMOTION, Decision, RolloutMachine
from .model import Event, Phase, Rollout, RolloutNotFound
from ..store import StaleRollout, Store
from .webhooks import WebhookClient

log = logging.getLogger("weir.engine")


class EngineObserver(Protocol):
    """Receives what the engine does, e.g. for /metrics (control_plane.api.metrics.Metrics)."""

    def observe_event(self, event: Event) -> None: ...
    def observe_verdict(self, rollout: str, outcome: str) -> None: ...
    def observe_convergence(self, seconds: float) -> None: ...


class Engine:
    def __init__(
        self,
        store: Store,
        cache: SnapshotCache,
        registry: StatusRegistry,
        analyzer: Analyzer | None = None,
        webhooks: WebhookClient | None = None,
        *,
        listen_address: str = "0.0.0.0",
        tick_s: float = 1.0,
        gate_retry_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        observer: EngineObserver | None = None,
        access_log_cluster: str | None = None,
    ):
        self.store = store
        self.cache = cache
        self.registry = registry
        self.analyzer = analyzer or NoEvidenceAnalyzer()
        self.webhooks = webhooks or WebhookClient()
        self.listen_address = listen_address
        self.tick_s = tick_s
        self.gate_retry_s = gate_retry_s
        self.clock = clock
        self._lock = asyncio.Lock()
        self._policies: dict[tuple[str, int], RolloutPolicy] = {}
        self._published: dict[str, str] = {}  # group -> snapshot version
        self._latest: dict[str, Rollout] = {}  # service -> the rollout that decides its routing
        self._gate_tried: dict[str, float] = {}
        self.latest_verdicts: dict[str, dict[str, Any]] = {}
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._published_at: dict[str, float] = {}  # rollout -> when its routing last changed
        self.observer = observer
        self.access_log_cluster = access_log_cluster  # where generated listeners send access logs

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Resume every stored rollout and start ticking."""
        now = self.clock()
        async with self._lock:
            for rollout in await self.store.list():
                if rollout.active and rollout.phase is not Phase.PENDING:
                    # Samples before a restart were held in memory and are gone:
                    # the step's analysis counts again once proxies re-converge.
                    resumed = Rollout.from_json({**rollout.to_json(), "converged_at": None, "updated_at": now})
                    event = Event(rollout.name, rollout.revision, "resumed", rollout.phase.value, rollout.phase.value,
                                  rollout.step, rollout.weight, "control plane restarted: resuming at the same step",
                                  rollout.policy_hash, at=now)
                    await self._store(Decision(resumed, [event]))
            await self._publish()
        self._task = asyncio.create_task(self._run(), name="weir-engine")

    @property
    def running(self) -> bool:
        """The tick loop is alive (for /readyz)."""
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep driving other rollouts; the error is logged
                log.exception("engine tick failed")
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick_s)
            except asyncio.TimeoutError:
                pass

    def wake(self) -> None:
        """Tick now instead of at the next interval (after an action or a submit)."""
        self._wake.set()

    # -- policies -------------------------------------------------------------------------
    def policy_of(self, rollout: Rollout) -> RolloutPolicy:
        key = (rollout.name, rollout.revision)
        policy = self._policies.get(key)
        if policy is None:
            policy = RolloutPolicy.model_validate(rollout.policy)
            self._policies[key] = policy
        return policy

    def machine(self, rollout: Rollout) -> RolloutMachine:
        return RolloutMachine(self.policy_of(rollout))

    # -- API-facing operations ----------------------------------------------------------------
    async def submit(self, policy: RolloutPolicy | str) -> Rollout:
        """Create a rollout from a policy. 409 (RolloutConflict) if its service has an active one."""
        if isinstance(policy, str):
            policy = parse_policy(policy)
        now = self.clock()
        spec = policy.spec
        rollout = Rollout(
            name=policy.metadata.name,
            service=spec.service.name,
            group=spec.proxy_group or DEFAULT_GROUP,
            policy=policy.model_dump(mode="json", by_alias=True, exclude_none=True),
            policy_hash=policy_hash(policy),
            stable_version=spec.stable.version,
            canary_version=spec.canary.version,
            created_at=now,
            updated_at=now,
            message="created: waiting for pre-rollout checks",
        )
        event = Event(rollout.name, rollout.revision, "created", None, Phase.PENDING.value, -1, 0,
                      "policy submitted", rollout.policy_hash, at=now)
        async with self._lock:
            self._check_routing_conflicts(rollout, policy)
            stored = await self.store.create(rollout, [event])
            self._policies[(stored.name, stored.revision)] = policy
            self.latest_verdicts.pop(stored.name, None)
            self._emit([event])
        self.wake()
        return stored

    def _check_routing_conflicts(self, rollout: Rollout, policy: RolloutPolicy) -> None:
        """Refuse a policy whose routing cannot coexist with the others (nothing stored)."""
        current = [(r, self.policy_of(r)) for r in self._latest.values() if r.service != rollout.service]
        desired_by_group([*current, (rollout, policy)], self.listen_address)  # raises RoutingError

    async def act(self, name: str, action: str, weight: int | None = None, *, actor: str | None = None) -> Rollout:
        """An operator action; idempotent; InvalidAction (409) when the phase does not allow it.

        `actor` (who asked, e.g. the API token's name) is recorded in the event.
        """
        async with self._lock:
            rollout = await self.store.get(name)
            decision = self.machine(rollout).act(rollout, action, self.clock(), weight=weight)
            for event in decision.events:
                event.reason = f"{event.reason} (by {actor or 'an operator'})"
            if action == "retry":
                self.latest_verdicts.pop(name, None)
            if decision.changed:
                await self._apply(decision)
                rollout = decision.rollout
        self.wake()
        return rollout

    async def get(self, name: str) -> Rollout:
        return await self.store.get(name)

    async def list(self) -> list[Rollout]:
        return await self.store.list()

    async def events(self, name: str, after_seq: int = 0) -> list[Event]:
        await self.store.get(name)  # 404 for an unknown rollout
        return await self.store.events(name, after_seq)

    # -- the loop ------------------------------------------------------------------------------
    async def tick(self) -> None:
        for rollout in await self.store.list():
            if rollout.active:
                try:
                    await self._drive(rollout.name)
                except (StaleRollout, RolloutNotFound):
                    continue  # changed under us; the next tick sees the new state

    async def _drive(self, name: str) -> None:
        rollout = await self.store.get(name)
        machine = self.machine(rollout)
        now = self.clock()
        if rollout.phase is Phase.PENDING:
            hook = await self._gate_hooks(rollout, "pre-rollout")
            if hook is not None and not hook[0]:
                await self._if_unchanged(rollout, lambda r: self._fail_decision(r, f"pre-rollout webhook refused: {hook[1]}"))
                return
            await self._if_unchanged(rollout, lambda r: machine.start(r, self.clock()))
            return
        if rollout.gate == GATE_PROMOTION and rollout.phase in (Phase.PROGRESSING, Phase.HOLDING):
            last = self._gate_tried.get(name, 0.0)
            if rollout.phase is Phase.HOLDING and now - last < self.gate_retry_s:
                return
            self._gate_tried[name] = now
            ok, detail = await self._gate_hooks(rollout, "confirm-promotion") or (True, "no confirm-promotion webhook")
            await self._if_unchanged(rollout, lambda r: machine.on_gate(r, GATE_PROMOTION, ok, detail, self.clock()))
            return
        decision = machine.on_tick(rollout, now)
        if decision is not None:
            await self._if_unchanged(rollout, lambda r: decision)
            return
        if rollout.converged_at is None:
            if self._converged(rollout):
                await self._if_unchanged(rollout, lambda r: machine.on_converged(r, self.clock()))
                published = self._published_at.pop(name, None)
                if published is not None and self.observer is not None:
                    self.observer.observe_convergence(self.clock() - published)
            return
        if rollout.phase in (Phase.SHADOWING, Phase.PROGRESSING) and rollout.gate is None:
            step = machine.current_step(rollout)
            request = AnalysisRequest(
                rollout=rollout.name, service=rollout.service, group=rollout.group,
                stable_version=rollout.stable_version, canary_version=rollout.canary_version,
                phase="shadow" if rollout.step == -1 else "canary", step=rollout.step, n_steps=len(machine.steps),
                weight=rollout.weight, mirror=rollout.mirror, since=rollout.converged_at,
                min_requests=step.min_requests if step else 0, policy=machine.policy,
            )
            verdict = await self.analyzer.analyze(request)
            self.latest_verdicts[name] = verdict.to_json()
            if self.observer is not None:
                self.observer.observe_verdict(name, verdict.outcome)
            await self._if_unchanged(rollout, lambda r: machine.on_verdict(r, verdict, self.clock()))

    async def _if_unchanged(self, seen: Rollout, decide) -> None:
        async with self._lock:
            current = await self.store.get(seen.name)
            if current.generation != seen.generation:
                return
            decision = decide(current)
            if decision is not None and decision.changed:
                await self._apply(decision)

    def _fail_decision(self, rollout: Rollout, reason: str) -> Decision:
        now = self.clock()
        after = Rollout.from_json({**rollout.to_json(), "phase": Phase.FAILED.value, "message": reason, "updated_at": now})
        event = Event(rollout.name, rollout.revision, "phase", rollout.phase.value, Phase.FAILED.value, rollout.step,
                      rollout.weight, reason, rollout.policy_hash, at=now)
        return Decision(after, [event], publish=True)

    # -- acting on decisions ------------------------------------------------------------------------
    async def _store(self, decision: Decision) -> None:
        await self.store.update(decision.rollout, decision.events)
        self._emit(decision.events)

    async def _apply(self, decision: Decision) -> None:
        """Store first, then act (publish routing, fire hooks). Called with the lock held."""
        await self._store(decision)
        if decision.publish or decision.rollout.phase.terminal:
            await self._publish()
            self._published_at[decision.rollout.name] = self.clock()
        for hook in decision.webhooks:
            asyncio.create_task(self._fire_hook(decision.rollout, hook))

    def _emit(self, events: list[Event]) -> None:
        if self.observer is not None:
            for event in events:
                self.observer.observe_event(event)

    async def _publish(self) -> None:
        """Rebuild every group's routing from the latest rollout of each service and publish it."""
        latest: dict[str, Rollout] = {}
        for rollout in await self.store.list():
            have = latest.get(rollout.service)
            if have is None or (rollout.active, rollout.updated_at) > (have.active, have.updated_at):
                latest[rollout.service] = rollout
        self._latest = latest
        pairs = [(r, self.policy_of(r)) for r in latest.values()]
        for group, routing in desired_by_group(pairs, self.listen_address).items():
            snapshot = snapshot_from_envoy(translate(routing, access_log_cluster=self.access_log_cluster))
            self.cache.set_snapshot(group, snapshot)
            self._published[group] = snapshot.version

    def _converged(self, rollout: Rollout) -> bool:
        """Every proxy serving this rollout's service ACKed the current routing."""
        groups = list(self._published) if rollout.group == DEFAULT_GROUP else [rollout.group]
        return all(self.registry.is_converged(g, self._published[g]) for g in groups if g in self._published)

    # -- webhooks -------------------------------------------------------------------------------------
    def _hooks(self, rollout: Rollout, on: str):
        return [h for h in self.policy_of(rollout).spec.webhooks if h.on == on]

    def _hook_payload(self, rollout: Rollout, on: str) -> dict[str, Any]:
        return {
            "event": on,
            "rollout": rollout.name,
            "revision": rollout.revision,
            "service": rollout.service,
            "phase": rollout.phase.value,
            "step": rollout.step,
            "weight": rollout.weight,
            "stable": rollout.stable_version,
            "canary": rollout.canary_version,
            "policy_hash": rollout.policy_hash,
            "verdict": rollout.verdict,
        }

    async def _gate_hooks(self, rollout: Rollout, on: str) -> tuple[bool, str] | None:
        """Ask every hook of a kind; None when the policy has none."""
        hooks = self._hooks(rollout, on)
        if not hooks:
            return None
        for hook in hooks:
            result = await self.webhooks.call(hook.url, self._hook_payload(rollout, on), hook.timeout.total_seconds())
            if not result.ok:
                return False, f"{hook.url}: {result.detail}"
        return True, "; ".join(h.url for h in hooks)

    async def _fire_hook(self, rollout: Rollout, on: str) -> None:
        for hook in self._hooks(rollout, on):
            result = await self.webhooks.call(hook.url, self._hook_payload(rollout, on), hook.timeout.total_seconds())
            if not result.ok:
                log.warning("%s webhook for %s failed: %s", on, rollout.name, result.detail)
