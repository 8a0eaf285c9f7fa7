"""`weir get --watch`: one live line per rollout, redrawn in place on a terminal, plain lines otherwise.

Each line shows the phase, step, weight, the canary samples the latest look
counted against the step's minimum, each SLO's progress toward pass or fail
(how far its e-value is toward that threshold, on a log scale; a check mark
once decided) and the time spent in the step. On a terminal the lines are
redrawn every ``--interval``; into a pipe or file a line is printed whenever
what it says changes (the time in step aside), so a log stays readable.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, TextIO

from ..ui.evidence import progress

__all__ = ["render_line", "watch"]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _slo_text(entry: dict[str, Any]) -> str:
    if entry["outcome"] == "pass":
        return f"{entry['slo']} pass"
    if entry["outcome"] == "fail":
        return f"{entry['slo']} FAIL"
    if not entry["leaning"]:
        return f"{entry['slo']} -"
    return f"{entry['slo']} ->{entry['leaning']} {round(100 * entry['fraction'])}%"


def _fresh(r: dict[str, Any]) -> bool:
    """The latest look belongs to this step: its routing converged (samples count from then on)."""
    return not r.get("active", True) or r.get("converged_at") is not None


def render_line(r: dict[str, Any], now: float, *, step_text: Callable[[dict], str],
                weight_text: Callable[[dict], str], with_time: bool = True) -> str:
    """The watch line of one rollout (its JSON as ``GET /v1/rollouts/{name}`` returns it)."""
    p = progress(r, now)
    parts = [r["name"], r["phase"], f"step {step_text(r)}", f"weight {weight_text(r)}"]
    if r.get("active", True):
        if not _fresh(r):
            parts.append("waiting for routing")
        else:
            have = p["canary_requests"]
            want = p["min_requests"]
            parts.append(f"canary {have if have is not None else '-'}/{want if want is not None else '-'}")
            parts += [_slo_text(e) for e in p["slos"]]
            if p["samples_needed"]:
                parts.append(f"~{p['samples_needed']} more")
        if with_time:
            parts.append(f"{_duration(p['in_step_s'])} in step")
    message = r.get("message", "")
    return "  ".join(parts) + (f"  | {message}" if message else "")


def _json_line(r: dict[str, Any], now: float) -> str:
    p = progress(r, now)
    keep = {k: r.get(k) for k in ("name", "revision", "phase", "step", "n_steps", "weight", "mirror", "gate",
                                  "message", "updated_at")}
    fresh = _fresh(r)
    keep.update(canary_requests=p["canary_requests"] if fresh else None, min_requests=p["min_requests"],
                slos=[{k: e[k] for k in ("slo", "outcome", "leaning", "fraction", "e_fail", "fail_threshold", "e_pass",
                                         "pass_threshold", "samples_needed")} for e in p["slos"]] if fresh else [],
                in_step_s=p["in_step_s"])
    return json.dumps(keep)


def watch(client: Any, name: str | None, interval: float, output: str | None, out: TextIO, *,
          step_text: Callable[[dict], str], weight_text: Callable[[dict], str],
          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> int:
    """Follow one rollout (until it ends: exit 0 if Succeeded, else 1) or all (until none is active: exit 0)."""
    tty = output is None and out.isatty()
    drawn = 0
    last: dict[str, str] = {}
    while True:
        now = clock()
        if name is not None:
            rollouts = [client.get(name)]
        else:
            rollouts = [client.get(r["name"]) if r.get("active") else r for r in client.list()]
        if tty:
            lines = [render_line(r, now, step_text=step_text, weight_text=weight_text) for r in rollouts] or \
                ["no rollouts (submit one with: weir apply -f POLICY.yaml)"]
            # Back to the first line drawn, then each line cleared and written again.
            text = (f"\x1b[{drawn}F" if drawn else "") + "".join(f"\x1b[2K{line}\n" for line in lines)
            if drawn > len(lines):
                text += "\x1b[2K\n" * (drawn - len(lines)) + f"\x1b[{drawn - len(lines)}F"
            out.write(text)
            out.flush()
            drawn = len(lines)
        else:
            for r in rollouts:
                key = _json_line(r, now) if output == "json" else \
                    render_line(r, now, step_text=step_text, weight_text=weight_text, with_time=False)
                compare = key if output != "json" else json.dumps({k: v for k, v in json.loads(key).items()
                                                                     if k != "in_step_s"})
                if last.get(r["name"]) != compare:
                    last[r["name"]] = compare
                    if output == "json":
                        print(key, file=out, flush=True)
                    else:
                        line = render_line(r, now, step_text=step_text, weight_text=weight_text)
                        print(f"{time.strftime('%H:%M:%S', time.localtime(now))}  {line}", file=out, flush=True)
        if name is not None and not rollouts[0].get("active", True):
            return 0 if rollouts[0]["phase"] == "Succeeded" else 1
        if name is None and not any(r.get("active") for r in rollouts):
            return 0
        sleep(interval)
