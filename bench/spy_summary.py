"""Summarise a py-spy ``--format raw`` (collapsed stacks) file: where did the samples go?

    .venv/bin/python bench/spy_summary.py /tmp/spy.txt [--top 30] [--thread-filter server_main]

Prints the leaf ("self") frames and a few inclusive buckets that matter for
the xDS server (gRPC aio reads/writes, the stream protocol, the registry,
asyncio itself, GC).
"""

from __future__ import annotations

import argparse
import collections
import re

BUCKETS = [
    ("xds/streams.py (protocol logic)", re.compile(r"\(xds/streams\.py")),
    ("xds/status.py (registry)", re.compile(r"\(xds/status\.py")),
    ("xds/cache.py set_snapshot", re.compile(r"set_snapshot \(xds/cache\.py")),
    ("server.py _serve", re.compile(r"_serve \(xds/server\.py")),
    ("server.py read()", re.compile(r"read \(xds/server\.py")),
    ("grpc cygrpc (any)", re.compile(r"cygrpc")),
    ("asyncio queues", re.compile(r"asyncio/queues\.py")),
    ("epoll/select", re.compile(r"select|epoll")),
    ("gc", re.compile(r"gc_collect|collect_main|gc\.collect|_PyObject_GC|gc_collect_main")),
]


def _frame_name(frame: str) -> str:
    return re.sub(r":\d+\)", ")", frame)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("file")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--thread-filter", default="", help="only stacks containing this text")
    args = p.parse_args()
    leaf: collections.Counter = collections.Counter()
    buckets: collections.Counter = collections.Counter()
    total = 0
    with open(args.file) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit() or (args.thread_filter and args.thread_filter not in stack):
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            leaf[_frame_name(frames[-1])] += n
            for name, rx in BUCKETS:
                if rx.search(stack):
                    buckets[name] += n
    print(f"{total} samples")
    print("\ninclusive buckets:")
    for name, _ in BUCKETS:
        print(f"  {100 * buckets[name] / max(total, 1):5.1f}%  {name}")
    print("\nself (leaf frames):")
    for name, n in leaf.most_common(args.top):
        print(f"  {100 * n / max(total, 1):5.1f}%  {name[:160]}")


if __name__ == "__main__":
    main()
