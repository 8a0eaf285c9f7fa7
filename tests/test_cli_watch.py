"""`weir get --watch`: step, weight, samples against the minimum, SLO progress and time in step; redrawn on a TTY."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from control_plane.cli.main import _step, _weight
from control_plane.cli.watch import render_line
from tests.test_cli import OPERATOR_TOKEN, make_server, no_env, policy_file, server, weir  # noqa: F401


def rollout(**over):
    verdict = {
        "outcome": "inconclusive", "reason": "not enough evidence yet", "samples_needed": 180,
        "evidence": {
            "counts": {"stable": {"requests": 480, "errors": 0}, "canary": {"requests": 120, "errors": 1}},
            "slos": [
                {"slo": "error-rate", "outcome": "inconclusive", "e_value_fail": 0.2, "fail_threshold": 80.0,
                 "e_value_pass": 20.0 ** 0.5, "pass_threshold": 20.0, "samples_needed": 180},
                {"slo": "latency-p50", "outcome": "pass", "e_value_fail": 0.01, "fail_threshold": 80.0,
                 "e_value_pass": 30.0, "pass_threshold": 20.0},
            ],
        },
    }
    data = {"name": "echo", "phase": "Progressing", "step": 1, "n_steps": 3, "weight": 50, "mirror": 0, "active": True,
            "message": "every proxy ACKed this step's routing", "step_started_at": 1000.0, "converged_at": 1001.0,
            "steps": [{"index": 0, "kind": "weight", "weight": 10, "min_requests": 100},
                      {"index": 1, "kind": "weight", "weight": 50, "min_requests": 300}],
            "latest_verdict": verdict}
    data.update(over)
    return data


def test_the_line_says_how_far_the_step_is():
    line = render_line(rollout(), 1072.0, step_text=_step, weight_text=_weight)
    assert line.startswith("echo  Progressing  step 2/3  weight 50%  canary 120/300")
    assert "error-rate ->pass 50%" in line  # half-way to its pass threshold on a log scale
    assert "latency-p50 pass" in line and "~180 more" in line and "1m12s in step" in line
    assert line.endswith("| every proxy ACKed this step's routing")
    # Before the step's routing converged, the latest look belongs to the previous step: not shown as this one's.
    waiting = render_line(rollout(converged_at=None), 1072.0, step_text=_step, weight_text=_weight)
    assert "waiting for routing" in waiting and "canary 120" not in waiting
    done = render_line(rollout(phase="Succeeded", active=False, step=2, weight=100), 1072.0, step_text=_step,
                       weight_text=_weight)
    assert "in step" not in done and "step 3/3" in done


def test_watch_redraws_in_place_on_a_terminal(make_server, policy_file):  # noqa: F811
    server = make_server(("inconclusive",))
    assert weir(server, "apply", "-f", policy_file()) == 0
    server.ticks(3)
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "control_plane.cli", "--server", server.url, "--token", OPERATOR_TOKEN,
                             "get", "--watch", "--interval", "0.05"], stdout=follower, stderr=subprocess.PIPE,
                            env={**os.environ, "TERM": "xterm"})
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60  # a bound for a stuck process, not a measurement
    try:
        while seen.count(b"\x1b[1F") < 3 and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1.0)
            if ready:
                seen += os.read(leader, 65536)
    finally:
        proc.terminate()
        proc.wait(10)
        os.close(leader)
    text = seen.decode()
    assert text.count("\x1b[1F") >= 3, text  # back up one line (one rollout) and redraw it
    assert "\x1b[2Kecho  Progressing  step 1/3  weight 10%" in text
    assert text.count("\n") == text.count("\x1b[2K")  # no line appended below: the same line redrawn


def test_watch_into_a_pipe_prints_plain_lines_when_something_changes(make_server, policy_file, capsys):  # noqa: F811
    server = make_server(("inconclusive",))
    assert weir(server, "apply", "-f", policy_file()) == 0
    server.ticks(3)
    assert weir(server, "pause", "echo") == 0
    server.ticks(1)
    capsys.readouterr()
    assert weir(server, "abort", "echo") == 0
    server.ticks(3)
    capsys.readouterr()
    assert weir(server, "get", "echo", "--watch", "--interval", "0.01") == 1
    out = capsys.readouterr().out
    assert "\x1b[" not in out and out.count("\n") == 1 and "RolledBack" in out
