"""Every dashboard asset ships in the wheel (no CDN: the wheel is all a machine without internet has)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from control_plane.ui.routes import STATIC_FILES


def test_the_wheel_carries_the_dashboard(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
                    "."], check=True, timeout=300, capture_output=True)
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {f"control_plane/ui/static/{n}" for n in (*STATIC_FILES, "dashboard.html", "login.html", "api.html",
                                                       "LICENSE.uPlot.txt")}
    assert wanted <= names, wanted - names
