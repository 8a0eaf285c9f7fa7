"""The xDS server's per-stream writer: in order, one write in flight, nothing left behind, quiet on failure."""

from __future__ import annotations

import asyncio

from xds.server import _Writer


class Stream:
    def __init__(self):
        self.outbox: list[bytes] = []


class Context:
    """grpc.aio's context.write, with writes that finish when the test says so."""

    def __init__(self, fail_on: bytes | None = None):
        self.written: list[bytes] = []
        self.inflight = 0
        self.most_inflight = 0
        self.release = asyncio.Event()
        self.fail_on = fail_on

    async def write(self, payload: bytes) -> None:
        self.inflight += 1
        self.most_inflight = max(self.most_inflight, self.inflight)
        try:
            await self.release.wait()
            if payload == self.fail_on:
                raise RuntimeError("stream closed")
            self.written.append(payload)
        finally:
            self.inflight -= 1


async def settle():
    for _ in range(20):
        await asyncio.sleep(0)


async def test_writes_go_out_in_order_one_at_a_time_including_output_added_meanwhile():
    stream, context = Stream(), Context()
    writer = _Writer(stream, context)
    stream.outbox += [b"cds", b"eds"]
    writer.flush()
    await settle()
    stream.outbox.append(b"lds")  # arrives while a write is in flight
    writer.flush()
    context.release.set()
    await settle()
    assert context.written == [b"cds", b"eds", b"lds"] and stream.outbox == []
    assert context.most_inflight == 1
    stream.outbox.append(b"rds")  # a later push, nothing in flight
    writer.flush()
    await settle()
    assert context.written[-1] == b"rds"


async def test_a_failed_write_stops_the_stream_output_and_close_retrieves_it():
    stream, context = Stream(), Context(fail_on=b"cds")
    writer = _Writer(stream, context)
    stream.outbox.append(b"cds")
    writer.flush()
    context.release.set()
    await settle()
    stream.outbox.append(b"eds")
    writer.flush()
    await settle()
    assert context.written == [] and writer.closed
    writer.close()  # retrieves the failure: no "exception was never retrieved" at GC
    assert writer.inflight is None
