#!/usr/bin/env python3
"""Reaction time: from the onset of a canary regression to 0% canary at Envoy, with real parts.

Weir (in this process: xDS, access logs, engine, sequential judge), one real
Envoy, two demo model servers as processes (devtools.model_servers), and the
open-loop load generator as a process at `--rate` requests/s through Envoy.
The canary holds 10% of live traffic (a step that never promotes on its own);
after `--warmup` seconds of healthy traffic the canary starts to regress
(an admin call sets its regression knobs; the server records the onset). We
read from the stored events when the rollback was decided and when Envoy ACKed
the 0% routing, and from the canary server how many requests it served from
the onset until then (the "bad" requests users got).

Cases, three runs each (one JSON line per case, medians):
  latency+50%   OIP REST infer, median 20 ms -> 30 ms
  errors-5%     OIP REST infer, 5% of the canary's requests fail with 500
  ttfb+100%     streamed chat completions, time to first token 60 ms -> 120 ms

Target: median onset -> 0% canary at Envoy <= 5 s for each case.
Usage: bench/reaction.py [--runs 3] [--rate 200] [--warmup 10] [--case NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from _benchlib import ROOT, emit, free_port, log, python_module_dying_with_parent  # noqa: F401  (sets sys.path)
from control_plane.assembly import start_control_plane
from devtools.devstack import EnvoyProcess
from devtools.model_servers.launcher import ModelServerProcess
from policies import RolloutPolicy
from xds.bootstrap import render_bootstrap

CASES = {
    "latency+50%": {
        "protocol": "rest", "knobs": {"latency_ms": 20, "latency_sigma": 0.2},
        "regression": {"regression_after": 0, "regression_latency_factor": 1.5},
        "slos": [{"metric": "error-rate", "maxIncrease": "1%"}, {"metric": "latency", "quantile": 0.5, "maxIncrease": "10%"}],
    },
    "errors-5%": {
        "protocol": "rest", "knobs": {"latency_ms": 20, "latency_sigma": 0.2},
        "regression": {"regression_after": 0, "regression_error_rate": 0.05},
        "slos": [{"metric": "error-rate", "maxIncrease": "1%"}, {"metric": "latency", "quantile": 0.5, "maxIncrease": "10%"}],
    },
    "ttfb+100%": {
        "protocol": "chat", "knobs": {"ttfc_ms": 60, "ttfc_sigma": 0.2, "token_ms": 5, "tokens": 8},
        "regression": {"regression_after": 0, "regression_ttfc_factor": 2.0},
        "slos": [{"metric": "error-rate", "maxIncrease": "1%"}, {"metric": "latency", "quantile": 0.5, "maxIncrease": "50%"},
                 {"metric": "ttfb", "quantile": 0.5, "maxIncrease": "20%"}],
    },
}


def policy(port: int, stable: str, canary: str, slos: list[dict]) -> RolloutPolicy:
    return RolloutPolicy.model_validate({
        "apiVersion": "weir.dev/v1alpha1", "kind": "RolloutPolicy", "metadata": {"name": "bench"},
        "spec": {
            "service": {"name": "bench", "domains": ["*"], "port": port},
            "stable": {"version": "v1", "endpoints": [stable]},
            "canary": {"version": "v2", "endpoints": [canary]},
            # A step that never passes on its own (min requests out of reach): the canary stays at 10%.
            "strategy": {"canary": {"steps": [{"weight": 10, "minRequests": 10_000_000, "maxDuration": "1h"}, {"weight": 100}]}},
            "analysis": {"alpha": 0.05, "slos": slos},
        },
    })


def start_load(protocol: str, port: int, rate: float, seconds: float, stderr_path: Path) -> subprocess.Popen:
    cmd = python_module_dying_with_parent("devtools.loadgen", "--protocol", protocol, "--target", f"http://127.0.0.1:{port}",
                                          "--rate", str(rate), "--duration", str(seconds))
    with open(stderr_path, "wb") as err:  # kept: a generator that died says why
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


def stop_load(load: subprocess.Popen) -> None:
    try:
        os.killpg(load.pid, signal.SIGKILL)
    except ProcessLookupError:  # it had already exited (and was reaped by the poll that noticed)
        pass
    load.wait()


async def one_run(case: str, spec: dict, rate: float, warmup: float, tmp: Path) -> dict:
    stable = ModelServerProcess(model_version="v1", grpc_port=None, **spec["knobs"])
    canary = ModelServerProcess(model_version="v2", grpc_port=None, **spec["knobs"])
    await asyncio.to_thread(stable.start)
    await asyncio.to_thread(canary.start)
    cp = await start_control_plane(db=tmp / f"weir-{time.monotonic_ns()}.db", listen_address="127.0.0.1", tick_s=0.25)
    envoy = EnvoyProcess(render_bootstrap("bench-1", "bench", "127.0.0.1", cp.xds_port, admin_port=free_port()))
    port = free_port()
    load = None
    try:
        await cp.engine.submit(policy(port, f"127.0.0.1:{stable.rest_port}", f"127.0.0.1:{canary.rest_port}", spec["slos"]))
        await asyncio.to_thread(envoy.start)
        await asyncio.to_thread(envoy.wait_listening, port)
        load_err = tmp / f"loadgen-{time.monotonic_ns()}.err"
        load = start_load(spec["protocol"], port, rate, warmup + 60, load_err)
        await asyncio.sleep(warmup)
        before = await cp.engine.get("bench")
        if load.poll() is not None:
            raise RuntimeError(f"the load generator exited during the warm-up (code {load.returncode}): "
                               f"{load_err.read_text(errors='replace')[-400:]!r}")
        if before.phase.value != "Progressing":
            raise RuntimeError(f"the healthy canary did not hold at 10% ({before.phase.value}: {before.message})")
        await asyncio.to_thread(canary.set_knobs, **spec["regression"])
        deadline = time.monotonic() + 60
        rollout = before
        while time.monotonic() < deadline:
            rollout = await cp.engine.get("bench")
            if rollout.phase.value == "RolledBack":
                break
            await asyncio.sleep(0.05)
        stats = await asyncio.to_thread(canary.stats)
        stable_stats = await asyncio.to_thread(stable.stats)
        onset = stats["regression"]["onset_unix"]
        events = await cp.engine.events("bench")
        decided = next((e.at for e in events if e.phase_to == "RollingBack"), None)
        zero = next((e.at for e in events if e.phase_to == "RolledBack"), None)
        verdict = next((e.verdict for e in events if e.phase_to == "RollingBack" and e.verdict), None)
        failing = [s["slo"] for s in (verdict or {}).get("evidence", {}).get("slos", []) if s.get("outcome") == "fail"]
        alive = load.poll() is None
        return {
            "onset_to_decision_s": None if decided is None or onset is None else decided - onset,
            "onset_to_zero_s": None if zero is None or onset is None else zero - onset,
            "bad_canary_requests": stats["regression"]["requests_since_armed"],
            "failing_slos": failing,
            "phase": rollout.phase.value,
            "served": {"stable": stable_stats["requests"], "canary": stats["requests"]},
            "load_alive": alive,
            **({} if alive else {"load_exit": load.returncode, "load_stderr": load_err.read_text(errors="replace")[-400:]}),
        }
    finally:
        if load is not None:
            stop_load(load)
        await asyncio.to_thread(envoy.stop)
        await cp.stop()
        await asyncio.to_thread(stable.stop)
        await asyncio.to_thread(canary.stop)


async def main_async(args) -> int:
    with tempfile.TemporaryDirectory(prefix="weir-bench-") as tmpdir:
        for case in args.case or list(CASES):
            runs = []
            failed = 0
            while len(runs) < args.runs:
                try:
                    result = await one_run(case, CASES[case], args.rate, args.warmup, Path(tmpdir))
                except RuntimeError as err:  # a run whose setup broke measures nothing: say so, run another
                    failed += 1
                    log(f"{case}: run not counted: {err}")
                    if failed > args.runs:
                        raise
                    continue
                log(f"{case} run {len(runs) + 1}: {json.dumps(result)}")
                runs.append(result)
            zero = [r["onset_to_zero_s"] for r in runs if r["onset_to_zero_s"] is not None]
            decision = [r["onset_to_decision_s"] for r in runs if r["onset_to_decision_s"] is not None]
            bad = [r["bad_canary_requests"] for r in runs if r["onset_to_zero_s"] is not None]
            emit({
                "bench": "reaction", "case": case, "runs": len(runs), "rate_rps": args.rate, "canary_share": 0.1,
                "rolled_back": len(zero), "runs_not_counted": failed,
                "onset_to_zero_s": [round(v, 2) for v in zero],
                "onset_to_zero_s_p50": round(statistics.median(zero), 2) if zero else None,
                "onset_to_decision_s_p50": round(statistics.median(decision), 2) if decision else None,
                "onset_to_zero_s_max": round(max(zero), 2) if zero else None,
                "bad_canary_requests_p50": statistics.median(bad) if bad else None,
                "failing_slos": sorted({s for r in runs for s in r["failing_slos"]}),
                "target_s": 5.0,
            })
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--case", action="append", choices=list(CASES))
    return asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
