"""`weir xds serve`: a routing file is validated before anything is published."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from xds.cache import SnapshotCache
from xds.routing import RoutingError
from xds.static_server import RoutingFile

BAD = """
services:
  - name: sentiment
    port: 70000
    backends:
      - version: v1
        endpoints: []
      - version: v1
        endpoints: ["127.0.0.1:8081"]
    split: {v1: 90}
"""


def test_bad_edit_changes_nothing(tmp_path):
    path = tmp_path / "routing.yaml"
    shutil.copy("tests/fixtures/routing-basic.yaml", path)
    cache = SnapshotCache()
    routing_file = RoutingFile(path, cache)
    good = routing_file.load()
    path.write_text(BAD)
    os.utime(path, ns=(1, 1))  # a different mtime, whatever the clock resolution
    assert routing_file.reload_if_changed() is False
    assert cache.snapshot("*") is good


def test_every_error_names_its_field(tmp_path):
    path = tmp_path / "routing.yaml"
    path.write_text(BAD)
    with pytest.raises(RoutingError) as err:
        RoutingFile(path, SnapshotCache()).load()
    text = str(err.value)
    for field in ("services[0].port", "services[0].backends[0].endpoints", "services[0].backends[1].version", "services[0].split"):
        assert field in text, text


def test_cli_refuses_bad_file_and_serves_nothing(tmp_path):
    path = tmp_path / "routing.yaml"
    path.write_text(BAD)
    proc = subprocess.run(
        [sys.executable, "-m", "control_plane.cli", "xds", "serve", "--config", str(path), "--port", "0"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert "nothing served" in proc.stderr and "services[0].port" in proc.stderr
