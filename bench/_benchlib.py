"""Helpers shared by the benchmarks in this directory (not part of Weir itself)."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools.devstack import free_port  # noqa: E402,F401  (re-exported for the benches)
from xds.server import raise_fd_limit  # noqa: E402,F401

GROUP = "bench"  # node cluster of every simulated proxy = its snapshot group


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def emit(obj) -> None:
    """One JSON line on stdout (the only thing a benchmark writes there)."""
    sys.stdout.write(json.dumps(obj, separators=(", ", ": ")) + "\n")
    sys.stdout.flush()


def die_with_parent() -> None:
    """preexec_fn for children: SIGTERM when the benchmark process dies (Linux)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


_DIE_WITH_PARENT = ("import ctypes, runpy, signal, sys; ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM); "
                    "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)")


def python_module_dying_with_parent(module: str, *args: str) -> list[str]:
    """argv of ``python -m module args...`` that sets PR_SET_PDEATHSIG itself, after exec.

    The same safety net as :func:`die_with_parent` without a preexec_fn: Python code between fork and exec in a
    process whose gRPC threads are running (Weir in the benchmark's process) can crash the child before it execs
    (bench/reaction.py saw about half its load generators die with SIGSEGV and no output)."""
    return [sys.executable, "-c", _DIE_WITH_PARENT, module, *args]


def rss_kb(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_cpu(pids: list[int]) -> tuple[float, int, int]:
    """(monotonic time, busy jiffies of the whole machine, jiffies used by `pids` and this process)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # minus idle and iowait
    ours = 0
    for pid in [os.getpid(), *pids]:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            ours += int(stat[11]) + int(stat[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return time.monotonic(), busy, ours


def background_pct(before: tuple, after: tuple) -> float:
    """CPU used by processes other than this benchmark's, as % of the whole machine."""
    hz = os.sysconf("SC_CLK_TCK")
    wall = after[0] - before[0]
    other = max(0, (after[1] - before[1]) - (after[2] - before[2])) / hz
    return 100.0 * other / max(wall * os.cpu_count(), 1e-9)


def wait_quiet(max_wait: float, pids: list[int] = (), threshold_pct: float = 10.0) -> float:
    """Wait (up to max_wait s) until other processes use < threshold_pct of the machine over 1 s.

    The benchmarks share the machine; a test suite running meanwhile inflates every
    latency. Returns the last background share measured (logged when above threshold).
    """

    deadline = time.monotonic() + max_wait
    while True:
        before = machine_cpu(list(pids))
        time.sleep(1.0)
        pct = background_pct(before, machine_cpu(list(pids)))
        if pct < threshold_pct:
            return pct
        if time.monotonic() >= deadline:
            log(f"WARNING: other processes use {pct:.0f}% of the machine's CPU; figures will be pessimistic")
            return pct
        log(f"waiting for a quiet machine (other processes use {pct:.0f}% CPU)")


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(-(-q * len(sorted_values) // 100)) - 1))
    return sorted_values[k]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def routing_config(services: int, first_weight: int) -> dict:
    """`services` services, one port each; service 0's split is first_weight/(100-first_weight)."""
    out = []
    for i in range(services):
        w = first_weight if i == 0 else 90
        out.append({
            "name": f"svc{i}",
            "port": 10000 + i,
            "backends": [
                {"version": "v1", "endpoints": [f"127.0.0.1:{18000 + 2 * i}"]},
                {"version": "v2", "endpoints": [f"127.0.0.1:{18001 + 2 * i}"]},
            ],
            "split": {"v1": w, "v2": 100 - w},
        })
    return {"listenAddress": "127.0.0.1", "services": out}


def build_snapshot(services: int, first_weight: int, routing_dict: dict | None = None):
    """Translate a routing config into a fresh Snapshot (every resource serialised once)."""
    from xds.routing import parse_routing
    from xds.snapshot import snapshot_from_envoy
    from xds.translate import translate

    data = routing_dict if routing_dict is not None else routing_config(services, first_weight)
    return snapshot_from_envoy(translate(parse_routing(data)))
