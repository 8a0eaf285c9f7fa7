"""Leadership and fencing over a real etcd member: one leader, failover, and a deposed leader cannot write."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools

import pytest

from control_plane.etcd.client import EtcdClient, parse_etcd_url, put_op
from control_plane.ha.leadership import Leadership
from control_plane.ha.session import Session
from control_plane.rollouts.model import Phase
from control_plane.store.etcd import EtcdStore, Fence
from control_plane.store.protocol import NotLeader
from devtools.etcd import EtcdCluster, etcd_binary
from tests.conftest import require
from tests.test_store_contract import event, rollout

_prefixes = itertools.count()


@pytest.fixture(scope="module")
def etcd():
    if etcd_binary() is None:
        yield None
        return
    with EtcdCluster(1) as cluster:
        yield cluster


@pytest.fixture
async def client(etcd):
    require(etcd is not None, "etcd binary (apt-get install etcd-server; `make test` installs it as root)")
    c = EtcdClient(etcd.endpoints)
    yield c
    await c.close()


@pytest.fixture
def prefix():
    return f"/weir-ha-{next(_prefixes)}"


async def until(predicate, timeout=15.0):
    """Wait for a condition (bounded: a failover that never happens fails the test, however fast the machine)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


def test_store_urls_are_checked_with_the_flag_named():
    assert parse_etcd_url("etcd://127.0.0.1:2379,10.0.0.2:2380") == [("127.0.0.1", 2379), ("10.0.0.2", 2380)]
    assert parse_etcd_url("etcd://etcd-0.weir:2379") == [("etcd-0.weir", 2379)]
    for bad in ("http://127.0.0.1:2379", "etcd://127.0.0.1", "etcd://:2379", "etcd://h:0", "etcd://h:99999"):
        with pytest.raises(ValueError, match="--store"):
            parse_etcd_url(bad)


async def test_a_store_without_the_fence_writes_nothing(client, prefix):
    store = EtcdStore(client, prefix, require_fence=True)
    with pytest.raises(NotLeader, match="not the leader"):
        await store.create(rollout(), [event(rollout(), "created")])
    with pytest.raises(NotLeader):
        await store.save_judge_state("echo", 1, 0, {"n": 1})
    assert await store.list() == [] and await store.all_events() == []


async def test_writes_stop_the_moment_the_lease_no_longer_holds_the_key(client, prefix):
    store = EtcdStore(client, prefix, require_fence=True)
    key = store.key("leader")
    old = await client.lease_grant(5)
    await client.put(key, b"old", lease=old)
    store.fence = Fence(key, old)
    r = await store.create(rollout(), [event(rollout(), "created")])
    await store.save_judge_state("echo", 1, 0, {"n": 1})
    # Another replica leads now: the old lease expired (revoked here) and a new lease holds the key.
    await client.lease_revoke(old)
    new = await client.lease_grant(5)
    await client.txn([], [put_op(key, b"new", new)])
    after = dataclasses.replace(r, phase=Phase.PROGRESSING, step=0, weight=10)
    with pytest.raises(NotLeader, match=f"held by lease {new:x}"):
        await store.update(after, [event(after)])
    with pytest.raises(NotLeader):
        await store.save_judge_state("echo", 1, 0, {"n": 2})
    with pytest.raises(NotLeader):
        await store.put(store.key("routing"), b"{}")
    reader = EtcdStore(client, prefix)
    assert (await reader.get("echo")).generation == 1
    assert [e.kind for e in await reader.all_events()] == ["created"]
    assert await reader.judge_state("echo", 1, 0) == {"n": 1}
    await client.lease_revoke(new)


class Replica:
    """A session and a leadership campaign, as `weir serve --store` runs them, with a counting 'engine'."""

    def __init__(self, client, prefix, name, ttl=2):
        self.store = EtcdStore(client, prefix, require_fence=True)
        self.session = Session(client, ttl)
        self.started = self.stopped = 0

        async def elected():
            self.started += 1

        async def deposed():
            self.stopped += 1

        self.leadership = Leadership(client, self.session, self.store, {"replica": name, "api": f"http://{name}"},
                                     on_elected=elected, on_deposed=deposed)

    def start(self):
        self.session.start()
        self.leadership.start()
        return self

    async def freeze(self):
        """Stop every task without telling etcd (a kill -9, or a pause that has not woken up yet).

        The store keeps its fence: a paused leader's memory still says it leads.
        """
        fence = self.store.fence
        for task in (self.leadership._task, self.session._task):
            task.cancel()
        await asyncio.gather(self.leadership._task, self.session._task, return_exceptions=True)
        self.store.fence = fence

    async def stop(self):
        await self.leadership.stop()
        await self.session.close()


async def test_one_leader_then_failover_and_the_old_leader_is_fenced(client, prefix):
    a = Replica(client, prefix, "a").start()
    b = Replica(client, prefix, "b").start()
    try:
        await until(lambda: a.leadership.is_leader or b.leadership.is_leader)
        await asyncio.sleep(1.0)  # both campaigned meanwhile: still exactly one
        assert [a.leadership.is_leader, b.leadership.is_leader].count(True) == 1
        leader, follower = (a, b) if a.leadership.is_leader else (b, a)
        assert leader.started == 1 and follower.started == 0
        assert (await follower.leadership.leader())["replica"] == ("a" if leader is a else "b")
        r = await leader.store.create(rollout(), [event(rollout(), "created")])

        # The leader freezes with its fence still set (it has not noticed anything).
        await leader.freeze()
        await until(lambda: follower.leadership.is_leader)
        assert follower.started == 1 and follower.store.fence is not None
        assert leader.store.fence is not None  # the frozen one still believes it leads...
        stale = dataclasses.replace(r, phase=Phase.PROGRESSING, step=0, weight=10)
        with pytest.raises(NotLeader):  # ...and cannot write
            await leader.store.update(stale, [event(stale)])
        # The new leader resumes from what is stored and writes.
        current = await follower.store.get("echo")
        moved = dataclasses.replace(current, phase=Phase.PROGRESSING, step=0, weight=10)
        await follower.store.update(moved, [event(moved)])
        seqs = [e.seq for e in await follower.store.all_events()]
        assert seqs == [1, 2]
    finally:
        await a.stop()
        await b.stop()


async def test_a_graceful_stop_hands_over_without_waiting_for_the_ttl(client, prefix):
    a = Replica(client, prefix, "a", ttl=30).start()
    await until(lambda: a.leadership.is_leader)
    b = Replica(client, prefix, "b", ttl=30).start()
    try:
        await asyncio.sleep(0.3)
        assert not b.leadership.is_leader
        await a.stop()
        assert a.stopped == 1 and a.store.fence is None
        await until(lambda: b.leadership.is_leader, timeout=10)  # far less than the 30 s TTL
    finally:
        await b.stop()
