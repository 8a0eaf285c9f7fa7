"""Server-sent events from the store's global event feed: the dashboard's live updates.

Why from the store and not from memory: ``store.all_events(after_seq)`` is the
durable, ordered feed (one global sequence), so a client that reconnects with
``Last-Event-ID`` gets exactly what it missed, including across a restart of
Weir. The :class:`EventHub` is an engine observer: ``observe_event`` wakes the
open streams, which then read the store; nothing polls on a timer.

Each stream also sends, for a per-rollout stream, a ``series`` message now and
then (the traffic charts move without any event), and a comment to keep idle
proxies from closing the connection. A stream ends after ``max_s`` seconds; the
browser's ``EventSource`` reconnects with ``Last-Event-ID`` by itself (and the
dashboard's session cookie is renewed on the way).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, AsyncIterator, Awaitable, Callable

__all__ = ["EventHub", "end_streams_on_exit", "event_stream", "format_sse"]

#: Events read from the store per query while catching up.
BATCH = 500


class EventHub:
    """Wakes every open stream when the engine emits an event (any thread)."""

    def __init__(self) -> None:
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self.closed = False
        self.version = 0  # bumped per event: caches of what events change key on it

    def observe_event(self, event: Any) -> None:
        self.version += 1
        for loop, flag in list(self._waiters):
            try:
                loop.call_soon_threadsafe(flag.set)
            except RuntimeError:  # that loop is closed: its stream is gone
                self._waiters.discard((loop, flag))

    def subscribe(self) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        self._waiters.add(waiter)
        return waiter

    def unsubscribe(self, waiter) -> None:
        self._waiters.discard(waiter)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        self.closed = True
        self.observe_event(None)

    @property
    def streams(self) -> int:
        return len(self._waiters)


def format_sse(data: Any, *, event: str | None = None, id: int | None = None) -> bytes:
    """One SSE message; ``data`` as compact JSON on one line."""
    lines = []
    if id is not None:
        lines.append(f"id: {id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, separators=(",", ":")))
    return ("\n".join(lines) + "\n\n").encode()


async def event_stream(
    hub: EventHub,
    read: Callable[[int], Awaitable[list]],
    *,
    after: int,
    rollout: str | None = None,
    extra: Callable[[], Awaitable[Any]] | None = None,
    extra_every_s: float = 2.0,
    keepalive_s: float = 15.0,
    max_s: float = 300.0,
    poll_s: Callable[[], float | None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[bytes]:
    """Events after ``after`` (``read(after_seq)`` returns the next stored events), then new ones as they come.

    ``rollout`` keeps only that rollout's events; ``extra`` (a per-rollout series)
    is sent as a ``series`` message at the start, after events and every
    ``extra_every_s`` seconds. ``poll_s()``, when it gives a number, also re-reads
    the store that often: on a follower replica the events are written by the
    leader, so no local observer wakes the stream.
    """
    waiter = hub.subscribe()
    _, flag = waiter
    started = clock()
    last_extra = None
    last_write = started
    try:
        yield b"retry: 2000\n\n"
        while not hub.closed and clock() - started < max_s:
            flag.clear()  # before reading: an event stored after the read sets it again
            sent = 0
            while True:
                events = await read(after)
                for event in events:
                    after = event.seq
                    if rollout is None or event.rollout == rollout:
                        yield format_sse(event.to_json(), event="event", id=event.seq)
                        sent += 1
                        last_write = clock()
                if len(events) < BATCH:
                    break
            now = clock()
            if extra is not None and (sent or last_extra is None or now - last_extra >= extra_every_s):
                yield format_sse(await extra(), event="series")
                last_extra = last_write = now
            poll = poll_s() if poll_s is not None else None
            timeout = min(keepalive_s, extra_every_s if extra is not None else keepalive_s,
                          poll if poll is not None else keepalive_s, max(0.0, max_s - (now - started)))
            try:
                await asyncio.wait_for(flag.wait(), timeout)
            except asyncio.TimeoutError:
                if clock() - last_write >= keepalive_s - 1e-9:
                    yield b": keepalive\n\n"
                    last_write = clock()
    finally:
        hub.unsubscribe(waiter)


def end_streams_on_exit(server: Any, hub: EventHub) -> None:
    """End the open event streams as soon as a uvicorn server is told to stop (SIGINT, SIGTERM).

    Otherwise each open dashboard holds the graceful shutdown until its timeout,
    and the cancelled stream is logged as an error.
    """
    handle_exit = server.handle_exit

    def on_exit(*args: Any) -> None:
        hub.close()
        handle_exit(*args)

    server.handle_exit = on_exit
