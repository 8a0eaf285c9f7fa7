"""The store protocol: what the rollout engine needs from durable state.

One protocol, several implementations (SQLite for one replica; a replicated
store for several). Every implementation keeps the same guarantees:

* a decision and its events commit together, with the release it moves when
  it moves one (one transaction);
* a stale writer is refused (:class:`StaleRollout`): each rollout carries a
  generation that every update must match;
* at most one active rollout per service;
* events carry a global, increasing sequence number;
* judge state is kept per (rollout, analysis run, step), so a restarted
  engine continues the same statistical test.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..errors import Conflict, Unavailable
from ..rollouts.model import Event, Release, Rollout


class StaleRollout(Conflict):
    """The rollout changed since it was read (another writer won)."""

    kind = "concurrent-change"
    title = "Concurrent change"


class Store(Protocol):
    async def create(self, rollout: Rollout, events: list[Event], *, release: Release | None = None) -> Rollout:
        """Insert a rollout (or replace a finished one of the same name, as its next revision)."""

    async def update(self, rollout: Rollout, events: list[Event], *, release: Release | None = None) -> Rollout:
        """Store a decision: the rollout (generation-checked), its events, and the release it moved."""

    async def put_release(self, release: Release, events: list[Event]) -> Release:
        """Write a release with its events, one transaction (endpoints changed while no rollout runs)."""

    async def get(self, name: str) -> Rollout: ...
    async def list(self) -> list[Rollout]: ...
    async def events(self, name: str, after_seq: int = 0, limit: int = 1000) -> list[Event]: ...
    async def all_events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]: ...
    async def releases(self) -> list[Release]: ...
    async def release(self, service: str) -> Release | None: ...
    async def save_judge_state(self, rollout: str, run: int, step: int, state: dict[str, Any]) -> None: ...
    async def judge_state(self, rollout: str, run: int, step: int) -> dict[str, Any] | None: ...
    async def health(self) -> str | None:
        """None when reads and writes can be served; otherwise the cause and what to do (``/readyz``)."""

    async def close(self) -> None: ...


class NotLeader(Unavailable):
    """This replica does not hold the leadership (or lost it): a replicated store refused the write."""

    kind = "not-leader"
    title = "Not the leader"
