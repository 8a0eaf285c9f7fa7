"""The replicated store: etcd, behind the same protocol and guarantees as SQLite.

Keys, under a prefix (default ``/weir``)::

    rollouts/<name>            the rollout (JSON, with its generation)
    active/<service>           the name of the service's active rollout (one per service)
    seq                        the last event sequence number
    events/<seq>               every event, in global order (seq zero-padded: key order = seq order)
    by-rollout/<name>/<seq>    the same event, indexed by rollout
    releases/<service>         the live release
    judge/<rollout>/<run>/<step>

Every change is one etcd transaction. It reads what it depends on (the
rollout, the service's active key, the sequence counter, the release) and
commits only if none of them changed since (``mod_revision`` compares): the
rollout, its events and the release move together, event numbers have no gap
and no duplicate, and a stale writer is refused. When the store has a
*fence* (the leadership key and the lease that holds it), every write also
compares the key's lease: a leader that was paused past its lease (GC, SIGSTOP,
a partition) and wakes up cannot write, whatever its memory says.
Nothing is acknowledged before etcd committed it on a quorum, so a crash of
any replica loses nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..etcd.client import EtcdClient, delete_op, get_op, lease_is, mod_is, pb, prefix_end, put_op
from ..rollouts.model import ACTIVE, Event, Release, Rollout, RolloutConflict, RolloutNotFound
from .protocol import NotLeader, StaleRollout

__all__ = ["EtcdStore", "Fence"]

_SEQ_DIGITS = 16
#: Transactions lost to another writer's concurrent change of the sequence counter are retried.
_RETRIES = 50


@dataclass(frozen=True)
class Fence:
    """Writes are valid only while ``key`` is held by ``lease`` (the leadership key and its lease)."""

    key: bytes
    lease: int


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


class EtcdStore:
    """The store for several replicas (see the module docstring)."""

    def __init__(self, client: EtcdClient, prefix: str = "/weir", *, require_fence: bool = False):
        self.client = client
        self.prefix = prefix.rstrip("/").encode()
        #: Set by the leadership while this replica leads; None otherwise.
        self.fence: Fence | None = None
        #: Several replicas: refuse every write without a fence (only the leader writes).
        self.require_fence = require_fence
        self._owns_client = False

    # -- keys ------------------------------------------------------------------------------
    def key(self, *parts: str) -> bytes:
        return self.prefix + b"/" + "/".join(parts).encode()

    def _seq_key(self) -> bytes:
        return self.key("seq")

    def _event_key(self, seq: int) -> bytes:
        return self.key("events", f"{seq:0{_SEQ_DIGITS}d}")

    def _index_key(self, name: str, seq: int) -> bytes:
        return self.key("by-rollout", name, f"{seq:0{_SEQ_DIGITS}d}")

    # -- fencing ---------------------------------------------------------------------------
    def _fence_compares(self) -> list[pb.Compare]:
        fence = self.fence
        if fence is None:
            if self.require_fence:
                raise NotLeader("this replica is not the leader: it does not write to the store "
                                "(writes go to the leader; see GET /v1/leader)")
            return []
        return [lease_is(fence.key, fence.lease)]

    def _fence_probe(self) -> list[pb.RequestOp]:
        """Failure-branch reads that tell a lost fence from a concurrent change."""
        return [get_op(self.fence.key)] if self.fence is not None else []

    def _fenced_out(self, resp: pb.TxnResponse, fence: Fence | None) -> None:
        if fence is None:
            return
        kvs = resp.responses[-1].response_range.kvs
        holder = kvs[0].lease if kvs else 0
        if holder != fence.lease:
            raise NotLeader(
                f"write refused: lease {fence.lease:x} no longer holds the leadership "
                f"({'held by lease %x' % holder if holder else 'no leader'}); another replica leads now"
            )

    # -- writes ----------------------------------------------------------------------------
    def _event_ops(self, events: list[Event], seq: int) -> list[pb.RequestOp]:
        ops = []
        for event in events:
            seq += 1
            data = event.to_json()
            data["seq"] = seq
            value = _dumps(data)
            ops.append(put_op(self._event_key(seq), value))
            ops.append(put_op(self._index_key(event.rollout, seq), value))
        return ops

    async def _commit(self, compares: list[pb.Compare], ops: list[pb.RequestOp]) -> bool:
        """Run a write transaction; False when a compare failed (and the fence still holds)."""
        fence = self.fence
        resp = await self.client.txn([*compares, *self._fence_compares()], ops, self._fence_probe())
        if resp.succeeded:
            return True
        self._fenced_out(resp, fence)
        return False

    async def create(self, rollout: Rollout, events: list[Event], *, release: Release | None = None) -> Rollout:
        rkey, akey, skey = self.key("rollouts", rollout.name), self.key("active", rollout.service), self._seq_key()
        relkey = self.key("releases", release.service) if release is not None else None
        for _ in range(_RETRIES):
            self._fence_compares()  # refuse before reading when this replica cannot write at all
            row, active, seq_kv, rel_kv = await self.client.read([rkey, akey, skey, relkey or skey])
            if row is not None and json.loads(row.value).get("active"):
                raise RolloutConflict(f"rollout {rollout.name!r} is already active; abort it first")
            if active is not None and active.value.decode() != rollout.name:
                raise RolloutConflict(f"service {rollout.service!r} already has an active rollout "
                                      f"{active.value.decode()!r}; abort it first")
            if row is not None:
                rollout.revision = Rollout.from_json(json.loads(row.value)).revision + 1
                for event in events:
                    event.revision = rollout.revision
            rollout.generation = 1
            seq = int(seq_kv.value) if seq_kv is not None else 0
            compares = [mod_is(rkey, row.mod_revision if row else 0), mod_is(akey, active.mod_revision if active else 0),
                        mod_is(skey, seq_kv.mod_revision if seq_kv else 0)]
            ops = [put_op(rkey, _dumps(rollout.to_json()))]
            ops.append(put_op(akey, rollout.name.encode()) if rollout.active else delete_op(akey))
            ops += self._event_ops(events, seq)
            ops.append(put_op(skey, str(seq + len(events)).encode()))
            ops += self._release_ops(release, rel_kv if relkey else None, compares)
            if await self._commit(compares, ops):
                self._committed(events, seq, release)
                return rollout
        raise StaleRollout(f"rollout {rollout.name!r}: the store stayed busy with concurrent changes; try again")

    async def update(self, rollout: Rollout, events: list[Event], *, release: Release | None = None) -> Rollout:
        expected = rollout.generation
        rkey, akey, skey = self.key("rollouts", rollout.name), self.key("active", rollout.service), self._seq_key()
        relkey = self.key("releases", release.service) if release is not None else None
        for _ in range(_RETRIES):
            self._fence_compares()
            row, active, seq_kv, rel_kv = await self.client.read([rkey, akey, skey, relkey or skey])
            stored = json.loads(row.value) if row is not None else None
            if stored is None or stored["generation"] != expected:
                raise StaleRollout(f"rollout {rollout.name!r} changed concurrently (generation {expected})")
            holder = active.value.decode() if active is not None else None
            if rollout.active and holder not in (None, rollout.name):
                raise RolloutConflict(f"service {rollout.service!r} already has an active rollout")
            seq = int(seq_kv.value) if seq_kv is not None else 0
            after = Rollout.from_json({**rollout.to_json(), "generation": expected + 1})
            compares = [mod_is(rkey, row.mod_revision), mod_is(akey, active.mod_revision if active else 0),
                        mod_is(skey, seq_kv.mod_revision if seq_kv else 0)]
            ops = [put_op(rkey, _dumps(after.to_json()))]
            if rollout.active:
                ops.append(put_op(akey, rollout.name.encode()))
            elif holder == rollout.name:
                ops.append(delete_op(akey))
            old_service = stored["service"]
            if old_service != rollout.service:
                old_key = self.key("active", old_service)
                old = (await self.client.read([old_key]))[0]
                if old is not None and old.value.decode() == rollout.name:
                    compares.append(mod_is(old_key, old.mod_revision))
                    ops.append(delete_op(old_key))
            ops += self._event_ops(events, seq)
            ops.append(put_op(skey, str(seq + len(events)).encode()))
            ops += self._release_ops(release, rel_kv if relkey else None, compares)
            if await self._commit(compares, ops):
                rollout.generation = expected + 1
                self._committed(events, seq, release)
                return rollout
            # A compare failed: another writer changed the rollout (stale) or only the counter (retry).
            current = (await self.client.read([rkey]))[0]
            if current is None or json.loads(current.value)["generation"] != expected:
                raise StaleRollout(f"rollout {rollout.name!r} changed concurrently (generation {expected})")
        raise StaleRollout(f"rollout {rollout.name!r}: the store stayed busy with concurrent changes; try again")

    def _release_ops(self, release: Release | None, current: pb.KeyValue | None,
                     compares: list[pb.Compare]) -> list[pb.RequestOp]:
        if release is None:
            return []
        key = self.key("releases", release.service)
        compares.append(mod_is(key, current.mod_revision if current is not None else 0))
        data = release.to_json()
        data["generation"] = release.generation + 1
        return [put_op(key, _dumps(data))]

    @staticmethod
    def _committed(events: list[Event], seq: int, release: Release | None) -> None:
        for i, event in enumerate(events, 1):
            event.seq = seq + i
        if release is not None:
            release.generation += 1

    async def save_judge_state(self, rollout: str, run: int, step: int, state: dict[str, Any]) -> None:
        await self.put(self.key("judge", rollout, str(run), str(step)), _dumps(state))

    async def put(self, key: bytes, value: bytes) -> int:
        """One write under the fence (e.g. the desired routing); the etcd revision that committed it."""
        fence = self.fence
        resp = await self.client.txn(self._fence_compares(), [put_op(key, value)], self._fence_probe())
        if not resp.succeeded:
            self._fenced_out(resp, fence)
            raise NotLeader("write refused: this replica no longer holds the leadership")
        return resp.header.revision

    # -- reads -----------------------------------------------------------------------------
    async def get(self, name: str) -> Rollout:
        kv = await self.client.get(self.key("rollouts", name))
        if kv is None:
            raise RolloutNotFound(name)
        return Rollout.from_json(json.loads(kv.value))

    async def list(self) -> list[Rollout]:
        resp = await self.client.prefix(self.key("rollouts", ""))
        return [Rollout.from_json(json.loads(kv.value)) for kv in resp.kvs]

    async def active(self) -> list[Rollout]:
        return [r for r in await self.list() if r.phase in ACTIVE]

    async def _events(self, base: bytes, after_seq: int, limit: int) -> list[Event]:
        start = base + f"{after_seq + 1:0{_SEQ_DIGITS}d}".encode()
        resp = await self.client.range(start, prefix_end(base), limit=limit)
        return [Event(**json.loads(kv.value)) for kv in resp.kvs]

    async def events(self, name: str, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        return await self._events(self.key("by-rollout", name, ""), after_seq, limit)

    async def all_events(self, after_seq: int = 0, limit: int = 1000) -> list[Event]:
        """Every rollout's events in global order: the feed for watchers (dashboard, replicas)."""
        return await self._events(self.key("events", ""), after_seq, limit)

    async def releases(self) -> list[Release]:
        resp = await self.client.prefix(self.key("releases", ""))
        return [Release.from_json(json.loads(kv.value)) for kv in resp.kvs]

    async def release(self, service: str) -> Release | None:
        kv = await self.client.get(self.key("releases", service))
        return Release.from_json(json.loads(kv.value)) if kv is not None else None

    async def judge_state(self, rollout: str, run: int, step: int) -> dict[str, Any] | None:
        kv = await self.client.get(self.key("judge", rollout, str(run), str(step)))
        return json.loads(kv.value) if kv is not None else None

    async def close(self) -> None:
        """Close the client when this store made it; safe to call twice."""
        if self._owns_client:
            await self.client.close()

    @classmethod
    def connect(cls, client: EtcdClient, prefix: str = "/weir", *, require_fence: bool = False) -> "EtcdStore":
        """A store that owns (and closes) its client."""
        store = cls(client, prefix, require_fence=require_fence)
        store._owns_client = True
        return store

