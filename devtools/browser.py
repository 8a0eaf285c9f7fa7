"""A real headless Chromium driven over WebDriver (Debian's chromium and chromium-driver), for tests and checks.

Why Debian's: the project's machines reach package registries only, so the
browser cannot be one that downloads itself; Selenium is told the driver's
path, so its manager never tries to fetch one either.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

__all__ = ["CHROMEDRIVER", "CHROMIUM", "browser_available", "headless_chromium"]


def browser_available() -> bool:
    return Path(CHROMIUM).exists() and (Path(CHROMEDRIVER).exists() or shutil.which("chromedriver") is not None)


def headless_chromium(width: int = 1400, height: int = 2200):
    """A Selenium WebDriver on a headless Chromium with its console log kept (``driver.get_log("browser")``).

    The caller quits it; its profile directory is removed with ``driver.weir_profile.cleanup()``.
    """
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager reach the network
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.TemporaryDirectory(prefix="weir-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={profile.name}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options,
                              service=Service(executable_path=shutil.which("chromedriver") or CHROMEDRIVER))
    driver.weir_profile = profile
    return driver
