"""A real Prometheus for end-to-end tests: the Debian package, run as a plain process.

``ensure_prometheus()`` installs the package when the binary is missing and we
run as root (``apt-get update`` once, then ``apt-get install -y
--no-install-recommends prometheus``; recommends would pull in node-exporter
and more), so ``make test`` on a fresh machine gets it. Tests call
``tests.conftest.require(ensure_prometheus() is not None, ...)``: a machine
without it skips locally and fails under CI=true.

``PrometheusProcess`` starts ``prometheus`` on 127.0.0.1 with a free port, a
throwaway TSDB directory and a fast scrape of the given targets (Envoy admins:
``metrics_path=/stats/prometheus``), and stops it at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

from devtools.devstack import LocalProcess, free_port

_install_attempted = False


def prometheus_binary() -> str | None:
    found = shutil.which("prometheus")
    if found:
        return found
    return "/usr/bin/prometheus" if os.access("/usr/bin/prometheus", os.X_OK) else None


def ensure_prometheus(timeout: float = 600) -> str | None:
    """The prometheus binary, installing the Debian package if needed (root only, tried once per process)."""
    global _install_attempted
    binary = prometheus_binary()
    if binary or _install_attempted:
        return binary
    _install_attempted = True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "update"], env=env, check=True, timeout=timeout, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"],
            env=env, check=True, timeout=timeout, capture_output=True,
        )
    except (subprocess.SubprocessError, OSError):
        return None
    return prometheus_binary()


class PrometheusProcess(LocalProcess):
    """``prometheus`` scraping ``targets`` (host:port) every ``scrape_interval`` on 127.0.0.1."""

    name = "prometheus"

    def __init__(self, targets: list[str], *, metrics_path: str = "/stats/prometheus", scrape_interval: str = "1s", job: str = "envoy"):
        binary = prometheus_binary()
        if binary is None:
            raise FileNotFoundError("prometheus not installed (apt-get install prometheus)")
        super().__init__()
        self.binary = binary
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = Path(self.dir, "prometheus.yml")
        targets_yaml = ", ".join(f'"{t}"' for t in targets)
        self.config.write_text(
            "global:\n"
            f"  scrape_interval: {scrape_interval}\n"
            f"  evaluation_interval: {scrape_interval}\n"
            "scrape_configs:\n"
            f"  - job_name: {job}\n"
            f"    metrics_path: {metrics_path}\n"
            f"    static_configs:\n"
            f"      - targets: [{targets_yaml}]\n"
        )

    def command(self) -> list[str]:
        return [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.tsdb.path={Path(self.dir, 'data')}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]

    def wait_ready(self, timeout: float = 20) -> None:
        def ready() -> bool:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                return resp.status == 200

        self.poll_until(ready, timeout, "/-/ready")

