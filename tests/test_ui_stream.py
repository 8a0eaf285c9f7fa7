"""The event stream's loop without a network: who wakes it, when it re-reads the store, keep-alives."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from control_plane.ui.stream import EventHub, event_stream


@dataclass
class FakeEvent:
    seq: int
    rollout: str = "r"

    def to_json(self) -> dict:
        return {"seq": self.seq, "rollout": self.rollout}


class Feed:
    """The store's global feed: events appended by someone else (the leader, on a follower replica)."""

    def __init__(self) -> None:
        self.events: list[FakeEvent] = []
        self.reads = 0

    async def read(self, after: int) -> list[FakeEvent]:
        self.reads += 1
        return [e for e in self.events if e.seq > after]


async def collect(stream, until) -> list[bytes]:
    out = []
    async for chunk in stream:
        out.append(chunk)
        if until(out):
            break
    await stream.aclose()
    return out


def ids(chunks: list[bytes]) -> list[int]:
    return [int(c.split(b"\n")[0][4:]) for c in chunks if c.startswith(b"id: ")]


def test_a_follower_stream_sees_events_nobody_here_announces():
    """On a follower the leader writes the events: no local observer wakes the hub, so the stream re-reads."""

    async def main():
        hub, feed = EventHub(), Feed()
        stream = event_stream(hub, feed.read, after=0, poll_s=lambda: 0.02, keepalive_s=30)

        async def leader_writes():
            await asyncio.sleep(0.1)
            feed.events.append(FakeEvent(1))  # stored elsewhere; hub.observe_event is never called

        writer = asyncio.create_task(leader_writes())
        chunks = await asyncio.wait_for(collect(stream, lambda out: ids(out) == [1]), 5)
        await writer
        return chunks

    assert ids(asyncio.run(main())) == [1]


def test_without_polling_only_a_wake_reads_the_store_again():
    """A single replica's stream does not poll: between wakes it waits (one read per wake, not per tick)."""

    async def main():
        hub, feed = EventHub(), Feed()
        stream = event_stream(hub, feed.read, after=0, poll_s=lambda: None, keepalive_s=30)
        task = asyncio.create_task(collect(stream, lambda out: 1 in ids(out)))
        await asyncio.sleep(0.3)
        reads_while_idle = feed.reads
        feed.events.append(FakeEvent(1))
        hub.observe_event(feed.events[-1])
        chunks = await asyncio.wait_for(task, 5)
        return reads_while_idle, chunks

    reads_while_idle, chunks = asyncio.run(main())
    assert reads_while_idle == 1 and ids(chunks) == [1]


def test_a_polling_stream_still_sends_keepalives_when_idle():
    async def main():
        hub, feed = EventHub(), Feed()
        stream = event_stream(hub, feed.read, after=0, poll_s=lambda: 0.01, keepalive_s=0.1)
        chunks = await asyncio.wait_for(collect(stream, lambda out: b": keepalive\n\n" in out), 5)
        return feed.reads, chunks

    reads, chunks = asyncio.run(main())
    assert chunks.count(b": keepalive\n\n") == 1 and reads >= 5  # polled several times before the keep-alive
