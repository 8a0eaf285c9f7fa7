"""Real etcd members as local processes (Debian's etcd-server), for tests and benchmarks.

A member keeps its data directory across :meth:`EtcdMember.kill` and
:meth:`EtcdMember.start`, so a test can take members away (quorum lost) and
bring them back (quorum restored) as an operator would. Every member runs in
its own session on 127.0.0.1 with ports from the OS; :meth:`EtcdCluster.stop`
kills them all and removes their directories.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from .devstack import free_port

__all__ = ["EtcdCluster", "EtcdMember", "etcd_binary"]


def etcd_binary() -> str | None:
    return shutil.which("etcd")


class EtcdMember:
    """One etcd member: its ports, data directory and process."""

    def __init__(self, name: str, root: Path, tls: dict[str, Path] | None = None):
        self.name = name
        self.client_port, self.peer_port = free_port(), free_port()
        self.data_dir = root / name
        self.log_path = root / f"{name}.log"
        self.tls = tls
        self.proc: subprocess.Popen | None = None
        self.initial_cluster = ""
        self._log = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def command(self) -> list[str]:
        cmd = [
            etcd_binary() or "etcd", "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", "weir-test", "--logger", "zap", "--log-level", "warn",
        ]
        if self.tls:
            cmd += ["--cert-file", str(self.tls["cert"]), "--key-file", str(self.tls["key"]),
                    "--trusted-ca-file", str(self.tls["ca"]), "--client-cert-auth"]
        return cmd

    def start(self) -> "EtcdMember":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self) -> bool:
        """The member answers and its cluster has a leader (etcd's /health)."""
        if not self.alive():
            return False
        context = None
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.tls["ca"]))
            context.load_cert_chain(str(self.tls["client_cert"]), str(self.tls["client_key"]))
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1, context=context) as resp:
                return json.loads(resp.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL; the data directory stays, so :meth:`start` brings the same member back."""
        if self.proc is not None:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class EtcdCluster:
    """``size`` members on 127.0.0.1; a context manager that always cleans up."""

    def __init__(self, size: int = 3, tls: dict[str, Path] | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="weir-etcd-"))
        self.members = [EtcdMember(f"m{i}", self.root, tls) for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.initial_cluster = initial

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", m.client_port) for m in self.members]

    @property
    def url(self) -> str:
        """The ``weir serve --store`` value for this cluster."""
        return "etcd://" + ",".join(f"{h}:{p}" for h, p in self.endpoints)

    def start(self, timeout: float = 30) -> "EtcdCluster":
        for member in self.members:
            member.start()
        self.wait_healthy(self.members, timeout)
        return self

    def wait_healthy(self, members: list[EtcdMember] | None = None, timeout: float = 30) -> None:
        members = [m for m in (members or self.members) if m.alive()]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [m for m in members if not m.alive()]
            if dead:
                raise RuntimeError(f"etcd member {dead[0].name} exited: {dead[0].log_text()[-3000:]}")
            if all(m.healthy() for m in members):
                return
            time.sleep(0.1)
        logs = "\n".join(f"--- {m.name}\n{m.log_text()[-1500:]}" for m in members)
        raise TimeoutError(f"etcd did not become healthy in {timeout:g}s:\n{logs}")

    def stop(self) -> None:
        for member in self.members:
            member.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "EtcdCluster":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def make_tls(directory: Path) -> dict[str, Path]:
    """A throw-away CA, a member certificate for 127.0.0.1 and a client certificate (openssl), for TLS tests."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {name: directory / f"{name}.pem" for name in ("ca", "cert", "key", "client_cert", "client_key")}
    ca_key = directory / "ca.key"

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(out["ca"]),
        "-days", "2", "-subj", "/CN=weir-test-ca")
    for cert, key, usage in ((out["cert"], out["key"], "serverAuth,clientAuth"),
                             (out["client_cert"], out["client_key"], "clientAuth")):
        csr, ext = cert.with_suffix(".csr"), cert.with_suffix(".ext")
        ext.write_text(f"subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
        run("x509", "-req", "-in", str(csr), "-CA", str(out["ca"]), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return out
