"""``weir report``: one rollout as a self-contained HTML file: the dashboard's page, drawn once, offline.

The file inlines the same script, styles and charting library the dashboard
serves (no network when it is opened, in any browser, years later), and the
data it draws: the rollout, every event with the full evidence of every
decision, its series and the proxies at the time of the report. The data are
read through the REST API (the same endpoints the dashboard uses), so a report
shows exactly what the dashboard showed.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import quote

from .routes import static_text

__all__ = ["collect", "collect_async", "render_report", "write_report"]

#: Events are served a page at a time (the store's limit).
_PAGE = 1000


def _paths(name: str) -> dict[str, str]:
    n = quote(name, safe="")
    return {"rollout": f"/v1/rollouts/{n}", "series": f"/v1/rollouts/{n}/series", "proxies": "/v1/proxies"}


def _events_path(name: str, after: int) -> str:
    return f"/v1/rollouts/{quote(name, safe='')}/events?after={after}"


def collect(get: Callable[[str], Any], name: str) -> dict[str, Any]:
    """The report's data through a synchronous ``get(path) -> JSON`` (the CLI's client)."""
    data = {key: get(path) for key, path in _paths(name).items()}
    events, after = [], 0
    while True:
        page = get(_events_path(name, after))["items"]
        events += page
        if len(page) < _PAGE:
            break
        after = page[-1]["seq"]
    data["events"] = events
    return data


async def collect_async(get: Callable[[str], Awaitable[Any]], name: str) -> dict[str, Any]:
    """The same through an async ``get`` (in-process: the demo asks the app itself)."""
    data = {key: await get(path) for key, path in _paths(name).items()}
    events, after = [], 0
    while True:
        page = (await get(_events_path(name, after)))["items"]
        events += page
        if len(page) < _PAGE:
            break
        after = page[-1]["seq"]
    data["events"] = events
    return data


def _script_json(data: Any) -> str:
    """JSON that is safe inside a <script> element: every "<" escaped (no "</script>", no "<!--"),
    and no raw U+2028/U+2029 line breaks."""
    text = json.dumps(data, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def render_report(data: dict[str, Any], *, generated_at: float | None = None) -> str:
    """The HTML text of a report (``data`` from :func:`collect`)."""
    rollout = data["rollout"]
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(generated_at or time.time()))
    title = f"Weir report: {rollout['name']} ({rollout['phase']})"
    payload = {**data, "generated_at": generated_at or time.time()}
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>
{static_text("uPlot.min.css")}
{static_text("weir.css")}
</style>
</head>
<body>
<header class="top"><span class="brand">Weir</span><span>report of rollout {html.escape(rollout['name'])}, written {html.escape(stamp)}</span></header>
<main id="app"><noscript>This report draws its charts with JavaScript; the data are in the page source (WEIR_DATA).</noscript></main>
<script>window.WEIR_DATA = {_script_json(payload)};</script>
<script>
{static_text("uPlot.iife.min.js")}
</script>
<script>
{static_text("weir.js")}
</script>
</body>
</html>
"""


def write_report(data: dict[str, Any], path: str | Path) -> Path:
    """Write the report; returns its path."""
    path = Path(path)
    path.write_text(render_report(data), encoding="utf-8")
    return path
