"""`weir serve` with the dashboard: the success line names it, and Ctrl-C with a live stream open exits cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx

from devtools.devstack import free_port


def test_ctrl_c_with_an_open_event_stream_exits_cleanly(tmp_path):
    api, xds = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "control_plane.cli", "serve", "--db", str(tmp_path / "w.db"),
                             "--api-port", str(api), "--xds-port", str(xds)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # printed once both ports are bound
        assert f"dashboard at http://127.0.0.1:{api}/ui/" in line, line
        with httpx.Client(base_url=f"http://127.0.0.1:{api}", timeout=30) as client:
            with client.stream("GET", "/v1/events/stream") as stream:
                lines = stream.iter_lines()
                assert next(lines) == "retry: 2000"
                proc.send_signal(signal.SIGINT)
                rest = list(lines)  # the server ends the stream itself: this returns
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = proc.stderr.read()
    assert "Traceback" not in err and "ERROR" not in err, err
    assert all(not line or line.startswith(":") for line in rest), rest  # nothing but blank lines and comments
