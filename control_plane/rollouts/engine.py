"""The rollout engine: owns every rollout's state and drives each in its own task.

Architecture (``docs/architecture.md``): policies arrive through :meth:`Engine.apply`
(REST, CLI, GitOps); :mod:`.apply` decides what applying one means given what
is live; the pure :class:`~.machine.RolloutMachine` decides each transition;
the engine stores a decision (rollout, events and the release it moves: one
transaction) *before* it acts on it, then hands the services' desired
routing to a :class:`~control_plane.routing.protocol.TrafficRouter` and waits
for that service to converge before counting traffic for the new step.

One task per rollout (:class:`RolloutWorker`): webhooks, analysis and waiting
for convergence of one rollout never delay another. Decisions about one
rollout are serialised by its own lock; slow work (a webhook, an analysis)
runs outside it and its result is applied only if the rollout did not change
meanwhile (its generation). An operator action interrupts the rollout's slow
work, so ``abort`` never waits behind a hanging webhook.

On start the engine re-acts on whatever was stored: ``kill -9`` at any point
resumes at the same step and weight, with the step's stored judge state (the
same statistical test continues on new samples), loses no event and applies
no step twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from analysis.analyzer import AnalysisRequest, Analyzer, NoEvidenceAnalyzer
from policies import PolicyValidationError, RolloutPolicy, parse_endpoint, parse_policy, policy_hash
from policies.errors import PolicyError
from policies.model import LatencyAware
from xds.ratelog import RateLimitedLog
from xds.routing import RoutingError, ServiceRouting, cross_service_problems

from ..errors import NotFound, Unavailable
from ..routing.protocol import CONVERGED, FAILED, WAITING, RouteStatus, ServiceState, TrafficRouter
from ..routing.resolver import EndpointResolver
from ..store import StaleRollout, Store
from .apply import ApplyPlan, plan_apply
from .desired import ReleaseSettings, endpoints_of, group_of, release_settings, routing_of_release, routing_of_rollout
from .machine import GATE_PROMOTION, Decision, RolloutMachine
from .model import Event, Phase, Release, Rollout, RolloutConflict, RolloutNotFound
from .webhooks import WebhookClient, redact_url

log = logging.getLogger("weir.engine")
_UNAVAILABLE_LOG = RateLimitedLog(log, "store-unavailable warnings", max_lines=5)

__all__ = ["Applied", "Engine", "EngineObserver", "RolloutWorker"]


class EngineObserver(Protocol):
    """Receives what the engine does, e.g. for /metrics (control_plane.api.metrics.Metrics)."""

    def observe_event(self, event: Event) -> None: ...
    def observe_verdict(self, rollout: str, outcome: str) -> None: ...
    def observe_convergence(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class Applied:
    """What applying a policy did: the plan (action and message) and the rollout it touched, if any."""

    plan: ApplyPlan
    rollout: Rollout | None

    @property
    def created(self) -> bool:
        return self.plan.action in ("create", "replace")


class RolloutWorker:
    """The task that drives one rollout until it ends."""

    def __init__(self, engine: "Engine", name: str):
        self.engine = engine
        self.name = name
        self._wake = asyncio.Event()
        self._slow: asyncio.Task | None = None
        self.task = asyncio.create_task(self._run(), name=f"weir-rollout-{name}")

    def wake(self) -> None:
        self._wake.set()

    def interrupt(self) -> None:
        """Cancel the rollout's slow work in flight (a webhook, an analysis): an operator acted."""
        if self._slow is not None and not self._slow.done():
            self._slow.cancel()
        self.wake()

    async def slow(self, coro):
        """Run slow work so that :meth:`interrupt` can cancel it; None when it was interrupted."""
        self._slow = asyncio.ensure_future(coro)
        try:
            return await self._slow
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # the worker itself is being stopped
                raise
            return None
        finally:
            self._slow = None

    async def _run(self) -> None:
        engine = self.engine
        while True:
            self._wake.clear()
            try:
                active = await engine.drive(self.name, worker=self)
            except asyncio.CancelledError:
                raise
            except (StaleRollout, RolloutNotFound):
                active = True  # changed under us; the next pass sees the new state
            except Unavailable as err:  # the store cannot serve (full, gone): one line, rate-limited, no traceback
                _UNAVAILABLE_LOG.log(logging.WARNING, "rollout %s: waiting for the store: %s", self.name, err)
                active = True
            except Exception:  # keep driving; the error is logged once per pass
                log.exception("rollout %s: a drive pass failed", self.name)
                active = True
            if not active:
                engine._worker_done(self)
                return
            try:
                await asyncio.wait_for(self._wake.wait(), engine.tick_s)
            except asyncio.TimeoutError:
                pass

    async def stop(self) -> None:
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass


class Engine:
    def __init__(
        self,
        store: Store,
        router: TrafficRouter,
        analyzer: Analyzer | None = None,
        webhooks: WebhookClient | None = None,
        *,
        tick_s: float = 1.0,
        gate_retry_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        observer: EngineObserver | None = None,
        resolver: EndpointResolver | None = None,
    ):
        self.store = store
        self.router = router
        self.analyzer = analyzer or NoEvidenceAnalyzer()
        self.webhooks = webhooks or WebhookClient()
        self.tick_s = tick_s
        self.gate_retry_s = gate_retry_s
        self.clock = clock
        self.observer = observer
        self._policies: dict[tuple[str, int], RolloutPolicy] = {}
        self._releases: dict[str, Release] = {}
        self._release_settings: dict[tuple[str, int], ReleaseSettings] = {}
        self._rollouts: dict[str, Rollout] = {}  # name -> latest known state (a cache of the store)
        self._routing: dict[str, ServiceState] = {}
        self._routing_lock = asyncio.Lock()
        self._apply_lock = asyncio.Lock()
        self._locks: dict[str, asyncio.Lock] = {}
        self._workers: dict[str, RolloutWorker] = {}
        self._gate_tried: dict[str, float] = {}
        self._published_at: dict[str, float] = {}
        self.latest_verdicts: dict[str, dict[str, Any]] = {}
        self.route_status: dict[str, RouteStatus] = {}
        self._running = False
        self._run_tasks = False
        self.resolver = resolver or EndpointResolver()
        self.resolver.on_change = self._names_changed
        on_change = getattr(router, "on_change", None)
        if on_change is not None:
            on_change(self._routing_progressed)

    def _balancing_of(self, service: str) -> LatencyAware | None:
        """The tuning of latency-aware balancing when the service's policy asks for it (the routers balance)."""
        active = self._active_of(service)
        release = self._releases.get(service)
        if active is not None:
            lb = self.policy_of(active).spec.load_balancing
        elif release is not None:
            lb = self._settings_of(release).load_balancing
        else:
            return None
        if lb.policy != "latency-aware":
            return None
        return lb.latency_aware or LatencyAware()

    def _names_changed(self, hosts: set[str]) -> None:
        """DNS names moved: republish the services that use them (make-before-break, like any EDS change)."""
        for service in {s for s in self._routing} | set(self._releases):
            if hosts & {e.host for e in self._named_endpoints(service)}:
                asyncio.create_task(self._publish(service), name=f"weir-dns-{service}")

    def _named_endpoints(self, service: str) -> list:
        """Every endpoint (IP or name) that the service's routing draws on now."""
        out = []
        release = self._releases.get(service)
        if release is not None:
            out += endpoints_of(release.endpoints)
        active = self._active_of(service)
        if active is not None:
            if active.canary_endpoints is not None:
                out += endpoints_of(active.canary_endpoints)
            else:
                out += list(self.policy_of(active).spec.canary.endpoints)
        return out

    async def _track_names(self, endpoints) -> None:
        """Resolve names seen for the first time before their routing is built."""
        new = self.resolver.track(endpoints)
        if new:
            await self.resolver.resolve(new)

    def _routing_progressed(self) -> None:
        """The data plane moved: rollouts waiting for convergence look now, not at their next tick."""
        for name, worker in self._workers.items():
            rollout = self._rollouts.get(name)
            if rollout is not None and rollout.converged_at is None:
                worker.wake()

    # -- lifecycle ----------------------------------------------------------------------
    async def start(self, *, run: bool = True) -> None:
        """Resume every stored rollout at its step, publish the routing, start one task per active rollout.

        ``run=False`` starts no tasks: tests drive rollouts with :meth:`tick`.
        """
        now = self.clock()
        self._releases = {r.service: r for r in await self.store.releases()}
        rollouts = await self.store.list()
        for release in self._releases.values():
            self.resolver.track(endpoints_of(release.endpoints))
        for rollout in rollouts:
            if rollout.active:
                self.resolver.track(self.policy_of(rollout).spec.canary.endpoints)
                if rollout.canary_endpoints is not None:
                    self.resolver.track(endpoints_of(rollout.canary_endpoints))
        await self.resolver.resolve()
        for rollout in rollouts:
            self._rollouts[rollout.name] = rollout
            if rollout.active and rollout.phase is not Phase.PENDING:
                # Samples counted before the restart are gone from the sources: the step's test
                # continues from its stored state on samples counted from re-convergence on.
                resumed = dataclasses.replace(rollout, converged_at=None, updated_at=now,
                                              segment=rollout.segment + (1 if rollout.converged_at is not None else 0))
                event = Event(rollout.name, rollout.revision, "resumed", rollout.phase.value, rollout.phase.value,
                              rollout.step, rollout.weight, "control plane restarted: resuming at the same step",
                              rollout.policy_hash, at=now)
                await self._store(Decision(resumed, [event]))
        async with self._routing_lock:
            for service in {r.service for r in self._rollouts.values()} | set(self._releases):
                self._set_routing(service)
            await self.router.apply(self._routing)
        self._running = True
        self._run_tasks = run
        if run:
            self.resolver.start()
            for rollout in self._rollouts.values():
                if rollout.active:
                    self._ensure_worker(rollout.name)

    @property
    def running(self) -> bool:
        """The engine started and was not stopped (for /readyz)."""
        return self._running

    async def stop(self) -> None:
        self._running = False
        await self.resolver.stop()
        workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            await worker.stop()

    def _ensure_worker(self, name: str) -> None:
        """Start the rollout's task if it has none (and the engine runs tasks); otherwise wake it."""
        worker = self._workers.get(name)
        if worker is None or worker.task.done():
            if self._running and self._run_tasks:
                self._workers[name] = RolloutWorker(self, name)
        else:
            worker.wake()

    def _worker_done(self, worker: RolloutWorker) -> None:
        if self._workers.get(worker.name) is worker:
            del self._workers[worker.name]

    def wake(self, name: str | None = None) -> None:
        """Drive now instead of at the next tick (one rollout, or all)."""
        for worker in ([self._workers[name]] if name in self._workers else [] if name else list(self._workers.values())):
            worker.wake()

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    # -- policies and releases ------------------------------------------------------------------
    def policy_of(self, rollout: Rollout) -> RolloutPolicy:
        key = (rollout.name, rollout.revision)
        policy = self._policies.get(key)
        if policy is None:
            # Stored policies were validated when applied; the model re-reads its own JSON form.
            policy = RolloutPolicy.model_validate(rollout.policy)
            self._policies[key] = policy
        return policy

    def machine(self, rollout: Rollout) -> RolloutMachine:
        return RolloutMachine(self.policy_of(rollout))

    def release(self, service: str) -> Release | None:
        return self._releases.get(service)

    def releases(self) -> list[Release]:
        return sorted(self._releases.values(), key=lambda r: r.service)

    def _settings_of(self, release: Release) -> ReleaseSettings:
        key = (release.service, release.generation)
        settings = self._release_settings.get(key)
        if settings is None:
            settings = self._release_settings[key] = ReleaseSettings.from_release(release)
        return settings

    # -- routing ------------------------------------------------------------------------------------
    def _active_of(self, service: str) -> Rollout | None:
        return next((r for r in self._rollouts.values() if r.service == service and r.active), None)

    def _desired(self, service: str, rollouts: dict[str, Rollout] | None = None,
                 releases: dict[str, Release] | None = None) -> tuple[str, ServiceRouting] | None:
        rollouts = self._rollouts if rollouts is None else rollouts
        releases = self._releases if releases is None else releases
        release = releases.get(service)
        active = next((r for r in rollouts.values() if r.service == service and r.active), None)
        expand = self.resolver.expand
        if active is not None and release is not None:
            policy = self.policy_of(active)
            return group_of(policy, release), routing_of_rollout(active, policy, release, self._settings_of(release), expand)
        if release is not None:
            return release.group, routing_of_release(release, self._settings_of(release), expand)
        return None

    def _set_routing(self, service: str) -> bool:
        """Recompute one service's desired routing; True when it changed (a new revision)."""
        desired = self._desired(service)
        current = self._routing.get(service)
        if desired is None:
            return self._routing.pop(service, None) is not None
        group, routing = desired
        balancing = self._balancing_of(service)
        if current is not None and (current.group, current.routing, current.balancing) == (group, routing, balancing):
            return False
        revision = current.revision + 1 if current is not None else 1
        self._routing[service] = ServiceState(service, group, revision, routing, balancing)
        return True

    async def _publish(self, service: str) -> None:
        async with self._routing_lock:
            if self._set_routing(service):
                await self.router.apply(self._routing)

    def _check_routing(self, rollout: Rollout, policy: RolloutPolicy, release: Release) -> None:
        """Refuse a policy whose routing cannot coexist with the other services' (nothing stored).

        The problems are reported in the policy's own terms (``spec.service.domains[0]``).
        """
        mine = routing_of_rollout(rollout, policy, release, expand=self.resolver.expand)
        group = group_of(policy, release)
        # Services of another named group never share a proxy with this one.
        visible = [s.routing for name, s in self._routing.items()
                   if name != rollout.service and (s.group == "*" or group == "*" or s.group == group)]
        mine_index = len(visible)
        errors = []
        for loc, message in cross_service_problems([*visible, mine]):
            if len(loc) < 3 or loc[1] != mine_index:
                continue
            field = loc[2:]
            if field[0] == "domains" and len(field) > 1:
                path = f"spec.service.domains[{field[1]}]"
            elif field[0] == "backends" and len(field) > 1:
                path = "spec.stable.version" if field[1] == 0 else "spec.canary.version"
            else:
                path = f"spec.service.{field[0]}"
            errors.append(PolicyError(path, message))
        if errors:
            raise RoutingError(errors)

    # -- API-facing operations ----------------------------------------------------------------------
    async def apply(self, policy: RolloutPolicy | str) -> Applied:
        """Apply a policy: create, update in place, restart the canary, or nothing (see :mod:`.apply`)."""
        if isinstance(policy, str):
            policy = parse_policy(policy)
        name = policy.metadata.name
        digest = policy_hash(policy)
        async with self._apply_lock:
            async with self._lock(name):
                now = self.clock()
                try:
                    existing: Rollout | None = await self.store.get(name)
                except RolloutNotFound:
                    existing = None
                service = policy.spec.service.name
                if existing is not None and existing.active and existing.service != service:
                    raise RolloutConflict(
                        f"rollout {name!r} is active for service {existing.service!r}; it cannot move to service "
                        f"{service!r}: abort it first, or use another metadata.name", path="spec.service.name",
                    )
                other = next((r for r in self._rollouts.values()
                              if r.service == service and r.active and r.name != name), None)
                release = self._releases.get(service)
                await self._track_names([*policy.spec.canary.endpoints,
                                         *(policy.spec.stable.endpoints if policy.spec.stable is not None else ())])
                plan = plan_apply(
                    policy, digest, existing=existing, existing_policy=self.policy_of(existing) if existing else None,
                    other_active=other, release=release, now=now,
                )
                if not plan.changes_anything:
                    return Applied(plan, existing)
                stored = await self._apply_plan(plan, policy, digest, existing, release, now)
                self._policies[(stored.name, stored.revision)] = policy
                if plan.action in ("create", "replace", "restart"):
                    self.latest_verdicts.pop(name, None)
        await self._publish(service)
        self._ensure_worker(name)
        return Applied(plan, stored)

    async def _apply_plan(self, plan: ApplyPlan, policy: RolloutPolicy, digest: str, existing: Rollout | None,
                          release: Release | None, now: float) -> Rollout:
        spec = policy.spec
        policy_json = policy.model_dump(mode="json", by_alias=True, exclude_none=True)
        live = plan.release or release
        if plan.action in ("create", "replace"):
            rollout = Rollout(
                name=policy.metadata.name, service=spec.service.name, group=spec.proxy_group or "*",
                policy=policy_json, policy_hash=digest, stable_version=plan.stable_version,
                canary_version=spec.canary.version, created_at=now, updated_at=now,
                message=f"{plan.message}; waiting for pre-rollout checks",
                analysis_run=(existing.analysis_run + 1) if existing is not None else 1,
            )
            self._check_routing(rollout, policy, live)
            event = Event(rollout.name, rollout.revision, "created", None, Phase.PENDING.value, -1, 0,
                          f"policy applied: {plan.message}", digest, at=now)
            stored = await self.store.create(rollout, [event], release=plan.release)
            self._emit([event])
        else:
            assert existing is not None
            machine = RolloutMachine(policy)
            if plan.action == "restart":
                decision = machine.restart(existing, policy_json=policy_json, digest=digest,
                                           canary_version=spec.canary.version, stable_version=plan.stable_version,
                                           reason=f"policy applied: {plan.message}", now=now)
            else:
                decision = machine.revise(existing, policy_json=policy_json, digest=digest, changes=plan.changes,
                                          reason=f"policy applied: {plan.message}", now=now)
            decision.rollout.group = spec.proxy_group or "*"
            decision.rollout.service = spec.service.name
            self._policies[(decision.rollout.name, decision.rollout.revision)] = policy
            self._check_routing(decision.rollout, policy, live)
            stored = await self.store.update(decision.rollout, decision.events, release=plan.release)
            self._emit(decision.events)
            worker = self._workers.get(stored.name)
            if worker is not None:
                worker.interrupt()
        if plan.release is not None:
            self._releases[plan.release.service] = plan.release
        self._rollouts[stored.name] = stored
        return stored

    async def submit(self, policy: RolloutPolicy | str) -> Rollout | None:
        """Apply a policy and return its rollout (None when nothing was to do and no rollout has that name)."""
        return (await self.apply(policy)).rollout

    async def act(self, name: str, action: str, weight: int | None = None, *, actor: str | None = None) -> Rollout:
        """An operator action; idempotent; InvalidAction (409) when the phase does not allow it.

        `actor` (who asked, e.g. the API token's name) is recorded in the event.
        The rollout's slow work in flight (a webhook, an analysis) is interrupted.
        """
        async with self._lock(name):
            rollout = await self.store.get(name)
            decision = self.machine(rollout).act(rollout, action, self.clock(), weight=weight)
            for event in decision.events:
                event.reason = f"{event.reason} (by {actor or 'an operator'})"
            if action == "retry":
                self.latest_verdicts.pop(name, None)
            if decision.changed:
                await self._apply(decision)
                rollout = decision.rollout
        worker = self._workers.get(name)
        if worker is not None:
            worker.interrupt()
        if rollout.active:
            self._ensure_worker(name)
        return rollout

    async def set_endpoints(self, service: str, version: str, texts: list[str], *, actor: str | None = None) -> dict[str, Any]:
        """Change where one version of a service runs, without restarting its rollout (an autoscaler's call).

        ``version`` is the live version (the release's endpoints change) or the active rollout's
        canary. The change is an EDS update, applied make-before-break, recorded as an event.
        """
        endpoints, errors, at = [], [], []
        for i, text in enumerate(texts):
            try:
                endpoints.append(parse_endpoint(text))
                at.append(i)
            except ValueError as err:
                errors.append(PolicyError(f"endpoints[{i}]", str(err)))
        if not texts:
            errors.append(PolicyError("endpoints", 'needs at least one endpoint, e.g. ["10.0.0.7:8080"]'))
        seen: dict[str, int] = {}
        for i, endpoint in zip(at, endpoints):
            if endpoint.address in seen:
                errors.append(PolicyError(f"endpoints[{i}]", f"{endpoint.address} is listed twice (first at endpoints[{seen[endpoint.address]}])"))
            seen.setdefault(endpoint.address, i)
        if errors:
            raise PolicyValidationError(errors)
        new = [str(e) for e in endpoints]
        who = actor or "an operator"
        async with self._apply_lock:
            release = self._releases.get(service)
            if release is None:
                raise NotFound(f"no service named {service!r} (it gets one with its first policy)", path="service")
            active = self._active_of(service)
            await self._track_names(endpoints)
            now = self.clock()
            if version == release.version:
                before = release.endpoints
                updated = dataclasses.replace(release, endpoints=new, updated_at=now)
                reason = f"endpoints of the live {version} changed from [{', '.join(before)}] to [{', '.join(new)}] (by {who})"
                if active is not None:
                    async with self._lock(active.name):
                        current = await self.store.get(active.name)
                        event = Event(current.name, current.revision, "endpoints", current.phase.value, current.phase.value,
                                      current.step, current.weight, reason, current.policy_hash, at=now)
                        stored = await self.store.update(dataclasses.replace(current, updated_at=now), [event], release=updated)
                        self._rollouts[stored.name] = stored
                else:
                    owner = release.rollout or next((r.name for r in self._rollouts.values() if r.service == service), "")
                    last = self._rollouts.get(owner)
                    event = Event(owner, last.revision if last else 0, "endpoints", last.phase.value if last else None,
                                  last.phase.value if last else "Succeeded", last.step if last else -1,
                                  last.weight if last else 0, reason, last.policy_hash if last else "", at=now)
                    await self.store.put_release(updated, [event])
                self._releases[service] = updated
                self._emit([event])
            elif active is not None and version == active.canary_version:
                async with self._lock(active.name):
                    current = await self.store.get(active.name)
                    before = current.canary_endpoints or [str(e) for e in self.policy_of(current).spec.canary.endpoints]
                    reason = f"endpoints of the canary {version} changed from [{', '.join(before)}] to [{', '.join(new)}] (by {who})"
                    event = Event(current.name, current.revision, "endpoints", current.phase.value, current.phase.value,
                                  current.step, current.weight, reason, current.policy_hash, at=now)
                    stored = await self.store.update(dataclasses.replace(current, canary_endpoints=new, updated_at=now), [event])
                    self._rollouts[stored.name] = stored
                    self._emit([event])
            else:
                serving = f"live {release.version}" + (f", canary {active.canary_version}" if active else "")
                raise NotFound(f"service {service!r} has no version {version!r} serving (it serves: {serving})", path="version")
        await self._publish(service)
        return {"service": service, "version": version, "endpoints": new, "rollout": active.name if active else None,
                "message": reason}

    async def get(self, name: str) -> Rollout:
        return await self.store.get(name)

    async def list(self) -> list[Rollout]:
        return await self.store.list()

    async def events(self, name: str, after_seq: int = 0) -> list[Event]:
        await self.store.get(name)  # 404 for an unknown rollout
        return await self.store.events(name, after_seq)

    # -- driving one rollout -----------------------------------------------------------------------
    async def tick(self) -> None:
        """Drive every active rollout once, one after another (tests and diagnostics)."""
        for rollout in await self.store.list():
            if rollout.active:
                try:
                    await self.drive(rollout.name)
                except (StaleRollout, RolloutNotFound):
                    continue

    async def drive(self, name: str, worker: RolloutWorker | None = None) -> bool:
        """One pass over one rollout; False once it has ended (its task may stop)."""
        rollout = await self.store.get(name)
        self._rollouts[name] = rollout
        if not rollout.active:
            return False
        machine = self.machine(rollout)
        now = self.clock()

        async def slow(coro):
            return await (worker.slow(coro) if worker is not None else coro)

        if rollout.phase is Phase.PENDING:
            hook = await slow(self._gate_hooks(rollout, "pre-rollout"))
            if worker is not None and hook is None and self._hooks(rollout, "pre-rollout"):
                return True  # interrupted: look again
            if hook is not None and not hook[0]:
                await self._if_unchanged(rollout, lambda r: self._fail_decision(r, f"pre-rollout webhook refused: {hook[1]}"))
                return True
            await self._if_unchanged(rollout, lambda r: machine.start(r, self.clock()))
            return True
        if rollout.gate == GATE_PROMOTION and rollout.phase in (Phase.PROGRESSING, Phase.HOLDING):
            last = self._gate_tried.get(name, 0.0)
            if rollout.phase is Phase.HOLDING and now - last < self.gate_retry_s:
                return True
            self._gate_tried[name] = now
            answer = await slow(self._gate_hooks(rollout, "confirm-promotion"))
            if answer is None and self._hooks(rollout, "confirm-promotion"):
                return True  # interrupted
            ok, detail = answer or (True, "no confirm-promotion webhook")
            await self._if_unchanged(rollout, lambda r: machine.on_gate(r, GATE_PROMOTION, ok, detail, self.clock()))
            return True
        decision = machine.on_tick(rollout, now)
        if decision is not None:
            await self._if_unchanged(rollout, lambda r: decision)
            return True
        if rollout.converged_at is None:
            state = self._routing.get(rollout.service)
            if state is None:
                return True
            unresolved = self.resolver.problems(self._named_endpoints(rollout.service))
            if unresolved:  # never count (or promote on) traffic of a version we cannot reach
                self.route_status[name] = RouteStatus(WAITING, "; ".join(unresolved))
                return True
            status = await self.router.status(rollout.service, state.revision)
            self.route_status[name] = status
            if status.state == CONVERGED:
                await self._if_unchanged(rollout, lambda r: machine.on_converged(r, self.clock()))
                published = self._published_at.pop(name, None)
                if published is not None and self.observer is not None:
                    self.observer.observe_convergence(self.clock() - published)
            elif status.state == FAILED and rollout.message != status.detail:
                await self._if_unchanged(rollout, lambda r: self._note(r, status.detail))
            return True
        if rollout.phase in (Phase.SHADOWING, Phase.PROGRESSING) and rollout.gate is None:
            await self._analyse(rollout, machine, slow)
        return True

    async def _analyse(self, rollout: Rollout, machine: RolloutMachine, slow) -> None:
        step = machine.current_step(rollout)
        request = AnalysisRequest(
            rollout=rollout.name, service=rollout.service, group=rollout.group,
            stable_version=rollout.stable_version, canary_version=rollout.canary_version,
            phase="shadow" if rollout.step == -1 else "canary", step=rollout.step, n_steps=len(machine.steps),
            weight=rollout.weight, mirror=rollout.mirror, since=rollout.converged_at,
            min_requests=step.min_requests if step else 0, policy=machine.policy,
            run=rollout.analysis_run, segment=rollout.segment,
            judge_state=await self.store.judge_state(rollout.name, rollout.analysis_run, rollout.step),
            previous_state=await self._previous_state(rollout, machine),
        )
        verdict = await slow(self.analyzer.analyze(request))
        if verdict is None:
            return  # interrupted by an operator action
        state_of = getattr(self.analyzer, "judge_state", None)
        state = state_of(request) if state_of is not None else None
        if state is not None:
            await self.store.save_judge_state(rollout.name, rollout.analysis_run, rollout.step, state)
        self.latest_verdicts[rollout.name] = verdict.to_json()
        if self.observer is not None:
            self.observer.observe_verdict(rollout.name, verdict.outcome)
        await self._if_unchanged(rollout, lambda r: machine.on_verdict(r, verdict, self.clock()))

    async def _previous_state(self, rollout: Rollout, machine: RolloutMachine) -> dict | None:
        """The judge state of the step analysed before this one (the rollout-wide monitor continues from it)."""
        index = rollout.step - 1
        while index >= -1:
            state = await self.store.judge_state(rollout.name, rollout.analysis_run, index)
            if state is not None:
                return state
            index -= 1
        return None

    async def _if_unchanged(self, seen: Rollout, decide) -> None:
        async with self._lock(seen.name):
            current = await self.store.get(seen.name)
            if current.generation != seen.generation:
                return
            decision = decide(current)
            if decision is not None and decision.changed:
                await self._apply(decision)

    def _note(self, rollout: Rollout, message: str) -> Decision:
        """A message-only change (e.g. a proxy rejected the routing): shown, with one event."""
        now = self.clock()
        after = dataclasses.replace(rollout, message=message, updated_at=now)
        event = Event(rollout.name, rollout.revision, "routing", rollout.phase.value, rollout.phase.value,
                      rollout.step, rollout.weight, message, rollout.policy_hash, at=now)
        return Decision(after, [event])

    def _fail_decision(self, rollout: Rollout, reason: str) -> Decision:
        now = self.clock()
        after = dataclasses.replace(rollout, phase=Phase.FAILED, message=reason, updated_at=now)
        event = Event(rollout.name, rollout.revision, "phase", rollout.phase.value, Phase.FAILED.value, rollout.step,
                      rollout.weight, reason, rollout.policy_hash, at=now)
        return Decision(after, [event], publish=True)

    # -- acting on decisions ------------------------------------------------------------------------
    async def _store(self, decision: Decision) -> None:
        release = self._release_of(decision)
        stored = await self.store.update(decision.rollout, decision.events, release=release)
        if release is not None:
            self._releases[release.service] = release
        self._rollouts[stored.name] = stored
        self._emit(decision.events)

    def _release_of(self, decision: Decision) -> Release | None:
        """A promotion makes the canary the service's live release, in the same transaction."""
        rollout = decision.rollout
        if rollout.phase is not Phase.SUCCEEDED:
            return None
        policy = self.policy_of(rollout)
        current = self._releases.get(rollout.service)
        return Release(
            service=rollout.service, group=policy.spec.proxy_group or "*", version=policy.spec.canary.version,
            endpoints=[str(e) for e in policy.spec.canary.endpoints], settings=release_settings(policy, "canary"),
            rollout=rollout.name, revision=rollout.revision, updated_at=rollout.updated_at,
            generation=current.generation if current is not None else 0,
        )

    async def _apply(self, decision: Decision) -> None:
        """Store first, then act (publish routing, fire hooks). Called with the rollout's lock held."""
        await self._store(decision)
        rollout = decision.rollout
        async with self._routing_lock:
            changed = self._set_routing(rollout.service)
            if changed:
                await self.router.apply(self._routing)
        if changed:
            self._published_at[rollout.name] = self.clock()
        for hook in decision.webhooks:
            asyncio.create_task(self._fire_hook(rollout, hook), name=f"weir-hook-{rollout.name}-{hook}")

    def _emit(self, events: list[Event]) -> None:
        if self.observer is not None:
            for event in events:
                self.observer.observe_event(event)

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
                return False, f"{redact_url(hook.url)}: {result.detail}"
        return True, "; ".join(redact_url(h.url) for h in hooks)

    async def _fire_hook(self, rollout: Rollout, on: str) -> None:
        for hook in self._hooks(rollout, on):
            result = await self.webhooks.call(hook.url, self._hook_payload(rollout, on), hook.timeout.total_seconds())
            if not result.ok:
                log.warning("%s webhook for %s failed: %s", on, rollout.name, result.detail)
