"""The store protocol's guarantees, run against every store: SQLite and a real etcd.

One suite, parametrized over both implementations, so the replicated store
can never drift from what the engine relies on: a decision and its events
commit together (with the release they move), a stale writer is refused,
one active rollout per service, a global event sequence without gap or
duplicate, judge state per (rollout, run, step), and nothing lost when the
store is closed and opened again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

import pytest

from control_plane.rollouts.model import Event, Phase, Release, Rollout, RolloutConflict, RolloutNotFound
from control_plane.store import SQLiteStore, StaleRollout
from devtools.etcd import EtcdCluster, etcd_binary
from tests.conftest import require

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def etcd():
    """One real etcd member for the module; every test uses a prefix of its own."""
    if etcd_binary() is None:
        yield None
        return
    with EtcdCluster(1) as cluster:
        yield cluster


class Stores:
    """Opens stores of one kind over the same data (to check what survives a reopen)."""

    def __init__(self, kind: str, tmp_path, etcd):
        self.kind, self.tmp_path, self.etcd = kind, tmp_path, etcd
        self.prefix = f"/weir-test-{next(_prefixes)}"
        self.opened = []

    def open(self):
        if self.kind == "sqlite":
            store = SQLiteStore(self.tmp_path / "weir.db")
        else:
            from control_plane.etcd.client import EtcdClient
            from control_plane.store.etcd import EtcdStore

            store = EtcdStore.connect(EtcdClient(self.etcd.endpoints), self.prefix)
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "etcd"])
async def stores(request, tmp_path, etcd):
    if request.param == "etcd":
        require(etcd is not None, "etcd binary (apt-get install etcd-server; `make test` installs it as root)")
    made = Stores(request.param, tmp_path, etcd)
    yield made
    for store in made.opened:
        await store.close()


@pytest.fixture
async def store(stores):
    return stores.open()


def rollout(name="echo", service="echo", **changes) -> Rollout:
    base = Rollout(name=name, service=service, group="*", policy={"metadata": {"name": name}}, policy_hash="h1",
                   stable_version="v1", canary_version="v2", created_at=100.0, updated_at=100.0)
    return dataclasses.replace(base, **changes)


def event(r: Rollout, kind="step", **changes) -> Event:
    base = Event(r.name, r.revision, kind, r.phase.value, r.phase.value, r.step, r.weight, f"{kind} of {r.name}",
                 r.policy_hash, at=101.0)
    return dataclasses.replace(base, **changes)


def release(service="echo", version="v1", **changes) -> Release:
    base = Release(service=service, group="*", version=version, endpoints=["127.0.0.1:8081"],
                   settings={"service": {"name": service}}, updated_at=100.0)
    return dataclasses.replace(base, **changes)


async def advance(store, r: Rollout, n_events=1, **changes) -> Rollout:
    after = dataclasses.replace(r, **changes)
    return await store.update(after, [event(after) for _ in range(n_events)])


# --------------------------------------------------------------------------- create, read


async def test_create_stores_the_rollout_its_events_and_release(store):
    r = rollout()
    created = await store.create(r, [event(r, "created")], release=release())
    assert created.generation == 1
    got = await store.get("echo")
    assert got == created and got.phase is Phase.PENDING
    assert [x.name for x in await store.list()] == ["echo"]
    (e,) = await store.events("echo")
    assert e.kind == "created" and e.seq is not None and e.seq >= 1
    live = await store.release("echo")
    assert live.version == "v1" and live.generation == 1
    assert [x.service for x in await store.releases()] == ["echo"]
    assert await store.release("other") is None


async def test_unknown_rollout_is_not_found(store):
    with pytest.raises(RolloutNotFound):
        await store.get("nope")
    assert await store.events("nope") == []
    assert await store.list() == []


async def test_list_is_ordered_by_name(store):
    for name in ("zeta", "alpha", "mid"):
        r = rollout(name, service=name)
        await store.create(r, [event(r, "created")])
    assert [r.name for r in await store.list()] == ["alpha", "mid", "zeta"]


# --------------------------------------------------------------------------- updates and stale writers


async def test_update_bumps_the_generation_and_appends_events_in_order(store):
    r = await store.create(rollout(), [event(rollout(), "created")])
    r = await advance(store, r, 2, phase=Phase.PROGRESSING, step=0, weight=10)
    assert r.generation == 2
    got = await store.get("echo")
    assert (got.phase, got.weight, got.generation) == (Phase.PROGRESSING, 10, 2)
    seqs = [e.seq for e in await store.events("echo")]
    assert len(seqs) == 3 and seqs == sorted(seqs) and len(set(seqs)) == 3


async def test_a_stale_writer_is_refused_and_writes_nothing(store):
    r = await store.create(rollout(), [event(rollout(), "created")])
    stale = dataclasses.replace(r)
    await advance(store, r, phase=Phase.PROGRESSING, step=0, weight=10)
    with pytest.raises(StaleRollout):
        await advance(store, stale, phase=Phase.FAILED, message="from a stale reader")
    got = await store.get("echo")
    assert got.phase is Phase.PROGRESSING and got.generation == 2
    assert [e.kind for e in await store.events("echo")] == ["created", "step"]
    assert stale.generation == 1  # the refused writer's copy is unchanged


async def test_concurrent_writers_of_one_generation_exactly_one_wins(store):
    r = await store.create(rollout(), [event(rollout(), "created")])
    copies = [dataclasses.replace(r, weight=w, message=f"writer {w}") for w in (10, 20, 30, 40)]
    results = await asyncio.gather(*(store.update(c, [event(c)]) for c in copies), return_exceptions=True)
    winners = [x for x in results if isinstance(x, Rollout)]
    assert len(winners) == 1
    assert all(isinstance(x, StaleRollout) for x in results if not isinstance(x, Rollout))
    got = await store.get("echo")
    assert got.weight == winners[0].weight and got.generation == 2
    assert len(await store.events("echo")) == 2  # the winner's event only


async def test_concurrent_writers_of_different_rollouts_get_a_gapless_sequence(store):
    made = []
    for i in range(5):
        r = rollout(f"r{i}", service=f"s{i}")
        made.append(await store.create(r, [event(r, "created")]))
    await asyncio.gather(*(advance(store, r, 3, weight=10) for r in made))
    seqs = [e.seq for e in await store.all_events()]
    assert seqs == list(range(seqs[0], seqs[0] + 20))


async def test_a_promotion_moves_the_release_in_the_same_transaction(store):
    r = await store.create(rollout(), [event(rollout(), "created")], release=release())
    first = await store.release("echo")
    done = dataclasses.replace(r, phase=Phase.SUCCEEDED, weight=100)
    new_live = release(version="v2", rollout="echo", revision=1, generation=first.generation)
    await store.update(done, [event(done, "phase")], release=new_live)
    live = await store.release("echo")
    assert live.version == "v2" and live.generation == first.generation + 1 == new_live.generation
    # A stale decision moves neither the rollout nor the release.
    with pytest.raises(StaleRollout):
        await store.update(dataclasses.replace(r, phase=Phase.FAILED), [event(r)], release=release(version="v9"))
    assert (await store.release("echo")).version == "v2"


# --------------------------------------------------------------------------- one active rollout per service


async def test_one_active_rollout_per_service(store):
    r = await store.create(rollout("a"), [event(rollout("a"), "created")])
    with pytest.raises(RolloutConflict, match="already has an active rollout"):
        await store.create(rollout("b"), [event(rollout("b"), "created")])
    with pytest.raises(RolloutConflict, match="already active"):
        await store.create(rollout("a"), [])
    assert [x.name for x in await store.list()] == ["a"]
    await advance(store, r, phase=Phase.ROLLED_BACK)
    b = await store.create(rollout("b"), [event(rollout("b"), "created")])
    assert b.generation == 1 and {x.name for x in await store.list()} == {"a", "b"}


async def test_a_finished_rollout_is_replaced_as_its_next_revision(store):
    r = await store.create(rollout(), [event(rollout(), "created")])
    await advance(store, r, phase=Phase.SUCCEEDED)
    again = rollout(canary_version="v3")
    ev = event(again, "created")
    stored = await store.create(again, [ev])
    assert stored.revision == 2 and stored.generation == 1 and ev.revision == 2
    assert (await store.get("echo")).canary_version == "v3"
    assert [e.revision for e in await store.events("echo")] == [1, 1, 2]


# --------------------------------------------------------------------------- events


async def test_events_pages_per_rollout_and_globally(store):
    a, b = rollout("a", service="a"), rollout("b", service="b")
    a = await store.create(a, [event(a, "created")])
    b = await store.create(b, [event(b, "created")])
    a = await advance(store, a, 2)
    b = await advance(store, b, 1)
    everything = await store.all_events()
    assert [e.rollout for e in everything] == ["a", "b", "a", "a", "b"]
    seqs = [e.seq for e in everything]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert [e.seq for e in await store.events("a")] == [seqs[0], seqs[2], seqs[3]]
    assert [e.seq for e in await store.events("a", after_seq=seqs[2])] == [seqs[3]]
    assert [e.seq for e in await store.all_events(after_seq=seqs[1], limit=2)] == seqs[2:4]
    assert [e.seq for e in await store.events("b", limit=1)] == [seqs[1]]


# --------------------------------------------------------------------------- judge state


async def test_judge_state_is_kept_per_rollout_run_and_step(store):
    r = await store.create(rollout(), [event(rollout(), "created")])
    assert await store.judge_state("echo", 1, 0) is None
    await store.save_judge_state("echo", 1, 0, {"looks": 1})
    await store.save_judge_state("echo", 1, 0, {"looks": 2})
    await store.save_judge_state("echo", 1, 1, {"looks": 7})
    await store.save_judge_state("echo", 2, 0, {"looks": 9})
    assert await store.judge_state("echo", 1, 0) == {"looks": 2}
    assert await store.judge_state("echo", 1, 1) == {"looks": 7}
    assert await store.judge_state("echo", 2, 0) == {"looks": 9}
    assert await store.judge_state("other", 1, 0) is None
    assert r.generation == (await store.get("echo")).generation  # judge state is no decision


# --------------------------------------------------------------------------- durability


async def test_nothing_is_lost_across_a_reopen(stores):
    store = stores.open()
    r = await store.create(rollout(), [event(rollout(), "created")], release=release())
    r = await advance(store, r, phase=Phase.PROGRESSING, step=1, weight=50)
    await store.save_judge_state("echo", 1, 1, {"n": 3})
    before = (await store.get("echo"), await store.all_events(), await store.releases())
    await store.close()
    await store.close()  # safe twice
    again = stores.open()
    assert (await again.get("echo"), await again.all_events(), await again.releases()) == before
    assert await again.judge_state("echo", 1, 1) == {"n": 3}
    # And the sequence continues after the last stored event.
    await advance(again, before[0], 1)
    seqs = [e.seq for e in await again.all_events()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
