"""Access-log relay benchmark: how many entries per second one follower relays to the leader.

    .venv/bin/python bench/relay.py [--entries 50] [--messages 2000] [--repeats 5] [--ingest]

The leader runs alone in a subprocess: an ``XdsServer`` carrying the
``RelayReceiver`` (``control_plane/ha/relay.py``) bound to an
``AccessLogSource``; by default it acknowledges without ingesting, so the
figure is the follower's side (``--ingest``: the leader also ingests every
relayed message, as a real one does). This process is the follower: an
``AccessLogRelay`` whose taps receive ``--messages`` ALS messages of
``--entries`` entries each (the bytes ``bench/als_decode.py`` builds, as
Envoy 1.40 fills them), as fast as they come, and relay them over one stream
on loopback. One run: from the first tap call until the leader has
acknowledged the last item. Measured per run, then the median of ``--repeats``:

* ``entries_per_s``: entries relayed per second of wall time;
* ``follower_cpu_entries_per_s``: entries per second of this process's CPU
  (all threads, gRPC's included): the relay's cost per follower core, taps
  included;
* ``leader_cpu_s``: the leader process's CPU per run.

Prints one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time

from _benchlib import die_with_parent, emit, log, median

from analysis.sources.access_log import AccessLogSource
from control_plane.ha.relay import AccessLogRelay, RelayReceiver
from xds.server import XdsServer


async def leader(ingest: bool) -> None:
    source = AccessLogSource()
    receiver = RelayReceiver()
    receiver.bind(source, replica="leader", is_leader=lambda: True)
    if not ingest:
        receiver.apply = lambda origin, items: _count(origin, items)  # type: ignore[method-assign]
    server = XdsServer(extra_handlers=[receiver.handler()])
    port = await server.start("127.0.0.1", 0)
    print(port, flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        if line.strip() == b"cpu":
            print(f"{time.process_time():.6f} {source.counters['entries']}", flush=True)
    await server.stop()


def _count(origin, items) -> int:
    """Acknowledge without ingesting (the follower's cost alone)."""
    n = len(items)
    if n:
        origin.last_seq = items[-1].seq
    return n


async def follower(port: int, messages: list[bytes], entries: int, repeats: int, proc: subprocess.Popen) -> dict:
    source = AccessLogSource()
    relay = AccessLogRelay("follower", source).attach()
    relay.start()
    relay.set_leader("leader", f"127.0.0.1:{port}")
    stream = source.open_stream("ipv4:127.0.0.1:1")
    stream.node = "envoy-1"
    relay.on_open(stream)
    while relay.connected_to is None:
        await asyncio.sleep(0.01)

    def leader_cpu() -> float:
        proc.stdin.write(b"cpu\n")
        proc.stdin.flush()
        return float(proc.stdout.readline().split()[0])

    runs, cpu_rates, leader_cpu_s = [], [], []
    for i in range(repeats + 1):  # the first run warms up
        l0 = await asyncio.to_thread(leader_cpu)
        t0, c0 = time.perf_counter(), time.process_time()
        for raw in messages:
            relay.on_message(stream, raw)
            while relay.buffer.unsent > 256:  # a steady backlog, well inside the buffer's bound (no busy wait)
                await asyncio.sleep(0.001)
        while len(relay.buffer):
            await asyncio.sleep(0.0005)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        l1 = await asyncio.to_thread(leader_cpu)
        total = len(messages) * entries
        if i:
            runs.append(total / wall)
            cpu_rates.append(total / cpu if cpu > 0 else float("inf"))
            leader_cpu_s.append(l1 - l0)
        log(f"run {i}: {total / wall:,.0f} entries/s wall, {total / max(cpu, 1e-9):,.0f} per follower CPU second, "
            f"leader CPU {l1 - l0:.3f} s, {relay.counters['batches']} batches so far")
    status = relay.status()
    await relay.stop()
    return {"runs": runs, "cpu": cpu_rates, "leader_cpu_s": leader_cpu_s, "dropped": status["dropped_items"],
            "batches": status["batches"], "bytes": status["bytes"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=50, help="entries per message (Envoy sends ~40-60)")
    ap.add_argument("--messages", type=int, default=10_000, help="messages per run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ingest", action="store_true", help="the leader ingests what it receives (as a real one)")
    ap.add_argument("--leader", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.leader:
        asyncio.run(leader(args.ingest))
        return
    from als_decode import batch

    data = batch(args.entries)
    proc = subprocess.Popen([sys.executable, __file__, "--leader", *(["--ingest"] if args.ingest else [])],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=die_with_parent)
    try:
        port = int(proc.stdout.readline())
        out = asyncio.run(follower(port, [data] * args.messages, args.entries, args.repeats, proc))
    finally:
        proc.stdin.close()
        proc.wait(10)
    emit({
        "bench": "relay",
        "entries_per_message": args.entries,
        "message_bytes": len(data),
        "messages_per_run": args.messages,
        "repeats": args.repeats,
        "leader_ingests": args.ingest,
        "entries_per_s": round(median(out["runs"])),
        "follower_cpu_entries_per_s": round(median(out["cpu"])),
        "leader_cpu_s_per_run": round(median(out["leader_cpu_s"]), 3),
        "dropped_items": out["dropped"],
        "mean_batch_kb": round(out["bytes"] / max(out["batches"], 1) / 1024, 1),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
    })


if __name__ == "__main__":
    main()
